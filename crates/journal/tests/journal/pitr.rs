//! PITR tests: recovery to timestamps, LSNs and latest against a reference fold (property
//! test with backups and restarts), backup and WAL retention, damaged backups, corruption,
//! fencing and configuration.

use crate::common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{config, fold, op, op_strategy, rt};
use lifeboat_journal::catalog::{Catalog, CatalogOp};
use lifeboat_journal::pitr::backup::time_from_nanos;
use lifeboat_journal::segment::{self, SEGMENT_HEADER_LEN};
use lifeboat_journal::{
    read_from, recover_from_dirs, Error, Lsn, PitrConfig, PitrManager, RecoveryTarget, Term,
};
use lifeboat_types::FencingToken;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Op(CatalogOp),
    Backup,
    Restart,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => op_strategy().prop_map(Action::Op),
        1 => Just(Action::Backup),
        1 => Just(Action::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn recovery_matches_the_reference_fold(
        actions in prop::collection::vec(action(), 1..40),
        compress in any::<bool>(),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 3),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        cfg.compress_backups = compress;
        let rt = rt();
        let ops: Vec<CatalogOp> = rt.block_on(async {
            let mut m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
            let mut ops = Vec::new();
            for a in &actions {
                match a {
                    Action::Op(o) => {
                        let lsn = m.log_change(o.clone()).await.unwrap();
                        ops.push(o.clone());
                        assert_eq!(lsn, Lsn(ops.len() as u64));
                    }
                    Action::Backup => {
                        let b = m.create_base_backup().await.unwrap();
                        assert_eq!(b.start_lsn, Lsn(ops.len() as u64));
                    }
                    Action::Restart => {
                        drop(m);
                        m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
                        m.with_state(|s, lsn| {
                            assert_eq!(lsn, Lsn(ops.len() as u64));
                            assert_eq!(s, &fold(&ops));
                        });
                    }
                }
            }
            let latest = m.recover(RecoveryTarget::Latest).await.unwrap();
            assert_eq!(latest.lsn, Lsn(ops.len() as u64));
            assert_eq!(latest.state, fold(&ops));
            ops
        });
        let recs = read_from(&cfg.wal_directory, 1).unwrap();
        prop_assert_eq!(recs.len(), ops.len());
        let n = ops.len();
        for pick in &picks {
            let k = pick.index(n + 1);
            let r = recover_from_dirs::<Catalog>(
                &cfg.wal_directory, &cfg.backup_directory, RecoveryTarget::Lsn(Lsn(k as u64)),
            ).unwrap();
            prop_assert_eq!(r.lsn, Lsn(k as u64));
            prop_assert_eq!(&r.state, &fold(&ops[..k]));
            prop_assert!(r.base_backup_id.is_some() || r.wal_entries_replayed == k as u64);
            if k > 0 {
                let t = recs[k - 1].timestamp_nanos;
                let upto = recs.iter().take_while(|r| r.timestamp_nanos <= t).count();
                let r = recover_from_dirs::<Catalog>(
                    &cfg.wal_directory,
                    &cfg.backup_directory,
                    RecoveryTarget::Timestamp(time_from_nanos(t)),
                ).unwrap();
                prop_assert_eq!(r.lsn, Lsn(upto as u64));
                prop_assert_eq!(r.timestamp_nanos, recs[upto - 1].timestamp_nanos);
                prop_assert_eq!(&r.state, &fold(&ops[..upto]));
            }
        }
        let before = recover_from_dirs::<Catalog>(
            &cfg.wal_directory, &cfg.backup_directory,
            RecoveryTarget::Timestamp(SystemTime::UNIX_EPOCH),
        ).unwrap();
        prop_assert_eq!(before.lsn, Lsn(0));
        prop_assert_eq!(before.state, Catalog::default());
        // A time after the last record is refused, not clamped to the end.
        let late = RecoveryTarget::Timestamp(SystemTime::now() + Duration::from_secs(3600));
        let after = recover_from_dirs::<Catalog>(
            &cfg.wal_directory, &cfg.backup_directory, late,
        );
        let after_ok = matches!(after, Err(Error::TargetAfterEnd { target, last_lsn }) if target == late && last_lsn == Lsn(n as u64));
        prop_assert!(after_ok, "{:?}", after.map(|r| r.lsn));
        let beyond = recover_from_dirs::<Catalog>(
            &cfg.wal_directory, &cfg.backup_directory, RecoveryTarget::Lsn(Lsn(n as u64 + 1)),
        );
        let last_ok = matches!(beyond, Err(Error::TargetAfterEnd { target, last_lsn }) if target == RecoveryTarget::Lsn(Lsn(n as u64 + 1)) && last_lsn == Lsn(n as u64));
        prop_assert!(last_ok);
    }
}

