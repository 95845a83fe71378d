//! In-process tests of the repository engines as a long-running service drives them: typed
//! lock guards, cancellation through `CancelToken`, classified errors, and the promise that a
//! cancelled or failed engine commits nothing half-done (and that an interrupted backup keeps
//! the packs it already uploaded).
//!
//! Every repository uses small chunker and pack sizes so a few MiB of data make many packs,
//! and the insecure test KDF. Source data comes from seeded RNGs. Mid-run cancellation is
//! triggered from the engine's own `Progress::advance` callback after a byte budget, so no test
//! sleeps or races a timer.
//!
//! Some tests pin bugs found while writing these tests (fixed since): they failed on
//! the engines they were written against.

use std::collections::BTreeSet;

use crate::roundtrip::assert_same;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use lifeboat_repo::backup::{BackupResult, StdinSource};
use lifeboat_repo::check::{self, CheckReport, ReadData, Severity};
use lifeboat_repo::chunker::ChunkerParams;
use lifeboat_repo::keys::KdfParams;
use lifeboat_repo::lock::{self, SharedLock, WriteLock};
use lifeboat_repo::progress::{NoProgress, Progress};
use lifeboat_repo::prune::{self, PruneOptions};
use lifeboat_repo::retention::{GroupBy, Policy};
use lifeboat_repo::snapshot::Snapshot;
use lifeboat_repo::{
    backup, copy, forget, restore, BackupOptions, Error, InitOptions, Repository, RestoreOptions,
};
use lifeboat_store::Store;
use lifeboat_types::{CancelToken, ErrorClass, SnapshotId};
use rand::{RngCore, SeedableRng};
use tokio::runtime::Runtime;

// ---- helpers ---------------------------------------------------------------------------------

const PASSWORD: &[u8] = b"engine test password";
/// Target pack size: 4 MiB of data make ~32 packs.
const PACK_SIZE: u32 = 128 * 1024;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn small_init() -> InitOptions {
    InitOptions {
        chunker: Some(ChunkerParams {
            min_size: 8 * 1024,
            avg_size: 16 * 1024,
            max_size: 32 * 1024,
        }),
        pack_size_bytes: Some(PACK_SIZE),
        kdf: Some(KdfParams::insecure_for_tests()),
        ..Default::default()
    }
}

fn init_memory(rt: &Runtime) -> Repository {
    Repository::init(Store::memory(), rt.handle().clone(), PASSWORD, small_init()).expect("init")
}

fn init_local(rt: &Runtime, dir: &Path) -> Repository {
    let store = Store::open(dir.to_str().expect("utf-8 path"), &Default::default()).expect("open");
    Repository::init(store, rt.handle().clone(), PASSWORD, small_init()).expect("init")
}

fn shared_lock(repo: &Repository) -> SharedLock {
    repo.lock_shared("engines test", &Default::default())
        .expect("shared lock")
}

/// Deterministic, incompressible bytes.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Writes `bytes` at `path` with a fixed mode and mtime.
fn write_file(path: &Path, bytes: &[u8], mode: u32, mtime: i64) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir -p");
    fs::write(path, bytes).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    let t = nix::sys::time::TimeSpec::new(mtime, 987_654_321);
    nix::sys::stat::utimensat(
        None,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

/// A small tree with nested directories, modes, mtimes, an empty file, a symlink and files
/// spanning several chunks; `seed` picks the content.
fn make_tree(root: &Path, seed: u64) {
    let sizes = [0usize, 1, 700, 20_000, 90_000, 300_000];
    for (i, size) in sizes.iter().enumerate() {
        let dir = root
            .join(format!("d{}", i % 3))
            .join(format!("sub{}", i % 2));
        let mode = [0o644, 0o600, 0o755][i % 3];
        write_file(
            &dir.join(format!("f{i}")),
            &random_bytes(seed * 100 + i as u64, *size),
            mode,
            1_600_000_000 + i as i64 * 1000,
        );
    }
    std::os::unix::fs::symlink("d0/sub0/f0", root.join("link")).expect("symlink");
    fs::set_permissions(root.join("d1"), fs::Permissions::from_mode(0o700)).expect("chmod dir");
}

/// Backs up `paths` under `lock` with default options and two threads.
fn backup_paths(repo: &Repository, lock: &dyn WriteLock, paths: &[&Path]) -> BackupResult {
    let mut o = BackupOptions::new(paths.iter().map(|p| p.to_path_buf()).collect());
    o.threads = 2;
    backup::run(repo, lock, &o, &NoProgress).expect("backup")
}

/// Where a restore into `target` puts source path `src`.
fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").expect("absolute source"))
}

/// Restores `snap` into a fresh directory below `tmp` and asserts `src` came back identical.
fn assert_restores(repo: &Repository, snap: &Snapshot, src: &Path, tmp: &Path) {
    let target = tempfile::tempdir_in(tmp).expect("restore dir");
    let mut o = RestoreOptions::new(target.path().to_path_buf());
    o.verify = true;
    let s = restore::run(repo, snap, &o, &NoProgress).expect("restore");
    assert!(s.errors.is_empty(), "restore errors: {:?}", s.errors);
    assert_same(src, &restored(target.path(), src));
}

