//! Parsing of location strings and construction of the matching `object_store` backend.

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use crate::error::ErrorContext;
use crate::{Error, Result, StoreOptions};

/// TCP connect limit: an unreachable endpoint fails fast instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole-request limit: generous enough for large uploads on slow links.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A backend ready to use, plus what [`crate::Store`] needs to describe it.
pub(crate) struct Opened {
    pub store: Arc<dyn ObjectStore>,
    pub location: String,
    pub local_root: Option<PathBuf>,
    pub ctx: ErrorContext,
}

/// Parse `location` and build the backend it names.
pub(crate) fn open(location: &str, options: &StoreOptions) -> Result<Opened> {
    let invalid = |reason: &str| Error::InvalidLocation {
        location: location.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = location.trim();
    if trimmed.is_empty() {
        return Err(invalid(
            "empty location: use a path, file:///path, s3://bucket/prefix or memory://",
        ));
    }
    if let Some(reason) = crate::syntax::foreign_syntax(trimmed) {
        return Err(invalid(&reason));
    }
    match trimmed.split_once("://") {
        None => open_local(location, FsPath::new(trimmed)),
        Some(("memory", "")) => Ok(memory()),
        Some(("memory", _)) => Err(invalid("memory:// takes no path")),
        Some(("file", _)) => {
            let url = url::Url::parse(trimmed).map_err(|e| invalid(&format!("bad URL: {e}")))?;
            let path = url.to_file_path().map_err(|()| {
                invalid("file:// URLs need an absolute path, e.g. file:///srv/backup")
            })?;
            open_local(location, &path)
        }
        Some(("s3", _)) => open_s3(location, trimmed, options),
        Some((scheme, _)) => Err(invalid(&format!(
            "unsupported scheme '{scheme}': use a path, file://, s3:// or memory://"
        ))),
    }
}

/// An in-memory store, for tests and dry runs.
pub(crate) fn memory() -> Opened {
    Opened {
        store: Arc::new(InMemory::new()),
        location: "memory://".into(),
        local_root: None,
        ctx: ErrorContext {
            location: "memory://".into(),
            backend: "memory",
            endpoint: None,
        },
    }
}

fn open_local(location: &str, path: &FsPath) -> Result<Opened> {
    let invalid = |reason: String| Error::InvalidLocation {
        location: location.to_owned(),
        reason,
    };
    let root =
        resolve_local_root(path).map_err(|e| invalid(format!("cannot resolve path: {e}")))?;
    let prefix = Path::from_absolute_path(&root)
        .map_err(|e| invalid(format!("path cannot be used as a store root: {e}")))?;
    // Rooted at "/" with our own prefix rather than `new_with_prefix`, which insists the
    // directory already exists; the repository layer decides whether a missing root is an error.
    let fs = LocalFileSystem::new().with_fsync(true);
    let display = root.display().to_string();
    Ok(Opened {
        store: Arc::new(PrefixStore::new(fs, prefix)),
        location: display.clone(),
        local_root: Some(root),
        ctx: ErrorContext {
            location: display,
            backend: "local",
            endpoint: None,
        },
    })
}

/// Absolute form of `path`: canonical if it resolves now, otherwise lexically normalised
/// (problems such as a missing directory are reported by the first operation instead).
fn resolve_local_root(path: &FsPath) -> std::io::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(_) => Ok(normalize(&std::path::absolute(path)?)),
    }
}

/// Drop `.` and resolve `..` without touching the filesystem.
fn normalize(path: &FsPath) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn open_s3(location: &str, url: &str, options: &StoreOptions) -> Result<Opened> {
    let invalid = |reason: String| Error::InvalidLocation {
        location: location.to_owned(),
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(format!("bad URL: {e}")))?;
    let bucket = parsed.host_str().unwrap_or_default();
    if bucket.is_empty() {
        return Err(invalid(
            "missing bucket name: use s3://BUCKET or s3://BUCKET/PREFIX".into(),
        ));
    }
    let prefix = Path::parse(parsed.path())
        .map_err(|e| invalid(format!("bad prefix '{}': {e}", parsed.path())))?;

    let endpoint = options
        .s3_endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| env("AWS_ENDPOINT"));
    let region = options
        .s3_region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let allow_http = options.s3_allow_http.unwrap_or_else(|| {
        endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
    });

    // `from_env` picks up session tokens, web identity and the like; explicit settings win.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(&region)
        .with_allow_http(allow_http)
        .with_client_options(client_options(allow_http))
        .with_retry(RetryConfig {
            // Our own retry loop (RetryPolicy) is the single place that retries.
            max_retries: 0,
            ..RetryConfig::default()
        });
    if let Some(endpoint) = &endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_config(object_store::aws::AmazonS3ConfigKey::S3Endpoint, endpoint)
            .with_virtual_hosted_style_request(false);
    }
    if let Some(key) = options
        .s3_access_key_id
        .clone()
        .or_else(|| env("AWS_ACCESS_KEY_ID"))
    {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = options
        .s3_secret_access_key
        .clone()
        .or_else(|| env("AWS_SECRET_ACCESS_KEY"))
    {
        builder = builder.with_secret_access_key(secret);
    }
    let s3 = builder
        .build()
        .map_err(|e| invalid(format!("cannot configure S3 client: {e}")))?;

    let display = if prefix.is_root() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    let endpoint_shown =
        endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com (AWS default)"));
    Ok(Opened {
        store: Arc::new(PrefixStore::new(s3, prefix)),
        location: display.clone(),
        local_root: None,
        ctx: ErrorContext {
            location: display,
            backend: "s3",
            endpoint: Some(endpoint_shown),
        },
    })
}

fn client_options(allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
}

/// A non-empty environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(location: &str) -> Error {
        match open(location, &StoreOptions::default()) {
            Ok(_) => panic!("{location} should be rejected"),
            Err(e) => e,
        }
    }

    #[test]
    fn rejects_bad_locations() {
        for loc in [
            "",
            "s3://",
            "s3:///prefix",
            "gs://bucket",
            "memory://x",
            "file://rel",
            "s3:host/bucket",
            "sftp:user@host:/srv",
            "~/backup",
        ] {
            assert!(
                matches!(err(loc), Error::InvalidLocation { .. }),
                "{loc}: {:?}",
                err(loc)
            );
        }
    }

    #[test]
    fn local_paths_resolve_without_existing() {
        let opened = open("/nonexistent/lifeboat/./a/../b", &StoreOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            opened.local_root,
            Some(PathBuf::from("/nonexistent/lifeboat/b"))
        );
        let url = open("file:///nonexistent/x", &StoreOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.local_root, Some(PathBuf::from("/nonexistent/x")));
    }

    #[test]
    fn s3_location_keeps_prefix() {
        let options = StoreOptions {
            s3_endpoint: Some("http://127.0.0.1:1".into()),
            s3_access_key_id: Some("k".into()),
            s3_secret_access_key: Some("s".into()),
            ..StoreOptions::default()
        };
        let opened = open("s3://bucket/some/prefix/", &options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.location, "s3://bucket/some/prefix");
        assert_eq!(opened.ctx.endpoint.as_deref(), Some("http://127.0.0.1:1"));
    }
}
