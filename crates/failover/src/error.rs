//! The crate's public error type, grouped by what the caller does next.

use std::path::PathBuf;
use std::time::Duration;

use lifeboat_coord::{FencingToken, NodeId};

/// A boxed source error from a client library or a custom checker.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong configuring or driving a failover.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; the message names the setting and how to fix it.
    #[error("invalid failover config: {0}")]
    Config(String),

    /// An environment variable override could not be parsed.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    EnvVar {
        /// The variable's name.
        var: &'static str,
        /// The rejected value.
        value: String,
        /// What was expected.
        reason: String,
    },

    /// This manager instance does not hold the managers' election, so it only observes.
    #[error("this failover manager is not the elected one; send the request to the leader")]
    NotLeader,

    /// An operator hold is set: no failover is started until it is released.
    #[error("operator hold set by {by}: {reason}; release it with release_hold() first")]
    Held {
        /// Who set the hold.
        by: String,
        /// Why.
        reason: String,
    },

    /// A failover is already in progress (it is resumed, never started twice).
    #[error("failover {id} to {to} with token {token} is already in progress")]
    InProgress {
        /// The decision's id.
        id: u64,
        /// Its candidate.
        to: NodeId,
        /// Its token.
        token: FencingToken,
    },

    /// The named node is not configured.
    #[error("unknown node {0}; configure it with FailoverConfig::builder().node(..)")]
    UnknownNode(NodeId),

    /// The requested candidate cannot be promoted; the message says why.
    #[error("{node} cannot be promoted: {reason}")]
    Ineligible {
        /// The candidate.
        node: NodeId,
        /// Why it was filtered out.
        reason: String,
    },

    /// A failover ran and failed; the message says at which step.
    #[error("failover failed: {0}")]
    Failed(String),

    /// The coordination store failed.
    #[error(transparent)]
    Coord(#[from] lifeboat_coord::Error),

    /// The persisted decision state could not be read or written.
    #[error("failover state file {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong and what to do.
        reason: String,
    },

    /// A hook command failed or timed out.
    #[error("{hook} hook for {node} failed: {reason}")]
    Hook {
        /// `demote`, `stonith` or `promote`.
        hook: &'static str,
        /// The node it ran for.
        node: NodeId,
        /// Exit status, timeout or spawn error.
        reason: String,
    },

    /// The manager task has stopped (it was dropped).
    #[error("the failover manager has stopped")]
    Stopped,

    /// An operation did not finish in time.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What timed out.
        what: &'static str,
        /// The budget.
        after: Duration,
    },
}

impl Error {
    /// True when the same request may succeed later without changes (leadership moves,
    /// store blips, a running failover finishing).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::NotLeader | Self::InProgress { .. } | Self::Timeout { .. } => true,
            Self::Coord(e) => e.is_retryable(),
            _ => false,
        }
    }
}
