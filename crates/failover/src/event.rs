//! Events the manager broadcasts: health changes, failovers and their steps, and every
//! decision *not* to fail over with its reason.

use std::fmt;
use std::time::Duration;

use lifeboat_types::{FencingToken, NodeId};
use serde::Serialize;

use crate::candidate::{Ranked, Rejected};

/// One step of a failover, recorded with a timestamp in the decision state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The new primary-role term was granted: its token fences the old primary.
    TokenTaken,
    /// The old primary confirmed it demoted (demote hook exited 0).
    Demoted,
    /// The demote hook failed or timed out.
    DemoteFailed,
    /// The STONITH hook confirmed the old primary is off.
    Stonithed,
    /// The STONITH hook failed or timed out.
    StonithFailed,
    /// No confirmation: waited the old lease + safety margin instead.
    WaitedOutLease,
    /// The candidate reported lag 0 after the demote (zero-loss hand-over).
    CaughtUp,
    /// The candidate did not catch up within the grace period; promoted with its last lag.
    CatchUpTimedOut,
    /// The promote hook succeeded.
    Promoted,
    /// A restarted manager picked the failover up again with the same token.
    Resumed,
}

/// Why the manager decided not to fail over (now).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SuppressReason {
    /// An operator hold is set.
    Hold {
        /// Who set it.
        by: String,
        /// Why.
        reason: String,
    },
    /// Only one signal says down (e.g. the health endpoint is unreachable but the node
    /// still renews its lease: likely a partition between us and it).
    SingleSignal {
        /// The signal that still says alive.
        alive: String,
    },
    /// Fewer than ⌊N/2⌋+1 observers see the primary down.
    Minority {
        /// Observers that see it down.
        votes: usize,
        /// Votes needed.
        needed: usize,
    },
    /// No node passes the filters.
    NoCandidate {
        /// Every node considered and why it was rejected.
        rejected: Vec<Rejected>,
    },
    /// The manager started leading less than `startup_grace` ago.
    StartupGrace {
        /// Time left.
        remaining: Duration,
    },
    /// The last automatic failover was less than `min_failover_interval` ago.
    Cooldown {
        /// Time left.
        remaining: Duration,
    },
    /// `max_auto_failovers` were used up in the window; the policy is now Manual.
    BudgetExhausted {
        /// Automatic failovers in the window.
        used: u32,
        /// The window.
        window: Duration,
    },
    /// The persisted decision state could not be read or written, so acting is unsafe.
    StateUnavailable {
        /// What went wrong.
        reason: String,
    },
}

impl fmt::Display for SuppressReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hold { by, reason } => write!(f, "operator hold by {by}: {reason}"),
            Self::SingleSignal { alive } => {
                write!(f, "only one signal says down; still alive: {alive}")
            }
            Self::Minority { votes, needed } => {
                write!(f, "only {votes} observer(s) see it down, {needed} needed")
            }
            Self::NoCandidate { rejected } => {
                write!(f, "no eligible candidate")?;
                for r in rejected {
                    write!(f, "; {}: {}", r.node, r.reason)?;
                }
                Ok(())
            }
            Self::StartupGrace { remaining } => {
                write!(f, "startup grace, {remaining:?} left")
            }
            Self::Cooldown { remaining } => write!(f, "cooldown, {remaining:?} left"),
            Self::BudgetExhausted { used, window } => write!(
                f,
                "{used} automatic failover(s) in {window:?}: budget exhausted, policy is Manual"
            ),
            Self::StateUnavailable { reason } => {
                write!(f, "decision state unavailable: {reason}")
            }
        }
    }
}

/// What the manager saw or did; sent to [`crate::FailoverManager::subscribe`]rs and kept in
/// [`crate::FailoverManager::history`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailoverEvent {
    /// A node crossed the unhealthy threshold.
    NodeUnhealthy {
        /// The node.
        node_id: NodeId,
        /// The last failed check.
        reason: String,
    },
    /// A suspect node passed the healthy threshold again.
    NodeRecovered {
        /// The node.
        node_id: NodeId,
    },
    /// A failover decision was committed (the hold CAS passed).
    FailoverStarted {
        /// The decision's id.
        id: u64,
        /// The old primary, if known.
        from: Option<NodeId>,
        /// The candidate.
        to: NodeId,
    },
    /// A step of a running failover.
    FailoverStep {
        /// The decision's id.
        id: u64,
        /// The step.
        step: Step,
        /// The new primary-role token (after `TokenTaken`).
        token: Option<FencingToken>,
    },
    /// The candidate was promoted.
    FailoverCompleted {
        /// The new primary.
        new_leader: NodeId,
        /// Its primary-role token.
        token: FencingToken,
    },
    /// A failover was abandoned; the message says at which step.
    FailoverFailed {
        /// What went wrong.
        reason: String,
    },
    /// The manager decided not to fail over (emitted when the reason changes).
    FailoverSuppressed {
        /// Why.
        reason: SuppressReason,
    },
    /// Manual policy (or a used-up budget): the primary is down; an operator must call
    /// `trigger`. Candidates are listed best first.
    ManualInterventionRequired {
        /// The down primary.
        node_id: NodeId,
        /// Eligible candidates, best first.
        candidates: Vec<Ranked>,
    },
    /// Alert: automatic failover is off until an operator calls `resume_automatic`.
    PolicyDowngraded {
        /// Why.
        reason: String,
    },
}
