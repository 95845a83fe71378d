//! The repository's public error type, grouped by what the caller does next.

use std::path::PathBuf;

use lifeboat_types::{Classify, ErrorClass};

/// Boxed source error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Result alias for repository operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the repository layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository at the location (no `config` object).
    #[error("no repository at {location}")]
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
    #[error("{object} is damaged: {reason}")]
    Corrupt {
        /// Object name in the repository (e.g. `data/ab/ab12...`).
        object: String,
        /// What exactly failed.
        reason: String,
    },
    /// A blob the caller needs is not in the index.
    #[error("blob {id} is not in any index")]
    BlobNotFound {
        /// The missing blob.
        id: lifeboat_types::BlobId,
    },
    /// Snapshot reference did not match.
    #[error("no snapshot matches {reference:?}")]
    SnapshotNotFound {
        /// What the user asked for.
        reference: String,
    },
    /// An empty snapshot reference (an unset shell variable): never selects a snapshot.
    #[error("empty snapshot id: give an id, a unique prefix of one, or \"latest\" (is the variable holding the id unset?)")]
    EmptySnapshotReference,
    /// Several snapshots match a short id prefix.
    #[error("snapshot prefix {reference:?} is ambiguous; use more characters")]
    AmbiguousSnapshot {
        /// What the user asked for.
        reference: String,
    },
    /// The key slot asked to be removed is the one this handle was opened with.
    #[error("refusing to remove key slot {id}: this session was opened with it; open the repository with another password or key file first")]
    KeyInUse {
        /// The slot (short id).
        id: String,
    },
    /// No key slot matches.
    #[error("no key slot matches {reference:?}")]
    KeyNotFound {
        /// What the caller asked for.
        reference: String,
    },
    /// Several key slots match a prefix.
    #[error("key slot prefix {reference:?} is ambiguous; use more characters")]
    AmbiguousKey {
        /// What the caller asked for.
        reference: String,
    },
    /// The key-derivation function refused its parameters or failed.
    #[error("cannot derive a key: {reason}")]
    Kdf {
        /// What the KDF said.
        reason: String,
    },
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
    #[error("repository is locked: {holders}")]
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
    /// `copy` between repositories that do not name blobs alike.
    #[error("{target_location} does not share blob ids with {source_location}: the target must be created related to the source (same chunker parameters and blob-id key) so both name the same data alike")]
    UnrelatedRepositories {
        /// The copy source.
        source_location: String,
        /// The copy target.
        target_location: String,
    },
    /// A glob pattern (exclude, include) does not parse.
    #[error("bad {what} pattern {pattern:?}: {reason}")]
    BadPattern {
        /// Which list: "exclude" or "include".
        what: &'static str,
        /// The pattern.
        pattern: String,
        /// What the glob parser said.
        reason: String,
    },
    /// A lock guard taken on one repository was passed to a write on another.
    #[error("the lock passed in belongs to {lock}, not to {repository}")]
    LockMismatch {
        /// Where the lock was taken.
        lock: String,
        /// Where the write was going.
        repository: String,
    },
    /// An engine thread panicked (a bug): the run's outcome is unknown, but every write
    /// path is crash-safe, so the repository is as consistent as after a crash.
    #[error("the {engine} engine panicked; the repository is consistent, run check to be sure")]
    EnginePanicked {
        /// Which engine.
        engine: &'static str,
    },
    /// Prune found something that makes deleting unsafe; it stopped before deleting anything.
    #[error("prune refused: {reason}; nothing was deleted")]
    PruneRefused {
        /// What was found.
        reason: String,
    },
    /// The caller cancelled the operation (Ctrl-C, SIGTERM, a service's cancel); it stopped at a
    /// safe point and committed nothing half-done.
    #[error("cancelled; nothing half-done was committed")]
    Cancelled,
}

/// `Err(Error::Cancelled)` once `cancel` is set: the check every engine makes at its safe
/// points.
pub(crate) fn stop_if_cancelled(cancel: &lifeboat_types::CancelToken) -> Result<()> {
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    Ok(())
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        Error::class(self)
    }
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
    /// What kind of failure this is, for retry decisions and HTTP statuses.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::NotInitialized { .. }
            | Error::SnapshotNotFound { .. }
            | Error::KeyNotFound { .. } => ErrorClass::NotFound,
            Error::AlreadyInitialized { .. } | Error::LockLost { .. } => ErrorClass::Conflict,
            Error::WrongPassword { .. } => ErrorClass::Auth,
            Error::UnsupportedVersion { .. }
            | Error::CommandFailed { .. }
            | Error::EnginePanicked { .. } => ErrorClass::Permanent,
            // A blob a tree names but no index has: the repository is damaged.
            Error::Corrupt { .. } | Error::PruneRefused { .. } | Error::BlobNotFound { .. } => {
                ErrorClass::Corrupt
            }
            Error::AmbiguousSnapshot { .. }
            | Error::EmptySnapshotReference
            | Error::AmbiguousKey { .. }
            | Error::KeyInUse { .. }
            | Error::Kdf { .. }
            | Error::InvalidInput(_)
            | Error::LockMismatch { .. }
            | Error::UnrelatedRepositories { .. }
            | Error::BadPattern { .. } => ErrorClass::InvalidInput,
            Error::Store(e) => e.class(),
            Error::Io { source, .. } => ErrorClass::of_io(source),
            Error::Locked { .. } => ErrorClass::Locked,
            Error::Cancelled => ErrorClass::Cancelled,
        }
    }

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
