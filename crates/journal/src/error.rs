//! The journal's public error type, classified with [`ErrorClass`] so the service and the CLI
//! can decide what to do next (retry, investigate, fix the request) without matching variants.

use std::path::PathBuf;

use lifeboat_types::{Classify, ErrorClass, Lsn, Term};

use crate::pitr::RecoveryTarget;
use crate::record::RecordError;

/// Result alias for journal operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a directory given as a journal holds none, so the message says what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalAbsence {
    /// Nothing exists at the path.
    Missing,
    /// The path is a file, not a directory.
    NotADirectory,
    /// The directory holds no segment file (empty, or some other kind of directory).
    NoSegments,
}

impl std::fmt::Display for JournalAbsence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JournalAbsence::Missing => "it does not exist",
            JournalAbsence::NotADirectory => "it is not a directory",
            JournalAbsence::NoSegments => "it holds no segment files",
        })
    }
}

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
    /// A directory that should hold a journal does not: reading it would report an empty log.
    #[error(
        "no journal in {dir}: {why}; expected a journal directory holding \
         <20-digit LSN>.seg segment files"
    )]
    NoJournal {
        /// The directory given.
        dir: PathBuf,
        /// What was found instead.
        why: JournalAbsence,
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
        term: Term,
        /// Highest term recorded.
        highest: Term,
    },
    /// An earlier write or fsync failed; durability is unknown, so the instance refuses all work.
    #[error("journal is poisoned after an earlier failure ({0}); reopen it to recover")]
    Poisoned(String),
    /// A blocking helper task panicked or was aborted: its work is not known to be done.
    #[error("journal background task '{task}' failed: {reason}")]
    TaskFailed {
        /// Which task.
        task: &'static str,
        /// The panic or cancellation message.
        reason: String,
    },
    /// The configured archive could not be opened or written (key, storage, conflict).
    #[error("journal archive: {0}")]
    Archive(#[source] Box<crate::archive::ArchiveError>),
    /// An archive operation was asked of a manager configured without an archive.
    #[error("no archive is configured for this journal")]
    NoArchive,
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
    /// The recovery target lies after the last durable record: recovering would pretend the
    /// log reaches a point it does not (PostgreSQL refuses the same way).
    #[error("recovery target {target} is after the end of the log (last LSN {last_lsn})")]
    TargetAfterEnd {
        /// The requested target.
        target: RecoveryTarget,
        /// The last LSN the log holds (0: none).
        last_lsn: Lsn,
    },
    /// The recovery target lies before the oldest point the backups and WAL can rebuild
    /// (older segments were removed and no base backup is that old).
    #[error(
        "recovery target {target} is before the start of the log: the oldest recoverable \
         point is LSN {earliest_lsn}"
    )]
    TargetBeforeStart {
        /// The requested target.
        target: RecoveryTarget,
        /// The oldest LSN a recovery can stop at.
        earliest_lsn: Lsn,
    },
    /// The caller cancelled a recovery; nothing was written.
    #[error("recovery cancelled after replaying {replayed} records (at LSN {lsn})")]
    Cancelled {
        /// The last LSN applied before stopping.
        lsn: Lsn,
        /// Records replayed before stopping.
        replayed: u64,
    },
    /// A stored operation or snapshot could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Codec {
        /// What was being decoded, with its LSN or file.
        what: String,
        /// The decoder's message.
        reason: String,
    },
    /// An operation could not be encoded (its serde implementation failed).
    #[error("cannot encode the operation: {reason}")]
    Encode {
        /// The encoder's message.
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

    /// What kind of failure this is (retry, investigate, fix the request, ...).
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Io { source, .. } => ErrorClass::of_io(source),
            Error::DiskFull { .. } | Error::Poisoned(_) | Error::TaskFailed { .. } => {
                ErrorClass::Permanent
            }
            Error::NoJournal { .. } | Error::WalGap { .. } => ErrorClass::NotFound,
            Error::Corrupt { .. }
            | Error::BadSegment { .. }
            | Error::BadBackup { .. }
            | Error::BackupAheadOfWal { .. }
            | Error::Codec { .. } => ErrorClass::Corrupt,
            Error::StaleTerm { .. } => ErrorClass::Conflict,
            Error::Archive(e) => e.class(),
            Error::Locked { .. } => ErrorClass::Locked,
            Error::Cancelled { .. } => ErrorClass::Cancelled,
            Error::NoArchive
            | Error::Config(_)
            | Error::TargetAfterEnd { .. }
            | Error::TargetBeforeStart { .. }
            | Error::Encode { .. }
            | Error::PayloadTooLarge { .. } => ErrorClass::InvalidInput,
        }
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        Error::class(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::ArchiveError;

    #[test]
    fn classes() {
        let io = |kind| std::io::Error::from(kind);
        let p = || PathBuf::from("/j");
        let cases = [
            (
                Error::io(p(), std::io::Error::from_raw_os_error(nix::libc::ENOSPC)),
                ErrorClass::Permanent,
            ),
            (
                Error::io(p(), io(std::io::ErrorKind::NotFound)),
                ErrorClass::NotFound,
            ),
            (
                Error::io(p(), io(std::io::ErrorKind::Interrupted)),
                ErrorClass::Retryable,
            ),
            (
                Error::Corrupt {
                    lsn: Lsn(3),
                    path: p(),
                    reason: RecordError::Empty,
                },
                ErrorClass::Corrupt,
            ),
            (Error::Locked { dir: p() }, ErrorClass::Locked),
            (
                Error::StaleTerm {
                    term: Term::from(1),
                    highest: Term::from(2),
                },
                ErrorClass::Conflict,
            ),
            (
                Error::NoJournal {
                    dir: p(),
                    why: JournalAbsence::NoSegments,
                },
                ErrorClass::NotFound,
            ),
            (
                Error::TargetAfterEnd {
                    target: RecoveryTarget::Lsn(Lsn(9)),
                    last_lsn: Lsn(5),
                },
                ErrorClass::InvalidInput,
            ),
            (
                Error::TargetBeforeStart {
                    target: RecoveryTarget::Lsn(Lsn(1)),
                    earliest_lsn: Lsn(5),
                },
                ErrorClass::InvalidInput,
            ),
            (
                Error::Cancelled {
                    lsn: Lsn(1),
                    replayed: 1,
                },
                ErrorClass::Cancelled,
            ),
            (Error::NoArchive, ErrorClass::InvalidInput),
            (
                Error::Archive(Box::new(ArchiveError::WrongKey {
                    location: "x".into(),
                })),
                ErrorClass::Auth,
            ),
            (
                Error::Archive(Box::new(ArchiveError::Conflict {
                    object: "o".into(),
                    reason: "r".into(),
                })),
                ErrorClass::Conflict,
            ),
            (
                Error::Archive(Box::new(ArchiveError::Store(
                    lifeboat_store::Error::NotFound { key: "k".into() },
                ))),
                ErrorClass::NotFound,
            ),
            (
                Error::Archive(Box::new(ArchiveError::Store(
                    lifeboat_store::Error::Transient {
                        op: "get",
                        key: "k".into(),
                        source: "timeout".into(),
                    },
                ))),
                ErrorClass::Retryable,
            ),
            (
                Error::Archive(Box::new(ArchiveError::NoArchive {
                    location: "x".into(),
                })),
                ErrorClass::NotFound,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.class(), want, "{e}");
            assert_eq!(Classify::class(&e), want);
        }
        let wrapped = ArchiveError::Journal(Error::Locked { dir: p() });
        assert_eq!(wrapped.class(), ErrorClass::Locked);
    }

    #[test]
    fn library_messages_name_no_cli_flags() {
        let msgs = [
            Error::NoJournal {
                dir: PathBuf::from("/x"),
                why: JournalAbsence::Missing,
            }
            .to_string(),
            Error::TargetAfterEnd {
                target: RecoveryTarget::Lsn(Lsn(9)),
                last_lsn: Lsn(5),
            }
            .to_string(),
            Error::NoArchive.to_string(),
            ArchiveError::NoArchive {
                location: "/a".into(),
            }
            .to_string(),
        ];
        for m in msgs {
            assert!(!m.contains("--"), "{m}");
        }
    }
}
