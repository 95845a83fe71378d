//! Recovery speed (ignored by default; run in release):
//! `cargo test --release -p lifeboat-journal --test pitr_perf -- --ignored --nocapture`.
//! Writes a journal of small catalog ops (`LIFEBOAT_PITR_PERF_MIB`, default 1024 MiB), measures
//! full replay throughput, then recovery to a timestamp in the middle from a base backup
//! taken a little before it. Targets: replay ≥ 2 M entries/s (asserted with
//! `LIFEBOAT_PERF_STRICT=1` on an idle machine; otherwise ≥ 1.5 M entries per CPU-second), the
//! mid-log recovery < 2 s.

use std::time::Instant;

use lifeboat_journal::catalog::{Catalog, CatalogOp};
use lifeboat_journal::pitr::backup::{self, time_from_nanos, BackupStamp};
use lifeboat_journal::pitr::encode_op;
use lifeboat_journal::{
    iter_from, recover_from_dirs, Journal, JournalOptions, RecoveryTarget, StateMachine,
};

/// CPU seconds used by this process so far (user + system), from `/proc/self/stat`.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn small_op(i: u64) -> CatalogOp {
    CatalogOp::ConsumerGroupOffsetCommitted {
        group: format!("g{}", i % 16),
        topic: format!("t{}", i % 64),
        partition: (i % 12) as u32,
        offset: i,
    }
}

#[test]
#[ignore = "performance measurement; run in release with --ignored"]
fn recovery_speed() {
    let mib: u64 = std::env::var("LIFEBOAT_PITR_PERF_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    let backups = tmp.path().join("backups");
    let rt = tokio::runtime::Runtime::new().unwrap();

    // A group op for every group first, so offset commits apply (not no-ops).
    let t = Instant::now();
    let j = Journal::open(&wal, JournalOptions::default()).unwrap();
    let mut n = 0u64;
    for g in 0..16 {
        let op = CatalogOp::ConsumerGroupCreated {
            group: format!("g{g}"),
        };
        n = j.write(1, &encode_op(&op).unwrap()).unwrap().lsn;
    }
    let target_bytes = mib * 1024 * 1024;
    let mut bytes = 0u64;
    while bytes < target_bytes {
        let p = encode_op(&small_op(n)).unwrap();
        bytes +=
            lifeboat_journal::record::padded(lifeboat_journal::record::HEADER_LEN + p.len()) as u64;
        n = j.write(1, &p).unwrap().lsn;
    }
    rt.block_on(j.wait_durable(n)).unwrap();
    drop(j);
    eprintln!(
        "wrote {n} records ({:.0} MiB) in {:.1?}",
        bytes as f64 / 1048576.0,
        t.elapsed()
    );

    // Where the time goes: reading + checking records, then decoding the ops too.
    let t = Instant::now();
    let mut count = 0u64;
    for r in iter_from(&wal, 1).unwrap() {
        assert!(r.unwrap().lsn > count);
        count += 1;
    }
    let read_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for r in iter_from(&wal, 1).unwrap() {
        let r = r.unwrap();
        let _op: CatalogOp = lifeboat_journal::pitr::decode_op(&r.payload, r.lsn).unwrap();
    }
    let decode_s = t.elapsed().as_secs_f64();
    eprintln!(
        "read+verify only: {:.2} M records/s; plus op decoding: {:.2} M/s",
        count as f64 / read_s / 1e6,
        count as f64 / decode_s / 1e6
    );

    // Full replay from LSN 1 (no backup).
    let t = Instant::now();
    let cpu = cpu_secs();
    let full = recover_from_dirs::<Catalog>(&wal, &backups, RecoveryTarget::Latest).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu;
    eprintln!(
        "full replay used {cpu:.2} CPU-s over two threads ({:.2} M entries per CPU-second); \
         load average {}",
        n as f64 / cpu / 1e6,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    assert_eq!(full.lsn, lifeboat_journal::Lsn(n));
    let rate = n as f64 / secs;
    eprintln!(
        "full replay: {n} entries in {secs:.2} s = {:.2} M entries/s ({:.0} MiB/s)",
        rate / 1e6,
        bytes as f64 / 1048576.0 / secs
    );

    // A base backup a little before the middle (as an hourly backup would be), then recover to
    // a timestamp in the middle.
    let mid = n / 2;
    let backup_at = mid - mid / 20;
    let at = recover_from_dirs::<Catalog>(
        &wal,
        &backups,
        RecoveryTarget::Lsn(lifeboat_journal::Lsn(backup_at)),
    )
    .unwrap();
    backup::write_backup(
        &backups,
        BackupStamp {
            start_lsn: at.lsn,
            start_timestamp_nanos: at.timestamp_nanos,
            start_hash: at.hash,
            term: lifeboat_journal::Term::from(1),
        },
        &at.state.snapshot(),
        true,
    )
    .unwrap();
    let mid_ts = iter_from(&wal, mid)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .timestamp_nanos;
    let t = Instant::now();
    let r = recover_from_dirs::<Catalog>(
        &wal,
        &backups,
        RecoveryTarget::Timestamp(time_from_nanos(mid_ts)),
    )
    .unwrap();
    let took = t.elapsed();
    assert!(r.base_backup_id.is_some());
    assert!(r.lsn >= lifeboat_journal::Lsn(mid) && r.timestamp_nanos == mid_ts);
    eprintln!(
        "recover to a mid-log timestamp: LSN {} ({} entries replayed from the backup at {backup_at}) in {took:.2?}",
        r.lsn, r.wal_entries_replayed
    );
    if !cfg!(debug_assertions) {
        // Wall-clock replay speed depends on free cores (reader and applier run in parallel);
        // CPU efficiency does not: guard that, and the wall rate only when asked to.
        let per_cpu = n as f64 / cpu;
        assert!(
            per_cpu >= 1.5e6,
            "replay needs {per_cpu:.0} entries per CPU-second"
        );
        if std::env::var("LIFEBOAT_PERF_STRICT").as_deref() == Ok("1") {
            assert!(rate >= 2e6, "replay {rate:.0} entries/s < 2 M/s");
        }
        assert!(took.as_secs_f64() < 2.0, "mid-log recovery took {took:?}");
    }
}

/// Why postcard: decode cost and size of a small op, against serde_json.
#[test]
#[ignore = "performance measurement; run in release with --ignored"]
fn codec_choice() {
    let ops: Vec<CatalogOp> = (0..1_000_000).map(small_op).collect();
    let pc: Vec<Vec<u8>> = ops.iter().map(|o| encode_op(o).unwrap()).collect();
    let js: Vec<Vec<u8>> = ops.iter().map(|o| serde_json::to_vec(o).unwrap()).collect();
    let t = Instant::now();
    for (i, p) in pc.iter().enumerate() {
        let o: CatalogOp = lifeboat_journal::pitr::decode_op(p, i as u64).unwrap();
        std::hint::black_box(o);
    }
    let pc_t = t.elapsed();
    let t = Instant::now();
    for p in &js {
        let o: CatalogOp = serde_json::from_slice(p).unwrap();
        std::hint::black_box(o);
    }
    let js_t = t.elapsed();
    let avg = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / v.len() as f64;
    eprintln!(
        "postcard envelope: {:.1} B/op, {:.0} ns/decode; serde_json: {:.1} B/op, {:.0} ns/decode",
        avg(&pc),
        pc_t.as_nanos() as f64 / 1e6,
        avg(&js),
        js_t.as_nanos() as f64 / 1e6
    );
    assert!(pc_t < js_t);
}
