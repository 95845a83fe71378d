//! Storage facade for Lifeboat: one small async API over local disk, memory and S3, with
//! atomic and conditional writes, bounded retries and errors that tell the user what to do.

mod class;
mod error;
mod local;
mod location;
mod retry;
mod syntax;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use error::ErrorContext;
pub use error::{BoxError, Error, Result};
pub use retry::RetryPolicy;

/// Settings for remote backends; every field falls back to the usual AWS environment variables.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// S3-compatible endpoint URL; else `AWS_ENDPOINT_URL` / `AWS_ENDPOINT`, else AWS itself.
    pub s3_endpoint: Option<String>,
    /// Region; else `AWS_REGION` / `AWS_DEFAULT_REGION`, else "us-east-1".
    pub s3_region: Option<String>,
    /// Access key id; else `AWS_ACCESS_KEY_ID`.
    pub s3_access_key_id: Option<String>,
    /// Secret key; else `AWS_SECRET_ACCESS_KEY`.
    pub s3_secret_access_key: Option<String>,
    /// Permit plain HTTP; default is true exactly when the endpoint starts with `http://`.
    pub s3_allow_http: Option<bool>,
    /// How transient failures are retried.
    pub retry: RetryPolicy,
}

/// Size and name of a stored object, as returned by [`Store::head`] and [`Store::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the store root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, by the store's clock (the server's, for S3): lock
    /// expiry compares two of these so client clock skew cannot break a lock.
    pub last_modified: std::time::SystemTime,
}

