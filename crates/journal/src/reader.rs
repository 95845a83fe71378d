//! Reading and verifying a journal directory without opening it for writing.

use std::path::{Path, PathBuf};

use crate::error::{Error, JournalAbsence, Result};
use crate::record::{Hash, Record, RecordError};
use crate::segment;
use crate::RawLsn;

/// Calls `f` for every record with LSN ≥ `from_lsn`, in order (see [`iter_from`]); damage
/// fails with its LSN, after the records before it were delivered.
pub fn for_each_from(dir: &Path, from_lsn: RawLsn, mut f: impl FnMut(Record)) -> Result<()> {
    for r in iter_from(dir, from_lsn)? {
        f(r?);
    }
    Ok(())
}

/// Records with LSN ≥ `from_lsn`, in order, across segments. Checks CRCs, LSNs and the hash
/// chain (within and between the segments read). Damage yields one `Err` naming its LSN (after
/// the records before it), then the iterator ends. A torn tail of the last segment (a journal
/// not reopened since a crash) just ends the iteration.
///
/// Segments before the one holding `from_lsn` are skipped by name, unread. A helper thread
/// reads and checks the next segment while the caller consumes the current one (at most two
/// segments in memory); dropping the iterator stops it. Errors are only reported when reached.
pub struct RecordIter {
    rx: std::sync::mpsc::Receiver<Result<Vec<(usize, Record)>>>,
    buf: std::vec::IntoIter<(usize, Record)>,
    from: RawLsn,
    done: bool,
}

/// The segments of the journal in `dir`, refusing a path that holds none (missing, a file,
/// an empty or foreign directory): readers must never report an empty log for a wrong path.
pub fn journal_segments(dir: &Path) -> Result<Vec<(RawLsn, PathBuf)>> {
    let absent = |why| Error::NoJournal {
        dir: dir.to_path_buf(),
        why,
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(absent(JournalAbsence::Missing))
        }
        Err(e) => return Err(Error::io(dir, e)),
        Ok(m) if !m.is_dir() => return Err(absent(JournalAbsence::NotADirectory)),
        Ok(_) => {}
    }
    let segments = segment::list_segments(dir)?;
    if segments.is_empty() {
        return Err(absent(JournalAbsence::NoSegments));
    }
    Ok(segments)
}

