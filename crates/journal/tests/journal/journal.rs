//! Journal integration tests: round trips, rotation, torn tails, corruption, tampering,
//! fencing and group commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat_journal::record::{self, RecordError};
use lifeboat_journal::segment::{self, SEGMENT_HEADER_LEN};
use lifeboat_journal::{read_from, verify, Error, Journal, JournalOptions};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn opts(segment_size: u64) -> JournalOptions {
    JournalOptions {
        segment_size,
        preallocate: true,
        ..JournalOptions::default()
    }
}

/// Non-zero payload bytes that identify the record.
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| ((i * 31 + k * 7) % 251 + 1) as u8)
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    segment::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|s| s.1)
        .collect()
}

/// Byte ranges of the records in a segment file.
fn record_ranges(path: &Path) -> Vec<(usize, usize, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let scan = segment::scan(path, &bytes, false).unwrap();
    assert!(scan.stop.is_none());
    let mut out = Vec::new();
    for (i, (off, r)) in scan.records.iter().enumerate() {
        let end = scan.records.get(i + 1).map_or(scan.end, |n| n.0);
        out.push((*off, end, r.lsn));
    }
    out
}

/// Writes `n` records of varied sizes and returns their payloads.
fn fill(dir: &Path, seg: u64, n: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| payload(i, rng.gen_range(20..300))).collect();
    rt().block_on(async {
        let j = Journal::open(dir, opts(seg)).unwrap();
        for (i, p) in payloads.iter().enumerate() {
            assert_eq!(j.append(1, p).await.unwrap(), i as u64 + 1);
        }
    });
    payloads
}

fn assert_prefix(dir: &Path, payloads: &[Vec<u8>], n: usize) {
    let recs = read_from(dir, 1).unwrap();
    assert_eq!(recs.len(), n, "expected exactly {n} surviving records");
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.lsn, i as u64 + 1);
        assert_eq!(r.payload, payloads[i]);
    }
}

/// After recovery, appends continue the chain and everything verifies.
fn append_continues(dir: &Path, seg: u64, expected_next: u64) {
    rt().block_on(async {
        let j = Journal::open(dir, opts(seg)).unwrap();
        assert!(
            j.stats().torn_tail.is_none(),
            "second open finds nothing to repair"
        );
        assert_eq!(j.append(1, b"after").await.unwrap(), expected_next);
    });
    let report = verify(dir, 1).unwrap();
    assert!(report.is_valid, "{report:?}");
    assert_eq!(report.verified_entries, expected_next);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn appended_records_read_back_and_chain(
        sizes in prop::collection::vec(0usize..700, 1..60),
        more in prop::collection::vec(0usize..700, 0..20),
        seg in 256u64..4096,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let all: Vec<Vec<u8>> = sizes.iter().chain(more.iter()).enumerate().map(|(i, &l)| payload(i, l)).collect();
        rt().block_on(async {
            let j = Journal::open(&dir, opts(seg)).unwrap();
            for (i, p) in all[..sizes.len()].iter().enumerate() {
                prop_assert_eq!(j.append(3, p).await.unwrap(), i as u64 + 1);
            }
            let s = j.stats();
            prop_assert_eq!(s.durable_lsn.get(), sizes.len() as u64);
            prop_assert_eq!(s.written_lsn.get(), sizes.len() as u64);
            drop(j);
            let j = Journal::open(&dir, opts(seg)).unwrap();
            prop_assert!(j.stats().torn_tail.is_none());
            for (i, p) in all[sizes.len()..].iter().enumerate() {
                prop_assert_eq!(j.append(3, p).await.unwrap(), (sizes.len() + i) as u64 + 1);
            }
            Ok(())
        })?;
        let recs = read_from(&dir, 1).unwrap();
        prop_assert_eq!(recs.len(), all.len());
        let mut prev = [0u8; 32];
        for (i, r) in recs.iter().enumerate() {
            prop_assert_eq!(r.lsn, i as u64 + 1);
            prop_assert_eq!(&r.payload, &all[i]);
            prop_assert_eq!(r.prev_hash, prev);
            prop_assert_eq!(r.term, 3);
            prev = r.hash;
        }
        let from = (all.len() as u64 / 2).max(1);
        let tail = read_from(&dir, from).unwrap();
        prop_assert_eq!(tail.first().map(|r| r.lsn), Some(from));
        let lsns: Vec<u64> = lifeboat_journal::iter_from(&dir, from).unwrap().map(|r| r.unwrap().lsn).collect();
        prop_assert_eq!(lsns, (from..=all.len() as u64).collect::<Vec<u64>>());
        let report = verify(&dir, 1).unwrap();
        prop_assert!(report.is_valid, "{:?}", report);
        prop_assert_eq!(report.verified_entries, all.len() as u64);
        // Segments are named by their first LSN and sized near the limit.
        for (first, path) in segment::list_segments(&dir).unwrap() {
            let h = segment::SegmentHeader::decode(&std::fs::read(&path).unwrap()).unwrap();
            prop_assert_eq!(h.first_lsn, first);
        }
    }
}