/// Objects under `prefix` (e.g. `snapshots/`, `index/`, `verified/`).
fn count(repo: &Repository, prefix: &str) -> usize {
    repo.block_on(repo.store().list(prefix))
        .expect("list")
        .len()
}

fn errors_of(r: &CheckReport) -> Vec<String> {
    r.findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{}: {}", f.object, f.message))
        .collect()
}

/// A full check (every pack read back) finds no error-level problem.
fn assert_check_clean(repo: &Repository) -> CheckReport {
    let r = check::run(repo, ReadData::All, &NoProgress).expect("check");
    assert!(r.is_ok(), "check found errors: {:#?}", errors_of(&r));
    r
}

/// Every snapshot in the repository, oldest first.
fn snapshots(repo: &Repository) -> Vec<(SnapshotId, Snapshot)> {
    let (list, damaged) = repo.list_snapshots().expect("list snapshots");
    assert!(damaged.is_empty(), "damaged snapshots: {damaged:?}");
    list
}

/// Asserts `r` is a cancellation, classified as such.
#[track_caller]
fn assert_cancelled<T: std::fmt::Debug>(r: lifeboat_repo::Result<T>) {
    match r {
        Err(e @ Error::Cancelled) => assert_eq!(e.class(), ErrorClass::Cancelled),
        other => panic!("expected Error::Cancelled, got {other:?}"),
    }
}

/// Cancels `token` once `advance` has reported at least `after` bytes.
struct CancelAfter {
    token: CancelToken,
    after: u64,
    seen: AtomicU64,
}

impl CancelAfter {
    fn new(token: &CancelToken, after: u64) -> Self {
        CancelAfter {
            token: token.clone(),
            after,
            seen: AtomicU64::new(0),
        }
    }

    /// Bytes reported so far.
    fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }
}

impl Progress for CancelAfter {
    fn advance(&self, bytes: u64) {
        if self.seen.fetch_add(bytes, Ordering::SeqCst) + bytes >= self.after {
            self.token.cancel();
        }
    }
}

/// A cancelled token.
fn cancelled() -> CancelToken {
    let t = CancelToken::new();
    t.cancel();
    t
}

/// Files whose name marks a restore's temporary file, anywhere below `dir`.
fn restore_temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            if e.file_type().expect("file type").is_dir() {
                stack.push(p);
            } else if e
                .file_name()
                .to_string_lossy()
                .contains(".lifeboat-restore")
            {
                out.push(p);
            }
        }
    }
    out
}

/// Regular files below `dir`.
fn regular_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let t = e.file_type().expect("file type");
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                n += 1;
            }
        }
    }
    n
}

/// A repository with two snapshots of one directory whose packs are about half garbage once
/// the first snapshot is forgotten: `keep/*` and `drop/*` files are interleaved in the packs,
/// and the second snapshot no longer has `drop/`. Returns (src dir, first id, second snapshot).
fn repo_with_garbage(repo: &Repository, tmp: &Path) -> (PathBuf, SnapshotId, Snapshot) {
    let src = tmp.join("src");
    for i in 0..24u64 {
        let mtime = 1_700_000_000 + i as i64;
        write_file(
            &src.join(format!("keep/{i:02}")),
            &random_bytes(1000 + i, 40_000),
            0o644,
            mtime,
        );
        write_file(
            &src.join(format!("drop/{i:02}")),
            &random_bytes(2000 + i, 40_000),
            0o644,
            mtime,
        );
    }
    let lock = shared_lock(repo);
    let first = backup_paths(repo, &lock, &[&src]);
    fs::remove_dir_all(src.join("drop")).expect("rm drop/");
    let second = backup_paths(repo, &lock, &[&src]);
    let removed = forget::remove_snapshots(
        repo,
        &lock,
        &[first.id],
        &CancelToken::new(),
        &mut |_, _| {},
    )
    .expect("forget");
    assert_eq!(removed.removed, vec![first.id]);
    (src, first.id, second.snapshot)
}

// ---- 1. round trips --------------------------------------------------------------------------

#[test]
fn backup_restore_round_trip_memory_and_local() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 1);
    let local = init_local(&rt, &tmp.path().join("repo"));
    for repo in [init_memory(&rt), local] {
        let lock = shared_lock(&repo);
        let first = backup_paths(&repo, &lock, &[&src]);
        let s = &first.snapshot.summary;
        assert_eq!((s.errors, s.files_new, s.files_unchanged), (0, 6, 0));
        assert_eq!(s.total_bytes, 1 + 700 + 20_000 + 90_000 + 300_000);
        assert_eq!(snapshots(&repo).len(), 1);
        assert_restores(&repo, &first.snapshot, &src, tmp.path());

        // Incremental: nothing read, nothing stored but the snapshot, same data.
        let second = backup_paths(&repo, &lock, &[&src]);
        let s = &second.snapshot.summary;
        assert_eq!((s.files_new, s.files_unchanged, s.bytes_read), (0, 6, 0));
        assert_eq!(second.snapshot.parent, Some(first.id));
        assert_restores(&repo, &second.snapshot, &src, tmp.path());
        assert_check_clean(&repo);
    }
}

