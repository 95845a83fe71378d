//! Backend conformance suite: every property the repository layer relies on, runnable against
//! any [`Store`]. Each check works under its own random prefix and removes what it wrote.
//!
//! Checks panic on violation, so they are meant to be called from tests.

use bytes::Bytes;
use rand::RngCore;

use crate::{Error, Store};

/// Run every conformance check against `store`.
pub async fn run_all(store: &Store) {
    round_trip_sizes(store).await;
    get_missing_is_not_found(store).await;
    head_reports_size(store).await;
    exists_reflects_presence(store).await;
    get_range_slices(store).await;
    put_overwrites(store).await;
    put_if_absent_creates_once(store).await;
    concurrent_put_if_absent_has_one_winner(store).await;
    list_is_recursive_sorted_and_relative(store).await;
    list_of_empty_prefix_is_empty(store).await;
    delete_removes_object(store).await;
    delete_missing_is_ok(store).await;
    deep_keys_work(store).await;
    invalid_keys_are_rejected(store).await;
}

/// A unique directory for one check, so concurrent runs and leftovers never collide.
fn scratch_dir() -> String {
    format!("conformance-{:016x}", rand::random::<u64>())
}

/// `len` bytes of random data, so offsets mix-ups show up as content mismatches.
fn random_bytes(len: usize) -> Bytes {
    let mut buf = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut buf);
    Bytes::from(buf)
}

/// Delete everything under `dir` and check it is gone.
async fn cleanup(store: &Store, dir: &str) {
    let objects = store
        .list(dir)
        .await
        .unwrap_or_else(|e| panic!("cleanup list {dir}: {e}"));
    for object in objects {
        store
            .delete(&object.key)
            .await
            .unwrap_or_else(|e| panic!("cleanup delete {}: {e}", object.key));
    }
    let left = store
        .list(dir)
        .await
        .unwrap_or_else(|e| panic!("cleanup relist {dir}: {e}"));
    assert!(left.is_empty(), "cleanup left objects behind: {left:?}");
}

