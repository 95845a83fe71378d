//! Prune: free the space no snapshot needs, without ever losing a blob a snapshot does need.
//!
//! Runs under an exclusive lock (see [`crate::lock`]), in this order:
//! 1. **mark** — walk every snapshot's trees, one bit per indexed blob (its index position);
//!    a referenced blob missing from the index stops prune before anything is written;
//! 2. **plan** — per pack: *delete* (no used blob), *repack* (unused share above
//!    `max_unused`), *keep*; packs no index names are garbage of interrupted writers;
//! 3. **repack** — copy used blobs, still sealed and authenticated first, into new packs;
//! 4. **index** — write a complete new index (kept + new packs), then delete the old files;
//! 5. **sweep** — delete unused, repacked and unindexed packs.
//!
//! A SIGKILL between any two writes leaves a repository `check` accepts: new packs are
//! unindexed until the new index exists; old and new index files may both exist (duplicates
//! are harmless); packs are deleted only once no index file names them. The next prune
//! finds the leftovers (unindexed packs) and finishes the job. Memory: the index (52 bytes
//! per blob) plus one bit and one `u32` ordering slot per blob.

use crate::lock::{ExclusiveLock, WriteLock};
use lifeboat_types::CancelToken;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use lifeboat_types::{BlobId, IndexId, PackId};

use crate::reach;
use serde::Serialize;

use crate::error::{stop_if_cancelled, Error, Result};
use crate::index::{
    index_key, BlobSet, Index, MAX_ENTRIES_PER_INDEX_FILE, MAX_PACKS_PER_INDEX_FILE,
};
use crate::pack::{pack_key, BlobKind, FinishedPack, PackEntry, PackWriter};
use crate::progress::Progress;
use crate::repository::{Repository, SnapshotList};

/// Concurrent store requests while fetching and deleting.
const CONCURRENCY: usize = 16;
/// Deletions between two checks of the lock's lease.
const DELETE_BATCH: usize = 64;

/// How aggressively to reclaim space.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Unused share tolerated (0.05 = 5 %): packs above it are repacked, most wasteful first,
    /// until the unused bytes left are at most this share of the repository.
    pub max_unused: f64,
    /// Plan and report only; change nothing.
    pub dry_run: bool,
    /// Cancel to stop at the next stage boundary or pack (what was already done stays valid:
    /// repacked packs not yet indexed are garbage the next prune removes).
    pub cancel: CancelToken,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.05,
            dry_run: false,
            cancel: CancelToken::new(),
        }
    }
}

/// What prune found and did (or would do, for a dry run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Snapshots whose trees were marked.
    pub snapshots: usize,
    /// Indexed blob entries.
    pub blobs_indexed: u64,
    /// Blobs some snapshot references.
    pub blobs_used: u64,
    /// Extra copies of used blobs (dropped by repacking).
    pub blobs_duplicate: u64,
    /// Pack objects in the repository.
    pub packs_total: u64,
    /// Their bytes.
    pub bytes_total: u64,
    /// Packs holding no used blob.
    pub packs_unused: u64,
    /// Packs rewritten because too much of them is unused.
    pub packs_repacked: u64,
    /// Packs no index names (left by interrupted backups or prunes).
    pub packs_unindexed: u64,
    /// Packs kept as they are.
    pub packs_kept: u64,
    /// Bytes in kept packs that no snapshot uses (below the repack threshold).
    pub bytes_unused_kept: u64,
    /// Indexed packs that are gone but held nothing used (dropped from the index).
    pub packs_missing: u64,
    /// New packs written by repacking.
    pub packs_written: u64,
    /// Their bytes.
    pub bytes_written: u64,
    /// Bytes of packs deleted (or to delete).
    pub bytes_deleted: u64,
    /// Net bytes freed: deleted minus written.
    pub bytes_freed: i64,
    /// Old index files removed.
    pub index_files_removed: u64,
    /// New index files written.
    pub index_files_written: u64,
    /// Staging files of interrupted local writes removed.
    pub staging_files_removed: u64,
    /// Wall-clock seconds.
    pub duration_secs: f64,
}

#[derive(Clone, Copy, Default)]
struct PackStat {
    kind: Option<BlobKind>,
    entry_bytes: u64,
    used_bytes: u64,
    used_blobs: u32,
    stored: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    Keep,
    Repack,
    Delete,
    /// Indexed, absent from the store, nothing used in it.
    Missing,
}

/// Runs prune under the exclusive lock it deletes by; every destructive step re-checks that
/// lock's lease first.
pub fn run(
    repo: &Repository,
    lock: &ExclusiveLock,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    prune(repo, Some(lock), opts, progress)
}

