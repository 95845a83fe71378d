//! The archive's error type: variants are what the caller does next (fix the key, investigate
//! a damaged or conflicting object, retry a storage failure, pick an empty target).

use std::path::PathBuf;

use lifeboat_types::{Classify, ErrorClass};

/// Result alias for archive operations.
pub type ArchiveResult<T> = std::result::Result<T, ArchiveError>;

/// Everything that can go wrong while archiving or restoring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The object store failed (network, permissions, disk); see the source for what to do.
    #[error("archive storage: {0}")]
    Store(#[from] lifeboat_store::Error),
    /// The local journal could not be read or is damaged.
    #[error("local journal: {0}")]
    Journal(#[from] crate::Error),
    /// A local file operation failed.
    #[error("archive I/O error on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Opened read-only, and the location holds no archive (no `archive.json`): nothing is
    /// created there.
    #[error("no journal archive at {location}: it holds no archive.json")]
    NoArchive {
        /// Archive location.
        location: String,
    },
    /// The archive is encrypted but no key was given.
    #[error("archive {location} is encrypted: an archive key is required to open it")]
    KeyRequired {
        /// Archive location.
        location: String,
    },
    /// A key was given but the archive was created without encryption.
    #[error(
        "archive {location} is not encrypted but a key was given: open it without a key, or \
         archive to a new location to use encryption"
    )]
    NotEncrypted {
        /// Archive location.
        location: String,
    },
    /// The key does not match the archive's key check value.
    #[error("wrong archive key for {location}: the key check value does not match")]
    WrongKey {
        /// Archive location.
        location: String,
    },
    /// An archived object failed authentication, its hash, or the journal checks.
    #[error("archived object {object} ({held}) is damaged: {reason}")]
    Damaged {
        /// Object key.
        object: String,
        /// What it holds, e.g. "segment LSN 1..=200" or "backup <name>".
        held: String,
        /// What failed.
        reason: String,
    },
    /// An object the manifest lists is not in the archive.
    #[error("archived object {object} ({held}) is missing from the archive")]
    Missing {
        /// Object key.
        object: String,
        /// What it held.
        held: String,
    },
    /// An object or manifest entry exists with different content: two writers or a split
    /// brain. Never resolved automatically.
    #[error("archive conflict on {object}: {reason}; is another journal archiving to the same location?")]
    Conflict {
        /// Object key or name concerned.
        object: String,
        /// What differs.
        reason: String,
    },
    /// Local segments do not continue the archived sequence.
    #[error(
        "gap in the journal: the archive ends at LSN {archived_upto} but the oldest local \
         segment not yet archived starts at LSN {next_local}; records in between were removed \
         locally before being archived"
    )]
    Gap {
        /// Last archived LSN.
        archived_upto: lifeboat_types::Lsn,
        /// First LSN of the next local segment.
        next_local: lifeboat_types::Lsn,
    },
    /// An archive control object (archive.json, manifest) is unreadable or of an unknown version.
    #[error("archive object {object} is invalid: {reason}")]
    BadFormat {
        /// Object key.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// `restore_into` was pointed at a directory that already holds files.
    #[error(
        "restore target {path} is not empty: restore into an empty directory (or allow \
         overwriting explicitly)"
    )]
    TargetNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// A key file could not be used.
    #[error("archive key file {path}: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and what is expected.
        reason: String,
    },
}

impl ArchiveError {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ArchiveError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether trying again later may succeed (transient storage failures only).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ArchiveError::Store(e) if e.is_retryable())
    }

    /// What kind of failure this is: a wrong key is `auth`, a conflicting object `conflict`,
    /// storage failures keep the store's own distinction.
    pub fn class(&self) -> ErrorClass {
        match self {
            ArchiveError::Store(e) => e.class(),
            ArchiveError::Journal(e) => e.class(),
            ArchiveError::Io { source, .. } => ErrorClass::of_io(source),
            ArchiveError::NoArchive { .. } => ErrorClass::NotFound,
            ArchiveError::KeyRequired { .. } | ArchiveError::WrongKey { .. } => ErrorClass::Auth,
            ArchiveError::NotEncrypted { .. }
            | ArchiveError::TargetNotEmpty { .. }
            | ArchiveError::BadKeyFile { .. } => ErrorClass::InvalidInput,
            ArchiveError::Damaged { .. }
            | ArchiveError::Missing { .. }
            | ArchiveError::BadFormat { .. } => ErrorClass::Corrupt,
            ArchiveError::Conflict { .. } => ErrorClass::Conflict,
            ArchiveError::Gap { .. } => ErrorClass::Permanent,
        }
    }
}

impl Classify for ArchiveError {
    fn class(&self) -> ErrorClass {
        ArchiveError::class(self)
    }
}