/// Handle to a storage location; cheap to clone (Arc inside).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    location: String,
    local_root: Option<PathBuf>,
    ctx: ErrorContext,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open `location`: "memory://", a path ("/x/y", "./rel"), "file:///abs" or "s3://bucket/prefix".
    ///
    /// Opening does no I/O against the backend: a missing local directory or bucket is only
    /// noticed by the first operation, so the caller decides whether that is an error.
    pub fn open(location: &str, options: &StoreOptions) -> Result<Store> {
        let opened = location::open(location, options)?;
        Ok(Store::from_opened(opened, options.retry.clone()))
    }

    /// A fresh, empty in-memory store, for tests and dry runs.
    pub fn memory() -> Store {
        Store::from_opened(location::memory(), RetryPolicy::default())
    }

    /// Wrap an existing `object_store` backend, for decorators (fault injection) and tests.
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, location: &str) -> Store {
        let opened = location::Opened {
            store: inner,
            location: location.to_owned(),
            local_root: None,
            ctx: ErrorContext {
                location: location.to_owned(),
                backend: "custom",
                endpoint: None,
            },
        };
        Store::from_opened(opened, RetryPolicy::default())
    }

    /// Same store with a different retry policy, e.g. to fail fast in tests.
    pub fn with_retry(&self, retry: RetryPolicy) -> Store {
        let inner = &self.inner;
        Store {
            inner: Arc::new(Inner {
                store: Arc::clone(&inner.store),
                location: inner.location.clone(),
                local_root: inner.local_root.clone(),
                ctx: inner.ctx.clone(),
                retry,
            }),
        }
    }

    fn from_opened(opened: location::Opened, retry: RetryPolicy) -> Store {
        Store {
            inner: Arc::new(Inner {
                store: opened.store,
                location: opened.location,
                local_root: opened.local_root,
                ctx: opened.ctx,
                retry,
            }),
        }
    }

    /// Human-readable location, for messages.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// Whether this is the local filesystem backend (callers may then use local tricks).
    pub fn is_local(&self) -> bool {
        self.inner.local_root.is_some()
    }

    /// Root directory of the local filesystem backend, if that is what this is.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root.as_deref()
    }

    /// Removes the staging files (`name#N`) that interrupted local writes leave behind, under
    /// `prefix`; returns how many. Only safe while no other process writes there (prune holds
    /// the exclusive lock). Remote stores have none: their uploads are atomic server-side.
    pub fn remove_local_staging_files(&self, prefix: &str) -> Result<usize> {
        fn walk(dir: &std::path::Path, removed: &mut usize) -> std::io::Result<()> {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    walk(&path, removed)?;
                } else if entry.file_name().as_encoded_bytes().contains(&b'#') {
                    std::fs::remove_file(&path)?;
                    *removed += 1;
                }
            }
            Ok(())
        }
        let Some(root) = self.local_root() else {
            return Ok(0);
        };
        let mut removed = 0;
        walk(&root.join(prefix), &mut removed).map_err(|e| Error::Permanent {
            op: "remove staging files",
            key: prefix.to_owned(),
            source: Box::new(e),
        })?;
        Ok(removed)
    }

    /// Write `data` at `key`, replacing any existing object; atomic, and durable on local disk.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = parse_key(key)?;
        self.run("put", key, |_| {
            self.put_mode(&path, &data, PutMode::Overwrite)
        })
        .await
    }

    /// Write `data` at `key` only if nothing is there yet; [`Error::AlreadyExists`] otherwise.
    ///
    /// If a retry finds the object already present with exactly `data` as content, the earlier
    /// attempt is taken to have succeeded and this returns `Ok`.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<()> {
        let path = parse_key(key)?;
        self.run("put_if_absent", key, |attempt| {
            let (path, data) = (&path, &data);
            async move {
                match self.put_mode(path, data, PutMode::Create).await {
                    Err(Error::AlreadyExists { key }) if attempt > 1 => {
                        match self.get_once(path, &key).await {
                            Ok(existing) if existing == *data => Ok(()),
                            _ => Err(Error::AlreadyExists { key }),
                        }
                    }
                    other => other,
                }
            }
        })
        .await
    }

    async fn put_mode(&self, path: &Path, data: &Bytes, mode: PutMode) -> Result<()> {
        let payload = PutPayload::from_bytes(data.clone());
        let op = match mode {
            PutMode::Create => "put_if_absent",
            _ => "put",
        };
        let local_io = |e: std::io::Error| {
            let err = object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            };
            self.classify(op, path.as_ref(), err)
        };
        if let Some(root) = self.local_root() {
            local::create_private_parents(root, path.as_ref()).map_err(local_io)?;
        }
        self.inner
            .store
            .put_opts(path, payload, PutOptions::from(mode))
            .await
            .map_err(|e| self.classify(op, path.as_ref(), e))?;
        if let Some(root) = self.local_root() {
            local::make_private(root, path.as_ref()).map_err(local_io)?;
        }
        Ok(())
    }

    /// Read the whole object at `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let path = parse_key(key)?;
        self.run("get", key, |_| self.get_once(&path, key)).await
    }

    async fn get_once(&self, path: &Path, key: &str) -> Result<Bytes> {
        let classify = |e| self.classify("get", key, e);
        let result = self.inner.store.get(path).await.map_err(classify)?;
        result.bytes().await.map_err(classify)
    }

    /// Read bytes `range` of the object at `key`; a range reaching past the end is an error.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = parse_key(key)?;
        if range.start > range.end {
            return Err(self.bad_range(key, &range, None));
        }
        if range.is_empty() || self.is_local() {
            // Cheap stat first: validates the range before a local read allocates for it.
            let size = self.head(key).await?.size;
            if range.end > size {
                return Err(self.bad_range(key, &range, Some(size)));
            }
            if range.is_empty() {
                return Ok(Bytes::new());
            }
        }
        let data = self
            .run("get_range", key, |_| async {
                self.inner
                    .store
                    .get_range(&path, range.clone())
                    .await
                    .map_err(|e| self.classify("get_range", key, e))
            })
            .await?;
        // Remote backends silently truncate ranges that run past the end; we do not.
        if data.len() as u64 != range.end - range.start {
            let size = range.start + data.len() as u64;
            return Err(self.bad_range(key, &range, Some(size)));
        }
        Ok(data)
    }

    fn bad_range(&self, key: &str, range: &Range<u64>, size: Option<u64>) -> Error {
        let detail = match size {
            Some(size) => format!("object is only {size} bytes"),
            None => "start is after end".to_owned(),
        };
        Error::Permanent {
            op: "get_range",
            key: key.to_owned(),
            source: format!(
                "invalid byte range {}..{}: {detail}; the object may be truncated or the \
                 index referring to it corrupt",
                range.start, range.end
            )
            .into(),
        }
    }

    /// Size of the object at `key`.
    pub async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = parse_key(key)?;
        let meta = self
            .run("head", key, |_| async {
                self.inner
                    .store
                    .head(&path)
                    .await
                    .map_err(|e| self.classify("head", key, e))
            })
            .await?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: meta.size,
            last_modified: meta.last_modified.into(),
        })
    }

    /// Whether an object exists at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// All objects under directory `prefix` (recursive), keyed relative to the store root and
    /// sorted by key. `""` lists everything; `"data"` and `"data/"` both list `data/...` only,
    /// never a sibling such as `data2/...`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = parse_prefix(prefix)?;
        let shown = if prefix.is_empty() { "/" } else { prefix };
        let mut objects = self
            .run("list", shown, |_| async {
                self.inner
                    .store
                    .list(dir.as_ref())
                    .map_ok(|m| ObjectMeta {
                        key: m.location.to_string(),
                        size: m.size,
                        last_modified: m.last_modified.into(),
                    })
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| self.classify("list", shown, e))
            })
            .await?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Remove the object at `key`; removing a missing object succeeds.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = parse_key(key)?;
        self.run("delete", key, |_| async {
            match self.inner.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.classify("delete", key, e)),
            }
        })
        .await
    }

    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, attempt: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.inner.retry.run(op, key, attempt).await
    }

    fn classify(&self, op: &'static str, key: &str, err: object_store::Error) -> Error {
        self.inner.ctx.classify(op, key, err)
    }
}

