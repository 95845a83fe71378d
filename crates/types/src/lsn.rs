//! Log sequence numbers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A journal record's position: 1 for the first record, +1 per record, never reused.
/// `Lsn(0)` means "before the first record" (an empty journal).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Before the first record.
    pub const ZERO: Lsn = Lsn(0);

    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The next position.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Self(v)
    }
}
