//! [`Classify`] for storage errors, so the service and retry loops treat them like any other.

use lifeboat_types::{Classify, ErrorClass};

use crate::Error;

impl Error {
    /// The shared error class of this failure (what a caller should do next).
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::NotFound { .. } => ErrorClass::NotFound,
            Error::AlreadyExists { .. } => ErrorClass::Conflict,
            Error::Auth { .. } => ErrorClass::Auth,
            Error::Transient { .. } => ErrorClass::Retryable,
            Error::Permanent { .. } | Error::Unsupported { .. } => ErrorClass::Permanent,
            Error::InvalidLocation { .. } | Error::InvalidKey { .. } => ErrorClass::InvalidInput,
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
    fn every_variant_has_its_class() {
        let key = || "k".to_owned();
        let cases = [
            (Error::NotFound { key: key() }, ErrorClass::NotFound),
            (Error::AlreadyExists { key: key() }, ErrorClass::Conflict),
            (
                Error::Auth {
                    location: "s3://b".into(),
                    source: "403".into(),
                },
                ErrorClass::Auth,
            ),
            (
                Error::Transient {
                    op: "get",
                    key: key(),
                    source: "timeout".into(),
                },
                ErrorClass::Retryable,
            ),
            (
                Error::Permanent {
                    op: "put",
                    key: key(),
                    source: "disk full".into(),
                },
                ErrorClass::Permanent,
            ),
            (
                Error::InvalidLocation {
                    location: "x".into(),
                    reason: "bad".into(),
                },
                ErrorClass::InvalidInput,
            ),
            (
                Error::Unsupported {
                    op: "list",
                    backend: "custom",
                },
                ErrorClass::Permanent,
            ),
            (
                Error::InvalidKey {
                    key: "a//b".into(),
                    reason: "empty segment".into(),
                },
                ErrorClass::InvalidInput,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(Classify::class(&err), want, "{err:?}");
            // The class agrees with the older retry predicate.
            assert_eq!(err.class().is_retryable(), err.is_retryable(), "{err:?}");
        }
    }
}
