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

pub use error::{Error, Result};
pub use pitr::{
    recover_from_dirs, BaseBackup, PitrConfig, PitrManager, Recovery, RecoveryTarget, StateMachine,
    WalStats,
};
pub use reader::{iter_from, read_from, verify, RecordIter, VerifyReport};
pub use record::{Record, RecordError, RECORD_DATA};
pub use writer::{ClosedSegment, Journal, JournalOptions, JournalStats, Written};

/// Log sequence number: 1 for the first record, consecutive, never reused.
pub type Lsn = u64;
