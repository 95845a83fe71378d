//! Journal archive tests, each run against a local directory and (when `LIFEBOAT_TEST_S3` is
//! set) the loopback S3 server: closed-segment shipping, idempotence, SIGKILLed syncs, total
//! loss, keys, tampered / swapped / missing objects, lag and retention.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lifeboat_journal::archive::{Archive, ArchiveError, ArchiveKey, RestoreOptions};
use lifeboat_journal::{read_from, segment, verify, Journal, JournalOptions, Record};
use lifeboat_store::{Store, StoreOptions};
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "LIFEBOAT_ARCHIVE_KILL_CHILD";
/// Sync processes started (and SIGKILLed unless they finish first) per location.
const ROUNDS: u64 = 20;

/// Archive locations to run each scenario against: a fresh local dir, plus a fresh S3 prefix
/// when `LIFEBOAT_TEST_S3` is set (required with `LIFEBOAT_REQUIRE_S3=1`).
fn locations(tmp: &Path, name: &str) -> Vec<String> {
    lifeboat_testkit::test_locations(tmp, "journal-archive", name)
}

fn store(location: &str) -> Store {
    Store::open(location, &StoreOptions::default()).unwrap()
}

fn opts(segment_size: u64) -> JournalOptions {
    JournalOptions {
        segment_size,
        preallocate: false,
        ..JournalOptions::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("record {i} ")
        .repeat(1 + (i % 13) as usize)
        .into_bytes()
}

/// Appends `n` records (8 concurrent appenders) to an open journal.
async fn append(j: &Arc<Journal>, n: u64) {
    let mut tasks = Vec::new();
    for t in 0..8 {
        let j = j.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n / 8 + u64::from(t < n % 8) {
                j.append(1, &payload(i * 8 + t)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A journal of `n` records in `dir` with small segments; returns it still open.
async fn journal(dir: &Path, n: u64) -> Arc<Journal> {
    let j = Arc::new(Journal::open(dir, opts(4096)).unwrap());
    append(&j, n).await;
    j
}

/// Writes a fake base backup file plus files the archive must ignore.
fn backup_file(dir: &Path, start: u64, id: &str, len: usize) -> (String, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    let name = format!("{start:020}-{id}.lbb");
    let mut rng = rand::rngs::StdRng::seed_from_u64(start);
    let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    std::fs::write(dir.join(&name), &bytes).unwrap();
    std::fs::write(dir.join(format!("{name}.tmp")), b"half written").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not a backup").unwrap();
    (name, bytes)
}

/// First LSN of the active (highest) segment.
fn active_first(dir: &Path) -> u64 {
    segment::list_segments(dir).unwrap().last().unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_ships_only_closed_segments_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, loc) in locations(tmp.path(), "closed").iter().enumerate() {
        let wal = tmp.path().join(format!("wal{n}"));
        let bak = tmp.path().join(format!("bak{n}"));
        let j = journal(&wal, 300).await;
        let (name, _) = backup_file(&bak, 1, "first", 10_000);
        let segs = segment::list_segments(&wal).unwrap().len() as u64;
        assert!(segs >= 4, "test needs several segments, got {segs}");

        let a = Archive::open(loc, None).await.unwrap();
        let r = a.sync(&wal, &bak).await.unwrap();
        assert_eq!(
            r.segments_archived,
            segs - 1,
            "{loc}: all but the active one"
        );
        assert_eq!(r.backups_archived, 1, "{loc}: .tmp and other files ignored");
        assert_eq!(
            r.archived_upto_lsn,
            lifeboat_journal::Lsn(active_first(&wal) - 1)
        );
        let m = a.manifest().await.unwrap();
        assert_eq!(m.segments.len() as u64, segs - 1);
        assert!(m.backups.contains_key(&name));
        let records = read_from(&wal, 1).unwrap();
        for s in m.segments.values() {
            let first = &records[s.first_lsn as usize - 1];
            let last = &records[s.last_lsn as usize - 1];
            assert_eq!(s.first_timestamp_nanos, first.timestamp_nanos);
            assert_eq!(s.last_timestamp_nanos, last.timestamp_nanos);
            assert_eq!(s.last_record_hash, hex::encode(last.hash));
        }

        // Idempotent: nothing new, same manifest.
        let again = a.sync(&wal, &bak).await.unwrap();
        assert_eq!((again.segments_archived, again.backups_archived), (0, 0));
        assert_eq!(again.manifest_seq, r.manifest_seq);
        assert_eq!(a.manifest().await.unwrap(), m);

        // More records: only the newly closed segments are shipped.
        append(&j, 200).await;
        let more = a.sync(&wal, &bak).await.unwrap();
        let now = segment::list_segments(&wal).unwrap().len() as u64;
        assert_eq!(more.segments_archived, now - segs, "{loc}");
        assert_eq!(more.objects_already_present, 0);
        assert_eq!(more.manifest_seq, r.manifest_seq + 1);
        assert_eq!(
            more.archived_upto_lsn,
            lifeboat_journal::Lsn(active_first(&wal) - 1)
        );
        let objects = store(loc).list("segments").await.unwrap();
        assert_eq!(
            objects.len() as u64,
            now - 1,
            "one object per closed segment"
        );
    }
}

/// Writes a journal, syncs, deletes the local directories, restores from the archive alone.
async fn total_loss(loc: &str, tmp: &Path, key: Option<ArchiveKey>) {
    let wal = tmp.join("wal");
    let bak = tmp.join("bak");
    let j = journal(&wal, 400).await;
    let (name, backup) = backup_file(&bak, 1, "base", 50_000);
    let a = Archive::open(loc, key.clone()).await.unwrap();
    let synced = a.sync(&wal, &bak).await.unwrap();
    let upto = synced.archived_upto_lsn.get();
    let originals: Vec<Record> = read_from(&wal, 1).unwrap();
    drop(j);
    std::fs::remove_dir_all(&wal).unwrap();
    std::fs::remove_dir_all(&bak).unwrap();

    let a = Archive::open(loc, key.clone()).await.unwrap();
    let wal2 = tmp.join("wal-restored");
    let bak2 = tmp.join("bak-restored");
    let r = a.restore_into(&wal2, &bak2).await.unwrap();
    assert_eq!(
        (r.first_lsn.get(), r.last_lsn.get(), r.backups),
        (1, upto, 1)
    );
    let restored = read_from(&wal2, 1).unwrap();
    assert_eq!(restored.len() as u64, upto);
    assert_eq!(restored[..], originals[..upto as usize], "{loc}");
    let report = verify(&wal2, 1).unwrap();
    assert!(report.is_valid, "{report:?}");
    assert_eq!(report.verified_entries, upto);
    assert_eq!(std::fs::read(bak2.join(&name)).unwrap(), backup);

    // The restored directory is a working journal: it continues the chain.
    let j = Journal::open(&wal2, opts(4096)).unwrap();
    assert_eq!(j.append(2, b"after restore").await.unwrap(), upto + 1);
    drop(j);
    assert!(verify(&wal2, 1).unwrap().is_valid);

    // Never clobbers: non-empty targets are refused unless allowed.
    let err = a.restore_into(&wal2, &tmp.join("fresh")).await.unwrap_err();
    assert!(
        matches!(&err, ArchiveError::TargetNotEmpty { path } if *path == wal2),
        "{err}"
    );
    let wal3 = tmp.join("wal3");
    std::fs::create_dir_all(&wal3).unwrap();
    std::fs::write(wal3.join("stray"), b"x").unwrap();
    let opts = RestoreOptions {
        allow_non_empty: true,
    };
    a.restore_into_with(&wal3, &tmp.join("bak3"), &opts)
        .await
        .unwrap();
    assert_eq!(read_from(&wal3, 1).unwrap().len() as u64, upto);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_loss_restore_plain_and_encrypted() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, loc) in locations(tmp.path(), "loss").iter().enumerate() {
        let plain = tmp.path().join(format!("plain{n}"));
        total_loss(loc, &plain, None).await;
        let enc = tmp.path().join(format!("enc{n}"));
        total_loss(&format!("{loc}-enc"), &enc, Some(ArchiveKey::generate())).await;
        // Encrypted objects do not contain the plaintext.
        let s = store(&format!("{loc}-enc"));
        let obj = &s.list("segments").await.unwrap()[0];
        let bytes = s.get(&obj.key).await.unwrap();
        assert!(obj.key.ends_with(".seg.enc"));
        assert!(!bytes.windows(9).any(|w| w == b"record 1 "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    for loc in locations(tmp.path(), "keys") {
        let key = ArchiveKey::generate();
        // Readers never create an archive: a location without one is `NoArchive`.
        let err = Archive::open_existing(&loc, Some(key.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, ArchiveError::NoArchive { .. }), "{err}");
        assert_eq!(err.class(), lifeboat_journal::ErrorClass::NotFound);
        let info = store(&loc).get("archive.json").await;
        assert!(
            info.is_err_and(|e| e.is_not_found()),
            "archive.json was created"
        );
        Archive::open(&loc, Some(key.clone())).await.unwrap();
        Archive::open_existing(&loc, Some(key.clone()))
            .await
            .unwrap();
        Archive::open(&loc, Some(key)).await.unwrap();
        let err = Archive::open(&loc, None).await.unwrap_err();
        assert!(matches!(err, ArchiveError::KeyRequired { .. }), "{err}");
        assert!(err.to_string().contains("key is required"), "{err}");
        let err = Archive::open(&loc, Some(ArchiveKey::generate()))
            .await
            .unwrap_err();
        assert!(matches!(err, ArchiveError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains("wrong archive key"), "{err}");
        assert_eq!(err.class(), lifeboat_journal::ErrorClass::Auth);

        let plain = format!("{loc}-plain");
        Archive::open(&plain, None).await.unwrap();
        let err = Archive::open(&plain, Some(ArchiveKey::generate()))
            .await
            .unwrap_err();
        assert!(matches!(err, ArchiveError::NotEncrypted { .. }), "{err}");
    }
    // Key files: 64 hex chars (with a newline) or 32 raw bytes; anything else is explained.
    let k = ArchiveKey::generate();
    let hexfile = tmp.path().join("key.hex");
    std::fs::write(&hexfile, format!("{}\n", k.to_hex())).unwrap();
    assert_eq!(
        ArchiveKey::from_file(&hexfile).unwrap().to_hex(),
        k.to_hex()
    );
    let raw = tmp.path().join("key.raw");
    std::fs::write(&raw, [7u8; 32]).unwrap();
    assert_eq!(
        ArchiveKey::from_file(&raw).unwrap().to_hex(),
        ArchiveKey::from_bytes([7u8; 32]).to_hex()
    );
    let bad = tmp.path().join("key.bad");
    std::fs::write(&bad, b"too short").unwrap();
    let err = ArchiveKey::from_file(&bad).unwrap_err();
    assert!(err.to_string().contains("64 hex characters"), "{err}");
}

/// Restores into a fresh dir and returns the error.
async fn restore_err(a: &Archive, tmp: &Path, tag: &str) -> ArchiveError {
    a.restore_into(&tmp.join(format!("w-{tag}")), &tmp.join(format!("b-{tag}")))
        .await
        .unwrap_err()
}

async fn damaged_objects(loc: &str, tmp: &Path, key: Option<ArchiveKey>) {
    let wal = tmp.join("wal");
    let bak = tmp.join("bak");
    let _j = journal(&wal, 300).await;
    backup_file(&bak, 1, "base", 5_000);
    let a = Archive::open(loc, key.clone()).await.unwrap();
    a.sync(&wal, &bak).await.unwrap();
    let m = a.manifest().await.unwrap();
    let mut segs = m.segments.values();
    let (s1, s2) = (segs.next().unwrap().clone(), segs.next().unwrap().clone());
    let st = store(loc);
    let orig1 = st.get(&s1.object).await.unwrap();
    let orig2 = st.get(&s2.object).await.unwrap();
    let range = format!("LSN {}..={}", s2.first_lsn, s2.last_lsn);

    // Tampered: one flipped byte.
    let mut bad = orig2.to_vec();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    st.put(&s2.object, bad.into()).await.unwrap();
    let err = restore_err(&a, tmp, "tamper").await;
    let msg = err.to_string();
    assert!(matches!(err, ArchiveError::Damaged { .. }), "{msg}");
    assert!(msg.contains(&s2.object) && msg.contains(&range), "{msg}");
    let why = if key.is_some() {
        "authentication failed"
    } else {
        "SHA-256"
    };
    assert!(msg.contains(why), "{msg}");

    // Swapped: segment 1's object stored under segment 2's name.
    st.put(&s2.object, orig1.clone()).await.unwrap();
    let err = restore_err(&a, tmp, "swap").await;
    let msg = err.to_string();
    assert!(matches!(err, ArchiveError::Damaged { .. }), "{msg}");
    assert!(msg.contains(&s2.object) && msg.contains(why), "{msg}");

    // Missing.
    st.delete(&s2.object).await.unwrap();
    let err = restore_err(&a, tmp, "missing").await;
    let msg = err.to_string();
    assert!(matches!(err, ArchiveError::Missing { .. }), "{msg}");
    assert!(msg.contains(&s2.object) && msg.contains(&range), "{msg}");

    // Put back: the archive restores again.
    st.put(&s2.object, orig2).await.unwrap();
    a.restore_into(&tmp.join("w-ok"), &tmp.join("b-ok"))
        .await
        .unwrap();

    if key.is_some() {
        // The manifest is authenticated too.
        let mkey = st.list("manifest").await.unwrap().pop().unwrap().key;
        let mut mbytes = st.get(&mkey).await.unwrap().to_vec();
        let last = mbytes.len() - 1;
        mbytes[last] ^= 1;
        st.put(&mkey, mbytes.into()).await.unwrap();
        let err = a.manifest().await.unwrap_err();
        assert!(matches!(err, ArchiveError::BadFormat { .. }), "{err}");
        assert!(err.to_string().contains("authentication failed"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_swapped_and_missing_objects_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, loc) in locations(tmp.path(), "damage").iter().enumerate() {
        damaged_objects(loc, &tmp.path().join(format!("p{n}")), None).await;
        damaged_objects(
            &format!("{loc}-enc"),
            &tmp.path().join(format!("e{n}")),
            Some(ArchiveKey::generate()),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_journal_on_the_same_archive_is_a_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, loc) in locations(tmp.path(), "conflict").iter().enumerate() {
        let wal_a = tmp.path().join(format!("a{n}"));
        let wal_b = tmp.path().join(format!("b{n}"));
        let bak = tmp.path().join(format!("bak{n}"));
        let _ja = journal(&wal_a, 200).await;
        let jb = Arc::new(Journal::open(&wal_b, opts(4096)).unwrap());
        for i in 0..200u64 {
            jb.append(1, format!("other {i}").as_bytes()).await.unwrap();
        }
        let a = Archive::open(loc, None).await.unwrap();
        a.sync(&wal_a, &bak).await.unwrap();
        let before = a.manifest().await.unwrap();
        let err = a.sync(&wal_b, &bak).await.unwrap_err();
        assert!(matches!(err, ArchiveError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("another journal"), "{err}");
        assert_eq!(a.manifest().await.unwrap(), before, "nothing published");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_in_entries_and_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, loc) in locations(tmp.path(), "lag").iter().enumerate() {
        let wal = tmp.path().join(format!("wal{n}"));
        let bak = tmp.path().join(format!("bak{n}"));
        let a = Archive::open(loc, None).await.unwrap();
        let j = Arc::new(Journal::open(&wal, opts(4096)).unwrap());
        let lag = a.lag(&wal).await.unwrap();
        assert_eq!((lag.entries, lag.seconds), (0, 0.0), "empty journal");

        append(&j, 300).await;
        let records = read_from(&wal, 1).unwrap();
        let age = |ts: i64| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64;
            (now - ts) as f64 / 1e9
        };
        let lower = age(records[0].timestamp_nanos);
        let lag = a.lag(&wal).await.unwrap();
        let upper = age(records[0].timestamp_nanos);
        assert_eq!((lag.entries, lag.local_last_lsn.get()), (300, 300));
        assert!(lag.seconds >= lower && lag.seconds <= upper, "{lag:?}");

        let r = a.sync(&wal, &bak).await.unwrap();
        let oldest = &records[r.archived_upto_lsn.get() as usize];
        let lower = age(oldest.timestamp_nanos);
        let lag = a.lag(&wal).await.unwrap();
        let upper = age(oldest.timestamp_nanos);
        assert_eq!(lag.archived_upto_lsn, r.archived_upto_lsn);
        assert_eq!(
            lag.entries,
            300 - r.archived_upto_lsn.get(),
            "active segment only"
        );
        assert!(lag.entries > 0 && lag.entries < 300);
        assert!(lag.seconds >= lower && lag.seconds <= upper, "{lag:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_manifest_first_then_objects() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, loc) in locations(tmp.path(), "retention").iter().enumerate() {
        let wal = tmp.path().join(format!("wal{n}"));
        let bak = tmp.path().join(format!("bak{n}"));
        let _j = journal(&wal, 400).await;
        let (old, _) = backup_file(&bak, 1, "old", 1000);
        let (new, new_bytes) = backup_file(&bak, 200, "new", 1000);
        let a = Archive::open(loc, None).await.unwrap();
        a.sync(&wal, &bak).await.unwrap();
        let m = a.manifest().await.unwrap();
        let keep_from = m.segments.values().nth(2).unwrap().first_lsn + 1;
        let r = a
            .apply_retention(lifeboat_journal::Lsn(keep_from), std::slice::from_ref(&new))
            .await
            .unwrap();
        assert_eq!((r.segments_deleted, r.backups_deleted), (2, 1));
        let after = a.manifest().await.unwrap();
        assert_eq!(after.segments.len(), m.segments.len() - 2);
        assert!(after.segments.values().all(|s| s.last_lsn >= keep_from));
        assert!(!after.backups.contains_key(&old) && after.backups.contains_key(&new));
        let st = store(loc);
        let objects: Vec<String> = st
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        for s in m.segments.values().take(2) {
            assert!(!objects.contains(&s.object), "{} not deleted", s.object);
        }
        assert!(!objects.iter().any(|o| o.contains(&old)));

        // Local segments below the retention point are not shipped again.
        let again = a.sync(&wal, &bak).await.unwrap();
        assert_eq!(again.segments_archived, 0);
        // ...but the old backup, still local, is (the caller decides what to keep locally).
        assert_eq!(again.backups_archived, 1);
        a.apply_retention(lifeboat_journal::Lsn(keep_from), std::slice::from_ref(&new))
            .await
            .unwrap();

        let (w, b) = (
            tmp.path().join(format!("rw{n}")),
            tmp.path().join(format!("rb{n}")),
        );
        let rr = a.restore_into(&w, &b).await.unwrap();
        let first_kept = after.segments.keys().next().copied().unwrap();
        assert_eq!(rr.first_lsn, lifeboat_journal::Lsn(first_kept));
        let report = verify(&w, 1).unwrap();
        assert!(report.is_valid, "{report:?}");
        assert_eq!(std::fs::read(b.join(&new)).unwrap(), new_bytes);
        assert!(!b.join(&old).exists());
    }
}

/// Child half of the kill test: says when its sync starts and when it is done (with its
/// duration, which the parent uses to aim its kills).
#[test]
fn kill_child_sync() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut it = spec.splitn(3, '\n');
    let (loc, wal, bak) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = Archive::open(loc, None).await.unwrap();
        println!("\nstart");
        let t = std::time::Instant::now();
        let r = a.sync(Path::new(wal), Path::new(bak)).await.unwrap();
        println!(
            "\nsynced {} {} {}",
            r.segments_archived,
            t.elapsed().as_micros(),
            r.objects_already_present
        );
    });
}

/// Runs the child sync and SIGKILLs it `delay_fraction × expected` after it starts syncing;
/// returns the sync's duration in microseconds and the objects it found already uploaded
/// (left by killed predecessors) if it finished first.
fn sync_and_kill(
    exe: &Path,
    loc: &str,
    wal: &Path,
    bak: &Path,
    expected: Duration,
    delay_fraction: f64,
) -> Option<(u64, u64)> {
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "archive::kill_child_sync",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(
            CHILD_ENV,
            format!("{loc}\n{}\n{}", wal.display(), bak.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut done = None;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child did not start its sync");
        if line.contains("start") {
            break;
        }
    }
    std::thread::sleep(expected.mul_f64(delay_fraction));
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    for line in rx.try_iter() {
        if let Some(rest) = line.split("synced ").nth(1) {
            let n: Vec<u64> = rest
                .split_whitespace()
                .map(|w| w.parse().unwrap())
                .collect();
            done = Some((n[1], n[2]));
        }
    }
    done
}

#[test]
fn sync_killed_at_random_points_then_resynced_is_complete() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (n, loc) in locations(tmp.path(), "kill").iter().enumerate() {
        let wal: PathBuf = tmp.path().join(format!("wal{n}"));
        let bak: PathBuf = tmp.path().join(format!("bak{n}"));
        let j = Arc::new(Journal::open(&wal, opts(2048)).unwrap());
        let mut rng = rand::rngs::StdRng::seed_from_u64(7 + n as u64);
        let (mut finished, mut killed, mut leftovers) = (0, 0, 0);
        // Kill within the time a sync of one round's work took when it was left to finish.
        let mut expected = Duration::from_millis(50);
        for round in 0..ROUNDS {
            rt.block_on(append(&j, 400));
            backup_file(&bak, round * 1000 + 1, &format!("r{round}"), 20_000);
            // Every fourth sync gets ample time, so kills also land after some manifests.
            let fraction = if round % 4 == 2 {
                4.0
            } else {
                rng.gen_range(0.0..0.5)
            };
            match sync_and_kill(&exe, loc, &wal, &bak, expected, fraction) {
                Some((us, present)) => {
                    finished += 1;
                    leftovers += present;
                    expected = Duration::from_micros(us);
                }
                None => {
                    killed += 1;
                    // Unfinished work piles up for the next sync.
                    expected = expected.mul_f64(1.3);
                }
            }
        }
        let original = read_from(&wal, 1).unwrap();
        rt.block_on(async {
            let a = Archive::open(loc, None).await.unwrap();
            let published = a.manifest().await.unwrap().seq;
            let r = a.sync(&wal, &bak).await.unwrap();
            eprintln!(
                "{loc}: {killed} syncs killed, {finished} finished; children published {published} \
                 manifests; later syncs found {} objects uploaded by killed ones",
                leftovers + r.objects_already_present
            );
            assert!(killed >= 10, "only {killed} syncs were interrupted");
            assert!(finished >= 1 && published > 0, "no sync ever finished");
            assert!(
                leftovers + r.objects_already_present > 0,
                "no kill ever landed between an upload and its manifest"
            );
            assert_eq!(
                r.archived_upto_lsn,
                lifeboat_journal::Lsn(active_first(&wal) - 1)
            );
            let m = a.manifest().await.unwrap();
            assert_eq!(m.backups.len() as u64, ROUNDS);
            let (w, b) = (
                tmp.path().join(format!("rw{n}")),
                tmp.path().join(format!("rb{n}")),
            );
            let rr = a.restore_into(&w, &b).await.unwrap();
            assert_eq!(rr.backups, ROUNDS);
            let restored = read_from(&w, 1).unwrap();
            assert_eq!(restored[..], original[..r.archived_upto_lsn.get() as usize]);
            assert!(verify(&w, 1).unwrap().is_valid);
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_futures_dropped_at_random_await_points_then_resynced_is_complete() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, loc) in locations(tmp.path(), "drop").iter().enumerate() {
        let wal = tmp.path().join(format!("wal{n}"));
        let bak = tmp.path().join(format!("bak{n}"));
        let key = Some(ArchiveKey::generate());
        let j = Arc::new(Journal::open(&wal, opts(2048)).unwrap());
        let a = Archive::open(loc, key.clone()).await.unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11 + n as u64);
        let (mut dropped, mut finished, mut leftovers) = (0, 0, 0);
        let mut expected = Duration::ZERO;
        for round in 0..12u64 {
            append(&j, 150).await;
            backup_file(&bak, round * 1000 + 1, &format!("d{round}"), 5_000);
            // Cancel the sync at a random moment within about the time the last complete sync
            // took: the future is dropped at whatever await point it reached (mid upload,
            // between upload and manifest, ...).
            // Every fourth sync runs to completion, to calibrate and to publish manifests.
            let limit = if round % 4 == 0 {
                Duration::from_secs(60)
            } else {
                expected.mul_f64(rng.gen_range(0.0..0.8))
            };
            let t = std::time::Instant::now();
            match tokio::time::timeout(limit, a.sync(&wal, &bak)).await {
                Ok(r) => {
                    finished += 1;
                    leftovers += r.unwrap().objects_already_present;
                    expected = t.elapsed();
                }
                Err(_) => {
                    dropped += 1;
                    expected = expected.mul_f64(1.3);
                }
            }
        }
        let r = a.sync(&wal, &bak).await.unwrap();
        leftovers += r.objects_already_present;
        eprintln!(
            "{loc}: {dropped} syncs cancelled, {finished} finished, {leftovers} objects of \
             cancelled syncs found by later ones"
        );
        assert!(dropped >= 5, "{loc}: only {dropped} syncs were cancelled");
        assert!(
            finished >= 3,
            "{loc}: the uncancelled syncs failed to finish"
        );
        assert!(
            leftovers > 0,
            "{loc}: no cancellation landed between upload and manifest"
        );
        assert_eq!(
            r.archived_upto_lsn,
            lifeboat_journal::Lsn(active_first(&wal) - 1)
        );
        let original = read_from(&wal, 1).unwrap();
        let (w, b) = (
            tmp.path().join(format!("dw{n}")),
            tmp.path().join(format!("db{n}")),
        );
        let rr = a.restore_into(&w, &b).await.unwrap();
        assert_eq!(rr.backups, 12);
        let restored = read_from(&w, 1).unwrap();
        assert_eq!(restored[..], original[..r.archived_upto_lsn.get() as usize]);
        assert!(verify(&w, 1).unwrap().is_valid);
    }
}
