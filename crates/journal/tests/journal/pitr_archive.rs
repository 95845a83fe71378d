//! The PITR manager with an archive configured: background and explicit archive rounds, lag in
//! `wal_stats`, WAL retention that waits for the archive, and total-loss recovery from the
//! archive alone (local directory and, when `LIFEBOAT_TEST_S3` is set, the loopback S3 server).

use std::path::Path;
use std::time::{Duration, Instant};

use lifeboat_journal::archive::{Archive, ArchiveKey};
use lifeboat_journal::catalog::{Catalog, CatalogOp};
use lifeboat_journal::pitr::recover_from_dirs;
use lifeboat_journal::{segment, Error, Lsn, PitrConfig, PitrManager, RecoveryTarget};

fn locations(tmp: &Path, name: &str) -> Vec<String> {
    lifeboat_testkit::test_locations(tmp, "pitr-archive", name)
}

fn op(i: u64) -> CatalogOp {
    if i.is_multiple_of(3) {
        CatalogOp::TopicCreated {
            name: format!("t{}", i % 13),
            partitions: 3,
            config: Default::default(),
        }
    } else if i % 3 == 1 {
        CatalogOp::ConsumerGroupOffsetCommitted {
            group: "g".into(),
            topic: format!("t{}", i % 13),
            partition: (i % 3) as u32,
            offset: i,
        }
    } else {
        CatalogOp::UserCreated {
            name: format!("u{i}"),
        }
    }
}

fn fold(ops: &[CatalogOp]) -> Catalog {
    let mut c = Catalog::default();
    for o in ops {
        c.apply_op(o);
    }
    c
}