/// Logs ops `0..n` through a manager.
async fn log_ops(m: &PitrManager<Catalog>, from: u64, n: u64) {
    for i in from..from + n {
        m.log_change(op(i)).await.unwrap();
    }
}

fn all_ops(n: u64) -> Vec<CatalogOp> {
    (0..n).map(op).collect()
}

#[test]
fn recovery_uses_the_newest_backup_before_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        log_ops(&m, 0, 50).await;
        let b50 = m.create_base_backup().await.unwrap();
        log_ops(&m, 50, 50).await;
        let b100 = m.create_base_backup().await.unwrap();
        log_ops(&m, 100, 20).await;
        assert_eq!((b50.start_lsn, b100.start_lsn), (Lsn(50), Lsn(100)));
        assert!(b50.size_bytes > 0 && b50.compressed);
        let r = m.recover(RecoveryTarget::Lsn(Lsn(70))).await.unwrap();
        assert_eq!(r.base_backup_id.as_deref(), Some(b50.id.as_str()));
        assert_eq!(r.wal_entries_replayed, 20);
        assert_eq!(r.state, fold(&all_ops(70)));
        let r = m.recover(RecoveryTarget::Latest).await.unwrap();
        assert_eq!(r.base_backup_id.as_deref(), Some(b100.id.as_str()));
        assert_eq!((r.lsn, r.wal_entries_replayed), (Lsn(120), 20));
        let r = m.recover(RecoveryTarget::Lsn(Lsn(10))).await.unwrap();
        assert_eq!(r.base_backup_id, None);
        assert_eq!(r.state, fold(&all_ops(10)));
        let listed = m.list_backups().await.unwrap();
        assert_eq!(
            listed.iter().map(|b| b.id.clone()).collect::<Vec<_>>(),
            vec![b50.id.clone(), b100.id.clone()],
            "newest last"
        );
        let stats = m.wal_stats().await;
        assert_eq!(stats.current_lsn, Lsn(120));
        assert_eq!(stats.append_count, 120);
        assert!(stats.segment_count > 1 && stats.bytes > 4096);
        assert_eq!(stats.archived_segment_count, 0);
        let v = m.verify_wal_integrity(Lsn(1)).await.unwrap();
        assert!(v.is_valid && v.verified_entries == 120, "{v:?}");
    });
}

#[test]
fn backup_retention_keeps_the_newest_count() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.backup_retention_count = 3;
    cfg.compress_backups = false;
    rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..6 {
            log_ops(&m, i * 5, 5).await;
            ids.push(m.create_base_backup().await.unwrap());
        }
        let kept = m.list_backups().await.unwrap();
        assert_eq!(kept, ids[3..].to_vec());
        assert!(!ids[2].path.exists() && !kept[0].compressed);
    });
}

