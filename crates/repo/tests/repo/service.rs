//! The async facade called from inside async handlers, on a current-thread and on a
//! multi-thread runtime: every engine runs, none panics (`Handle::block_on` inside async code
//! would), progress arrives as a stream, and cancellation stops a run without a snapshot.

use std::future::Future;
use std::path::Path;

use futures::StreamExt;
use jiff::tz::TimeZone;
use lifeboat_repo::backup::StdinSource;
use lifeboat_repo::check::ReadData;
use lifeboat_repo::chunker::ChunkerParams;
use lifeboat_repo::keys::KdfParams;
use lifeboat_repo::prune::PruneOptions;
use lifeboat_repo::retention::{GroupBy, Policy};
use lifeboat_repo::service::AsyncRepository;
use lifeboat_repo::{BackupOptions, Error, InitOptions, RestoreOptions};
use lifeboat_store::Store;
use lifeboat_types::ErrorClass;

fn init_options() -> InitOptions {
    InitOptions {
        kdf: Some(KdfParams::insecure_for_tests()),
        chunker: Some(ChunkerParams {
            min_size: 4 << 10,
            avg_size: 16 << 10,
            max_size: 64 << 10,
        }),
        pack_size_bytes: Some(256 << 10),
        ..Default::default()
    }
}

/// Deterministic, incompressible bytes (xorshift), so packs fill up.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_tree(root: &Path, seed: u64) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.bin"), noise(seed, 700 << 10)).unwrap();
    std::fs::write(
        root.join("sub/b.txt"),
        format!("hello {seed}\n").repeat(1000),
    )
    .unwrap();
}

/// Runs `handler` the way a service would: as a spawned task on a runtime of each flavour.
fn on_each_runtime<F, Fut>(handler: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    current.block_on(async { tokio::spawn(handler()).await.unwrap() });
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    multi.block_on(async { tokio::spawn(handler()).await.unwrap() });
}

#[test]
fn every_engine_runs_from_async_handlers_on_both_runtime_flavours() {
    on_each_runtime(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        write_tree(&src, 1);
        let repo = AsyncRepository::init(Store::memory(), b"pw".to_vec(), init_options())
            .await
            .unwrap();

        // backup, with progress as a stream that ends when the job finishes
        let job = repo.backup(BackupOptions::new(vec![src.clone()]));
        let states = job.progress_stream();
        let done = job.wait().await.unwrap();
        let states: Vec<_> = states.collect().await;
        let last = states.last().expect("at least the final progress state");
        assert!(last.finished, "the stream ends with the finished state");
        assert_eq!(last.done_bytes, done.snapshot.summary.bytes_read);
        assert!(done.snapshot.summary.bytes_read > 700 << 10);

        // a second backup after a change, then the listing
        std::fs::write(src.join("sub/c.txt"), b"new file").unwrap();
        let second = repo
            .backup(BackupOptions::new(vec![src.clone()]))
            .wait()
            .await
            .unwrap();
        assert_eq!(second.snapshot.summary.files_new, 1);
        let (snaps, warnings) = repo.snapshots().await.unwrap();
        assert_eq!(snaps.len(), 2);
        assert!(warnings.is_empty());

        // restore latest, byte for byte
        let out = tmp.path().join("out");
        let mut ro = RestoreOptions::new(out.clone());
        ro.verify = true;
        let restored = repo.restore("latest".into(), ro).wait().await.unwrap();
        assert!(restored.errors.is_empty(), "{:?}", restored.errors);
        let inner = out.join(src.strip_prefix("/").unwrap());
        assert_eq!(
            std::fs::read(inner.join("a.bin")).unwrap(),
            std::fs::read(src.join("a.bin")).unwrap()
        );
        assert_eq!(std::fs::read(inner.join("sub/c.txt")).unwrap(), b"new file");

        // check with recording: clean, and every pack verified
        let report = repo.check(ReadData::All, true).wait().await.unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(report.packs_never_verified, 0);

        // copy to a related repository
        let base = repo.repository();
        let related = InitOptions {
            copy_chunker_from: Some(base.config().clone()),
            related_key: Some(base.key().clone()),
            ..init_options()
        };
        let target = AsyncRepository::init(Store::memory(), b"other".to_vec(), related)
            .await
            .unwrap();
        let copied = repo.copy(&target, Vec::new()).wait().await.unwrap();
        assert_eq!(copied.copied.len(), 2);
        assert_eq!(target.snapshots().await.unwrap().0.len(), 2);

        // forget keeping the newest, then prune what only the older one used
        let policy = Policy {
            keep_last: 1,
            ..Default::default()
        };
        let dry = repo
            .forget(policy.clone(), GroupBy::default(), TimeZone::UTC, true)
            .wait()
            .await
            .unwrap();
        assert_eq!(dry.plan.removed().count(), 1);
        assert!(dry.removal.removed.is_empty());
        assert_eq!(repo.snapshots().await.unwrap().0.len(), 2);
        let forgot = repo
            .forget(policy, GroupBy::default(), TimeZone::UTC, false)
            .wait()
            .await
            .unwrap();
        assert_eq!(forgot.removal.removed, vec![snaps[0].0]);
        let pruned = repo
            .prune(PruneOptions {
                max_unused: 0.0,
                ..Default::default()
            })
            .wait()
            .await
            .unwrap();
        assert!(!pruned.dry_run);
        let report = repo.check(ReadData::All, false).wait().await.unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
    });
}

