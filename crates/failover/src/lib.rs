//! Failure detection and fenced failover for a primary/standby cluster, on top of
//! `lifeboat-coord`.
//!
//! # Overview
//!
//! * [`FailoverManager`] checks every node each interval ([`HealthChecker`]s: HTTP, TCP,
//!   command, PostgreSQL, custom), feeds per-node [`Detector`]s (hysteresis), and — only while
//!   it holds the managers' own [`lifeboat_coord::LeaderElection`] — decides to fail over
//!   when the primary is down by two signals (health + its lease in the store) and, if
//!   configured, an observer quorum. Every decision not to fail over is an event with its
//!   reason ([`SuppressReason`]).
//! * A failover is fenced: a new primary-role term (a larger [`lifeboat_coord::FencingToken`])
//!   → demote / STONITH hook, or wait the old lease + margin → promote hook with
//!   `LIFEBOAT_FENCING_TOKEN`. Policies: [`FailoverPolicy::Immediate`], `Graceful` (zero-loss
//!   hand-over when the old primary answers), `Manual` ([`FailoverManager::trigger`]).
//! * The [`DecisionStore`] persists hold, the in-progress decision and the anti-flapping
//!   budget; the hold and the decision are one compare-and-set.
//!
//! See `docs/failover.md` for what "the election" means here and the timing rules.

mod candidate;
mod config;
mod detector;
mod error;
mod event;
mod execute;
pub mod health;
mod hook;
mod manager;
mod node;
mod quorum;
mod state;
mod stats;
mod tick;

pub use candidate::{rank, CandidateInfo, Ranked, Rejected};
pub use config::{
    FailoverConfig, FailoverConfigBuilder, FailoverPolicy, DEFAULT_GRACE_PERIOD,
    ENV_HEALTH_CHECK_INTERVAL_SECS, ENV_POLICY, ENV_UNHEALTHY_THRESHOLD,
};
pub use detector::{Detector, Transition};
pub use error::{BoxError, Error, Result};
pub use event::{FailoverEvent, Step, SuppressReason};
pub use health::{
    check_bounded, CommandHealthChecker, HealthChecker, HttpHealthChecker, Observation,
    PostgresHealthChecker, TcpHealthChecker,
};
pub use hook::Hook;
pub use manager::{FailoverManager, FailoverOutcome, EVENT_CHANNEL_CAPACITY, HISTORY_CAPACITY};
pub use node::{FixedLag, LagReporter, NodeSpec};
pub use quorum::{quorum, Observer};
pub use state::{
    unix_ms, Decision, DecisionStore, FinishedDecision, Hold, HoldOutcome, PersistedState,
    StepRecord, STATE_FORMAT_VERSION,
};
pub use stats::FailoverStats;
