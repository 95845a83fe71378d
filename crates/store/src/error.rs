//! Typed storage errors and the mapping from `object_store` errors onto them.

use std::io;

/// Boxed source error, so backends can attach whatever caused a failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Result alias so callers can write `store::Result<T>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a storage operation, classified so callers can decide what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist (lets callers treat absence as data, not failure).
    #[error("object {key} not found")]
    NotFound {
        /// Key of the missing object.
        key: String,
    },

    /// A create-only write found the object already present (the basis of locking and dedup).
    #[error("object {key} already exists")]
    AlreadyExists {
        /// Key of the existing object.
        key: String,
    },

    /// The backend rejected our identity, so retrying cannot help until credentials change.
    #[error(
        "access to {location} was denied: check credentials (AWS_ACCESS_KEY_ID / \
         AWS_SECRET_ACCESS_KEY) and bucket permissions: {source}"
    )]
    Auth {
        /// Human form of the store location.
        location: String,
        /// Backend error.
        source: BoxError,
    },

    /// A network or server hiccup that persisted through our retries; trying later may work.
    #[error("{op} {key} failed after retrying: {source}")]
    Transient {
        /// Operation name, e.g. "put".
        op: &'static str,
        /// Key the operation was about.
        key: String,
        /// Backend error.
        source: BoxError,
    },

    /// A failure that retrying will not fix (disk full, permission denied, bad request).
    #[error("{op} {key} failed: {source}")]
    Permanent {
        /// Operation name, e.g. "put".
        op: &'static str,
        /// Key the operation was about.
        key: String,
        /// Backend error, usually with a hint on what to do.
        source: BoxError,
    },

    /// The location string given to [`crate::Store::open`] cannot be used.
    #[error("invalid storage location '{location}': {reason}")]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// Why it was rejected and what form is expected.
        reason: String,
    },

    /// The backend cannot perform this operation at all.
    #[error("{op} is not supported by the {backend} storage backend")]
    Unsupported {
        /// Operation name.
        op: &'static str,
        /// Backend name.
        backend: &'static str,
    },

    /// The key is not a valid object name (empty, `..`, `//`, ...): a caller bug, never retried.
    #[error("invalid object key '{key}': {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl Error {
    /// Whether trying the same operation again later might succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Transient { .. })
    }

    /// Whether the object simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// A backend error prefixed with advice for the user.
#[derive(Debug)]
pub(crate) struct Hint {
    hint: String,
    inner: BoxError,
}

impl Hint {
    /// Wrap `inner` with `hint` in front of its message.
    pub(crate) fn boxed(hint: impl Into<String>, inner: impl Into<BoxError>) -> BoxError {
        Box::new(Hint {
            hint: hint.into(),
            inner: inner.into(),
        })
    }
}

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.hint, self.inner)
    }
}

impl std::error::Error for Hint {}

/// What a store knows about itself that makes error messages actionable.
#[derive(Debug, Clone)]
pub(crate) struct ErrorContext {
    /// Human form of the location, for auth messages.
    pub location: String,
    /// Backend name, for unsupported-operation messages.
    pub backend: &'static str,
    /// S3 endpoint in use (explicit or the AWS default), for connection messages.
    pub endpoint: Option<String>,
}

/// How an error chain should be treated, before attaching the hint.
enum Class {
    Transient(Option<String>),
    Permanent(Option<String>),
}

impl ErrorContext {
    /// Translate an `object_store` error for operation `op` on `key` into our taxonomy.
    pub(crate) fn classify(&self, op: &'static str, key: &str, err: object_store::Error) -> Error {
        use object_store::Error as OsError;
        let key = key.to_owned();
        match err {
            OsError::NotFound { .. } => Error::NotFound { key },
            OsError::AlreadyExists { .. } => Error::AlreadyExists { key },
            OsError::Unauthenticated { source, .. } | OsError::PermissionDenied { source, .. } => {
                Error::Auth {
                    location: self.location.clone(),
                    source,
                }
            }
            OsError::NotSupported { .. } | OsError::NotImplemented { .. } => Error::Unsupported {
                op,
                backend: self.backend,
            },
            OsError::InvalidPath { source } => Error::InvalidKey {
                key,
                reason: source.to_string(),
            },
            other => {
                let class = self.classify_chain(&other);
                let source: BoxError = Box::new(other);
                match class {
                    Class::Transient(hint) => Error::Transient {
                        op,
                        key,
                        source: with_hint(hint, source),
                    },
                    Class::Permanent(hint) => Error::Permanent {
                        op,
                        key,
                        source: with_hint(hint, source),
                    },
                }
            }
        }
    }