#[test]
fn truncating_the_last_segment_at_random_offsets() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..30 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let seg = 8192;
        let payloads = fill(&dir, seg, 80);
        let segs = segments(&dir);
        assert!(segs.len() >= 2, "round {round}: want rotation");
        let last = segs.last().unwrap();
        let ranges = record_ranges(last);
        let data_end = ranges.last().unwrap().1;
        let cut = rng.gen_range(SEGMENT_HEADER_LEN..data_end);
        std::fs::OpenOptions::new()
            .write(true)
            .open(last)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let survivors = ranges.iter().filter(|r| r.1 <= cut).count() as u64 + ranges[0].2 - 1;

        let j = Journal::open(&dir, opts(seg)).unwrap();
        let torn = j.stats().torn_tail;
        let on_boundary = ranges.iter().any(|r| r.0 == cut);
        assert_eq!(
            torn.is_none(),
            on_boundary,
            "round {round} cut {cut}: {torn:?}"
        );
        if let Some(t) = torn {
            assert!(matches!(t.reason, RecordError::Torn { .. }), "{t:?}");
            assert_eq!(
                t.offset as usize,
                ranges
                    .iter()
                    .rfind(|r| r.1 <= cut)
                    .map_or(SEGMENT_HEADER_LEN, |r| r.1)
            );
            assert!(t.saved_to.exists());
            assert!(t.saved_to.to_string_lossy().contains(".torn-"));
        }
        assert_eq!(j.stats().next_lsn, lifeboat_journal::Lsn(survivors + 1));
        drop(j);
        assert_prefix(&dir, &payloads, survivors as usize);
        append_continues(&dir, seg, survivors + 1);
    }
}

#[test]
fn zeroed_sector_in_the_tail() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for round in 0..20 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let seg = 16384;
        let payloads = fill(&dir, seg, 120);
        let last = segments(&dir).pop().unwrap();
        let ranges = record_ranges(&last);
        let data_end = ranges.last().unwrap().1;
        let first_sector = SEGMENT_HEADER_LEN.div_ceil(512);
        let sector = rng.gen_range(first_sector..data_end.div_ceil(512));
        let (s, e) = (sector * 512, sector * 512 + 512);
        let mut bytes = std::fs::read(&last).unwrap();
        let damaged = ranges
            .iter()
            .position(|r| {
                let (a, b) = (r.0.max(s), r.1.min(e));
                a < b && bytes[a..b].iter().any(|&x| x != 0)
            })
            .unwrap();
        bytes[s..e].fill(0);
        std::fs::write(&last, &bytes).unwrap();
        let survivors = ranges[damaged].2 - 1;

        let j = Journal::open(&dir, opts(seg)).unwrap();
        let t = j.stats().torn_tail.expect("damage set aside");
        assert_eq!(t.offset as usize, ranges[damaged].0, "round {round}");
        let saved = std::fs::read(&t.saved_to).unwrap();
        assert_eq!(
            &saved[..],
            &bytes[t.offset as usize..t.offset as usize + saved.len()]
        );
        drop(j);
        assert_prefix(&dir, &payloads, survivors as usize);
        append_continues(&dir, seg, survivors + 1);
    }
}

/// Offset and LSN of a record in the first (closed) segment.
fn closed_record(dir: &Path) -> (PathBuf, usize, usize, u64) {
    let segs = segments(dir);
    assert!(segs.len() >= 3);
    let ranges = record_ranges(&segs[0]);
    let (off, end, lsn) = ranges[ranges.len() / 2];
    (segs[0].clone(), off, end, lsn)
}