#[test]
fn check_reports_a_corrupted_pack() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 2);
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    let done = backup_paths(&repo, &lock, &[&src]);
    let r = assert_check_clean(&repo);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert!(r.packs_read > 1 && r.packs_read == r.packs);

    // Flip one byte in the middle of the largest pack (blob data, not the trailer).
    let (pack, size) = repo
        .list_packs()
        .unwrap()
        .into_iter()
        .max_by_key(|(_, s)| *s)
        .unwrap();
    let key = lifeboat_repo::pack::pack_key(&pack);
    let mut bytes = repo.block_on(repo.store().get(&key)).unwrap().to_vec();
    bytes[size as usize / 2] ^= 0x40;
    repo.block_on(repo.store().put(&key, bytes.into())).unwrap();

    let r = check::run(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(!r.is_ok(), "a damaged pack went unnoticed");
    let bad: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert!(bad.iter().all(|f| f.object == key), "{bad:#?}");
    assert!(
        bad.iter().any(|f| f.snapshots.contains(&done.id.short())),
        "no finding names the affected snapshot: {bad:#?}"
    );
}

#[test]
fn prune_after_forget_reclaims_space_and_keeps_the_rest() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_local(&rt, &tmp.path().join("repo"));
    let (src, _, kept) = repo_with_garbage(&repo, tmp.path());
    let packs_before = repo.list_packs().unwrap();
    let bytes_before: u64 = packs_before.iter().map(|p| p.1).sum();

    let ex = repo
        .lock_exclusive("prune", &Default::default())
        .expect("exclusive lock");
    let opts = PruneOptions {
        max_unused: 0.0,
        ..Default::default()
    };
    let plan = prune::dry_run(&repo, &opts, &NoProgress).unwrap();
    assert!(plan.dry_run && plan.bytes_deleted > 0);
    assert_eq!(
        repo.list_packs().unwrap(),
        packs_before,
        "dry run changed packs"
    );

    let report = prune::run(&repo, &ex, &opts, &NoProgress).unwrap();
    drop(ex);
    let bytes_after: u64 = repo.list_packs().unwrap().iter().map(|p| p.1).sum();
    assert!(report.bytes_freed > 0, "{report:?}");
    assert_eq!(bytes_before as i64 - bytes_after as i64, report.bytes_freed);
    // 24 × 40 kB of 48 × 40 kB is garbage: at least a third must go.
    assert!(
        bytes_after < bytes_before * 2 / 3,
        "{bytes_before} → {bytes_after}"
    );
    let r = assert_check_clean(&repo);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(snapshots(&repo).len(), 1);
    assert_restores(&repo, &kept, &src, tmp.path());
}

#[test]
fn copy_to_a_related_repository() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    make_tree(&src_dir, 3);
    let src = init_memory(&rt);
    let lock = shared_lock(&src);
    let first = backup_paths(&src, &lock, &[&src_dir]);
    write_file(
        &src_dir.join("d2/new"),
        &random_bytes(77, 50_000),
        0o640,
        1_650_000_000,
    );
    let second = backup_paths(&src, &lock, &[&src_dir]);

    // An unrelated target names blobs differently: refused.
    let unrelated = init_memory(&rt);
    let ulock = shared_lock(&unrelated);
    let selected = snapshots(&src);
    match copy::run(
        &src,
        &unrelated,
        &ulock,
        &selected,
        &CancelToken::new(),
        &NoProgress,
    ) {
        Err(e @ Error::UnrelatedRepositories { .. }) => {
            assert_eq!(e.class(), ErrorClass::InvalidInput)
        }
        other => panic!("expected UnrelatedRepositories, got {other:?}"),
    }
    assert_eq!(count(&unrelated, "snapshots/"), 0);

    // What `lifeboat init --copy-chunker-params --from SRC` does.
    let dst = Repository::init(
        Store::memory(),
        rt.handle().clone(),
        b"another password",
        InitOptions {
            copy_chunker_from: Some(src.config().clone()),
            related_key: Some(src.key().clone()),
            ..small_init()
        },
    )
    .unwrap();
    let dlock = shared_lock(&dst);
    let report = copy::run(
        &src,
        &dst,
        &dlock,
        &selected,
        &CancelToken::new(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(report.copied.len(), 2);
    assert!(report.bytes_sent > 0);
    let copies = snapshots(&dst);
    assert_eq!(copies.len(), 2);
    let originals: BTreeSet<_> = copies.iter().map(|(_, s)| s.original.unwrap()).collect();
    assert_eq!(originals, BTreeSet::from([first.id, second.id]));
    // The parent link is carried over to the target's id of the first copy.
    let copy_of = |id| copies.iter().find(|(_, s)| s.original == Some(id)).unwrap();
    assert_eq!(copy_of(second.id).1.parent, Some(copy_of(first.id).0));
    let r = assert_check_clean(&dst);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    // The latest copy restores the current tree (the first restores an older one).
    assert_restores(&dst, &copy_of(second.id).1, &src_dir, tmp.path());

    // Idempotent: a second copy sends nothing.
    let again = copy::run(
        &src,
        &dst,
        &dlock,
        &selected,
        &CancelToken::new(),
        &NoProgress,
    )
    .unwrap();
    assert!(again.copied.is_empty());
    assert_eq!((again.snapshots_present, again.bytes_sent), (2, 0));
}

#[test]
fn forget_by_policy_removes_exactly_the_planned_snapshots() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 4);
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    let mut ids = Vec::new();
    for day in 0..5 {
        let mut o = BackupOptions::new(vec![src.clone()]);
        o.time = Some(Timestamp::from_second(1_700_000_000 + day * 86_400).unwrap());
        ids.push(backup::run(&repo, &lock, &o, &NoProgress).unwrap().id);
    }
    let policy = Policy {
        keep_last: 2,
        ..Default::default()
    };
    let plan = forget::plan_policy(
        &repo,
        &policy,
        GroupBy::default(),
        &jiff::tz::TimeZone::UTC,
        &|_| true,
    )
    .unwrap();
    assert!(plan.unreadable.is_empty());
    let doomed: BTreeSet<_> = plan.doomed().into_iter().collect();
    assert_eq!(doomed, ids[..3].iter().copied().collect());

    let mut seen = Vec::new();
    let removal = forget::remove_snapshots(
        &repo,
        &lock,
        &plan.doomed(),
        &CancelToken::new(),
        &mut |id, e| seen.push((*id, e.is_none())),
    )
    .unwrap();
    assert!(removal.failed.is_empty());
    assert_eq!(removal.removed, plan.doomed());
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(_, ok)| *ok));
    let left: Vec<_> = snapshots(&repo).into_iter().map(|(id, _)| id).collect();
    assert_eq!(left, ids[3..].to_vec());
    assert_check_clean(&repo);
}