#[test]
fn wal_retention_never_deletes_what_the_oldest_backup_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.wal_retention = Duration::ZERO;
    cfg.backup_retention_count = 2;
    rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        log_ops(&m, 0, 200).await;
        assert!(
            m.apply_wal_retention().await.unwrap().is_empty(),
            "no backup yet: everything is needed"
        );
        let segs_before = segment::list_segments(&cfg.wal_directory).unwrap();
        assert!(segs_before.len() > 4);
        m.create_base_backup().await.unwrap(); // at 200
        log_ops(&m, 200, 100).await;
        m.create_base_backup().await.unwrap(); // at 300
        log_ops(&m, 300, 100).await;
        m.create_base_backup().await.unwrap(); // at 400; the one at 200 goes
        let oldest = m.list_backups().await.unwrap()[0].start_lsn.get();
        assert_eq!(oldest, 300);
        let segs = segment::list_segments(&cfg.wal_directory).unwrap();
        assert!(segs.len() < segs_before.len() + 4, "something was deleted");
        assert!(segs[0].0 > 1);
        assert!(
            segs[0].0 <= oldest + 1,
            "segment with LSN {} is needed",
            oldest + 1
        );
        let stats = m.wal_stats().await;
        assert_eq!(stats.first_lsn, Lsn(segs[0].0));
        // Recovery from the oldest retained backup still works; before it, the target is
        // reported as before the start of what can be recovered.
        let r = m
            .recover(RecoveryTarget::Lsn(Lsn(oldest + 1)))
            .await
            .unwrap();
        assert_eq!(r.state, fold(&all_ops(oldest + 1)));
        match m.recover(RecoveryTarget::Lsn(Lsn(10))).await {
            Err(Error::TargetBeforeStart {
                target: RecoveryTarget::Lsn(Lsn(10)),
                earliest_lsn: Lsn(300),
            }) => {}
            other => panic!("expected a target before the start, got {other:?}"),
        }
        let msg = m
            .recover(RecoveryTarget::Lsn(Lsn(10)))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("before the start") && msg.contains("LSN 300"),
            "{msg}"
        );
        // The manager still reopens and continues.
        drop(m);
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        log_ops(&m, 400, 1).await;
        m.with_state(|s, lsn| {
            assert_eq!(lsn, Lsn(401));
            assert_eq!(s, &fold(&all_ops(401)));
        });
    });
}

#[test]
fn retention_waits_for_the_archive_when_one_is_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.wal_retention = Duration::ZERO;
    cfg.archive = Some(tmp.path().join("archive").display().to_string());
    rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        log_ops(&m, 0, 200).await;
        m.create_base_backup().await.unwrap();
        assert!(m.apply_wal_retention().await.unwrap().is_empty());
        let segs = segment::list_segments(&cfg.wal_directory).unwrap();
        let second_last = segs[2].0 - 1;
        m.set_archived_upto(Lsn(second_last), 2);
        let gone = m.apply_wal_retention().await.unwrap();
        assert_eq!(gone.len(), 2, "exactly the archived segments");
        assert_eq!(m.wal_stats().await.archived_segment_count, 2);
    });
}