#[test]
fn bit_flip_in_a_closed_segment_names_the_lsn() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    fill(&dir, 4096, 80);
    let (path, off, end, lsn) = closed_record(&dir);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = off + record::HEADER_LEN + (end - off - record::HEADER_LEN) / 3;
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    match Journal::open(&dir, opts(4096)) {
        Err(Error::Corrupt {
            lsn: l,
            reason: RecordError::BadCrc { .. },
            ..
        }) => assert_eq!(l, lifeboat_journal::Lsn(lsn)),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a corrupt journal"),
    }
    let report = verify(&dir, 1).unwrap();
    assert!(!report.is_valid);
    assert_eq!(report.errors[0].0, lsn, "{report:?}");
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(
        matches!(read_from(&dir, 1), Err(Error::Corrupt { lsn: l, .. }) if l == lifeboat_journal::Lsn(lsn))
    );
    let items: Vec<_> = lifeboat_journal::iter_from(&dir, 1).unwrap().collect();
    assert_eq!(
        items.len() as u64,
        lsn,
        "records before the damage, then one error"
    );
    assert!(
        matches!(items.last(), Some(Err(Error::Corrupt { lsn: l, .. })) if *l == lifeboat_journal::Lsn(lsn))
    );
    // Records before the damage are still readable by a reader that stops there.
    let mut seen = 0;
    let _ = lifeboat_journal::reader::for_each_from(&dir, 1, |_| seen += 1);
    assert_eq!(seen, lsn - 1);
}

#[test]
fn tampering_with_a_fixed_crc_is_caught_by_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    fill(&dir, 4096, 80);
    let (path, off, _end, lsn) = closed_record(&dir);
    let mut bytes = std::fs::read(&path).unwrap();
    let h = segment::SegmentHeader::decode(&bytes).unwrap();
    let (rec, used) = record::decode(h.salt, &bytes[off..]).unwrap();
    let mut payload = rec.payload.to_vec();
    payload[0] ^= 0xff;
    let (forged, _) = record::encode(
        h.salt,
        rec.rec_type,
        rec.lsn,
        rec.timestamp_nanos,
        rec.term,
        &rec.prev_hash,
        &payload,
    );
    assert_eq!(forged.len(), used);
    bytes[off..off + used].copy_from_slice(&forged);
    std::fs::write(&path, &bytes).unwrap();
    // The forged record itself decodes fine...
    assert!(record::decode(h.salt, &bytes[off..]).is_ok());
    // ...but the next one no longer links to it.
    let report = verify(&dir, 1).unwrap();
    assert!(!report.is_valid);
    assert_eq!(report.errors[0].0, lsn + 1, "{report:?}");
    assert!(report.errors[0].1.contains("hash chain"), "{report:?}");
    match Journal::open(&dir, opts(4096)) {
        Err(Error::Corrupt {
            lsn: l,
            reason: RecordError::ChainMismatch { .. },
            ..
        }) => assert_eq!(l, lifeboat_journal::Lsn(lsn + 1)),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a tampered journal"),
    }
}

