//! Events an election publishes to its subscribers, and why a term ended.

use std::fmt;

use serde::Serialize;

use lifeboat_types::{FencingToken, NodeId};

/// Why a [`crate::Leadership`] stopped being valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LostReason {
    /// The store answered that this term is gone (expired there, or superseded).
    Rejected,
    /// Renewals kept failing for `renew_deadline`; the holder gave up early.
    RenewDeadline,
    /// The local monotonic deadline (renew send time + lease − margin) passed.
    LocalDeadline,
    /// The holder resigned.
    Resigned,
    /// The election was stopped or dropped.
    Stopped,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rejected => "the store rejected the renewal (term expired or superseded)",
            Self::RenewDeadline => "renewals failed for longer than renew_deadline",
            Self::LocalDeadline => "the local lease deadline passed",
            Self::Resigned => "resigned",
            Self::Stopped => "election stopped",
        })
    }
}

/// What happened to this node's leadership; sent to [`crate::LeaderElection::subscribe`]rs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LeaderEvent {
    /// This node started a new term.
    Acquired {
        /// This node.
        node_id: NodeId,
        /// The new term's token.
        fencing_token: FencingToken,
    },
    /// The store extended this node's term.
    Renewed {
        /// The term's token.
        fencing_token: FencingToken,
    },
    /// This node's term ended; it must stop acting as leader.
    Lost {
        /// The ended term's token.
        fencing_token: FencingToken,
        /// Why.
        reason: LostReason,
    },
}