/// Opens an iterator over the records from `from_lsn` on.
pub fn iter_from(dir: &Path, from_lsn: RawLsn) -> Result<RecordIter> {
    let segments = segment::list_segments(dir)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let mut loader = Loader {
        segments,
        idx: 0,
        from: from_lsn,
        prev: None,
    };
    std::thread::Builder::new()
        .name("journal-read".into())
        .spawn(move || loop {
            match loader.next_batch() {
                Ok(None) => return,
                Ok(Some((records, pending))) => {
                    if !records.is_empty() && tx.send(Ok(records)).is_err() {
                        return;
                    }
                    if let Some(e) = pending {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        })
        .map_err(|e| Error::io(dir, e))?;
    Ok(RecordIter {
        rx,
        buf: Vec::new().into_iter(),
        from: from_lsn,
        done: false,
    })
}

/// The reading half of [`RecordIter`], run on its helper thread.
struct Loader {
    segments: Vec<(RawLsn, PathBuf)>,
    idx: usize,
    from: RawLsn,
    prev: Option<(RawLsn, Hash)>,
}

impl Loader {
    /// Reads and checks the next segment that can hold records ≥ `from`: its records, and
    /// the damage that ended it, if any. `None` at the end.
    #[allow(clippy::type_complexity)]
    fn next_batch(&mut self) -> Result<Option<(Vec<(usize, Record)>, Option<Error>)>> {
        loop {
            let i = self.idx;
            let n = self.segments.len();
            if i >= n {
                return Ok(None);
            }
            self.idx += 1;
            if self.segments.get(i + 1).is_some_and(|s| s.0 <= self.from) {
                self.prev = None;
                continue;
            }
            let (first, path) = self.segments[i].clone();
            // One buffer per segment; the records' payloads are slices of it (no copies).
            let bytes = bytes::Bytes::from(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
            let scan = segment::scan_shared(&path, &bytes)?;
            if scan.header.first_lsn != first {
                return Err(Error::BadSegment {
                    path,
                    reason: "header LSN does not match the name".into(),
                });
            }
            if let Some((lsn, hash)) = self.prev {
                if scan.header.first_lsn != lsn || scan.header.prev_hash != hash {
                    return Err(Error::Corrupt {
                        lsn: lsn.into(),
                        path,
                        reason: RecordError::ChainMismatch {
                            expected: hex::encode(hash),
                            found: hex::encode(scan.header.prev_hash),
                        },
                    });
                }
            }
            self.prev = Some((
                scan.header.first_lsn + scan.records.len() as u64,
                scan.last_hash,
            ));
            let records = scan.records;
            let mut pending = None;
            if let Some((lsn, reason)) = scan.stop {
                let mid_log = scan
                    .valid_after_stop
                    .is_some_and(|next| !segment::zero_sector_in(&bytes, scan.end, next));
                if i + 1 != n || !reason.is_tear_like() || mid_log {
                    pending = Some(Error::Corrupt {
                        lsn: lsn.into(),
                        path,
                        reason,
                    });
                }
            }
            return Ok(Some((records, pending)));
        }
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if let Some((_, r)) = self.buf.next() {
                if r.lsn < self.from {
                    continue;
                }
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            match self.rx.recv() {
                Ok(Ok(records)) => self.buf = records.into_iter(),
                Ok(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Err(_) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

/// All records with LSN ≥ `from_lsn` (see [`for_each_from`]).
pub fn read_from(dir: &Path, from_lsn: RawLsn) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for_each_from(dir, from_lsn, |r| out.push(r))?;
    Ok(out)
}

/// Outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// No errors found.
    pub is_valid: bool,
    /// Records with LSN ≥ `from_lsn` whose CRC and chain link checked out.
    pub verified_entries: u64,
    /// Every problem found, with the LSN it concerns.
    pub errors: Vec<(RawLsn, String)>,
}

/// Checks every segment's records (CRC, LSN, hash chain, also across segments) and reports
/// all problems with their LSNs rather than stopping at the first. The chain is always checked
/// from the first segment; `from_lsn` only limits what is counted. A directory holding no
/// journal is an error ([`Error::NoJournal`]), not a valid empty log.
pub fn verify(dir: &Path, from_lsn: RawLsn) -> Result<VerifyReport> {
    let segments = journal_segments(dir)?;
    let n = segments.len();
    let mut errors = Vec::new();
    let mut verified = 0;
    let mut prev: Option<(RawLsn, Hash)> = None;
    for (i, (first, path)) in segments.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let scan = match segment::scan(path, &bytes, false) {
            Ok(s) => s,
            Err(e) => {
                errors.push((*first, e.to_string()));
                prev = None;
                continue;
            }
        };
        if let Some((lsn, hash)) = prev {
            if scan.header.first_lsn != lsn {
                errors.push((
                    lsn,
                    format!(
                        "{}: segment starts at LSN {}, expected {lsn}",
                        path.display(),
                        scan.header.first_lsn
                    ),
                ));
            } else if scan.header.prev_hash != hash {
                errors.push((
                    lsn,
                    format!("{}: segment header breaks the hash chain", path.display()),
                ));
            }
        }
        verified += scan
            .records
            .iter()
            .filter(|(_, r)| r.lsn >= from_lsn)
            .count() as u64;
        if let Some((lsn, reason)) = &scan.stop {
            let mid_log = scan
                .valid_after_stop
                .is_some_and(|next| !segment::zero_sector_in(&bytes, scan.end, next));
            let what = if i + 1 == n && reason.is_tear_like() && !mid_log {
                "torn tail"
            } else {
                "corrupt record"
            };
            errors.push((
                *lsn,
                format!(
                    "{}: {what} at offset {}: {reason}",
                    path.display(),
                    scan.end
                ),
            ));
            prev = None;
        } else {
            prev = Some((
                scan.header.first_lsn + scan.records.len() as u64,
                scan.last_hash,
            ));
        }
    }
    Ok(VerifyReport {
        is_valid: errors.is_empty(),
        verified_entries: verified,
        errors,
    })
}
