//! `repair index`: rebuild the index from pack trailers alone.
//!
//! New index files are written before old ones are deleted, so a crash at any point leaves a
//! repository whose index covers at least every pack (duplicates are harmless).

use crate::lock::{ExclusiveLock, WriteLock};
use std::collections::HashSet;

use lifeboat_types::{IndexId, PackId};
use serde::Serialize;

use crate::error::Result;
use crate::index::{index_key, MAX_PACKS_PER_INDEX_FILE};
use crate::repository::Repository;

/// What `repair index` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Packs whose trailers were read.
    pub packs_read: usize,
    /// Blobs now indexed.
    pub blobs_indexed: usize,
    /// Packs with unreadable trailers (left in place, not indexed).
    pub packs_unreadable: Vec<String>,
    /// Index files written.
    pub index_files_written: usize,
    /// Old index files removed.
    pub index_files_removed: usize,
}

/// Rebuilds every index file from the packs present.
pub fn repair_index(repo: &Repository, lock: &ExclusiveLock) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    let old: Vec<IndexId> = repo
        .block_on(repo.store().list("index/"))?
        .iter()
        .filter_map(|m| m.key.strip_prefix("index/")?.parse().ok())
        .collect();
    let packs = repo.list_packs()?;
    report.packs_read = packs.len();
    let mut good = Vec::new();
    for (p, r) in repo.read_trailers(&packs) {
        match r {
            Ok(entries) => {
                report.blobs_indexed += entries.len();
                good.push((p, entries));
            }
            Err(e) => report.packs_unreadable.push(format!("{e}")),
        }
    }
    good.sort_by_key(|(p, _): &(PackId, _)| *p);
    let mut written = HashSet::new();
    for chunk in good.chunks(MAX_PACKS_PER_INDEX_FILE) {
        written.extend(repo.save_index(lock, chunk)?);
    }
    report.index_files_written = written.len();
    if !report.packs_unreadable.is_empty() {
        // Old index files may be the only record of blobs in unreadable packs: keep them.
        return Ok(report);
    }
    for id in old.iter().filter(|id| !written.contains(id)) {
        lock.fence(repo)?;
        repo.block_on(repo.store().delete(&index_key(id)))?;
        report.index_files_removed += 1;
    }
    Ok(report)
}
