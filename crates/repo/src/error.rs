//! The repository's public error type, grouped by what the caller does next.

use std::path::PathBuf;

/// Boxed source error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Result alias for repository operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the repository layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository at the location (no `config` object).
    #[error("no repository at {location}: run `lifeboat init` first, or check --repo / LIFEBOAT_REPOSITORY")]
    NotInitialized {
        /// Where we looked.
        location: String,
    },
    /// `init` on a location that already holds a repository.
    #[error("a repository already exists at {location}; refusing to overwrite it")]
    AlreadyInitialized {
        /// Where we looked.
        location: String,
    },
    /// No key slot accepted the password.
    #[error("wrong password or key file: no key slot in {location} could be opened with it")]
    WrongPassword {
        /// The repository location.
        location: String,
    },
    /// The repository was written by a newer (or unknown) format.
    #[error("{what} uses format version {found}, this lifeboat supports up to {supported}: upgrade lifeboat")]
    UnsupportedVersion {
        /// Which object.
        what: String,
        /// Version found on disk.
        found: u32,
        /// Highest version we read.
        supported: u32,
    },
    /// An object failed authentication or did not decode.
    #[error("{object} is damaged: {reason}; run `lifeboat check` for a full report")]
    Corrupt {
        /// Object name in the repository (e.g. `data/ab/ab12...`).
        object: String,
        /// What exactly failed.
        reason: String,
    },
    /// A blob the caller needs is not in the index.
    #[error("blob {id} is not in any index: run `lifeboat repair index`, then `lifeboat check`")]
    BlobNotFound {
        /// The missing blob.
        id: lifeboat_types::BlobId,
    },
    /// Snapshot reference did not match.
    #[error("no snapshot matches {reference:?}: list them with `lifeboat snapshots`")]
    SnapshotNotFound {
        /// What the user asked for.
        reference: String,
    },
    /// Several snapshots match a short id prefix.
    #[error("snapshot prefix {reference:?} is ambiguous; use more characters")]
    AmbiguousSnapshot {
        /// What the user asked for.
        reference: String,
    },
    /// A key-slot operation was refused.
    #[error("{0}")]
    Key(String),
    /// The storage backend failed.
    #[error(transparent)]
    Store(#[from] lifeboat_store::Error),
    /// A local file operation failed.
    #[error("{op} {path}: {source}{hint}", hint = io_hint(source))]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A command whose output was being backed up failed.
    #[error("command {command:?} failed: {status}; no snapshot was written")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
    },
    /// Invalid arguments or options.
    #[error("{0}")]
    InvalidInput(String),
    /// Another process holds a conflicting lock.
    #[error("repository is locked: {holders}; wait for it to finish, retry with --retry-lock DURATION, or if you are sure the holder is dead run `lifeboat unlock`")]
    Locked {
        /// Who holds it (host, pid, age).
        holders: String,
    },
    /// This process's lock expired or was removed; it stopped before writing anything more.
    #[error("lost the repository lock: {reason}; nothing more was written, run the command again")]
    LockLost {
        /// What happened.
        reason: String,
    },
    /// Prune found something that makes deleting unsafe; it stopped before deleting anything.
    #[error("prune refused: {reason}; nothing was deleted")]
    PruneRefused {
        /// What was found.
        reason: String,
    },
    /// The operation was interrupted (Ctrl-C).
    #[error("interrupted; no snapshot was written")]
    Interrupted,
}

fn io_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => " (disk full: free space and retry)",
        Some(libc::EACCES) | Some(libc::EPERM) => " (permission denied: check ownership and mode)",
        Some(libc::EROFS) => " (read-only file system)",
        _ => "",
    }
}

impl Error {
    /// Wraps an I/O error with the operation and path, for messages that say where.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for a corruption finding.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }
}