// ---- 2. cancellation -------------------------------------------------------------------------

#[test]
fn backup_cancelled_before_start_writes_nothing() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 5);
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    let mut o = BackupOptions::new(vec![src.clone()]);
    o.cancel = cancelled();
    assert_cancelled(backup::run(&repo, &lock, &o, &NoProgress));
    assert_eq!(count(&repo, "snapshots/"), 0);
    assert_eq!(count(&repo, "data/"), 0);
    assert_eq!(count(&repo, "index/"), 0);
}

#[test]
fn backup_cancelled_mid_run_writes_no_snapshot_and_leaves_a_clean_repository() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..16u64 {
        write_file(
            &src.join(format!("f{i:02}")),
            &random_bytes(500 + i, 200_000),
            0o644,
            1_600_000_000,
        );
    }
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    let mut o = BackupOptions::new(vec![src.clone()]);
    o.threads = 2;
    let progress = CancelAfter::new(&o.cancel, 1 << 20);
    assert_cancelled(backup::run(&repo, &lock, &o, &progress));
    assert!(progress.seen() < 16 * 200_000, "cancel came too late");
    assert_eq!(count(&repo, "snapshots/"), 0);
    let r = assert_check_clean(&repo);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    // The repository accepts the next backup.
    let done = backup_paths(&repo, &lock, &[&src]);
    assert_restores(&repo, &done.snapshot, &src, tmp.path());
}

#[test]
fn restore_cancelled_leaves_no_temp_files() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..12u64 {
        write_file(
            &src.join(format!("f{i:02}")),
            &random_bytes(700 + i, 150_000),
            0o644,
            1_600_000_000,
        );
    }
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    let done = backup_paths(&repo, &lock, &[&src]);
    assert!(repo.list_packs().unwrap().len() > 4);

    // Before start.
    let target = tmp.path().join("before");
    let mut o = RestoreOptions::new(target.clone());
    o.cancel = cancelled();
    assert_cancelled(restore::run(&repo, &done.snapshot, &o, &NoProgress));
    assert_eq!(restore_temp_files(&target), Vec::<PathBuf>::new());
    assert_eq!(regular_files(&target), 0);

    // Mid-run: one worker, cancelled after the first blobs of the first pack.
    let target = tmp.path().join("mid");
    let mut o = RestoreOptions::new(target.clone());
    o.threads = 1;
    let progress = CancelAfter::new(&o.cancel, 1);
    assert_cancelled(restore::run(&repo, &done.snapshot, &o, &progress));
    assert!(progress.seen() > 0);
    assert_eq!(restore_temp_files(&target), Vec::<PathBuf>::new());

    // The same target then restores completely.
    let o = RestoreOptions::new(target.clone());
    let s = restore::run(&repo, &done.snapshot, &o, &NoProgress).unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_same(&src, &restored(&target, &src));
    assert_eq!(restore_temp_files(&target), Vec::<PathBuf>::new());
}

