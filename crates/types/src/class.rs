//! Error classes: what a caller (the daemon, a retry loop, the CLI) does next with an error.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of failure an error is, independent of the crate it came from.
///
/// Every crate's error type has a `class()` returning one of these, so the service can map any
/// error to an HTTP status and a retry decision without matching on every variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// Transient (timeout, unreachable server, throttling): the same call may succeed later.
    Retryable,
    /// Will fail the same way again until something outside changes (disk full, permission).
    Permanent,
    /// Stored data failed authentication or did not decode: investigate, do not retry.
    Corrupt,
    /// Wrong password, key, credentials or token.
    Auth,
    /// The target changed under us or already holds different data (conditional write lost).
    Conflict,
    /// Another holder has the lock or lease; retry after it is released.
    Locked,
    /// The caller cancelled the operation; nothing half-done was committed.
    Cancelled,
    /// The named thing does not exist.
    NotFound,
    /// The request itself is malformed or out of range; fix it before retrying.
    InvalidInput,
}

impl ErrorClass {
    /// Whether repeating the same call, unchanged, can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Retryable | ErrorClass::Locked)
    }

    /// The HTTP status the service answers with for an error of this class.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorClass::Retryable => 503,
            ErrorClass::Permanent => 500,
            ErrorClass::Corrupt => 500,
            ErrorClass::Auth => 401,
            ErrorClass::Conflict => 409,
            ErrorClass::Locked => 423,
            ErrorClass::Cancelled => 499,
            ErrorClass::NotFound => 404,
            ErrorClass::InvalidInput => 400,
        }
    }

    /// The class of a local I/O error: a missing file is not-found; interrupted, would-block
    /// and timed-out calls are retryable; malformed input is invalid-input; everything else
    /// (disk full, permission, read-only) needs a person.
    pub fn of_io(e: &std::io::Error) -> ErrorClass {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::NotFound => ErrorClass::NotFound,
            K::Interrupted | K::WouldBlock | K::TimedOut => ErrorClass::Retryable,
            K::InvalidInput | K::InvalidData => ErrorClass::InvalidInput,
            _ => ErrorClass::Permanent,
        }
    }

    /// Stable lower-case name, as used in logs, metrics labels and API error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Corrupt => "corrupt",
            ErrorClass::Auth => "auth",
            ErrorClass::Conflict => "conflict",
            ErrorClass::Locked => "locked",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::NotFound => "not-found",
            ErrorClass::InvalidInput => "invalid-input",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every crate's error type so callers can classify errors generically.
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_match_as_str() {
        for c in [
            ErrorClass::Retryable,
            ErrorClass::Permanent,
            ErrorClass::Corrupt,
            ErrorClass::Auth,
            ErrorClass::Conflict,
            ErrorClass::Locked,
            ErrorClass::Cancelled,
            ErrorClass::NotFound,
            ErrorClass::InvalidInput,
        ] {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
        assert!(ErrorClass::Locked.is_retryable());
        assert!(!ErrorClass::Corrupt.is_retryable());
    }
}