#[test]
fn stale_bytes_under_an_old_salt_are_not_records() {
    // A record written under one segment's salt does not decode in another segment.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    fill(&dir, 4096, 40);
    let segs = segments(&dir);
    let old = std::fs::read(&segs[0]).unwrap();
    let last = segs.last().unwrap();
    let ranges = record_ranges(last);
    let end = ranges.last().unwrap().1;
    // Copy a record image from the first segment to just after the last record; pretend it
    // is leftover space from a recycled file.
    let r0 = record_ranges(&segs[0]);
    let mut bytes = std::fs::read(last).unwrap();
    let img = &old[r0[0].0..r0[0].1];
    bytes[end..end + img.len()].copy_from_slice(img);
    std::fs::write(last, &bytes).unwrap();
    let j = Journal::open(&dir, opts(4096)).unwrap();
    let t = j.stats().torn_tail.expect("stale bytes set aside");
    assert!(matches!(t.reason, RecordError::BadCrc { .. }), "{t:?}");
    assert_eq!(j.stats().next_lsn, lifeboat_journal::Lsn(41));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_term_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(tmp.path(), JournalOptions::default()).unwrap();
    assert_eq!(j.append(5, b"a").await.unwrap(), 1);
    assert!(matches!(
        j.append(3, b"b").await,
        Err(Error::StaleTerm {
            term: lifeboat_types::FencingToken(3),
            highest: lifeboat_types::FencingToken(5)
        })
    ));
    assert_eq!(j.append(5, b"c").await.unwrap(), 2);
    assert_eq!(j.append(6, b"d").await.unwrap(), 3);
    drop(j);
    let j = Journal::open(tmp.path(), JournalOptions::default()).unwrap();
    assert_eq!(j.stats().highest_term, lifeboat_types::FencingToken(6));
    assert!(matches!(
        j.append(5, b"e").await,
        Err(Error::StaleTerm {
            term: lifeboat_types::FencingToken(5),
            highest: lifeboat_types::FencingToken(6)
        })
    ));
    assert_eq!(j.append(7, b"f").await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fsync_failure_poisons_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let o = JournalOptions {
        fail_fsync_number: Some(3),
        ..JournalOptions::default()
    };
    let j = Journal::open(tmp.path(), o).unwrap();
    assert_eq!(j.append(1, b"a").await.unwrap(), 1);
    assert_eq!(j.append(1, b"b").await.unwrap(), 2);
    let e = j.append(1, b"c").await.unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert_eq!(
        j.stats().durable_lsn,
        lifeboat_journal::Lsn(2),
        "the failed record is not reported durable"
    );
    for _ in 0..3 {
        let e = j.append(1, b"d").await.unwrap_err();
        assert!(matches!(e, Error::Poisoned(_)), "{e}");
        assert!(e.to_string().contains("injected fsync failure"), "{e}");
    }
    drop(j);
    // Reopening recovers from what is on disk; the unacknowledged record may or may not be
    // there, and the journal is usable again.
    let j = Journal::open(tmp.path(), JournalOptions::default()).unwrap();
    let next = j.stats().next_lsn.get();
    assert!(next == 3 || next == 4, "{next}");
    assert_eq!(j.append(1, b"e").await.unwrap(), next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_share_fsyncs() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Arc::new(Journal::open(tmp.path(), opts(64 * 1024)).unwrap());
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let j = j.clone();
        tasks.push(tokio::spawn(async move {
            let mut lsns = Vec::new();
            for i in 0..100u64 {
                let lsn = j
                    .append(1, format!("task {t} op {i}").as_bytes())
                    .await
                    .unwrap();
                assert!(
                    j.stats().durable_lsn >= lifeboat_journal::Lsn(lsn),
                    "returned before durable"
                );
                lsns.push(lsn);
            }
            lsns
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let lsns = t.await.unwrap();
        assert!(
            lsns.windows(2).all(|w| w[0] < w[1]),
            "each task's LSNs increase"
        );
        all.extend(lsns);
    }
    all.sort();
    assert_eq!(all, (1..=6400).collect::<Vec<u64>>());
    let s = j.stats();
    eprintln!(
        "6400 appends, {} fsyncs, {} segments",
        s.fsync_count, s.segment_count
    );
    assert_eq!(s.append_count, 6400);
    assert!(
        s.fsync_count * 4 < s.append_count,
        "group commit: {} fsyncs",
        s.fsync_count
    );
    drop(j);
    let report = verify(tmp.path(), 1).unwrap();
    assert!(
        report.is_valid && report.verified_entries == 6400,
        "{report:?}"
    );
}

#[test]
fn a_missing_middle_segment_is_an_error_naming_the_lsn() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    fill(&dir, 4096, 80);
    let segs = segment::list_segments(&dir).unwrap();
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1].1).unwrap();
    match Journal::open(&dir, opts(4096)) {
        Err(Error::Corrupt { lsn, .. }) => assert_eq!(lsn, lifeboat_journal::Lsn(segs[1].0)),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a journal with a hole"),
    }
    let report = verify(&dir, 1).unwrap();
    assert!(!report.is_valid);
    assert_eq!(report.errors[0].0, segs[1].0, "{report:?}");
}

#[test]
fn closed_segments_are_trimmed_and_the_active_one_preallocated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    fill(&dir, 4096, 80);
    let segs = segments(&dir);
    for s in &segs[..segs.len() - 1] {
        let len = std::fs::metadata(s).unwrap().len() as usize;
        assert_eq!(
            len,
            record_ranges(s).last().unwrap().1,
            "closed segment holds exactly its records"
        );
    }
    assert_eq!(std::fs::metadata(segs.last().unwrap()).unwrap().len(), 4096);
}

