//! The journal's public error type.

use std::path::PathBuf;

use crate::record::RecordError;
use crate::Lsn;

/// Result alias for journal operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed; the path says where.
    #[error("journal I/O error on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A record that is not at the torn tail of the last segment is damaged: never skipped.
    #[error("journal corrupt at LSN {lsn} in {path}: {reason}")]
    Corrupt {
        /// LSN of the first record that failed (the one expected at that position).
        lsn: Lsn,
        /// Segment file.
        path: PathBuf,
        /// What failed.
        reason: RecordError,
    },
    /// A segment header or the segment sequence itself is inconsistent.
    #[error("journal segment {path} is invalid: {reason}")]
    BadSegment {
        /// Segment file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An append carried a term lower than one already recorded: the writer has been fenced.
    #[error("append with term {term} rejected: the journal already holds term {highest} (this writer is fenced)")]
    StaleTerm {
        /// Term of the rejected append.
        term: u64,
        /// Highest term recorded.
        highest: u64,
    },
    /// An earlier write or fsync failed; durability is unknown, so the instance refuses all work.
    #[error("journal is poisoned after an earlier failure ({0}); reopen it to recover")]
    Poisoned(String),
    /// Another `Journal` (in this or another process) holds the directory's writer lock.
    #[error("journal {dir} is already open for writing by another instance")]
    Locked {
        /// The journal directory.
        dir: PathBuf,
    },
    /// The payload does not fit a record.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Payload size.
        len: usize,
        /// Maximum allowed.
        max: usize,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