#[test]
fn check_cancelled_records_nothing() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 6);
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    backup_paths(&repo, &lock, &[&src]);
    assert!(repo.list_packs().unwrap().len() > 2);

    assert_cancelled(check::run_with(
        &repo,
        ReadData::All,
        Some(&lock),
        &cancelled(),
        &NoProgress,
    ));
    assert_eq!(count(&repo, "verified/"), 0);

    let token = CancelToken::new();
    let progress = CancelAfter::new(&token, 1);
    assert_cancelled(check::run_with(
        &repo,
        ReadData::All,
        Some(&lock),
        &token,
        &progress,
    ));
    assert!(progress.seen() > 0);
    assert_eq!(count(&repo, "verified/"), 0);

    // Uncancelled, the same call does record: the zero counts above mean something.
    let r = check::run_with(
        &repo,
        ReadData::All,
        Some(&lock),
        &CancelToken::new(),
        &NoProgress,
    )
    .unwrap();
    assert!(r.is_ok());
    assert_eq!(count(&repo, "verified/"), 1);
    assert_eq!(r.packs_never_verified, 0);
}

/// A structure-only check (no pack data read) must honour a cancel too: it walks every
/// snapshot's trees, which is the long part on a big repository.
#[test]
fn check_structure_only_cancelled_before_start() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 12);
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    backup_paths(&repo, &lock, &[&src]);
    assert_cancelled(check::run_with(
        &repo,
        ReadData::None,
        None,
        &cancelled(),
        &NoProgress,
    ));
}

/// Prune cancelled before it starts and in the middle of repacking: nothing used is lost,
/// every snapshot restores, a full check is clean, and the next prune finishes the job.
#[test]
fn prune_cancelled_before_and_during_repack_keeps_the_repository_intact() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_local(&rt, &tmp.path().join("repo"));
    let (src, _, kept) = repo_with_garbage(&repo, tmp.path());
    let packs_before = repo.list_packs().unwrap();
    let index_before = count(&repo, "index/");
    let ex = repo.lock_exclusive("prune", &Default::default()).unwrap();

    let opts = PruneOptions {
        max_unused: 0.0,
        cancel: cancelled(),
        ..Default::default()
    };
    assert_cancelled(prune::run(&repo, &ex, &opts, &NoProgress));
    let mut after = repo.list_packs().unwrap();
    after.sort();
    let mut before = packs_before.clone();
    before.sort();
    assert_eq!(after, before, "a pre-cancelled prune changed packs");
    assert_eq!(count(&repo, "index/"), index_before);

    let opts = PruneOptions {
        max_unused: 0.0,
        ..Default::default()
    };
    let progress = CancelAfter::new(&opts.cancel, 1);
    assert_cancelled(prune::run(&repo, &ex, &opts, &progress));
    assert!(progress.seen() > 0, "prune never got to repacking");
    assert_check_clean(&repo);
    assert_restores(&repo, &kept, &src, tmp.path());

    let report = prune::run(
        &repo,
        &ex,
        &PruneOptions {
            max_unused: 0.0,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(report.bytes_freed > 0);
    let r = assert_check_clean(&repo);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_restores(&repo, &kept, &src, tmp.path());
}

#[test]
fn copy_cancelled_before_and_mid_run_leaves_a_clean_target_and_resumes() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let src = init_memory(&rt);
    let lock = shared_lock(&src);
    for round in 0..3u64 {
        write_file(
            &src_dir.join(format!("r{round}")),
            &random_bytes(900 + round, 600_000),
            0o644,
            1_600_000_000,
        );
        backup_paths(&src, &lock, &[&src_dir]);
    }
    let selected = snapshots(&src);
    let dst = Repository::init(
        Store::memory(),
        rt.handle().clone(),
        PASSWORD,
        InitOptions {
            copy_chunker_from: Some(src.config().clone()),
            related_key: Some(src.key().clone()),
            ..small_init()
        },
    )
    .unwrap();
    let dlock = shared_lock(&dst);

    assert_cancelled(copy::run(
        &src,
        &dst,
        &dlock,
        &selected,
        &cancelled(),
        &NoProgress,
    ));
    assert_eq!(count(&dst, "snapshots/"), 0);
    assert_eq!(count(&dst, "data/"), 0);

    // Cancelled inside the second snapshot's transfer (the first sends ~600 kB).
    let token = CancelToken::new();
    let progress = CancelAfter::new(&token, 900_000);
    assert_cancelled(copy::run(&src, &dst, &dlock, &selected, &token, &progress));
    let partial = snapshots(&dst);
    assert_eq!(
        partial.len(),
        1,
        "the cancel should land in the second snapshot"
    );
    assert_eq!(partial[0].1.original, Some(selected[0].0));
    assert_check_clean(&dst);
    assert_restores(&dst, &partial[0].1, &src_dir.join("r0"), tmp.path());
    // What was sent of the second snapshot before the cancel is packed and indexed.
    let sent_before: u64 = dst.list_packs().unwrap().iter().map(|p| p.1).sum();
    assert!(sent_before > 600_000 + 200_000, "sent only {sent_before}");
    let index = dst.load_index().unwrap().index;
    assert!(dst
        .list_packs()
        .unwrap()
        .iter()
        .all(|(p, _)| index.has_pack(p)));

    let rest = copy::run(
        &src,
        &dst,
        &dlock,
        &selected,
        &CancelToken::new(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!((rest.copied.len(), rest.snapshots_present), (2, 1));
    assert_eq!(snapshots(&dst).len(), 3);
    // The rerun sends only what is still missing: about 1.8 MB minus what the target holds.
    let missing = 3 * 600_000 - sent_before;
    assert!(
        rest.bytes_sent < missing + 64 * 1024,
        "resent: {} although only ~{missing} were missing",
        rest.bytes_sent
    );
    let r = assert_check_clean(&dst);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    let latest = &snapshots(&dst).last().unwrap().1.clone();
    assert_restores(&dst, latest, &src_dir, tmp.path());
}

#[test]
fn forget_cancelled_stops_between_batches() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 7);
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    let base = backup_paths(&repo, &lock, &[&src]).snapshot;
    let mut ids = Vec::new();
    for i in 0..99i64 {
        let mut s = base.clone();
        s.time = Timestamp::from_second(1_600_000_000 + i).unwrap();
        ids.push(repo.save_snapshot(&lock, &s).unwrap());
    }

    let mut calls = 0;
    assert_cancelled(forget::remove_snapshots(
        &repo,
        &lock,
        &ids,
        &cancelled(),
        &mut |_, _| calls += 1,
    ));
    assert_eq!((calls, count(&repo, "snapshots/")), (0, 100));

    // Cancelled while the first batch runs: the batch completes, the rest stays.
    let token = CancelToken::new();
    let mut removed = Vec::new();
    assert_cancelled(forget::remove_snapshots(
        &repo,
        &lock,
        &ids,
        &token,
        &mut |id, e| {
            assert!(e.is_none());
            removed.push(*id);
            token.cancel();
        },
    ));
    assert!(!removed.is_empty() && removed.len() < ids.len());
    let left: BTreeSet<_> = repo
        .list_snapshots_checked()
        .unwrap()
        .into_iter()
        .map(|(id, r)| {
            r.expect("remaining snapshot readable");
            id
        })
        .collect();
    assert_eq!(left.len(), 100 - removed.len());
    assert!(removed.iter().all(|id| !left.contains(id)));
    assert!(left.contains(&ids[98]));
    assert_check_clean(&repo);
}

