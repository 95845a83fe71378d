//! Lifeboat's point-in-time-recovery journal: a tamper-evident, salted, hash-chained
//! write-ahead log with group commit and term fencing. See `docs/journal-format.md`.

pub mod archive;
pub mod archiving;
pub mod catalog;
mod error;
pub mod pitr;
pub mod reader;
pub mod record;
pub mod segment;
pub mod writer;

pub use error::{Error, JournalAbsence, Result};
pub use lifeboat_types::{CancelToken, Classify, ErrorClass, Lsn, Term};
pub use pitr::{
    recover_from_dirs, BaseBackup, PitrConfig, PitrManager, Recovery, RecoveryOptions,
    RecoveryTarget, StateMachine, WalStats,
};
pub use reader::{iter_from, read_from, verify, RecordIter, VerifyReport};
pub use record::{Record, RecordError, RECORD_DATA};
pub use writer::{ClosedSegment, Journal, JournalOptions, JournalStats, Written};

/// An LSN as the bare number the on-disk format and the low-level reader and writer use; the
/// PITR API and errors wrap it in [`Lsn`] (same value, 1 for the first record).
pub type RawLsn = u64;
