//! The crate's public error type, grouped by what the caller does next.

use std::time::Duration;

use lifeboat_types::{Classify, ErrorClass, FencingToken, NodeId};

/// A boxed source error from a backend client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in leader election and fencing.
///
/// Callers decide with [`Error::is_retryable`]: a retryable error means "the store could not be
/// asked right now" (try again, and stop acting as leader if it lasts past the deadline); a
/// permanent one means "the answer is no" or "the setup is wrong".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; the message says which setting and how to fix it.
    #[error("invalid leader-election config: {0}")]
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

    /// The coordination store could not be reached or failed the call (retryable).
    #[error("{backend} coordination store unreachable during {op}: {source}")]
    Unavailable {
        /// Backend name (`memory`, `embedded`, `postgres`, `etcd`).
        backend: &'static str,
        /// The operation that failed.
        op: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// A store call did not answer in time (retryable). Its outcome is unknown.
    #[error("{backend} coordination store did not answer {op} within {after:?}")]
    Timeout {
        /// Backend name.
        backend: &'static str,
        /// The operation that timed out.
        op: &'static str,
        /// The time budget that was exceeded.
        after: Duration,
    },

    /// This node does not hold the lease for this token (any more): stop acting as leader.
    #[error(
        "node {node} is not the leader with token {token} (lease lost, expired or taken over)"
    )]
    NotLeader {
        /// The node that asked.
        node: NodeId,
        /// The token it presented.
        token: FencingToken,
    },

    /// A resource rejected a write carrying a stale fencing token.
    #[error("fenced: token {presented} is older than token {seen} already seen by the resource")]
    Fenced {
        /// The highest token the resource has accepted.
        seen: FencingToken,
        /// The token that came with the rejected write.
        presented: FencingToken,
    },

    /// The store holds data this version cannot use (schema version, corrupt counter file).
    #[error("{backend} coordination store is inconsistent: {message}")]
    Corrupt {
        /// Backend name.
        backend: &'static str,
        /// What is wrong and what to do.
        message: String,
    },

    /// A local file operation of the embedded backend failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file involved.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The election was stopped or dropped while a call waited on it.
    #[error("leader election was stopped")]
    Stopped,
}

impl Error {
    /// The error's class, so the daemon can map any coordination error to a retry decision
    /// and an HTTP status without matching on variants.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) | Self::EnvVar { .. } => ErrorClass::InvalidInput,
            Self::Unavailable { .. } | Self::Timeout { .. } => ErrorClass::Retryable,
            // Another term holds the role: not ours until it is released or expires.
            Self::NotLeader { .. } => ErrorClass::Locked,
            // A newer term already wrote: this writer lost, repeating cannot help.
            Self::Fenced { .. } => ErrorClass::Conflict,
            Self::Corrupt { .. } => ErrorClass::Corrupt,
            Self::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ErrorClass::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorClass::Auth,
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock => {
                    ErrorClass::Retryable
                }
                _ => ErrorClass::Permanent,
            },
            Self::Stopped => ErrorClass::Cancelled,
        }
    }

    /// True when trying again later may succeed (store unreachable or slow).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }

    /// True when the answer is a definite "you are not (or no longer) the leader".
    pub fn is_not_leader(&self) -> bool {
        matches!(self, Self::NotLeader { .. } | Self::Fenced { .. })
    }

    pub(crate) fn unavailable(
        backend: &'static str,
        op: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Unavailable {
            backend,
            op,
            source: source.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_path_buf(),
            source,
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
    fn every_variant_has_the_class_its_caller_acts_on() {
        let io = |kind| Error::Io {
            op: "open",
            path: "/x".into(),
            source: std::io::Error::from(kind),
        };
        let cases = [
            (Error::Config("x".into()), ErrorClass::InvalidInput),
            (
                Error::EnvVar {
                    var: "V",
                    value: "v".into(),
                    reason: "r".into(),
                },
                ErrorClass::InvalidInput,
            ),
            (
                Error::unavailable("etcd", "get", "refused"),
                ErrorClass::Retryable,
            ),
            (
                Error::Timeout {
                    backend: "postgres",
                    op: "renew",
                    after: Duration::from_secs(1),
                },
                ErrorClass::Retryable,
            ),
            (
                Error::NotLeader {
                    node: NodeId::new("n"),
                    token: FencingToken(3),
                },
                ErrorClass::Locked,
            ),
            (
                Error::Fenced {
                    seen: FencingToken(4),
                    presented: FencingToken(3),
                },
                ErrorClass::Conflict,
            ),
            (
                Error::Corrupt {
                    backend: "embedded",
                    message: "m".into(),
                },
                ErrorClass::Corrupt,
            ),
            (io(std::io::ErrorKind::NotFound), ErrorClass::NotFound),
            (io(std::io::ErrorKind::PermissionDenied), ErrorClass::Auth),
            (io(std::io::ErrorKind::Other), ErrorClass::Permanent),
            (Error::Stopped, ErrorClass::Cancelled),
        ];
        for (e, class) in cases {
            assert_eq!(e.class(), class, "{e}");
            assert_eq!(Classify::class(&e), class, "{e}");
            // The older predicate agrees with the class for the store-side cases.
            if e.is_retryable() {
                assert_eq!(class, ErrorClass::Retryable, "{e}");
            }
        }
    }
}