#[test]
fn a_damaged_newest_backup_falls_back_to_an_older_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let (b1, b2) = rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        log_ops(&m, 0, 30).await;
        let b1 = m.create_base_backup().await.unwrap();
        log_ops(&m, 30, 30).await;
        let b2 = m.create_base_backup().await.unwrap();
        log_ops(&m, 60, 5).await;
        (b1, b2)
    });
    let mut bytes = std::fs::read(&b2.path).unwrap();
    let mid = bytes.len() - 40;
    bytes[mid] ^= 0x10;
    std::fs::write(&b2.path, &bytes).unwrap();
    let r = recover_from_dirs::<Catalog>(
        &cfg.wal_directory,
        &cfg.backup_directory,
        RecoveryTarget::Latest,
    )
    .unwrap();
    assert_eq!(r.base_backup_id.as_deref(), Some(b1.id.as_str()));
    assert_eq!((r.lsn, r.wal_entries_replayed), (Lsn(65), 35));
    assert_eq!(r.state, fold(&all_ops(65)));
    assert_eq!(r.skipped_backups.len(), 1);
    assert!(
        r.skipped_backups[0].contains(&b2.id) && r.skipped_backups[0].contains("checksum"),
        "{:?}",
        r.skipped_backups
    );
    // A truncated backup (header intact) is reported too; with both gone: replay from LSN 1.
    let len = std::fs::metadata(&b1.path).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&b1.path)
        .unwrap();
    f.set_len(len - 10).unwrap();
    let r = recover_from_dirs::<Catalog>(
        &cfg.wal_directory,
        &cfg.backup_directory,
        RecoveryTarget::Lsn(Lsn(40)),
    )
    .unwrap();
    assert_eq!(r.base_backup_id, None);
    assert_eq!(r.wal_entries_replayed, 40);
    assert_eq!(r.state, fold(&all_ops(40)));
    assert!(
        r.skipped_backups.iter().any(|s| s.contains("truncated")),
        "{:?}",
        r.skipped_backups
    );
    // The manager opens on the same directories (falling back the same way).
    rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        m.with_state(|s, lsn| {
            assert_eq!(lsn, Lsn(65));
            assert_eq!(s, &fold(&all_ops(65)));
        });
    });
}

/// First closed segment whose records span the middle of the log, and a record in it.
fn flip_in_segment(dir: &Path, which: usize) -> u64 {
    let segs = segment::list_segments(dir).unwrap();
    let (first, path) = &segs[which];
    let mut bytes = std::fs::read(path).unwrap();
    bytes[SEGMENT_HEADER_LEN + 80] ^= 0x01; // inside the first record's payload
    std::fs::write(path, &bytes).unwrap();
    *first
}

#[test]
fn recovery_to_an_earlier_lsn_works_after_a_bit_flip_in_a_later_closed_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        log_ops(&m, 0, 300).await;
        m.create_base_backup().await.unwrap();
        log_ops(&m, 300, 10).await;
    });
    let segs = segment::list_segments(&cfg.wal_directory).unwrap();
    assert!(segs.len() > 4);
    let damaged = flip_in_segment(&cfg.wal_directory, segs.len() / 2);
    let (w, b) = (&cfg.wal_directory, &cfg.backup_directory);
    let r = recover_from_dirs::<Catalog>(w, b, RecoveryTarget::Lsn(Lsn(damaged - 1))).unwrap();
    assert_eq!(r.state, fold(&all_ops(damaged - 1)));
    let r = recover_from_dirs::<Catalog>(w, b, RecoveryTarget::Lsn(Lsn(damaged + 1)));
    assert!(
        matches!(r, Err(Error::Corrupt { lsn, .. }) if lsn == Lsn(damaged)),
        "expected corruption at LSN {damaged}: {r:?}"
    );
    // The backup at 300 lies beyond the damage: latest recovery does not need it.
    let r = recover_from_dirs::<Catalog>(w, b, RecoveryTarget::Latest).unwrap();
    assert_eq!(r.state, fold(&all_ops(310)));
    let v = lifeboat_journal::verify(w, 1).unwrap();
    assert!(!v.is_valid && v.errors[0].0 == damaged, "{v:?}");
}

#[test]
fn tampering_after_a_backup_is_caught_by_the_chain_anchor() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        log_ops(&m, 0, 20).await;
        m.create_base_backup().await.unwrap();
        log_ops(&m, 20, 5).await;
    });
    // Replace the WAL with a different history of the same length: recovery from the backup
    // must notice that LSN 21 does not follow the LSN 20 the backup saw.
    std::fs::remove_dir_all(&cfg.wal_directory).unwrap();
    rt().block_on(async {
        let j = lifeboat_journal::Journal::open(&cfg.wal_directory, Default::default()).unwrap();
        for i in 0..25u64 {
            let p = lifeboat_journal::pitr::encode_op(&op(i + 1000)).unwrap();
            j.append(1, &p).await.unwrap();
        }
    });
    let r = recover_from_dirs::<Catalog>(
        &cfg.wal_directory,
        &cfg.backup_directory,
        RecoveryTarget::Latest,
    );
    assert!(
        matches!(r, Err(Error::Corrupt { lsn: Lsn(21), .. })),
        "{r:?}"
    );
}