// ---- 3. interrupted backups keep their work --------------------------------------------------

/// Size of the incompressible source in the interrupted-backup tests: ~32 packs.
const BIG: usize = 4 << 20;

/// Asserts that a cancelled backup left only indexed packs (and at least `min_bytes` of
/// them); returns the bytes of those packs.
fn assert_uploads_indexed(repo: &Repository, min_bytes: u64) -> u64 {
    assert_eq!(
        count(repo, "snapshots/"),
        0,
        "a cancelled backup wrote a snapshot"
    );
    let packs = repo.list_packs().unwrap();
    let bytes: u64 = packs.iter().map(|p| p.1).sum();
    assert!(
        bytes >= min_bytes,
        "only {bytes} bytes uploaded before the cancel took effect"
    );
    assert!(count(repo, "index/") > 0, "uploaded packs were not indexed");
    let index = repo.load_index().unwrap().index;
    let unindexed: Vec<_> = packs.iter().filter(|(p, _)| !index.has_pack(p)).collect();
    assert!(
        unindexed.is_empty(),
        "{} packs not indexed",
        unindexed.len()
    );
    bytes
}

#[test]
fn interrupted_backup_indexes_its_packs_and_the_next_backup_reuses_them() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_file(
        &src.join("big"),
        &random_bytes(42, BIG),
        0o644,
        1_600_000_000,
    );
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);

    let mut o = BackupOptions::new(vec![src.clone()]);
    o.threads = 2;
    let progress = CancelAfter::new(&o.cancel, BIG as u64 / 2);
    assert_cancelled(backup::run(&repo, &lock, &o, &progress));
    // At most ~1 MiB is between the reader and the store (queues and open packs).
    let uploaded = assert_uploads_indexed(&repo, BIG as u64 / 4);

    let second = backup_paths(&repo, &lock, &[&src]);
    let stored = second.snapshot.summary.bytes_stored;
    assert!(
        stored + uploaded / 2 < BIG as u64,
        "second backup stored {stored} of {BIG} bytes although {uploaded} were already uploaded"
    );
    assert_check_clean(&repo);
    assert_restores(&repo, &second.snapshot, &src, tmp.path());
}

/// The same through `--stdin-from-command`: a cancelled stream backup must index its uploads.
#[test]
fn interrupted_stream_backup_indexes_its_packs() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dump");
    fs::write(&file, random_bytes(43, BIG)).unwrap();
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    let stream = |cancel: &CancelToken| {
        let mut o = BackupOptions::new(vec![]);
        o.threads = 2;
        o.cancel = cancel.clone();
        o.stdin = Some((
            "dump".into(),
            StdinSource::Command(vec!["cat".into(), file.to_str().unwrap().into()]),
        ));
        o
    };
    let token = CancelToken::new();
    let progress = CancelAfter::new(&token, BIG as u64 / 2);
    assert_cancelled(backup::run(&repo, &lock, &stream(&token), &progress));
    let uploaded = assert_uploads_indexed(&repo, BIG as u64 / 4);

    let second = backup::run(&repo, &lock, &stream(&CancelToken::new()), &NoProgress).unwrap();
    let stored = second.snapshot.summary.bytes_stored;
    assert!(stored + uploaded / 2 < BIG as u64, "stored {stored} again");
}

