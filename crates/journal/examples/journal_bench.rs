//! Journal vs SQLite benchmark (run by `bench/journal_vs_sqlite.sh`, release build).
//!
//! Side by side, in one run, on one disk: durable appends/s and latency of 256-byte records
//! with 1, 16 and 256 concurrent appenders, for the journal (its own group commit) and for
//! SQLite in WAL mode with `synchronous=FULL` with a fair group commit (one writer thread
//! drains every pending request into one transaction and acknowledges after COMMIT); then
//! replay and verify throughput of a ~1 GiB journal, and the time to reach a timestamp in its
//! middle; and shipping the journal to an encrypted archive and restoring it (total loss).
//! Usage:
//! `journal_bench --dir DIR [--seconds S] [--repeat N] [--recovery-gib G] [--out DIR]`.
//! The shared VM's fsync latency swings several-fold from minute to minute, so each append
//! point runs journal and SQLite alternately `N` times and reports the median run of each.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_journal::archive::{Archive, ArchiveKey};
use lifeboat_journal::record;
use lifeboat_journal::segment::{self, SegmentHeader, SEGMENT_HEADER_LEN};
use lifeboat_journal::{iter_from, verify, Journal, JournalOptions, RawLsn as Lsn};
use serde_json::json;

/// Payload size of every benchmark record.
const RECORD_BYTES: usize = 256;
/// Appender counts measured.
const APPENDERS: [usize; 3] = [1, 16, 256];

struct Args {
    dir: PathBuf,
    seconds: f64,
    recovery_gib: f64,
    out: Option<PathBuf>,
    /// Alternating journal/SQLite runs per appender count (the median is reported); 0 skips
    /// the append part.
    repeat: usize,
    /// Keep the big journal after the run and reuse one left by an earlier run (profiling).
    keep_journal: bool,
    /// Run only this system's append points ("journal" or "sqlite"; profiling).
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        dir: PathBuf::new(),
        seconds: 5.0,
        recovery_gib: 1.0,
        out: None,
        repeat: 3,
        keep_journal: false,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => a.dir = val.into(),
            "--seconds" => a.seconds = val.parse().expect("--seconds: a number"),
            "--recovery-gib" => a.recovery_gib = val.parse().expect("--recovery-gib: a number"),
            "--out" => a.out = Some(val.into()),
            "--repeat" => a.repeat = val.parse().expect("--repeat: a number"),
            "--keep-journal" => a.keep_journal = val == "1",
            "--only" => a.only = Some(val),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.dir.as_os_str().is_empty(), "--dir is required");
    a
}

/// Throughput and latency of one append configuration.
#[derive(Debug, Clone, serde::Serialize)]
struct AppendResult {
    system: &'static str,
    appenders: usize,
    records: u64,
    seconds: f64,
    per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    /// Records per fsync (journal) or per transaction (SQLite).
    per_commit: f64,
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    u64::from(sorted[i])
}

fn payload(i: u64) -> Vec<u8> {
    let mut p = vec![0u8; RECORD_BYTES];
    p[..8].copy_from_slice(&i.to_le_bytes());
    for (k, b) in p.iter_mut().enumerate().skip(8) {
        *b = (k as u8).wrapping_mul(31) ^ (i as u8);
    }
    p
}