fn config(root: &Path, archive: &str, key_file: &Path, interval: Duration) -> PitrConfig {
    PitrConfig::builder()
        .wal_directory(root.join("wal"))
        .backup_directory(root.join("backups"))
        .wal_segment_size(16 * 1024)
        .no_background_backups()
        .backup_retention_count(2)
        .wal_retention(Duration::ZERO)
        .archive(archive)
        .archive_key_file(key_file)
        .archive_interval(interval)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_rounds_lag_retention_and_total_loss() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, location) in locations(tmp.path(), "rounds").into_iter().enumerate() {
        let root = tmp.path().join(format!("node{n}"));
        let key_file = tmp.path().join(format!("key{n}"));
        std::fs::write(&key_file, ArchiveKey::generate().to_hex()).unwrap();
        // A long interval: only the round at start-up and the explicit ones run.
        let cfg = PitrConfig {
            archive_timeout: None,
            ..config(&root, &location, &key_file, Duration::from_secs(3600))
        };
        let pitr = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        let ops: Vec<CatalogOp> = (0..3000).map(op).collect();
        for o in &ops[..1500] {
            pitr.log_change(o.clone()).await.unwrap();
        }
        let before = pitr.wal_stats().await;
        assert_eq!(before.current_lsn, lifeboat_journal::Lsn(1500));
        let upto = before.archived_upto_lsn.unwrap().get();
        assert_eq!(before.archive_lag_entries, Some(1500 - upto));

        // WAL retention waits for the archive: a backup at LSN 1500 with zero retention age
        // deletes only segments the archive already holds.
        pitr.create_base_backup().await.unwrap();
        let first_local = segment::list_segments(&cfg.wal_directory).unwrap()[0].0;
        assert!(
            first_local <= upto + 1,
            "deleted unarchived WAL: first local {first_local}, archived to {upto}"
        );

        let round = pitr.archive_now().await.unwrap();
        let segs = segment::list_segments(&cfg.wal_directory).unwrap();
        let active_first = segs.last().unwrap().0;
        assert_eq!(
            round.sync.archived_upto_lsn,
            lifeboat_journal::Lsn(active_first - 1),
            "every closed segment is archived"
        );
        // The backup is in the archive (shipped by this round or by the background round the
        // backup kicked off).
        let key = ArchiveKey::from_file(&key_file).unwrap();
        let manifest = Archive::open(&location, Some(key))
            .await
            .unwrap()
            .manifest()
            .await
            .unwrap();
        assert_eq!(manifest.backups.len(), 1);
        let st = pitr.wal_stats().await;
        assert_eq!(
            st.archived_upto_lsn,
            Some(lifeboat_journal::Lsn(active_first - 1))
        );
        assert_eq!(st.archive_lag_entries, Some(1500 - (active_first - 1)));
        assert!(st.archive_lag_seconds.unwrap() >= 0.0);
        assert_eq!(st.archive_last_error, None);

        for o in &ops[1500..2500] {
            pitr.log_change(o.clone()).await.unwrap();
        }
        pitr.create_base_backup().await.unwrap();
        for o in &ops[2500..] {
            pitr.log_change(o.clone()).await.unwrap();
        }
        let round = pitr.archive_now().await.unwrap();
        let archived = round.sync.archived_upto_lsn;
        assert!(archived > Lsn(2500) && archived < Lsn(3000), "{archived}");
        // Retention now deletes what both the backups and the archive allow, and the archive
        // mirrors it.
        pitr.apply_wal_retention().await.unwrap();
        assert!(segment::list_segments(&cfg.wal_directory).unwrap()[0].0 > 1);
        // A backup closes the active segment, so the archive holds the WAL up to it.
        pitr.create_base_backup().await.unwrap();
        let round = pitr.archive_now().await.unwrap();
        let archived = round.sync.archived_upto_lsn;
        assert_eq!(archived, lifeboat_journal::Lsn(3000));
        let key = ArchiveKey::from_file(&key_file).unwrap();
        let manifest = Archive::open(&location, Some(key))
            .await
            .unwrap()
            .manifest()
            .await
            .unwrap();
        assert_eq!(round.archived_segments, manifest.segments.len() as u64);
        assert!(!manifest.segments.is_empty());
        drop(pitr);

        // Total loss.
        std::fs::remove_dir_all(&root).unwrap();
        let restored = tmp.path().join(format!("restored{n}"));
        let key = ArchiveKey::from_file(&key_file).unwrap();
        let a = Archive::open(&location, Some(key)).await.unwrap();
        a.restore_into(&restored.join("wal"), &restored.join("backups"))
            .await
            .unwrap();
        let r = recover_from_dirs::<Catalog>(
            &restored.join("wal"),
            &restored.join("backups"),
            RecoveryTarget::Latest,
        )
        .unwrap();
        assert_eq!(r.lsn, archived);
        assert!(r.base_backup_id.is_some());
        assert_eq!(r.state, fold(&ops[..archived.get() as usize]));

        // The restored journal is writable again and continues the LSN sequence.
        let cfg2 = config(&restored, &location, &key_file, Duration::from_secs(3600));
        let pitr = PitrManager::<Catalog>::open(cfg2).await.unwrap();
        assert_eq!(
            pitr.log_change(op(1)).await.unwrap(),
            Lsn(archived.get() + 1)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_task_archives_closed_segments_and_backups() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, ArchiveKey::generate().to_hex()).unwrap();
    let location = tmp.path().join("archive").display().to_string();
    let cfg = config(tmp.path(), &location, &key_file, Duration::from_millis(100));
    let pitr = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
    for i in 0..1000 {
        pitr.log_change(op(i)).await.unwrap();
    }
    pitr.create_base_backup().await.unwrap();
    let active_first = segment::list_segments(&cfg.wal_directory)
        .unwrap()
        .last()
        .unwrap()
        .0;
    // The observable condition: stats report the archive caught up with every closed segment.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = pitr.wal_stats().await;
        if st.archived_upto_lsn == Some(lifeboat_journal::Lsn(active_first - 1)) {
            break;
        }
        assert!(Instant::now() < deadline, "archive never caught up: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = Archive::open(&location, Some(ArchiveKey::from_file(&key_file).unwrap()))
        .await
        .unwrap();
    let m = a.manifest().await.unwrap();
    assert_eq!(m.archived_upto_lsn(), active_first - 1);
    assert!(!m.backups.is_empty(), "the backup was shipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_archive_key_is_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, ArchiveKey::generate().to_hex()).unwrap();
    let location = tmp.path().join("archive").display().to_string();
    let cfg = config(tmp.path(), &location, &key_file, Duration::from_secs(3600));
    let pitr = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
    pitr.log_change(op(0)).await.unwrap();
    drop(pitr);

    let other = tmp.path().join("other-key");
    std::fs::write(&other, ArchiveKey::generate().to_hex()).unwrap();
    let bad = config(tmp.path(), &location, &other, Duration::from_secs(3600));
    let err = PitrManager::<Catalog>::open(bad)
        .await
        .err()
        .expect("wrong key accepted");
    assert!(matches!(err, Error::Archive(_)), "{err:?}");
    assert!(err.to_string().to_lowercase().contains("key"), "{err}");

    let missing = tmp.path().join("no-such-key");
    let bad = config(tmp.path(), &location, &missing, Duration::from_secs(3600));
    let err = PitrManager::<Catalog>::open(bad)
        .await
        .err()
        .expect("missing key file accepted");
    assert!(err.to_string().contains("no-such-key"), "{err}");

    // The journal itself is untouched by the refusals. The first manager's background round
    // may still hold the writer lock for a moment after its drop (tasks are aborted, not
    // joined: there is no `close()` to await yet), so a `Locked` is retried, within bounds.
    let mut tries = 0;
    let pitr = loop {
        match PitrManager::<Catalog>::open(cfg.clone()).await {
            Err(Error::Locked { .. }) if tries < 200 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            r => break r.unwrap(),
        }
    };
    assert_eq!(pitr.wal_stats().await.current_lsn, lifeboat_journal::Lsn(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_timeout_ships_a_quiet_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, ArchiveKey::generate().to_hex()).unwrap();
    let location = tmp.path().join("archive").display().to_string();
    let cfg = PitrConfig {
        wal_segment_size: 16 * 1024 * 1024,
        archive_timeout: Some(Duration::from_millis(300)),
        ..config(tmp.path(), &location, &key_file, Duration::from_millis(100))
    };
    let pitr = PitrManager::<Catalog>::open(cfg).await.unwrap();
    for i in 0..5 {
        pitr.log_change(op(i)).await.unwrap();
    }
    // Five records never fill a 16 MiB segment; the timeout closes it and the round ships it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = pitr.wal_stats().await;
        if st.archived_upto_lsn == Some(lifeboat_journal::Lsn(5)) {
            assert_eq!(st.archive_lag_entries, Some(0));
            assert_eq!(st.archive_lag_seconds, Some(0.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "quiet journal never archived: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
