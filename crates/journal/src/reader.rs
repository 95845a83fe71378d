//! Reading and verifying a journal directory without opening it for writing.

use std::path::Path;

use crate::error::{Error, Result};
use crate::record::{Hash, Record, RecordError};
use crate::segment;
use crate::Lsn;

/// Calls `f` for every record with LSN ≥ `from_lsn`, in order, one segment in memory at a
/// time. Checks CRCs, LSNs and the hash chain; damage fails with its LSN,
/// after the records before it were delivered. A torn tail of the
/// last segment (a journal not yet reopened after a crash) ends the iteration.
pub fn for_each_from(dir: &Path, from_lsn: Lsn, mut f: impl FnMut(Record)) -> Result<()> {
    let segments = segment::list_segments(dir)?;
    let n = segments.len();
    let mut prev: Option<(Lsn, Hash)> = None;
    for (i, (first, path)) in segments.iter().enumerate() {
        let next_first = segments.get(i + 1).map(|s| s.0);
        if next_first.is_some_and(|nf| nf <= from_lsn) {
            prev = None;
            continue;
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let scan = segment::scan(path, &bytes, true)?;
        let stop = scan.stop.clone();
        if scan.header.first_lsn != *first {
            return Err(Error::BadSegment {
                path: path.clone(),
                reason: "header LSN does not match the name".into(),
            });
        }
        if let Some((lsn, hash)) = prev {
            if scan.header.first_lsn != lsn || scan.header.prev_hash != hash {
                return Err(Error::Corrupt {
                    lsn: scan.header.first_lsn,
                    path: path.clone(),
                    reason: RecordError::ChainMismatch {
                        expected: hex::encode(hash),
                        found: hex::encode(scan.header.prev_hash),
                    },
                });
            }
        }
        let next = scan.header.first_lsn + scan.records.len() as u64;
        prev = Some((next, scan.last_hash));
        for (_, r) in scan.records {
            if r.lsn >= from_lsn {
                f(r);
            }
        }
        if let Some((lsn, reason)) = stop {
            let mid_log = scan
                .valid_after_stop
                .is_some_and(|next| !segment::zero_sector_in(&bytes, scan.end, next));
            if i + 1 != n || !reason.is_tear_like() || mid_log {
                return Err(Error::Corrupt {
                    lsn,
                    path: path.clone(),
                    reason,
                });
            }
        }
    }
    Ok(())
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
