//! Lifeboat's point-in-time-recovery journal: a tamper-evident, salted, hash-chained
//! write-ahead log with group commit and term fencing. See `docs/journal-format.md`.

pub mod archive;
mod error;
pub mod reader;
pub mod record;
pub mod segment;
pub mod writer;

pub use error::{Error, Result};
pub use reader::{iter_from, read_from, verify, RecordIter, VerifyReport};
pub use record::{Record, RecordError, RECORD_DATA};
pub use writer::{Journal, JournalOptions, JournalStats};

/// Log sequence number: 1 for the first record, consecutive, never reused.
pub type Lsn = u64;