#[test]
fn a_new_term_fences_the_old_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        m.set_term(Term::from(3));
        log_ops(&m, 0, 2).await;
        m.log_change_with_term(Term::from(5), op(2)).await.unwrap();
        let e = m.log_change(op(3)).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::StaleTerm {
                    term: FencingToken(3),
                    highest: FencingToken(5)
                }
            ),
            "{e}"
        );
        m.set_term(Term::from(5));
        log_ops(&m, 3, 1).await;
        drop(m);
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        assert_eq!(
            m.term(),
            Term::from(5),
            "the term is recovered from the WAL"
        );
        let b = m.create_base_backup().await.unwrap();
        assert_eq!(b.term, Term::from(5));
        m.with_state(|s, lsn| {
            assert_eq!(lsn, Lsn(4));
            assert_eq!(s, &fold(&all_ops(4)));
        });
    });
}

#[test]
fn interrupted_backup_temp_files_are_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    std::fs::create_dir_all(&cfg.backup_directory).unwrap();
    let leftover = cfg
        .backup_directory
        .join("00000000000000000007-00ff.lbb.tmp");
    std::fs::write(&leftover, b"half a backup").unwrap();
    rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        assert!(!leftover.exists());
        assert!(m.list_backups().await.unwrap().is_empty());
    });
}

#[test]
fn the_background_task_takes_backups() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.base_backup_interval = Some(Duration::from_millis(50));
    cfg.backup_retention_count = 2;
    rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        log_ops(&m, 0, 3).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let b = m.list_backups().await.unwrap();
            if b.len() == 2 && b.iter().all(|b| b.start_lsn == Lsn(3)) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no periodic backups: {b:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[test]
fn config_validation_names_the_problem() {
    let base = || {
        PitrConfig::builder()
            .wal_directory("/tmp/w")
            .backup_directory("/tmp/b")
    };
    let err = |b: lifeboat_journal::pitr::PitrConfigBuilder| b.build().unwrap_err().to_string();
    assert!(
        err(base().base_backup_interval(Duration::ZERO)).contains("base_backup_interval is zero")
    );
    assert!(err(base().backup_retention_count(0)).contains("backup_retention_count is 0"));
    assert!(err(base().wal_segment_size(100)).contains("wal_segment_size 100 is outside"));
    assert!(err(base().wal_segment_size(1 << 40)).contains("outside"));
    assert!(err(base().backup_directory("/tmp/w")).contains("both"));
    assert!(err(base().archive("")).contains("archive"));
    let c = PitrConfig::builder()
        .wal_directory("./pitr/wal")
        .backup_directory("./pitr/backups")
        .archive("s3://bucket/pitr")
        .base_backup_interval(Duration::from_secs(3600))
        .wal_retention(Duration::from_secs(7 * 86400))
        .wal_segment_size(16 * 1024 * 1024)
        .backup_retention_count(24)
        .compress_backups(true)
        .verify_wal(true)
        .build()
        .unwrap();
    assert_eq!(c.archive.as_deref(), Some("s3://bucket/pitr"));
}

/// The only test in this binary that touches the process environment.
#[test]
fn config_from_environment_variables() {
    use lifeboat_journal::pitr::config::*;
    std::env::set_var(ENV_WAL_DIR, "/data/wal");
    std::env::set_var(ENV_BACKUP_DIR, "/data/backups");
    std::env::set_var(ENV_BACKUP_INTERVAL_SECS, "60");
    std::env::set_var(ENV_WAL_RETENTION_SECS, "86400");
    let c = PitrConfig::from_env().unwrap();
    assert_eq!(c.wal_directory, Path::new("/data/wal"));
    assert_eq!(c.backup_directory, Path::new("/data/backups"));
    assert_eq!(c.base_backup_interval, Some(Duration::from_secs(60)));
    assert_eq!(c.wal_retention, Duration::from_secs(86400));
    // Builder values are overridden by the environment.
    let c = PitrConfig::builder()
        .wal_segment_size(8192)
        .wal_directory("/elsewhere")
        .env_overrides()
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        (c.wal_directory.to_str(), c.wal_segment_size),
        (Some("/data/wal"), 8192)
    );
    std::env::set_var(ENV_BACKUP_INTERVAL_SECS, "hourly");
    let e = PitrConfig::from_env().unwrap_err().to_string();
    assert!(
        e.contains("PITR_BACKUP_INTERVAL_SECS") && e.contains("hourly"),
        "{e}"
    );
    std::env::set_var(ENV_BACKUP_INTERVAL_SECS, "0");
    let e = PitrConfig::from_env().unwrap_err().to_string();
    assert!(e.contains("base_backup_interval is zero"), "{e}");
    std::env::set_var(ENV_BACKUP_INTERVAL_SECS, "60");
    std::env::set_var(ENV_WAL_RETENTION_SECS, "-1");
    let e = PitrConfig::from_env().unwrap_err().to_string();
    assert!(e.contains("PITR_WAL_RETENTION_SECS"), "{e}");
    for v in [
        ENV_WAL_DIR,
        ENV_BACKUP_DIR,
        ENV_BACKUP_INTERVAL_SECS,
        ENV_WAL_RETENTION_SECS,
    ] {
        std::env::remove_var(v);
    }
}

