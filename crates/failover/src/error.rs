//! The crate's public error type, grouped by what the caller does next.

use std::path::PathBuf;
use std::time::Duration;

use lifeboat_types::{Classify, ErrorClass, FencingToken, NodeId};

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
    /// The error's class, so a caller (the daemon's API, a retry loop) acts on any failover
    /// error without matching on variants.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) | Self::EnvVar { .. } | Self::UnknownNode(_) => {
                ErrorClass::InvalidInput
            }
            Self::Ineligible { .. } => ErrorClass::InvalidInput,
            // Another instance holds the managers' election: ask it, or retry when it moves.
            Self::NotLeader => ErrorClass::Locked,
            // An operator hold or a running decision owns the cluster until it is released
            // or finishes.
            Self::Held { .. } | Self::InProgress { .. } => ErrorClass::Locked,
            Self::Failed(_) | Self::Hook { .. } => ErrorClass::Permanent,
            Self::Coord(e) => e.class(),
            // An unreadable state file is not repaired by retrying; its message says what to do.
            Self::State { .. } => ErrorClass::Corrupt,
            Self::Stopped => ErrorClass::Cancelled,
            Self::Timeout { .. } => ErrorClass::Retryable,
        }
    }

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

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        Error::class(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_what_the_caller_does_next() {
        let cases = [
            (Error::Config("x".into()), ErrorClass::InvalidInput),
            (
                Error::UnknownNode(NodeId::new("pg-z")),
                ErrorClass::InvalidInput,
            ),
            (
                Error::Ineligible {
                    node: NodeId::new("pg-a"),
                    reason: "already primary".into(),
                },
                ErrorClass::InvalidInput,
            ),
            (Error::NotLeader, ErrorClass::Locked),
            (
                Error::Held {
                    by: "ops".into(),
                    reason: "maintenance".into(),
                },
                ErrorClass::Locked,
            ),
            (
                Error::InProgress {
                    id: 1,
                    to: NodeId::new("pg-b"),
                    token: FencingToken(2),
                },
                ErrorClass::Locked,
            ),
            (Error::Failed("promote".into()), ErrorClass::Permanent),
            (
                Error::Coord(lifeboat_coord::Error::Stopped),
                ErrorClass::Cancelled,
            ),
            (
                Error::Coord(lifeboat_coord::Error::Timeout {
                    backend: "etcd",
                    op: "get",
                    after: Duration::from_secs(1),
                }),
                ErrorClass::Retryable,
            ),
            (
                Error::State {
                    path: "/s.json".into(),
                    reason: "not JSON".into(),
                },
                ErrorClass::Corrupt,
            ),
            (Error::Stopped, ErrorClass::Cancelled),
            (
                Error::Timeout {
                    what: "x",
                    after: Duration::from_secs(1),
                },
                ErrorClass::Retryable,
            ),
        ];
        for (e, class) in cases {
            assert_eq!(e.class(), class, "{e}");
            assert_eq!(Classify::class(&e), class, "{e}");
            // What is_retryable() calls retryable is never classed as a permanent failure.
            if e.is_retryable() {
                assert!(class.is_retryable(), "{e}: {class}");
            }
        }
    }
}