async fn must_put(store: &Store, key: &str, data: Bytes) {
    store
        .put(key, data)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

async fn must_get(store: &Store, key: &str) -> Bytes {
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
}

/// Objects of 0 bytes, 1 byte and 5 MiB come back byte-for-byte.
pub async fn round_trip_sizes(store: &Store) {
    let dir = scratch_dir();
    for (name, len) in [("empty", 0), ("one", 1), ("five-mib", 5 << 20)] {
        let key = format!("{dir}/{name}");
        let data = random_bytes(len);
        must_put(store, &key, data.clone()).await;
        let back = must_get(store, &key).await;
        assert_eq!(back.len(), len, "{key}: length");
        assert!(back == data, "{key}: content differs");
    }
    cleanup(store, &dir).await;
}

/// Reading a key that was never written yields `NotFound`, for get, head and get_range.
pub async fn get_missing_is_not_found(store: &Store) {
    let key = format!("{}/missing", scratch_dir());
    let get = store.get(&key).await;
    assert!(matches!(get, Err(Error::NotFound { .. })), "get: {get:?}");
    let head = store.head(&key).await;
    assert!(
        matches!(head, Err(Error::NotFound { .. })),
        "head: {head:?}"
    );
    let range = store.get_range(&key, 0..1).await;
    assert!(
        range.as_ref().is_err_and(Error::is_not_found),
        "get_range: {range:?}"
    );
}

/// `head` reports the key as given and the exact size.
pub async fn head_reports_size(store: &Store) {
    let dir = scratch_dir();
    let key = format!("{dir}/sized");
    must_put(store, &key, random_bytes(1234)).await;
    let meta = store
        .head(&key)
        .await
        .unwrap_or_else(|e| panic!("head {key}: {e}"));
    assert_eq!(meta.key, key);
    assert_eq!(meta.size, 1234);
    cleanup(store, &dir).await;
}

/// `exists` is true after a put and false after a delete.
pub async fn exists_reflects_presence(store: &Store) {
    let dir = scratch_dir();
    let key = format!("{dir}/here");
    let before = store.exists(&key).await.ok();
    assert_eq!(before, Some(false), "exists before put");
    must_put(store, &key, Bytes::from_static(b"x")).await;
    assert_eq!(
        store.exists(&key).await.ok(),
        Some(true),
        "exists after put"
    );
    cleanup(store, &dir).await;
    assert_eq!(
        store.exists(&key).await.ok(),
        Some(false),
        "exists after delete"
    );
}

/// Middle and tail ranges return exactly those bytes; ranges past the end are errors.
pub async fn get_range_slices(store: &Store) {
    let dir = scratch_dir();
    let key = format!("{dir}/ranged");
    let data = random_bytes(1000);
    must_put(store, &key, data.clone()).await;

    for range in [100..200u64, 900..1000, 0..1000, 999..1000, 500..500] {
        let got = store
            .get_range(&key, range.clone())
            .await
            .unwrap_or_else(|e| panic!("get_range {range:?}: {e}"));
        let want = &data[range.start as usize..range.end as usize];
        assert!(got == want, "get_range {range:?}: content differs");
    }
    for range in [900..1001u64, 1000..1010, 5000..6000, 1001..1001] {
        let got = store.get_range(&key, range.clone()).await;
        assert!(
            matches!(got, Err(Error::Permanent { .. })),
            "get_range {range:?} past end: {got:?}"
        );
    }
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = store.get_range(&key, 20..10).await;
    assert!(backwards.is_err(), "backwards range: {backwards:?}");
    cleanup(store, &dir).await;
}

/// A second `put` replaces the first completely, including with shorter content.
pub async fn put_overwrites(store: &Store) {
    let dir = scratch_dir();
    let key = format!("{dir}/over");
    must_put(store, &key, random_bytes(4096)).await;
    let second = random_bytes(10);
    must_put(store, &key, second.clone()).await;
    assert!(
        must_get(store, &key).await == second,
        "overwrite not visible"
    );
    cleanup(store, &dir).await;
}

/// `put_if_absent` creates, then refuses with `AlreadyExists` and leaves the content alone.
pub async fn put_if_absent_creates_once(store: &Store) {
    let dir = scratch_dir();
    let key = format!("{dir}/once");
    let first = random_bytes(64);
    store
        .put_if_absent(&key, first.clone())
        .await
        .unwrap_or_else(|e| panic!("first put_if_absent: {e}"));
    let again = store.put_if_absent(&key, random_bytes(64)).await;
    assert!(
        matches!(again, Err(Error::AlreadyExists { .. })),
        "second put_if_absent: {again:?}"
    );
    assert!(must_get(store, &key).await == first, "content changed");
    cleanup(store, &dir).await;
}

/// Eight racing `put_if_absent` calls on one key: exactly one wins, and its content stays.
pub async fn concurrent_put_if_absent_has_one_winner(store: &Store) {
    let dir = scratch_dir();
    let key = format!("{dir}/race");
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let (store, key) = (store.clone(), key.clone());
            let data = Bytes::from(vec![i; 32]);
            tokio::spawn(async move { (data.clone(), store.put_if_absent(&key, data).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (data, result) = task.await.unwrap_or_else(|e| panic!("task panicked: {e}"));
        match result {
            Ok(()) => winners.push(data),
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => panic!("racing put_if_absent: unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "expected exactly one winner");
    assert!(
        must_get(store, &key).await == winners[0],
        "winner's data lost"
    );
    cleanup(store, &dir).await;
}

/// Listing is recursive, sorted, root-relative and respects segment boundaries.
pub async fn list_is_recursive_sorted_and_relative(store: &Store) {
    let dir = scratch_dir();
    let inside = [
        "data/b/2",
        "data/a/1",
        "data/a/0",
        "data/top",
        "data/c/d/e/deep",
    ];
    let outside = ["data2/x", "datax", "other/data/y"];
    for (i, name) in inside.iter().chain(&outside).enumerate() {
        must_put(store, &format!("{dir}/{name}"), random_bytes(i)).await;
    }
    let mut want: Vec<String> = inside.iter().map(|n| format!("{dir}/{n}")).collect();
    want.sort();

    for prefix in [format!("{dir}/data/"), format!("{dir}/data")] {
        let listed = store
            .list(&prefix)
            .await
            .unwrap_or_else(|e| panic!("list {prefix}: {e}"));
        let keys: Vec<String> = listed.iter().map(|m| m.key.clone()).collect();
        assert_eq!(keys, want, "list {prefix}");
    }
    let listed = store.list(&format!("{dir}/data")).await.unwrap_or_default();
    let top = listed.iter().find(|m| m.key.ends_with("/data/top"));
    assert_eq!(top.map(|m| m.size), Some(3), "size of listed object");

    let everything = store
        .list("")
        .await
        .unwrap_or_else(|e| panic!("list everything: {e}"));
    let mine = format!("{dir}/");
    let ours = everything
        .iter()
        .filter(|m| m.key.starts_with(&mine))
        .count();
    assert_eq!(ours, inside.len() + outside.len(), "list \"\" is recursive");
    let keys: Vec<&str> = everything.iter().map(|m| m.key.as_str()).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "list \"\" is sorted");
    cleanup(store, &dir).await;
}

/// Listing a prefix with nothing under it is an empty list, not an error.
pub async fn list_of_empty_prefix_is_empty(store: &Store) {
    let dir = scratch_dir();
    let listed = store
        .list(&format!("{dir}/nothing/here/"))
        .await
        .unwrap_or_else(|e| panic!("list of empty prefix: {e}"));
    assert!(listed.is_empty(), "{listed:?}");
}

/// A deleted object reads as `NotFound` and is no longer listed.
pub async fn delete_removes_object(store: &Store) {
    let dir = scratch_dir();
    let key = format!("{dir}/doomed");
    must_put(store, &key, random_bytes(5)).await;
    store
        .delete(&key)
        .await
        .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    let get = store.get(&key).await;
    assert!(
        matches!(get, Err(Error::NotFound { .. })),
        "get after delete: {get:?}"
    );
    let listed = store
        .list(&dir)
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert!(listed.is_empty(), "listed after delete: {listed:?}");
}

/// Deleting something that is not there succeeds (deletes are idempotent).
pub async fn delete_missing_is_ok(store: &Store) {
    let key = format!("{}/never/written", scratch_dir());
    let result = store.delete(&key).await;
    assert!(result.is_ok(), "delete missing: {result:?}");
}

/// Keys with many path segments round-trip and list correctly.
pub async fn deep_keys_work(store: &Store) {
    let dir = scratch_dir();
    let segments: Vec<String> = (0..24).map(|i| format!("s{i:02}")).collect();
    let key = format!("{dir}/{}", segments.join("/"));
    let data = random_bytes(77);
    must_put(store, &key, data.clone()).await;
    assert!(must_get(store, &key).await == data, "deep key content");
    let listed = store
        .list(&format!("{dir}/s00/s01"))
        .await
        .unwrap_or_else(|e| panic!("list deep: {e}"));
    let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, [key.as_str()]);
    cleanup(store, &dir).await;
}

/// Malformed keys are refused with `InvalidKey` before touching the backend.
pub async fn invalid_keys_are_rejected(store: &Store) {
    for key in ["", "/abs", "trailing/", "a//b", "a/../b"] {
        let put = store.put(key, Bytes::from_static(b"x")).await;
        assert!(
            matches!(put, Err(Error::InvalidKey { .. })),
            "put {key:?}: {put:?}"
        );
        let get = store.get(key).await;
        assert!(
            matches!(get, Err(Error::InvalidKey { .. })),
            "get {key:?}: {get:?}"
        );
    }
}