#[test]
fn concurrent_log_changes_apply_in_lsn_order_and_share_fsyncs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    rt().block_on(async {
        let m = std::sync::Arc::new(PitrManager::<Catalog>::open(cfg.clone()).await.unwrap());
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let m = m.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..40u64 {
                    let lsn = m.log_change(op(t * 1000 + k)).await.unwrap();
                    // Returned means applied: the live state has reached this LSN.
                    assert!(m.with_state(|_, applied| applied) >= lsn);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // The reference: the ops in the order the WAL holds them.
        let logged: Vec<CatalogOp> = read_from(&cfg.wal_directory, 1)
            .unwrap()
            .iter()
            .map(|r| lifeboat_journal::pitr::decode_op(&r.payload, r.lsn).unwrap())
            .collect();
        assert_eq!(logged.len(), 320);
        m.with_state(|s, lsn| {
            assert_eq!(lsn, Lsn(320));
            assert_eq!(s, &fold(&logged));
        });
        let stats = m.wal_stats().await;
        assert_eq!(stats.append_count, 320);
        assert!(
            stats.fsync_count < 320,
            "group commit shares fsyncs: {stats:?}"
        );
        let r = m.recover(RecoveryTarget::Latest).await.unwrap();
        assert_eq!(r.state, fold(&logged));
    });
}

#[test]
fn backups_ahead_of_the_wal_are_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    rt().block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        log_ops(&m, 0, 10).await;
        m.create_base_backup().await.unwrap();
    });
    // A WAL that lost its records (or belongs elsewhere) under the same backups.
    std::fs::remove_dir_all(&cfg.wal_directory).unwrap();
    let e = rt()
        .block_on(PitrManager::<Catalog>::open(cfg.clone()))
        .err()
        .expect("open must refuse");
    assert!(
        matches!(
            e,
            Error::BackupAheadOfWal {
                backup_lsn: Lsn(10),
                wal_last: Lsn(0),
                ..
            }
        ),
        "{e}"
    );
}

/// Every file under `dir` with its size and modification time: what "writes nothing" compares.
fn tree(dir: &Path) -> Vec<(std::path::PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), m.len(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}

static CANCEL_MID_REPLAY: std::sync::OnceLock<lifeboat_journal::CancelToken> =
    std::sync::OnceLock::new();

