//! Disk full on a real 2 MiB tmpfs: `log_change`, segment rotation and `create_base_backup`
//! fail with a clear `DiskFull` (ENOSPC) error, nothing acknowledged is lost or corrupted, the
//! instance is not poisoned by a failed rotation, and appends resume once space is freed (on
//! the same instance, and after a reopen on a still-full disk).
//! Skips (with a message) where mounting is not permitted, unless `LIFEBOAT_REQUIRE_TMPFS=1`.

use crate::common;

use std::time::Duration;

use common::{fold, rt};
use lifeboat_journal::catalog::{Catalog, CatalogOp};
use lifeboat_journal::{Error, PitrConfig, PitrManager, RecoveryTarget};
use lifeboat_testkit::TmpfsMount;

/// An incompressible-ish op of about 1 KiB; 40 kinds, so the state stays ~40 KiB.
fn big_op(i: u64) -> CatalogOp {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data = (0..1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    CatalogOp::Custom {
        kind: format!("k{}", i % 40),
        data,
    }
}

fn assert_disk_full(e: &Error, what: &str) {
    assert!(e.is_disk_full(), "{what}: expected DiskFull, got {e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("ENOSPC") && msg.contains("disk full"),
        "{what}: {msg}"
    );
}

#[test]
fn a_full_disk_fails_cleanly_and_appends_resume_after_freeing_space() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = match TmpfsMount::new(&tmp.path().join("mnt"), "size=2m") {
        Ok(m) => m,
        Err(why) if std::env::var("LIFEBOAT_REQUIRE_TMPFS").as_deref() != Ok("1") => {
            eprintln!("SKIPPED: {why} (set LIFEBOAT_REQUIRE_TMPFS=1 to make this a failure)");
            return;
        }
        Err(why) => panic!("{why}"),
    };
    let filler = mnt.path.join("filler");
    std::fs::write(&filler, vec![7u8; 300 * 1024]).unwrap();
    let cfg = PitrConfig::builder()
        .wal_directory(mnt.path.join("wal"))
        .backup_directory(mnt.path.join("backups"))
        .wal_segment_size(64 * 1024)
        .backup_retention_count(2)
        .compress_backups(false)
        .wal_retention(Duration::from_secs(86400))
        .no_background_backups()
        .build()
        .unwrap();
    let rt = rt();
    let mut acked: Vec<CatalogOp> = Vec::new();
    rt.block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        let mut backup_failures = 0;
        let mut i = 0u64;
        let log_err = loop {
            let op = big_op(i);
            match m.log_change(op.clone()).await {
                Ok(lsn) => {
                    acked.push(op);
                    assert_eq!(lsn, lifeboat_journal::Lsn(acked.len() as u64));
                }
                Err(e) => break e,
            }
            if i % 25 == 24 {
                if let Err(e) = m.create_base_backup().await {
                    assert_disk_full(&e, "create_base_backup while filling");
                    backup_failures += 1;
                }
            }
            i += 1;
            assert!(i < 10_000, "a 2 MiB disk never filled up");
        };
        assert_disk_full(&log_err, "log_change at rotation");
        eprintln!(
            "disk full after {} acknowledged ops ({backup_failures} backups failed first): {log_err}",
            acked.len()
        );
        // Not poisoned: the next append retries the rotation and fails the same clean way.
        let again = m.log_change(big_op(i)).await.unwrap_err();
        assert_disk_full(&again, "second log_change");
        let e = m.create_base_backup().await.unwrap_err();
        assert_disk_full(&e, "create_base_backup on a full disk");
        let leftovers: Vec<_> = std::fs::read_dir(&cfg.backup_directory)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "failed backups leave no temp files: {leftovers:?}");
        let wal_tmp = std::fs::read_dir(&cfg.wal_directory)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(wal_tmp, 0, "a failed rotation leaves no temp segment");
        m.with_state(|s, lsn| {
            assert_eq!(lsn, lifeboat_journal::Lsn(acked.len() as u64));
            assert_eq!(s, &fold(&acked));
        });
        let v = m.verify_wal_integrity(lifeboat_journal::Lsn(1)).await.unwrap();
        assert!(v.is_valid, "{v:?}");
    });

    // Reopen while the disk is still full: open works, appends fail cleanly.
    rt.block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        m.with_state(|s, _| assert_eq!(s, &fold(&acked)));
        let e = m.log_change(big_op(99_999)).await.unwrap_err();
        assert_disk_full(&e, "log_change after reopen on a full disk");
        // Free space: the same instance resumes.
        std::fs::remove_file(&filler).unwrap();
        for k in 0..5 {
            let op = big_op(100_000 + k);
            m.log_change(op.clone()).await.unwrap();
            acked.push(op);
        }
        let b = m.create_base_backup().await.unwrap();
        assert_eq!(b.start_lsn, lifeboat_journal::Lsn(acked.len() as u64));
    });

    // Nothing acknowledged was lost or corrupted.
    rt.block_on(async {
        let m = PitrManager::<Catalog>::open(cfg.clone()).await.unwrap();
        let r = m.recover(RecoveryTarget::Latest).await.unwrap();
        assert_eq!(r.lsn, lifeboat_journal::Lsn(acked.len() as u64));
        assert_eq!(r.state, fold(&acked));
        let v = m
            .verify_wal_integrity(lifeboat_journal::Lsn(1))
            .await
            .unwrap();
        assert!(
            v.is_valid && v.verified_entries == acked.len() as u64,
            "{v:?}"
        );
    });
    drop(mnt);
}