/// Runs `appenders` tasks calling `op` until `secs` elapse; returns (count, elapsed, latencies).
async fn drive<F, Fut>(appenders: usize, secs: f64, op: F) -> (u64, f64, Vec<u32>)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for t in 0..appenders {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut i = t as u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                op(i).await;
                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                i += appenders as u64;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("appender task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    (all.len() as u64, elapsed, all)
}

async fn bench_journal(dir: &Path, appenders: usize, secs: f64) -> AppendResult {
    let _ = std::fs::remove_dir_all(dir);
    let j = Arc::new(Journal::open(dir, JournalOptions::default()).expect("open journal"));
    let jj = j.clone();
    let (n, elapsed, lat) = drive(appenders, secs, move |i| {
        let j = jj.clone();
        async move {
            j.append(1, &payload(i)).await.expect("append");
        }
    })
    .await;
    let fsyncs = j.stats().fsync_count.max(1);
    AppendResult {
        system: "lifeboat journal",
        appenders,
        records: n,
        seconds: elapsed,
        per_sec: n as f64 / elapsed,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        per_commit: n as f64 / fsyncs as f64,
    }
}

/// A request to the SQLite writer thread.
type SqlReq = (Vec<u8>, tokio::sync::oneshot::Sender<()>);

/// The SQLite group-commit writer: blocks for one request, drains all pending ones into one
/// transaction, commits (WAL, synchronous=FULL: fsync of the WAL at every COMMIT), then
/// acknowledges them. Returns the number of transactions.
fn sqlite_writer(path: PathBuf, mut rx: tokio::sync::mpsc::UnboundedReceiver<SqlReq>) -> u64 {
    let conn = rusqlite::Connection::open(&path).expect("open sqlite");
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("WAL mode");
    assert_eq!(mode, "wal");
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS log(lsn INTEGER PRIMARY KEY, ts INTEGER NOT NULL,
                                        term INTEGER NOT NULL, payload BLOB NOT NULL);",
    )
    .expect("schema");
    let mut txns = 0;
    let mut batch: Vec<SqlReq> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let tx = conn.unchecked_transaction().expect("begin");
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO log(ts, term, payload) VALUES (?1, 1, ?2)")
                .expect("prepare");
            for (p, _) in &batch {
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_nanos() as i64;
                stmt.execute(rusqlite::params![ts, p]).expect("insert");
            }
        }
        tx.commit().expect("commit");
        txns += 1;
        for (_, ack) in batch.drain(..) {
            let _ = ack.send(());
        }
    }
    txns
}

async fn bench_sqlite(dir: &Path, appenders: usize, secs: f64) -> AppendResult {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<SqlReq>();
    let path = dir.join("log.db");
    let writer = std::thread::spawn(move || sqlite_writer(path, rx));
    let (n, elapsed, lat) = drive(appenders, secs, move |i| {
        let tx = tx.clone();
        async move {
            let (ack, done) = tokio::sync::oneshot::channel();
            tx.send((payload(i), ack)).expect("writer alive");
            done.await.expect("acknowledged");
        }
    })
    .await;
    let txns = writer.join().expect("writer thread").max(1);
    AppendResult {
        system: "SQLite WAL, synchronous=FULL",
        appenders,
        records: n,
        seconds: elapsed,
        per_sec: n as f64 / elapsed,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        per_commit: n as f64 / txns as f64,
    }
}