#[test]
fn a_bit_flip_before_intact_records_in_the_last_segment_is_not_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let payloads = fill(&dir, 16384, 120);
    let last = segments(&dir).pop().unwrap();
    let ranges = record_ranges(&last);
    assert!(ranges.len() >= 4);
    let (off, _, lsn) = ranges[1];
    let mut bytes = std::fs::read(&last).unwrap();
    bytes[off + record::HEADER_LEN + 3] ^= 0x01;
    std::fs::write(&last, &bytes).unwrap();
    match Journal::open(&dir, opts(16384)) {
        Err(Error::Corrupt { lsn: l, .. }) => assert_eq!(l, lifeboat_journal::Lsn(lsn)),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("acknowledged records after rot were treated as a torn tail"),
    }
    assert_eq!(
        std::fs::read(&last).unwrap(),
        bytes,
        "nothing was truncated"
    );
    let report = verify(&dir, 1).unwrap();
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].0, lsn);
    assert!(report.errors[0].1.contains("corrupt record"), "{report:?}");

    // The same flip in the final record is indistinguishable from a torn write: set aside.
    let tmp2 = tempfile::tempdir().unwrap();
    let dir2 = tmp2.path().to_path_buf();
    fill(&dir2, 16384, 120);
    let last2 = segments(&dir2).pop().unwrap();
    let (off2, _, lsn2) = *record_ranges(&last2).last().unwrap();
    let mut b2 = std::fs::read(&last2).unwrap();
    b2[off2 + record::HEADER_LEN + 3] ^= 0x01;
    std::fs::write(&last2, &b2).unwrap();
    let j = Journal::open(&dir2, opts(16384)).unwrap();
    let t = j.stats().torn_tail.unwrap();
    assert!(!t.intact_records_after);
    assert_eq!(j.stats().next_lsn, lifeboat_journal::Lsn(lsn2));
    drop(j);
    assert_prefix(&dir2, &payloads, lsn2 as usize - 1);
}

#[test]
fn one_writer_per_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let j = Journal::open(tmp.path(), JournalOptions::default()).unwrap();
    assert!(matches!(
        Journal::open(tmp.path(), JournalOptions::default()),
        Err(Error::Locked { .. })
    ));
    // Readers do not need the lock.
    assert!(verify(tmp.path(), 1).unwrap().is_valid);
    drop(j);
    Journal::open(tmp.path(), JournalOptions::default()).unwrap();
}

#[test]
fn a_trimmed_last_segment_is_preallocated_again_at_open() {
    // As after a crash between closing a segment and creating the next one.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let payloads = fill(&dir, 4096, 10);
    let last = segments(&dir).pop().unwrap();
    let end = record_ranges(&last).last().unwrap().1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(end as u64)
        .unwrap();
    let j = Journal::open(&dir, opts(4096)).unwrap();
    assert!(j.stats().torn_tail.is_none());
    assert_eq!(std::fs::metadata(&last).unwrap().len(), 4096);
    drop(j);
    assert_prefix(&dir, &payloads, 10);
    append_continues(&dir, 4096, 11);
}

#[test]
fn verify_reports_every_damaged_segment_and_counts_from_lsn() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    fill(&dir, 4096, 120);
    let report = verify(&dir, 100).unwrap();
    assert!(report.is_valid);
    assert_eq!(report.verified_entries, 21);
    let segs = segments(&dir);
    assert!(segs.len() >= 4);
    let mut expected = Vec::new();
    for s in [&segs[0], &segs[2]] {
        let (off, _, lsn) = record_ranges(s)[1];
        let mut b = std::fs::read(s).unwrap();
        b[off + 20] ^= 0x80; // inside the LSN field
        std::fs::write(s, &b).unwrap();
        expected.push(lsn);
    }
    let report = verify(&dir, 1).unwrap();
    assert!(!report.is_valid);
    let lsns: Vec<u64> = report.errors.iter().map(|e| e.0).collect();
    assert_eq!(lsns, expected, "{report:?}");
}

#[test]
fn a_forged_segment_header_breaks_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    fill(&dir, 4096, 80);
    let segs = segment::list_segments(&dir).unwrap();
    let (first, path) = &segs[1];
    let mut b = std::fs::read(path).unwrap();
    let mut h = segment::SegmentHeader::decode(&b).unwrap();
    h.prev_hash[0] ^= 1;
    b[..SEGMENT_HEADER_LEN].copy_from_slice(&h.encode());
    std::fs::write(path, &b).unwrap();
    match Journal::open(&dir, opts(4096)) {
        Err(Error::Corrupt {
            lsn,
            reason: RecordError::ChainMismatch { .. },
            ..
        }) => assert_eq!(lsn, lifeboat_journal::Lsn(*first)),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a forged journal"),
    }
    let report = verify(&dir, 1).unwrap();
    // The header breaks the chain, and so the segment's first record no longer links to it.
    assert!(report.errors.iter().all(|e| e.0 == *first), "{report:?}");
    assert!(report.errors[0].1.contains("segment header"), "{report:?}");
    assert!(
        matches!(read_from(&dir, 1), Err(Error::Corrupt { lsn, .. }) if lsn == lifeboat_journal::Lsn(*first))
    );
}
