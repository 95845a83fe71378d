//! Failover counters and the durations operators tune timeouts by.

use std::time::{Duration, SystemTime};

/// A snapshot of the manager's counters ([`crate::FailoverManager::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FailoverStats {
    /// Failovers started (automatic and manual).
    pub total: u64,
    /// Failovers that promoted their candidate.
    pub successful: u64,
    /// Failovers that failed.
    pub failed: u64,
    /// Decisions not to fail over (each distinct reason once in a row).
    pub suppressed: u64,
    /// When the last failover completed.
    pub last_failover_at: Option<SystemTime>,
    /// From the primary's first failed check to its confirmed-down decision, last time.
    pub last_detection_duration: Option<Duration>,
    /// From the decision to the promote hook's success, last time.
    pub last_failover_duration: Option<Duration>,
}
