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
    /// The disk is full (ENOSPC). Nothing acknowledged is lost; free space and retry (see
    /// `docs/journal-format.md` for which failures also poison the instance).
    #[error("disk full (ENOSPC) while writing {path}: free space, then retry")]
    DiskFull {
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
    /// The configured archive could not be opened or written (key, storage, conflict).
    #[error("journal archive: {0}")]
    Archive(#[source] Box<crate::archive::ArchiveError>),
    /// Another `Journal` (in this or another process) holds the directory's writer lock.
    #[error("journal {dir} is already open for writing by another instance")]
    Locked {
        /// The journal directory.
        dir: PathBuf,
    },
    /// A PITR configuration value is missing or out of range.
    #[error("invalid PITR configuration: {0}")]
    Config(String),
    /// A base-backup file is unreadable or damaged; recovery falls back to an older one.
    #[error("base backup {path} is damaged: {reason}")]
    BadBackup {
        /// The backup file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Recovery needs a record the WAL no longer holds (deleted by retention, or damaged).
    #[error("recovery needs LSN {needed} but the WAL has {available}: restore the missing segments (e.g. from the archive) or recover to an earlier target")]
    WalGap {
        /// First LSN recovery needed.
        needed: Lsn,
        /// What the WAL holds instead.
        available: String,
    },
    /// The newest usable base backup reflects more records than the WAL holds: the WAL is not
    /// the one these backups were taken from, or it lost records. Nothing is written.
    #[error("base backup {backup_id} reflects LSN {backup_lsn} but the WAL ends at LSN {wal_last}: the WAL directory does not belong to these backups or lost records")]
    BackupAheadOfWal {
        /// The backup.
        backup_id: String,
        /// Its start LSN.
        backup_lsn: Lsn,
        /// Last LSN in the WAL.
        wal_last: Lsn,
    },
    /// An `Lsn` recovery target past the end of the durable log.
    #[error("recovery target LSN {target} is beyond the end of the log (last LSN {last})")]
    TargetBeyondEnd {
        /// The requested LSN.
        target: Lsn,
        /// The last LSN in the log.
        last: Lsn,
    },
    /// An operation or snapshot could not be (de)serialised.
    #[error("cannot decode {what}: {reason}")]
    Codec {
        /// What was being decoded, with its LSN or file.
        what: String,
        /// The decoder's message.
        reason: String,
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
        let path = path.into();
        if source.raw_os_error() == Some(nix::libc::ENOSPC) {
            return Error::DiskFull { path, source };
        }
        Error::Io { path, source }
    }

    /// True when the error is a full disk: the caller can free space and retry.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::DiskFull { .. })
    }
}