/// The same for a tree with more files than the walker's queue holds, cancelled while the
/// walker is still queueing files.
#[test]
fn interrupted_backup_of_a_large_tree_indexes_its_packs() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // 2,000 files: twice the walker's job queue, so the walk is far from done at the cancel.
    let files = 2000;
    for i in 0..files {
        let p = src.join(format!("d{}/f{i:04}", i % 10));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, random_bytes(10_000 + i as u64, 2048)).unwrap();
    }
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    let mut o = BackupOptions::new(vec![src.clone()]);
    o.threads = 2;
    let progress = CancelAfter::new(&o.cancel, 1 << 20);
    assert_cancelled(backup::run(&repo, &lock, &o, &progress));
    assert_uploads_indexed(&repo, 1 << 18);
}

// ---- 4. unreadable source files --------------------------------------------------------------

/// An unreadable file is an error, not a new file, on the first run and again on the next.
///
/// The unreadable file is this process's `/proc/<pid>/mem`: `lstat` says it is a regular
/// file, opening it succeeds, and reading from offset 0 fails with EIO (nothing is mapped
/// there) — for root too, which ignores `chmod 000`.
#[test]
fn unreadable_file_is_counted_as_an_error_not_as_new() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    write_file(&good, &random_bytes(8, 30_000), 0o644, 1_600_000_000);
    let bad = PathBuf::from(format!("/proc/{}/mem", std::process::id()));
    assert!(fs::symlink_metadata(&bad).unwrap().is_file());
    assert!(
        fs::read(&bad).is_err(),
        "{} is readable here",
        bad.display()
    );

    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    for run in ["first", "second"] {
        let mut o = BackupOptions::new(vec![good.clone(), bad.clone()]);
        o.threads = 2;
        let done = backup::run(&repo, &lock, &o, &NoProgress).unwrap();
        let s = &done.snapshot.summary;
        assert_eq!(s.errors, 1, "{run} run: {s:?}");
        assert_eq!(
            s.files_new + s.files_changed + s.files_unchanged,
            1,
            "{run} run counted the unreadable file: {s:?}"
        );
        if run == "first" {
            assert_eq!(s.files_new, 1, "{s:?}");
        } else {
            assert_eq!((s.files_new, s.files_unchanged), (0, 1), "{s:?}");
        }
        assert!(
            done.warnings.iter().any(|w| w.contains("/mem")),
            "{:?}",
            done.warnings
        );
    }
}

// ---- 5. typed locks, password changes --------------------------------------------------------

#[test]
fn a_lock_of_another_repository_is_refused() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 9);
    let a = init_local(&rt, &tmp.path().join("a"));
    let b = init_local(&rt, &tmp.path().join("b"));
    let lock_a = shared_lock(&a);
    let snap = backup_paths(&a, &lock_a, &[&src]).snapshot;

    match b.save_snapshot(&lock_a, &snap) {
        Err(e @ Error::LockMismatch { .. }) => assert_eq!(e.class(), ErrorClass::InvalidInput),
        other => panic!("expected LockMismatch, got {other:?}"),
    }
    let mut o = BackupOptions::new(vec![src.clone()]);
    o.threads = 2;
    match backup::run(&b, &lock_a, &o, &NoProgress) {
        Err(Error::LockMismatch { .. }) => {}
        other => panic!("expected LockMismatch, got {other:?}"),
    }
    assert_eq!((count(&b, "snapshots/"), count(&b, "index/")), (0, 0));
}

/// Two in-memory repositories are different repositories too.
#[test]
fn a_lock_of_another_memory_repository_is_refused() {
    let rt = runtime();
    let a = init_memory(&rt);
    let b = init_memory(&rt);
    let lock_a = shared_lock(&a);
    let snap = Snapshot {
        version: lifeboat_repo::snapshot::SNAPSHOT_VERSION,
        time: Timestamp::from_second(1_600_000_000).unwrap(),
        host: "h".into(),
        username: "u".into(),
        paths: vec!["/x".into()],
        tags: vec![],
        parent: None,
        tree: lifeboat_types::BlobId([0; 32]),
        original: None,
        summary: Default::default(),
    };
    let r = b.save_snapshot(&lock_a, &snap);
    assert!(matches!(r, Err(Error::LockMismatch { .. })), "{r:?}");
    assert_eq!(count(&b, "snapshots/"), 0);
}