/// Plans a prune and reports what it would free, changing nothing (no exclusive lock needed:
/// backups may go on meanwhile; the caller takes a shared lock if it wants a stable view).
pub fn dry_run(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let opts = PruneOptions {
        dry_run: true,
        ..opts.clone()
    };
    prune(repo, None, &opts, progress)
}

fn prune(
    repo: &Repository,
    lock: Option<&ExclusiveLock>,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let started = Instant::now();
    if !(0.0..=1.0).contains(&opts.max_unused) {
        return Err(Error::InvalidInput(format!(
            "max unused share {} must be between 0 and 1 (0 % and 100 %)",
            opts.max_unused
        )));
    }
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };

    let listed = repo.list_packs()?;
    let loaded = repo.load_index()?;
    if !loaded.warnings.is_empty() {
        return Err(refuse(format!(
            "the index is damaged ({}); run `lifeboat repair index` first",
            loaded.warnings.join("; ")
        )));
    }
    let index = loaded.index;
    let (snaps, damaged) = repo.list_snapshots()?;
    if !damaged.is_empty() {
        return Err(refuse(format!(
            "{}; a damaged snapshot's data cannot be marked as used. Remove it with \
             `lifeboat forget ID` if it is beyond repair",
            damaged.join("; ")
        )));
    }
    report.snapshots = snaps.len();
    report.blobs_indexed = index.len() as u64;

    // 1. mark
    let used = mark(repo, &index, &snaps)?;

    // 2. plan
    let mut stats = vec![PackStat::default(); index.packs().len()];
    let order = index.positions_by_pack();
    for &pos in &order {
        let (pack, e) = (index.pack_at(pos as usize), index.at(pos as usize).entry);
        let st = &mut stats[pack as usize];
        st.kind = Some(e.kind);
        st.entry_bytes += e.length as u64;
        if used.contains(pos as usize) {
            st.used_bytes += e.length as u64;
            st.used_blobs += 1;
            report.blobs_used += 1;
        } else if index
            .position(&e.id)
            .is_some_and(|first| used.contains(first))
        {
            // Another copy of this blob is the one marked used.
            report.blobs_duplicate += 1;
        }
    }
    let mut unindexed = Vec::new();
    for &(id, size) in &listed {
        report.packs_total += 1;
        report.bytes_total += size;
        match index.pack_position(&id) {
            Some(p) => stats[p as usize].stored = Some(size),
            None => unindexed.push((id, size)),
        }
    }
    // Candidates for repacking: data packs whose own unused share exceeds max_unused. They are
    // repacked most-wasteful first until the unused bytes left in kept packs are at most
    // max_unused of what stays (restic's budget), so a 5 % threshold never rewrites a
    // repository just to recover its last few percent. Tree packs with any waste are repacked
    // unless max_unused is 100 %.
    let mut fates = Vec::with_capacity(stats.len());
    let mut candidates = Vec::new();
    let (mut used_total, mut unused_left) = (0u64, 0u64);
    for (i, st) in stats.iter().enumerate() {
        let pack = index.packs()[i];
        let unused = st.entry_bytes - st.used_bytes;
        let fate = match st.stored {
            None if st.used_blobs > 0 => {
                return Err(refuse(format!(
                    "{} is missing but holds {} blobs that snapshots use; run `lifeboat check`",
                    pack_key(&pack),
                    st.used_blobs
                )))
            }
            None => Fate::Missing,
            Some(_) if st.used_blobs == 0 => Fate::Delete,
            Some(_) => {
                used_total += st.used_bytes;
                if st.kind == Some(BlobKind::Tree) && unused > 0 && opts.max_unused < 1.0 {
                    // Every walk reads trees: keep tree packs dense (they are small), as restic does.
                    Fate::Repack
                } else {
                    unused_left += unused;
                    if unused as f64 > opts.max_unused * st.entry_bytes as f64 {
                        candidates.push(i);
                    }
                    Fate::Keep
                }
            }
        };
        fates.push(fate);
    }
    let allowed = if opts.max_unused >= 1.0 {
        f64::INFINITY
    } else {
        opts.max_unused / (1.0 - opts.max_unused) * used_total as f64
    };
    let share = |i: usize| {
        let st = &stats[i];
        (st.entry_bytes - st.used_bytes) as f64 / st.entry_bytes.max(1) as f64
    };
    candidates.sort_by(|&a, &b| share(b).total_cmp(&share(a)));
    for i in candidates {
        if unused_left as f64 <= allowed {
            break;
        }
        fates[i] = Fate::Repack;
        unused_left -= stats[i].entry_bytes - stats[i].used_bytes;
    }
    for (fate, st) in fates.iter().zip(&stats) {
        let stored = st.stored.unwrap_or(0);
        match fate {
            Fate::Keep => {
                report.packs_kept += 1;
                report.bytes_unused_kept += st.entry_bytes - st.used_bytes;
            }
            Fate::Repack => {
                report.packs_repacked += 1;
                report.bytes_deleted += stored;
            }
            Fate::Delete => {
                report.packs_unused += 1;
                report.bytes_deleted += stored;
            }
            Fate::Missing => report.packs_missing += 1,
        }
    }
    report.packs_unindexed = unindexed.len() as u64;
    report.bytes_deleted += unindexed.iter().map(|(_, s)| s).sum::<u64>();
    let repack_bytes: u64 = fates
        .iter()
        .zip(&stats)
        .filter(|(f, _)| **f == Fate::Repack)
        .map(|(_, s)| s.used_bytes)
        .sum();

    if opts.dry_run {
        // Repacked blobs are rewritten at about their sealed size.
        report.bytes_written = repack_bytes;
        report.bytes_freed = report.bytes_deleted as i64 - repack_bytes as i64;
        report.duration_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let Some(lock) = lock else {
        return Err(Error::InvalidInput(
            "prune without an exclusive lock can only be a dry run".into(),
        ));
    };
    stop_if_cancelled(&opts.cancel)?;
    let nothing_to_do = fates.iter().all(|f| *f == Fate::Keep) && unindexed.is_empty();
    if nothing_to_do {
        report.staging_files_removed = remove_staging_files(repo, lock)?;
        report.duration_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // 3. repack
    progress.add_total(repack_bytes);
    let new_packs = repack(repo, &index, &order, &used, &fates, &opts.cancel, progress)?;
    stop_if_cancelled(&opts.cancel)?;
    report.packs_written = new_packs.len() as u64;
    report.bytes_written = new_packs.iter().map(|(_, _, size)| size).sum();

    // 4. index: complete new files first, then remove the old ones.
    let mut batch: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    let mut written: Vec<IndexId> = Vec::new();
    let mut flush = |batch: &mut Vec<(PackId, Vec<PackEntry>)>| -> Result<()> {
        if !batch.is_empty() {
            written.extend(repo.save_index(lock, batch)?);
            batch.clear();
        }
        Ok(())
    };
    let mut batched = 0;
    let mut i = 0;
    while i < order.len() {
        let pack = index.pack_at(order[i] as usize);
        let mut j = i;
        while j < order.len() && index.pack_at(order[j] as usize) == pack {
            j += 1;
        }
        if fates[pack as usize] == Fate::Keep {
            let entries: Vec<PackEntry> = order[i..j]
                .iter()
                .map(|&p| index.at(p as usize).entry)
                .collect();
            batched += entries.len();
            batch.push((index.packs()[pack as usize], entries));
            if batch.len() >= MAX_PACKS_PER_INDEX_FILE || batched >= MAX_ENTRIES_PER_INDEX_FILE {
                flush(&mut batch)?;
                batched = 0;
            }
        }
        i = j;
    }
    for (id, entries, _) in new_packs {
        batch.push((id, entries));
        if batch.len() >= MAX_PACKS_PER_INDEX_FILE {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    report.index_files_written = written.len() as u64;
    let old: Vec<String> = loaded
        .files
        .iter()
        .filter(|f| !written.contains(f))
        .map(index_key)
        .collect();
    report.index_files_removed = old.len() as u64;
    delete_all(repo, lock, old)?;

    // 5. sweep
    let doomed: Vec<String> = fates
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f, Fate::Repack | Fate::Delete))
        .map(|(i, _)| pack_key(&index.packs()[i]))
        .chain(unindexed.iter().map(|(id, _)| pack_key(id)))
        .collect();
    stop_if_cancelled(&opts.cancel)?;
    delete_all(repo, lock, doomed)?;
    report.staging_files_removed = remove_staging_files(repo, lock)?;
    report.bytes_freed = report.bytes_deleted as i64 - report.bytes_written as i64;
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Staging files of killed local writes: nobody else writes while we hold the exclusive lock.
fn remove_staging_files(repo: &Repository, lock: &ExclusiveLock) -> Result<u64> {
    lock.fence(repo)?;
    let mut n = 0;
    for prefix in ["data", "index", "snapshots", "verified"] {
        n += repo.store().remove_local_staging_files(prefix)? as u64;
    }
    Ok(n)
}

fn refuse(reason: String) -> Error {
    Error::PruneRefused { reason }
}

/// Marks every blob reachable from a snapshot.
fn mark(repo: &Repository, index: &Index, snaps: &SnapshotList) -> Result<BlobSet> {
    let mut used = BlobSet::new(index);
    let roots = snaps.iter().enumerate().map(|(n, (_, s))| (s.tree, n));
    reach::walk(repo, index, roots, |_, id, n| {
        let pos = index.position(id).ok_or_else(|| missing(snaps, n, id))?;
        Ok(used.insert(pos))
    })
    .map_err(|e| match e {
        // A tree that cannot be read is damage, not a reason to retry: refuse.
        Error::Store(s) if s.is_not_found() => refuse(format!(
            "{s}: a tree a snapshot needs is gone; run `lifeboat check`"
        )),
        Error::Corrupt { object, reason } => refuse(format!(
            "{object} is damaged ({reason}) and holds a tree a snapshot needs; run `lifeboat check`"
        )),
        other => other,
    })?;
    Ok(used)
}

fn missing(snaps: &SnapshotList, n: usize, blob: &BlobId) -> Error {
    refuse(format!(
        "snapshot {} needs blob {} which is in no index. Run `lifeboat \
         check` (and `lifeboat repair index` if packs are unindexed)",
        snaps[n].0.short(),
        blob.short()
    ))
}

/// Copies the used blobs of every pack marked for repacking into new, uploaded packs.
fn repack(
    repo: &Repository,
    index: &Index,
    order: &[u32],
    used: &BlobSet,
    fates: &[Fate],
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<Vec<(PackId, Vec<PackEntry>, u64)>> {
    // Used entries of each pack to repack, in offset order.
    let mut jobs: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    for &pos in order {
        let (pack, e) = (index.pack_at(pos as usize), index.at(pos as usize).entry);
        if fates[pack as usize] != Fate::Repack || !used.contains(pos as usize) {
            continue;
        }
        let id = index.packs()[pack as usize];
        match jobs.last_mut() {
            Some((p, entries)) if *p == id => entries.push(e),
            _ => jobs.push((id, vec![e])),
        }
    }
    let size = repo.config().pack_size_bytes as usize;
    let mut data = PackWriter::new(BlobKind::Data);
    let mut trees = PackWriter::new(BlobKind::Tree);
    let mut out = Vec::new();
    repo.block_on(async {
        let mut fetched = stream::iter(jobs)
            .map(|(id, entries)| async move {
                let start = entries.first().map_or(0, |e| e.offset as u64);
                let end = entries
                    .iter()
                    .map(|e| e.offset as u64 + e.length as u64)
                    .max()
                    .unwrap_or(0);
                let bytes = repo.store().get_range(&pack_key(&id), start..end).await;
                (id, entries, start, bytes)
            })
            .buffered(4);
        while let Some((id, entries, start, bytes)) = fetched.next().await {
            stop_if_cancelled(cancel)?;
            let bytes = bytes?;
            let object = pack_key(&id);
            for e in entries {
                let at = (e.offset as u64 - start) as usize;
                let sealed = bytes.get(at..at + e.length as usize).ok_or_else(|| {
                    refuse(format!(
                        "{object} is shorter than its index says; run `lifeboat check`"
                    ))
                })?;
                // Authenticate before the only other copy is deleted.
                lifeboat_crypto::open(repo.key().aead(), &PackEntry::aad(e.kind, &e.id), sealed)
                    .map_err(|_| {
                        refuse(format!(
                            "{object}: blob {} failed authentication. Run \
                             `lifeboat check --read-data`",
                            e.id.short()
                        ))
                    })?;
                let w = match e.kind {
                    BlobKind::Data => &mut data,
                    BlobKind::Tree => &mut trees,
                };
                w.add_sealed(e.id, sealed, e.raw_len, e.compressed);
                progress.advance(e.length as u64);
                if w.len() >= size {
                    out.push(upload(repo, w.finish(repo.key())).await?);
                }
            }
        }
        for w in [&mut data, &mut trees] {
            if !w.is_empty() {
                out.push(upload(repo, w.finish(repo.key())).await?);
            }
        }
        Ok::<_, Error>(())
    })?;
    Ok(out)
}

async fn upload(repo: &Repository, pack: FinishedPack) -> Result<(PackId, Vec<PackEntry>, u64)> {
    let len = pack.bytes.len() as u64;
    repo.store()
        .put(&pack_key(&pack.id), pack.bytes.into())
        .await?;
    Ok((pack.id, pack.entries, len))
}

/// Deletes objects concurrently, re-checking the lock's lease before every batch.
fn delete_all(repo: &Repository, lock: &ExclusiveLock, keys: Vec<String>) -> Result<()> {
    for batch in keys.chunks(DELETE_BATCH) {
        lock.fence(repo)?;
        let results: Vec<Result<()>> = repo.block_on(
            stream::iter(batch)
                .map(|k| async move { repo.store().delete(k).await.map_err(Error::from) })
                .buffer_unordered(CONCURRENCY)
                .collect(),
        );
        results.into_iter().collect::<Result<()>>()?;
    }
    Ok(())
}
