//! Crash test with real processes: a child appends and reports each acknowledged LSN; the
//! parent SIGKILLs it at a random moment, reopens, and checks every acknowledged record.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use lifeboat_journal::{read_from, verify, Journal, JournalOptions};
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "LIFEBOAT_JOURNAL_CRASH_CHILD_DIR";

fn payload(lsn: u64) -> Vec<u8> {
    format!("record {lsn} ")
        .repeat(1 + (lsn % 17) as usize)
        .into_bytes()
}

fn opts() -> JournalOptions {
    JournalOptions {
        segment_size: 32 * 1024,
        ..JournalOptions::default()
    }
}

/// The child half: only does work when the parent sets the environment variable.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let j = std::sync::Arc::new(Journal::open(&dir, opts()).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let j = j.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let next = j.stats().next_lsn.get();
                    // The payload is derived from the LSN it will get only when uncontended,
                    // so report the payload's seed alongside the LSN actually assigned.
                    let lsn = j.append(1, &payload(next)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {lsn} {next}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_record() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut acked: std::collections::BTreeMap<u64, u64> = Default::default();
    for round in 0..30 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child_writer",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut it = line.split_whitespace();
                if it.next() == Some("ack") {
                    let lsn: u64 = it.next().unwrap().parse().unwrap();
                    let seed: u64 = it.next().unwrap().parse().unwrap();
                    got.push((lsn, seed));
                }
            }
            got
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..200)));
        child.kill().unwrap();
        child.wait().unwrap();
        let got = reader.join().unwrap();
        acked.extend(got);

        let j = Journal::open(&dir, opts())
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let next = j.stats().next_lsn.get();
        drop(j);
        let last_acked = acked.keys().next_back().copied().unwrap_or(0);
        assert!(
            next > last_acked,
            "round {round}: acknowledged LSN {last_acked} lost (next {next})"
        );
    }
    let recs = read_from(&dir, 1).unwrap();
    for (lsn, seed) in &acked {
        let r = &recs[*lsn as usize - 1];
        assert_eq!(r.lsn, *lsn);
        assert_eq!(r.payload, payload(*seed), "LSN {lsn}");
    }
    let report = verify(&dir, 1).unwrap();
    assert!(report.is_valid, "{report:?}");
    eprintln!(
        "{} acknowledged records over 30 kills, {} in the journal",
        acked.len(),
        recs.len()
    );
    assert!(acked.len() > 30);
}
