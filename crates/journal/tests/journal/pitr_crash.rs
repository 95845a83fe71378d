//! PITR crash test with real processes: a child logs catalog operations (LSN k carries
//! `op(k)`) while a second task takes base backups; the parent SIGKILLs it after a random
//! number of acknowledged appends, ≥ 100 times, and checks after every kill that no
//! acknowledged operation is lost, the chain verifies, the newest backup is usable and
//! recovery to latest equals the reference fold.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{config, fold, op, rt};
use lifeboat_journal::catalog::Catalog;
use lifeboat_journal::pitr::backup;
use lifeboat_journal::{PitrManager, RecoveryTarget, StateMachine};
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "LIFEBOAT_PITR_CRASH_CHILD_DIR";
const ROUNDS: usize = 110;

/// Few backups and no minimum WAL age, so backup and segment deletion run under the kills.
fn crash_config(root: &Path) -> lifeboat_journal::PitrConfig {
    let mut c = config(root);
    c.backup_retention_count = 3;
    c.wal_retention = std::time::Duration::ZERO;
    c
}

/// The child half: only does work when the parent sets the environment variable.
#[test]
fn pitr_crash_child() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    rt().block_on(async move {
        let m = std::sync::Arc::new(
            PitrManager::<Catalog>::open(crash_config(Path::new(&root)))
                .await
                .unwrap(),
        );
        let b = m.clone();
        tokio::spawn(async move {
            loop {
                b.create_base_backup().await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut next = m.with_state(|_, lsn| lsn.get()) + 1;
        loop {
            let lsn = m.log_change(op(next)).await.unwrap();
            assert_eq!(lsn.get(), next);
            let mut out = std::io::stdout().lock();
            writeln!(out, "ack {lsn}").unwrap();
            out.flush().unwrap();
            next += 1;
        }
    });
}

/// The LSN of an "ack" line (libtest's "test … " banner may precede the first one).
fn ack(line: &str) -> Option<&str> {
    line.find("ack ").map(|p| line[p + 4..].trim())
}

fn ops_through(lsn: u64) -> Catalog {
    let ops: Vec<_> = (1..=lsn).map(op).collect();
    fold(&ops)
}

#[test]
fn sigkill_during_log_change_and_backups_loses_nothing_acknowledged() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cfg = crash_config(root);
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4242);
    let mut last_acked = 0u64;
    let mut beyond_ack = 0;
    let mut deleted_segments = false;
    let rt = rt();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "pitr_crash::pitr_crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kill_after: usize = rng.gen_range(1..40);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < kill_after {
            let Some(Ok(line)) = lines.next() else {
                panic!("round {round}: child stopped early (after {seen} acks)")
            };
            if let Some(lsn) = ack(&line) {
                let lsn: u64 = lsn.parse().unwrap();
                assert_eq!(lsn, last_acked + 1, "round {round}: LSNs are consecutive");
                last_acked = lsn;
                seen += 1;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Acks already written to the pipe before the kill count too.
        for line in lines.map_while(Result::ok) {
            if let Some(lsn) = ack(&line) {
                last_acked = lsn.parse().unwrap();
            }
        }

        rt.block_on(async {
            let m = PitrManager::<Catalog>::open(cfg.clone())
                .await
                .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
            let lsn = m.with_state(|s, lsn| {
                let lsn = lsn.get();
                assert!(
                    lsn >= last_acked,
                    "round {round}: acknowledged LSN {last_acked} lost (state at {lsn})"
                );
                assert_eq!(s, &ops_through(lsn), "round {round}: live state");
                lsn
            });
            if lsn > last_acked {
                beyond_ack += 1;
            }
            let v = m
                .verify_wal_integrity(lifeboat_journal::Lsn(1))
                .await
                .unwrap();
            let first = m.wal_stats().await.first_lsn.get();
            assert!(
                v.is_valid && v.verified_entries == lsn + 1 - first,
                "round {round}: {v:?}"
            );
            if first > 1 {
                deleted_segments = true;
            }
            let r = m.recover(RecoveryTarget::Latest).await.unwrap();
            assert_eq!(
                (r.lsn.get(), &r.state),
                (lsn, &ops_through(lsn)),
                "round {round}"
            );
            assert!(
                r.skipped_backups.is_empty(),
                "round {round}: {:?}",
                r.skipped_backups
            );
            if let Some(newest) = m.list_backups().await.unwrap().last() {
                let snap = backup::load_backup(newest)
                    .unwrap_or_else(|e| panic!("round {round}: newest backup unusable: {e}"));
                assert_eq!(
                    Catalog::restore(&snap).unwrap(),
                    ops_through(newest.start_lsn.get())
                );
            }
            let leftovers = std::fs::read_dir(&cfg.backup_directory)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".tmp")
                })
                .count();
            assert_eq!(leftovers, 0, "round {round}: temp files survive open");
            last_acked = lsn;
        });
    }
    let backups = rt.block_on(async {
        PitrManager::<Catalog>::open(cfg.clone())
            .await
            .unwrap()
            .list_backups()
            .await
            .unwrap()
    });
    eprintln!(
        "{ROUNDS} kills in {:.1?}: {last_acked} records, {beyond_ack} rounds with unacknowledged \
         records that made it, {} backups retained",
        started.elapsed(),
        backups.len()
    );
    assert!(last_acked >= ROUNDS as u64);
    // Retention runs right after each write: a kill in between leaves one extra at most.
    assert!(
        !backups.is_empty() && backups.len() <= 4,
        "{}",
        backups.len()
    );
    assert!(deleted_segments, "WAL retention never ran under the kills");
}