/// A catalog that cancels [`CANCEL_MID_REPLAY`] once it has applied 1500 operations.
#[derive(Default)]
struct CancelsAt1500(Catalog);

impl lifeboat_journal::StateMachine for CancelsAt1500 {
    type Op = CatalogOp;
    fn apply(&mut self, op: &CatalogOp) {
        self.0.apply_op(op);
        if self.0.applied == 1500 {
            CANCEL_MID_REPLAY.get().unwrap().cancel();
        }
    }
    fn snapshot(&self) -> Vec<u8> {
        lifeboat_journal::StateMachine::snapshot(&self.0)
    }
    fn restore(bytes: &[u8]) -> Result<Self, String> {
        <Catalog as lifeboat_journal::StateMachine>::restore(bytes).map(CancelsAt1500)
    }
}

#[test]
fn a_cancelled_recovery_stops_within_a_check_interval_and_writes_nothing() {
    use lifeboat_journal::pitr::{recover_with, RecoveryOptions, CANCEL_CHECK_EVERY};
    use lifeboat_journal::{CancelToken, ErrorClass};
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let rt = rt();
    rt.block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        log_ops(&m, 0, 5000).await;
        // The manager's entry point honours a token cancelled up front.
        let t = CancelToken::new();
        t.cancel();
        let e = m
            .recover_cancellable(RecoveryTarget::Latest, &t)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Cancelled { replayed: 0, .. }), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Cancelled);
    });
    // The dropped writer's spare-segment thread may still be removing its file.
    let spares = || {
        tree(tmp.path())
            .iter()
            .any(|(p, ..)| p.to_string_lossy().ends_with(".seg.tmp"))
    };
    for _ in 0..200 {
        if !spares() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Files only: the dropped writer's spare-segment thread (no handle to join) may still
    // create and remove its `.seg.tmp`, which touches the directory's mtime, not the journal.
    let files = || {
        tree(tmp.path())
            .into_iter()
            .filter(|(p, ..)| p.is_file() && !p.to_string_lossy().ends_with(".seg.tmp"))
            .collect::<Vec<_>>()
    };
    let before = files();
    let token = CANCEL_MID_REPLAY.get_or_init(CancelToken::new);
    let r = recover_with::<CancelsAt1500>(
        &cfg.wal_directory,
        &cfg.backup_directory,
        RecoveryTarget::Latest,
        &RecoveryOptions::cancellable(token),
    );
    match r {
        Err(Error::Cancelled { lsn, replayed }) => {
            assert!(
                (1500..=1500 + CANCEL_CHECK_EVERY).contains(&replayed),
                "stopped after {replayed}"
            );
            assert_eq!(lsn, Lsn(replayed));
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(r) => panic!("recovered to {} despite the cancel", r.lsn),
    }
    assert_eq!(files(), before, "a cancelled recovery wrote something");
}

#[test]
fn a_directory_without_a_journal_is_an_error_not_an_empty_log() {
    use lifeboat_journal::{ErrorClass, JournalAbsence};
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"hello").unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let missing = tmp.path().join("missing");
    let before = tree(tmp.path());
    for (dir, why) in [
        (&empty, JournalAbsence::NoSegments),
        (&foreign, JournalAbsence::NoSegments),
        (&file, JournalAbsence::NotADirectory),
        (&missing, JournalAbsence::Missing),
    ] {
        let e = recover_from_dirs::<Catalog>(dir, &tmp.path().join("b"), RecoveryTarget::Latest)
            .unwrap_err();
        assert!(
            matches!(&e, Error::NoJournal { dir: d, why: w } if d == dir && *w == why),
            "{e:?}"
        );
        assert_eq!(e.class(), ErrorClass::NotFound);
        assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
        let e = lifeboat_journal::verify(dir, 1).unwrap_err();
        assert!(matches!(e, Error::NoJournal { .. }), "{e:?}");
    }
    assert_eq!(tree(tmp.path()), before, "a read-only call wrote something");
}