/// Validate an object key: non-empty, `/`-separated, no empty, `.` or `..` segments.
fn parse_key(key: &str) -> Result<Path> {
    let invalid = |reason: String| Error::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
        return Err(invalid(
            "keys must be non-empty and must not start or end with '/'".into(),
        ));
    }
    Path::parse(key).map_err(|e| invalid(e.to_string()))
}

/// Validate a list prefix; `""` means the whole store.
fn parse_prefix(prefix: &str) -> Result<Option<Path>> {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.starts_with('/') {
        return Err(Error::InvalidKey {
            key: prefix.to_owned(),
            reason: "prefixes are relative to the store root and must not start with '/'".into(),
        });
    }
    Path::parse(trimmed)
        .map(Some)
        .map_err(|e| Error::InvalidKey {
            key: prefix.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_validation() {
        for bad in ["", "/a", "a/", "a//b", "a/../b", "..", "a/./b"] {
            assert!(
                matches!(parse_key(bad), Err(Error::InvalidKey { .. })),
                "{bad:?} accepted"
            );
        }
        for good in ["a", "data/ab/abcdef", "locks/x.lock", "a b/c-d_e.f"] {
            assert!(parse_key(good).is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn prefix_validation() {
        assert!(matches!(parse_prefix(""), Ok(None)));
        assert!(matches!(parse_prefix("/"), Ok(None)));
        let data = parse_prefix("data/").ok().flatten().map(|p| p.to_string());
        assert_eq!(data.as_deref(), Some("data"));
        assert!(parse_prefix("/data").is_err());
        assert!(parse_prefix("a//b/").is_err());
    }

    /// The repository layer spawns store futures onto tokio, so they must be `Send`.
    #[test]
    fn store_and_futures_are_send() {
        fn assert_send<T: Send + Sync>(_: &T) {}
        fn assert_send_future<F: std::future::Future + Send>(_: F) {}
        let store = Store::memory();
        assert_send(&store);
        assert_send_future(store.put("k", Bytes::new()));
        assert_send_future(store.put_if_absent("k", Bytes::new()));
        assert_send_future(store.get_range("k", 0..1));
        assert_send_future(store.list(""));
        assert_send_future(store.delete("k"));
    }

    #[tokio::test]
    async fn memory_store_passes_conformance() {
        conformance::run_all(&Store::memory()).await;
    }
}