#[test]
fn unlock_of_a_live_lock_fences_its_holder() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 10);
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    let done = backup_paths(&repo, &lock, &[&src]);

    let u = lock::unlock(&repo, false).unwrap();
    assert!(u.removed.is_empty(), "a live lock was judged stale");
    let u = lock::unlock(&repo, true).unwrap();
    assert_eq!(u.removed, vec![lock.object().to_owned()]);
    assert_eq!(count(&repo, "locks/"), 0);

    let lost = |r: lifeboat_repo::Result<()>| match r {
        Err(e @ Error::LockLost { .. }) => assert_eq!(e.class(), ErrorClass::Conflict),
        other => panic!("expected LockLost, got {other:?}"),
    };
    let objects =
        |repo: &Repository| ["snapshots/", "index/", "locks/", "data/"].map(|p| count(repo, p));
    let before = objects(&repo);
    lost(repo.save_snapshot(&lock, &done.snapshot).map(drop));
    lost(
        forget::remove_snapshots(
            &repo,
            &lock,
            &[done.id],
            &CancelToken::new(),
            &mut |_, _| {},
        )
        .map(drop),
    );
    assert_eq!(before, objects(&repo), "a write went through a lost lock");

    // A backup under the lost lock fails and commits nothing (no index, no snapshot).
    write_file(&src.join("more"), &random_bytes(11, 50_000), 0o644, 1);
    let mut o = BackupOptions::new(vec![src.clone()]);
    o.threads = 2;
    lost(backup::run(&repo, &lock, &o, &NoProgress).map(drop));
    assert_eq!(
        before[..3],
        objects(&repo)[..3],
        "a backup committed under a lost lock"
    );
    assert!(repo.find_snapshot(&done.id.to_hex()).is_ok());
}

/// A backup whose lock is already lost should fail before it uploads anything.
#[test]
fn backup_under_a_lost_lock_uploads_nothing() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 13);
    let repo = init_memory(&rt);
    let lock = shared_lock(&repo);
    lock::unlock(&repo, true).unwrap();
    let mut o = BackupOptions::new(vec![src.clone()]);
    o.threads = 2;
    let r = backup::run(&repo, &lock, &o, &NoProgress);
    assert!(matches!(r, Err(Error::LockLost { .. })), "{r:?}");
    assert_eq!(count(&repo, "data/"), 0, "packs uploaded under a lost lock");
}

/// The destructive case: a prune whose exclusive lock was broken deletes nothing.
#[test]
fn unlock_of_a_live_exclusive_lock_fences_prune() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_local(&rt, &tmp.path().join("repo"));
    let (src, _, kept) = repo_with_garbage(&repo, tmp.path());
    let ex = repo.lock_exclusive("prune", &Default::default()).unwrap();
    let u = lock::unlock(&repo, true).unwrap();
    assert_eq!(u.removed, vec![ex.object().to_owned()]);

    let mut before = repo.list_packs().unwrap();
    before.sort();
    let indexes = count(&repo, "index/");
    let opts = PruneOptions {
        max_unused: 0.0,
        ..Default::default()
    };
    match prune::run(&repo, &ex, &opts, &NoProgress) {
        Err(Error::LockLost { .. }) => {}
        other => panic!("expected LockLost, got {other:?}"),
    }
    let mut after = repo.list_packs().unwrap();
    after.sort();
    // Repacked copies may have been uploaded (unindexed, harmless); nothing may be deleted.
    assert!(
        before.iter().all(|p| after.contains(p)),
        "prune deleted packs under a lost lock"
    );
    assert!(count(&repo, "index/") >= indexes);
    assert_check_clean(&repo);
    assert_restores(&repo, &kept, &src, tmp.path());
}

#[test]
fn change_password_and_key_in_use() {
    let rt = runtime();
    let store = Store::memory();
    let mut repo =
        Repository::init(store.clone(), rt.handle().clone(), PASSWORD, small_init()).unwrap();
    let old_slot = repo.key_id();
    let new_slot = repo
        .change_password(
            b"new password",
            "rotated",
            Some(KdfParams::insecure_for_tests()),
        )
        .unwrap();
    assert_ne!(new_slot, old_slot);
    assert_eq!(repo.key_id(), new_slot);
    let slots: Vec<_> = repo
        .list_keys()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(slots, vec![new_slot]);

    match Repository::open(store.clone(), rt.handle().clone(), PASSWORD) {
        Err(e @ Error::WrongPassword { .. }) => assert_eq!(e.class(), ErrorClass::Auth),
        Err(e) => panic!("expected WrongPassword, got {e:?}"),
        Ok(_) => panic!("the old password still opens the repository"),
    }
    let reopened = Repository::open(store.clone(), rt.handle().clone(), b"new password").unwrap();
    assert_eq!(reopened.key_id(), new_slot);

    match repo.remove_key(&new_slot) {
        Err(e @ Error::KeyInUse { .. }) => assert_eq!(e.class(), ErrorClass::InvalidInput),
        other => panic!("expected KeyInUse, got {other:?}"),
    }
    assert_eq!(repo.list_keys().unwrap().len(), 1);
    // Another slot can be removed: the refusal is about the slot in use only.
    let extra = repo
        .add_key(b"third", "extra", Some(KdfParams::insecure_for_tests()))
        .unwrap();
    repo.remove_key(&extra).unwrap();
    assert!(Repository::open(store, rt.handle().clone(), b"third").is_err());
}