/// Fills a journal with 256-byte records up to `bytes` on disk, with 256 appenders.
async fn build_journal(dir: &Path, bytes: u64) -> (u64, f64) {
    let _ = std::fs::remove_dir_all(dir);
    let j = Arc::new(Journal::open(dir, JournalOptions::default()).expect("open"));
    let per = record::padded(record::HEADER_LEN + RECORD_BYTES) as u64;
    let target = bytes / per;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..256 {
        let (j, next) = (j.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= target {
                    break;
                }
                j.append(1, &payload(i)).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    (target, start.elapsed().as_secs_f64())
}

fn dir_bytes(dir: &Path) -> u64 {
    segment::list_segments(dir)
        .expect("list")
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

/// Timestamp of the first record of a segment (reads only its head).
fn first_timestamp(path: &Path) -> Option<i64> {
    use std::io::Read;
    let mut head = vec![0u8; SEGMENT_HEADER_LEN + record::HEADER_LEN + 64 * 1024];
    let mut f = std::fs::File::open(path).ok()?;
    let n = f.read(&mut head).ok()?;
    let h = SegmentHeader::decode(&head[..n]).ok()?;
    let (rec, _) = record::decode(h.salt, &head[SEGMENT_HEADER_LEN..n]).ok()?;
    Some(rec.timestamp_nanos)
}

/// Recovery to timestamp `target`: find the last segment starting at or before it (binary
/// search over segment heads), then replay from `from_lsn` (the base backup's LSN) up to the
/// last record with timestamp ≤ target. Returns (records replayed, last LSN applied).
fn recover_to(dir: &Path, from_lsn: Lsn, target: i64) -> (u64, Lsn) {
    // HOOK(lead): once the PITR manager lands, replace this function's body with
    // `PitrManager::recover(RecoveryTarget::Time(target))` (restore the base backup at or
    // before `target`, then replay) and keep the timing around it in `main`.
    let mut n = 0;
    let mut last = 0;
    for r in iter_from(dir, from_lsn).expect("iter") {
        let r = r.expect("record");
        if r.timestamp_nanos > target {
            break;
        }
        std::hint::black_box(&r.payload);
        n += 1;
        last = r.lsn;
    }
    (n, last)
}

/// First LSN of the last segment whose first record is at or before `target`.
fn find_segment(dir: &Path, target: i64) -> Lsn {
    let segs = segment::list_segments(dir).expect("list");
    let (mut lo, mut hi) = (0usize, segs.len());
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        match first_timestamp(&segs[mid].1) {
            Some(ts) if ts <= target => lo = mid,
            _ => hi = mid,
        }
    }
    segs[lo].0
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).expect("bench dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut appends = Vec::new();
    let mut raw_runs = Vec::new();
    for &c in APPENDERS.iter().filter(|_| a.repeat > 0) {
        let (mut js, mut ss) = (Vec::new(), Vec::new());
        for _ in 0..a.repeat {
            let (jd, sd) = (a.dir.join(format!("j{c}")), a.dir.join(format!("s{c}")));
            if a.only.as_deref() == Some("sqlite") {
                let s = rt.block_on(bench_sqlite(&sd, c, a.seconds));
                eprintln!("{s:?}");
                continue;
            }
            let j = rt.block_on(bench_journal(&jd, c, a.seconds));
            eprintln!("{j:?}");
            let _ = std::fs::remove_dir_all(&jd);
            if a.only.as_deref() == Some("journal") {
                continue;
            }
            let s = rt.block_on(bench_sqlite(&sd, c, a.seconds));
            eprintln!("{s:?}");
            let _ = std::fs::remove_dir_all(&sd);
            raw_runs.push(j.clone());
            raw_runs.push(s.clone());
            js.push(j);
            ss.push(s);
        }
        let median = |mut v: Vec<AppendResult>| {
            v.sort_by(|x, y| x.per_sec.total_cmp(&y.per_sec));
            v.swap_remove(v.len() / 2)
        };
        if !js.is_empty() && !ss.is_empty() {
            appends.push((median(js), median(ss)));
        }
    }

    let big = a.dir.join("big");
    let want = (a.recovery_gib * (1u64 << 30) as f64) as u64;
    let reuse = a.keep_journal && segment::list_segments(&big).is_ok_and(|s| !s.is_empty());
    let (records, build_s) = if reuse {
        let n = iter_from(&big, 1).expect("iter").count() as u64;
        (n, 0.0)
    } else {
        rt.block_on(build_journal(&big, want))
    };
    let bytes = dir_bytes(&big);
    eprintln!("built {records} records, {bytes} bytes in {build_s:.1}s");

    let t = Instant::now();
    let mut replayed = 0u64;
    for r in iter_from(&big, 1).expect("iter") {
        std::hint::black_box(r.expect("record").payload.len());
        replayed += 1;
    }
    let replay_s = t.elapsed().as_secs_f64();
    assert_eq!(replayed, records);

    let t = Instant::now();
    let report = verify(&big, 1).expect("verify");
    let verify_s = t.elapsed().as_secs_f64();
    assert!(report.is_valid, "{report:?}");

    let mid_lsn = records / 2;
    let target = iter_from(&big, mid_lsn)
        .expect("iter")
        .next()
        .expect("mid record")
        .expect("mid record")
        .timestamp_nanos;
    // Base backup at LSN 1 (worst case: replay the first half of the journal).
    let t = Instant::now();
    let (from_start, last_a) = recover_to(&big, 1, target);
    let recover_start_s = t.elapsed().as_secs_f64();
    // Base backup in the middle: find the segment holding the target, replay from there.
    let t = Instant::now();
    let seg = find_segment(&big, target);
    let (from_seg, last_b) = recover_to(&big, seg, target);
    let recover_seg_s = t.elapsed().as_secs_f64();
    assert_eq!(last_a, last_b);
    assert!(last_a >= mid_lsn);

    // Total loss: ship the whole journal to an encrypted archive on the same disk, then
    // restore it into empty directories (download, authenticate, SHA-256, chain check).
    let archive_dir = a.dir.join("archive");
    let (restored_wal, restored_bak) = (a.dir.join("restored-wal"), a.dir.join("restored-bak"));
    let (sync_s, restore_s, archived) = rt.block_on(async {
        let archive = Archive::open(
            archive_dir.to_str().expect("utf-8 path"),
            Some(ArchiveKey::generate()),
        )
        .await
        .expect("open archive");
        let t = Instant::now();
        let r = archive
            .sync(&big, &a.dir.join("no-backups"))
            .await
            .expect("sync");
        let sync_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        archive
            .restore_into(&restored_wal, &restored_bak)
            .await
            .expect("restore");
        (sync_s, t.elapsed().as_secs_f64(), r.bytes_uploaded)
    });
    for d in [&archive_dir, &restored_wal, &restored_bak] {
        let _ = std::fs::remove_dir_all(d);
    }

    let mut md = String::new();
    md.push_str(&format!(
        "# Journal vs SQLite ({RECORD_BYTES}-byte records; median of {} alternating runs of {} s per point)\n\n",
        a.repeat, a.seconds
    ));
    md.push_str("| appenders | journal appends/s | journal p50 / p99 µs | journal recs/fsync | SQLite appends/s | SQLite p50 / p99 µs | SQLite recs/txn | ratio |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (j, s) in &appends {
        md.push_str(&format!(
            "| {} | {:.0} | {} / {} | {:.1} | {:.0} | {} / {} | {:.1} | {:.2}× |\n",
            j.appenders,
            j.per_sec,
            j.p50_us,
            j.p99_us,
            j.per_commit,
            s.per_sec,
            s.p50_us,
            s.p99_us,
            s.per_commit,
            j.per_sec / s.per_sec
        ));
    }
    let gib = bytes as f64 / (1u64 << 30) as f64;
    md.push_str(&format!(
        "\n| replay / recovery ({gib:.2} GiB journal, {records} records, page cache warm) | value |\n|---|---:|\n\
         | build (256 appenders) | {build_s:.1} s |\n\
         | replay `iter_from(1)` (decode + CRC + chain) | {:.0} entries/s ({replay_s:.2} s) |\n\
         | `verify` | {:.0} MB/s ({verify_s:.2} s) |\n\
         | recover to mid timestamp, base at LSN 1 ({from_start} records) | {recover_start_s:.3} s |\n\
         | recover to mid timestamp, find segment + replay from it ({from_seg} records) | {recover_seg_s:.3} s |\n\
         | archive `sync` of the closed segments to an encrypted local archive ({:.0} MB) | {sync_s:.2} s ({:.0} MB/s) |\n\
         | archive `restore_into` empty dirs (total loss) | {restore_s:.2} s ({:.0} MB/s) |\n",
        replayed as f64 / replay_s,
        bytes as f64 / 1e6 / verify_s,
        archived as f64 / 1e6,
        archived as f64 / 1e6 / sync_s,
        archived as f64 / 1e6 / restore_s,
    ));
    println!("{md}");
    let raw = json!({
        "append_medians": appends.iter().flat_map(|(j, s)| [j.clone(), s.clone()]).collect::<Vec<_>>(),
        "append_runs": raw_runs,
        "journal_bytes": bytes,
        "journal_records": records,
        "build_seconds": build_s,
        "replay_seconds": replay_s,
        "replay_entries_per_sec": replayed as f64 / replay_s,
        "verify_seconds": verify_s,
        "verify_mb_per_sec": bytes as f64 / 1e6 / verify_s,
        "recover_mid_from_lsn1_seconds": recover_start_s,
        "recover_mid_from_lsn1_records": from_start,
        "recover_mid_from_segment_seconds": recover_seg_s,
        "recover_mid_from_segment_records": from_seg,
        "archive_sync_bytes": archived,
        "archive_sync_seconds": sync_s,
        "archive_restore_seconds": restore_s,
    });
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).expect("out dir");
        std::fs::write(out.join("results.md"), &md).expect("write md");
        std::fs::write(
            out.join("raw.json"),
            serde_json::to_string_pretty(&raw).expect("json"),
        )
        .expect("write json");
    }
    if !a.keep_journal {
        let _ = std::fs::remove_dir_all(&big);
    }
}
