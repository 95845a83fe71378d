//! Reading and verifying a journal directory without opening it for writing.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::record::{Hash, Record, RecordError};
use crate::segment;
use crate::Lsn;

/// Calls `f` for every record with LSN ≥ `from_lsn`, in order (see [`iter_from`]); damage
/// fails with its LSN, after the records before it were delivered.
pub fn for_each_from(dir: &Path, from_lsn: Lsn, mut f: impl FnMut(Record)) -> Result<()> {
    for r in iter_from(dir, from_lsn)? {
        f(r?);
    }
    Ok(())
}

/// Records with LSN ≥ `from_lsn`, in order, across segments, one segment in memory at a time.
/// Checks CRCs, LSNs and the hash chain (within and between the segments read). Damage yields
/// one `Err` naming its LSN (after the records before it), then the iterator ends. A torn tail
/// of the last segment (a journal not reopened since a crash) just ends the iteration.
pub struct RecordIter {
    segments: Vec<(Lsn, PathBuf)>,
    idx: usize,
    from: Lsn,
    prev: Option<(Lsn, Hash)>,
    buf: VecDeque<Record>,
    pending: Option<Error>,
}

/// Opens an iterator over the records from `from_lsn` on.
pub fn iter_from(dir: &Path, from_lsn: Lsn) -> Result<RecordIter> {
    Ok(RecordIter {
        segments: segment::list_segments(dir)?,
        idx: 0,
        from: from_lsn,
        prev: None,
        buf: VecDeque::new(),
        pending: None,
    })
}

impl RecordIter {
    /// Loads segment `self.idx` into the buffer (or records the error) and advances.
    fn load(&mut self) -> Result<()> {
        let i = self.idx;
        self.idx += 1;
        let n = self.segments.len();
        let (first, path) = self.segments[i].clone();
        if self.segments.get(i + 1).is_some_and(|s| s.0 <= self.from) {
            self.prev = None;
            return Ok(());
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let scan = segment::scan(&path, &bytes, true)?;
        if scan.header.first_lsn != first {
            return Err(Error::BadSegment {
                path,
                reason: "header LSN does not match the name".into(),
            });
        }
        if let Some((lsn, hash)) = self.prev {
            if scan.header.first_lsn != lsn || scan.header.prev_hash != hash {
                return Err(Error::Corrupt {
                    lsn,
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
        let from = self.from;
        self.buf.extend(
            scan.records
                .into_iter()
                .map(|(_, r)| r)
                .filter(|r| r.lsn >= from),
        );
        if let Some((lsn, reason)) = scan.stop {
            let mid_log = scan
                .valid_after_stop
                .is_some_and(|next| !segment::zero_sector_in(&bytes, scan.end, next));
            if i + 1 != n || !reason.is_tear_like() || mid_log {
                self.pending = Some(Error::Corrupt { lsn, path, reason });
            }
        }
        Ok(())
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if let Some(r) = self.buf.pop_front() {
                return Some(Ok(r));
            }
            if let Some(e) = self.pending.take() {
                self.idx = self.segments.len();
                return Some(Err(e));
            }
            if self.idx >= self.segments.len() {
                return None;
            }
            if let Err(e) = self.load() {
                self.idx = self.segments.len();
                return Some(Err(e));
            }
        }
    }
}

/// All records with LSN ≥ `from_lsn` (see [`for_each_from`]).
pub fn read_from(dir: &Path, from_lsn: Lsn) -> Result<Vec<Record>> {
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
    pub errors: Vec<(Lsn, String)>,
}

/// Checks every segment's records (CRC, LSN, hash chain, also across segments) and reports
/// all problems with their LSNs rather than stopping at the first. The chain is always checked
/// from the first segment; `from_lsn` only limits what is counted.
pub fn verify(dir: &Path, from_lsn: Lsn) -> Result<VerifyReport> {
    let segments = segment::list_segments(dir)?;
    let n = segments.len();
    let mut errors = Vec::new();
    let mut verified = 0;
    let mut prev: Option<(Lsn, Hash)> = None;
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
