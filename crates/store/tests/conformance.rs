//! Conformance of every backend, plus failure behaviour that only real backends show.

use std::time::{Duration, Instant};

use bytes::Bytes;
use lifeboat_store::{conformance, Error, RetryPolicy, Store, StoreOptions};

fn open(location: &str) -> Store {
    Store::open(location, &StoreOptions::default())
        .unwrap_or_else(|e| panic!("open {location}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conforms() {
    let store = open("memory://");
    assert!(!store.is_local());
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().display().to_string());
    assert!(store.is_local());
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_via_file_url_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&format!("file://{}", dir.path().display()));
    conformance::run_all(&store).await;
}

/// S3 conformance against `LIFEBOAT_TEST_S3` (e.g. the moto server from S3_TEST_SERVER.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_conforms() {
    let Some(location) = std::env::var("LIFEBOAT_TEST_S3")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        if std::env::var("LIFEBOAT_REQUIRE_S3").is_ok_and(|v| v == "1") {
            panic!(
                "LIFEBOAT_REQUIRE_S3=1 but LIFEBOAT_TEST_S3 is unset: start the S3 test server \
                 (see crates/store/S3_TEST_SERVER.md) and set LIFEBOAT_TEST_S3=s3://bucket/prefix"
            );
        }
        eprintln!("skipping S3 conformance: set LIFEBOAT_TEST_S3");
        return;
    };
    let store = open(&location);
    assert!(!store.is_local());
    assert_eq!(store.local_root(), None);
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn local_root_need_not_exist_until_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("not/yet/here");
    let store = open(&root.display().to_string());
    assert_eq!(store.local_root(), Some(root.as_path()));
    assert!(!root.exists(), "open must not create the root");
    assert!(store.list("").await.map(|l| l.is_empty()).unwrap_or(false));
    store
        .put("data/ab/abc", Bytes::from_static(b"hello"))
        .await
        .unwrap_or_else(|e| panic!("put into missing root: {e}"));
    assert_eq!(
        std::fs::read(root.join("data/ab/abc")).ok(),
        Some(b"hello".to_vec())
    );
}

#[tokio::test]
async fn local_put_leaves_no_temp_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().display().to_string());
    for i in 0..20 {
        let key = format!("data/{:02x}/obj{i}", i % 4);
        store
            .put(&key, Bytes::from(vec![i as u8; 1000]))
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        store
            .put_if_absent(&format!("{key}.once"), Bytes::from_static(b"x"))
            .await
            .unwrap_or_else(|e| panic!("put_if_absent {key}: {e}"));
        // A refused conditional write must also clean up its staging file.
        let again = store
            .put_if_absent(&format!("{key}.once"), Bytes::from_static(b"y"))
            .await;
        assert!(
            matches!(again, Err(Error::AlreadyExists { .. })),
            "{again:?}"
        );
    }
    let listed = store.list("").await.unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(listed.len(), 40, "{listed:?}");
    assert!(listed.iter().all(|m| !m.key.contains('#')), "{listed:?}");

    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = entry.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.contains('#'),
                    "staging file left behind: {}",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn local_path_under_a_regular_file_is_a_clear_permanent_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").expect("write file");
    let store = open(&file.join("repo").display().to_string());

    let err = match store.put("config", Bytes::from_static(b"x")).await {
        Ok(()) => panic!("put under a regular file succeeded"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Permanent { op: "put", .. }), "{err:?}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    eprintln!("error message: {msg}");
    assert!(msg.contains("not a directory"), "unclear message: {msg}");
}

#[tokio::test]
async fn s3_location_without_bucket_is_invalid() {
    for location in ["s3://", "s3:///prefix"] {
        let result = Store::open(location, &StoreOptions::default());
        assert!(
            matches!(result, Err(Error::InvalidLocation { .. })),
            "{location}: {:?}",
            result.err()
        );
    }
}

#[tokio::test]
async fn unreachable_s3_endpoint_fails_fast_and_transient() {
    let options = StoreOptions {
        s3_endpoint: Some("http://127.0.0.1:1".into()),
        // Explicit keys: without them the client would look for instance credentials.
        s3_access_key_id: Some("test".into()),
        s3_secret_access_key: Some("test".into()),
        s3_region: Some("us-east-1".into()),
        ..StoreOptions::default()
    };
    let store = Store::open("s3://lifeboat-unreachable/x", &options)
        .unwrap_or_else(|e| panic!("open: {e}"));
    let started = Instant::now();
    let result = store.get("config").await;
    let elapsed = started.elapsed();
    let err = match result {
        Ok(_) => panic!("get from an unreachable endpoint succeeded"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Transient { op: "get", .. }), "{err:?}");
    let msg = err.to_string();
    eprintln!("error message: {msg}");
    assert!(
        msg.contains("cannot reach S3 endpoint http://127.0.0.1:1")
            && msg.contains("--s3-endpoint"),
        "unclear message: {msg}"
    );
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");

    // With retries off the same failure is reported at once.
    let started = Instant::now();
    let once = store.with_retry(RetryPolicy::none()).head("config").await;
    assert!(matches!(once, Err(Error::Transient { .. })), "{once:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Key slots and data must not be readable by other local users: everything the local
/// backend creates is owner-only (directories 0700, objects 0600), whatever the umask allows.
#[tokio::test]
async fn local_backend_creates_owner_only_files_and_directories() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let store = open(&root.display().to_string());
    store
        .put("config", Bytes::from_static(b"c"))
        .await
        .expect("put");
    store
        .put_if_absent("keys/0123", Bytes::from_static(b"k"))
        .await
        .expect("put_if_absent");
    store
        .put("data/ab/abcdef", Bytes::from_static(b"d"))
        .await
        .expect("put nested");
    // Overwriting keeps the mode too.
    store
        .put("config", Bytes::from_static(b"c2"))
        .await
        .expect("overwrite");
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    for d in ["", "keys", "data", "data/ab"] {
        let p = root.join(d);
        assert_eq!(mode(&p), 0o700, "directory {}", p.display());
    }
    for f in ["config", "keys/0123", "data/ab/abcdef"] {
        let p = root.join(f);
        assert_eq!(mode(&p), 0o600, "object {}", p.display());
    }
}