    /// Walk the source chain looking for HTTP or I/O causes that tell us what happened.
    fn classify_chain(&self, err: &(dyn std::error::Error + 'static)) -> Class {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
                return self.classify_http(http.kind());
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return classify_io(io.kind());
            }
            if let Some(status) = http_status_in(&e.to_string()) {
                return classify_status(status);
            }
            if e.to_string().contains("Server returned error response") {
                return Class::Transient(None);
            }
            cur = e.source();
        }
        Class::Permanent(None)
    }

    fn classify_http(&self, kind: object_store::client::HttpErrorKind) -> Class {
        use object_store::client::HttpErrorKind as K;
        match kind {
            K::Connect => {
                let endpoint = self.endpoint.as_deref().unwrap_or("(AWS default)");
                Class::Transient(Some(format!(
                    "cannot reach S3 endpoint {endpoint}: check --s3-endpoint / AWS_ENDPOINT_URL \
                     and network connectivity"
                )))
            }
            K::Timeout => Class::Transient(Some("S3 request timed out".into())),
            _ => Class::Transient(None),
        }
    }
}

fn with_hint(hint: Option<String>, source: BoxError) -> BoxError {
    match hint {
        Some(h) => Hint::boxed(h, source),
        None => source,
    }
}

/// Classify a local or network I/O failure by its kind.
fn classify_io(kind: io::ErrorKind) -> Class {
    use io::ErrorKind as K;
    match kind {
        K::StorageFull | K::QuotaExceeded => {
            Class::Permanent(Some("disk full: free space and retry".into()))
        }
        K::PermissionDenied | K::ReadOnlyFilesystem => Class::Permanent(Some(
            "permission denied: check ownership and permissions of the repository location".into(),
        )),
        K::NotADirectory => Class::Permanent(Some(
            "a component of the path is a regular file, not a directory: check the repository \
             location"
                .into(),
        )),
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::BrokenPipe
        | K::TimedOut
        | K::Interrupted
        | K::WouldBlock
        | K::UnexpectedEof
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown
        | K::ResourceBusy
        | K::StaleNetworkFileHandle => Class::Transient(None),
        _ => Class::Permanent(None),
    }
}

/// Classify an HTTP status that survived `object_store`'s own mapping.
fn classify_status(status: u16) -> Class {
    match status {
        408 | 429 | 500..=599 => Class::Transient(None),
        416 => Class::Permanent(Some("requested byte range is outside the object".into())),
        _ => Class::Permanent(None),
    }
}

/// `object_store` does not export its HTTP error type, so read the status from its message.
fn http_status_in(message: &str) -> Option<u16> {
    const MARKER: &str = "status code: ";
    let start = message.find(MARKER)? + MARKER.len();
    let digits = message.get(start..start + 3)?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext {
        ErrorContext {
            location: "s3://b/p".into(),
            backend: "s3",
            endpoint: Some("http://127.0.0.1:1".into()),
        }
    }

    fn generic(source: impl Into<BoxError>) -> object_store::Error {
        object_store::Error::Generic {
            store: "test",
            source: source.into(),
        }
    }

    #[test]
    fn status_is_read_from_message() {
        let msg = "Error performing PUT x - Server returned non-2xx status code: 503 Service";
        assert_eq!(http_status_in(msg), Some(503));
        assert_eq!(http_status_in("no status here"), None);
        assert_eq!(http_status_in("status code: 5"), None);
    }

    #[test]
    fn disk_full_is_permanent_with_hint() {
        let io = io::Error::from(io::ErrorKind::StorageFull);
        let err = ctx().classify("put", "data/ab", generic(io));
        assert!(matches!(err, Error::Permanent { op: "put", .. }), "{err:?}");
        assert!(!err.is_retryable());
        let msg = err.to_string();
        assert!(
            msg.contains("disk full") && msg.contains("data/ab"),
            "{msg}"
        );
    }

    #[test]
    fn connection_refused_is_transient() {
        let io = io::Error::from(io::ErrorKind::ConnectionRefused);
        let err = ctx().classify("get", "k", generic(io));
        assert!(err.is_retryable(), "{err:?}");
    }

    #[test]
    fn server_errors_are_transient_client_errors_permanent() {
        let e503 = ctx().classify("get", "k", generic("non-2xx status code: 503 Slow"));
        assert!(e503.is_retryable());
        let e400 = ctx().classify("get", "k", generic("non-2xx status code: 400 Bad"));
        assert!(matches!(e400, Error::Permanent { .. }));
    }

    #[test]
    fn auth_and_not_found_map_directly() {
        let denied = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: "403".into(),
        };
        let err = ctx().classify("get", "x", denied);
        assert!(matches!(err, Error::Auth { .. }));
        assert!(err.to_string().contains("check credentials"));
        let missing = object_store::Error::NotFound {
            path: "x".into(),
            source: "404".into(),
        };
        let err = ctx().classify("get", "x", missing);
        assert!(err.is_not_found());
        assert_eq!(err.to_string(), "object x not found");
    }
}