#[test]
fn a_cancelled_job_writes_no_snapshot_and_a_dropped_one_is_cancelled() {
    on_each_runtime(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        for i in 0..8 {
            write_tree(&src.join(format!("d{i}")), i);
        }
        let repo = AsyncRepository::init(Store::memory(), b"pw".to_vec(), init_options())
            .await
            .unwrap();

        // A dump that streams some data, then goes quiet forever: the backup cannot finish
        // before the cancel, and the cancel must not wait for the command.
        let mut opts = BackupOptions::new(Vec::new());
        opts.stdin = Some((
            "dump.sql".into(),
            StdinSource::Command(vec![
                "sh".into(),
                "-c".into(),
                "head -c 400000 /dev/urandom; exec sleep 1000".into(),
            ]),
        ));
        // Cancel once the backup has made progress (an event, not a sleep).
        let job = repo.backup(opts);
        let mut progress = job.progress();
        progress
            .wait_for(|s| s.done_bytes > 0 || s.finished)
            .await
            .unwrap();
        assert!(
            !progress.borrow().finished,
            "the quiet dump cannot have finished"
        );
        job.cancel();
        let err = job.wait().await.expect_err("a cancelled backup fails");
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert_eq!(err.class(), ErrorClass::Cancelled);
        assert!(repo.snapshots().await.unwrap().0.is_empty());

        // Dropping the future of `wait` (a timeout here: the quiet dump cannot finish on its
        // own) cancels the job too.
        let mut quiet = BackupOptions::new(Vec::new());
        quiet.stdin = Some((
            "dump.sql".into(),
            StdinSource::Command(vec!["sh".into(), "-c".into(), "exec sleep 1000".into()]),
        ));
        let job = repo.backup(quiet);
        let mut progress = job.progress();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), job.wait()).await;
        assert!(waited.is_err(), "the quiet dump cannot finish by itself");
        progress.wait_for(|s| s.finished).await.unwrap();
        assert!(repo.snapshots().await.unwrap().0.is_empty());

        // Dropping the job cancels it: the run ends (its final progress state arrives) and
        // no snapshot appears.
        let job = repo.backup(BackupOptions::new(vec![src.clone()]));
        let mut progress = job.progress();
        drop(job);
        progress.wait_for(|s| s.finished).await.unwrap();
        assert!(repo.snapshots().await.unwrap().0.is_empty());

        // The repository is still usable and consistent afterwards.
        let ok = repo
            .backup(BackupOptions::new(vec![src.clone()]))
            .wait()
            .await
            .unwrap();
        assert_eq!(ok.snapshot.summary.errors, 0);
        let report = repo.check(ReadData::All, false).wait().await.unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
    });
}

#[test]
fn errors_from_jobs_are_classified() {
    on_each_runtime(|| async {
        let repo = AsyncRepository::init(Store::memory(), b"pw".to_vec(), init_options())
            .await
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let err = repo
            .restore("latest".into(), RestoreOptions::new(tmp.path().join("out")))
            .wait()
            .await
            .expect_err("no snapshot yet");
        assert_eq!(err.class(), ErrorClass::NotFound, "{err}");
        let missing = tmp.path().join("does-not-exist");
        let err = repo
            .backup(BackupOptions::new(vec![missing]))
            .wait()
            .await
            .expect_err("missing source");
        assert_eq!(err.class(), ErrorClass::NotFound, "{err}");
    });
}

#[test]
fn a_job_waiting_for_a_conflicting_lock_is_cancelled_at_once() {
    on_each_runtime(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        write_tree(&src, 3);
        let repo = AsyncRepository::init(Store::memory(), b"pw".to_vec(), init_options())
            .await
            .unwrap()
            .with_lock_options(lifeboat_repo::lock::LockOptions {
                retry_for: std::time::Duration::from_secs(600),
                ..Default::default()
            });
        // Someone else (a prune) holds the exclusive lock for as long as this test wants.
        let base = repo.repository().clone();
        let held = tokio::task::spawn_blocking(move || {
            base.lock_exclusive("prune", &Default::default()).unwrap()
        })
        .await
        .unwrap();
        let job = repo.backup(BackupOptions::new(vec![src.clone()]));
        job.cancel();
        let err = job
            .wait()
            .await
            .expect_err("the backup cannot get its lock");
        assert!(matches!(err, Error::Cancelled), "{err}");
        tokio::task::spawn_blocking(move || held.release().unwrap())
            .await
            .unwrap();
        assert!(repo.snapshots().await.unwrap().0.is_empty());
    });
}
