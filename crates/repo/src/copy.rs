//! Copy snapshots to another repository (another region, another backend, another password),
//! sending only the blobs the target lacks.
//!
//! Both repositories must share blob ids (`init --copy-chunker-params --from SOURCE` creates
//! the target that way); each blob is authenticated with the source key and re-sealed with the
//! target's. Per snapshot the order is the backup's — packs, index, then the snapshot — so an
//! interrupted copy leaves only reusable packs, and a rerun sends only what is still missing.
//! Copied snapshots remember their source id, which makes copy idempotent.

use crate::lock::WriteLock;
use lifeboat_types::CancelToken;
use std::collections::HashMap;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use jiff::Timestamp;
use lifeboat_types::{PackId, SnapshotId};
use serde::Serialize;

use crate::error::{stop_if_cancelled, Error, Result};
use crate::index::{BlobSet, Index};
use crate::pack::{pack_key, BlobKind, FinishedPack, PackEntry, PackWriter};
use crate::progress::Progress;
use crate::reach;
use crate::repository::{Repository, SnapshotList};
use crate::snapshot::Snapshot;

/// Packs uploaded between two index checkpoints in the target.
const PACKS_PER_CHECKPOINT: usize = 16;
/// Needed blobs closer than this in a source pack are fetched with one ranged read.
const COALESCE_GAP: u64 = 256 * 1024;

/// What copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// Snapshots asked for.
    pub snapshots_selected: usize,
    /// Of those, already in the target.
    pub snapshots_present: usize,
    /// Newly copied: (source id, target id).
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Blobs sent.
    pub blobs_copied: u64,
    /// Blobs the target already had.
    pub blobs_present: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written to the target (packs).
    pub bytes_sent: u64,
    /// New packs in the target.
    pub packs_written: u64,
    /// Age of the newest selected snapshot not yet in the target, before copying.
    pub lag_before_secs: Option<f64>,
    /// The same after copying (`None`: the target is up to date).
    pub lag_after_secs: Option<f64>,
    /// Wall-clock seconds.
    pub duration_secs: f64,
}

/// True if `snap` (source id `id`) already has a copy among `target`'s snapshots.
fn is_present(id: &SnapshotId, snap: &Snapshot, target: &SnapshotList) -> bool {
    target.iter().any(|(tid, t)| {
        t.original == Some(*id)
            || tid == id
            || (t.tree == snap.tree
                && t.time == snap.time
                && t.host == snap.host
                && t.paths == snap.paths)
    })
}

/// The target id of the copy of source snapshot `id`: keyed by the target's blob-id key, so
/// deterministic per (target, source snapshot).
fn copy_id(dst: &Repository, id: &SnapshotId) -> SnapshotId {
    let mut input = b"lifeboat copy of snapshot ".to_vec();
    input.extend_from_slice(&id.0);
    SnapshotId(dst.key().blob_id(&input).0)
}

/// Seconds since the newest snapshot in `pending` was taken: how far the target lags.
pub fn lag_secs(pending: &[&(SnapshotId, Snapshot)]) -> Option<f64> {
    let newest = pending.iter().map(|(_, s)| s.time).max()?;
    Some(
        Timestamp::now()
            .duration_since(newest)
            .as_secs_f64()
            .max(0.0),
    )
}

/// Copies the `selected` source snapshots (oldest first) that `dst` does not have yet.
///
/// `dst_lock` is a lock on `dst` (its index and snapshot writes pass that lock's fence);
/// `cancel` stops between snapshots and packs, after indexing what was already sent.
pub fn run(
    src: &Repository,
    dst: &Repository,
    dst_lock: &dyn WriteLock,
    selected: &SnapshotList,
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let started = Instant::now();
    if !src.key().same_blob_ids(dst.key()) {
        return Err(Error::UnrelatedRepositories {
            source_location: src.store().location().to_owned(),
            target_location: dst.store().location().to_owned(),
        });
    }
    let src_loaded = src.load_index()?;
    for w in &src_loaded.warnings {
        progress.warn(w);
    }
    let src_index = src_loaded.index;
    let dst_index = dst.load_index()?.index;
    let (mut target, _) = dst.list_snapshots()?;
    let pending: Vec<&(SnapshotId, Snapshot)> = selected
        .iter()
        .filter(|(id, s)| !is_present(id, s, &target))
        .collect();
    let mut report = CopyReport {
        snapshots_selected: selected.len(),
        snapshots_present: selected.len() - pending.len(),
        lag_before_secs: lag_secs(&pending),
        ..Default::default()
    };
    let mut handled = BlobSet::new(&src_index);
    let mut sink = Sink::new(dst, dst_lock);
    // Source id → target id, to carry `parent` links over.
    let mut mapped: HashMap<SnapshotId, SnapshotId> = target
        .iter()
        .filter_map(|(tid, t)| Some((t.original?, *tid)))
        .collect();
    for (id, snap) in pending {
        stop_if_cancelled(cancel)?;
        let mut needed = Vec::new();
        reach::walk(src, &src_index, [(snap.tree, ())], |_, blob, _| {
            let pos = src_index
                .position(blob)
                .ok_or(Error::BlobNotFound { id: *blob })?;
            if !handled.insert(pos) {
                return Ok(false);
            }
            if dst_index.contains(blob) {
                report.blobs_present += 1;
            } else {
                needed.push(pos as u32);
            }
            Ok(true)
        })?;
        let total: u64 = needed
            .iter()
            .map(|&p| src_index.at(p as usize).entry.length as u64)
            .sum();
        progress.add_total(total);
        report.blobs_copied += needed.len() as u64;
        report.bytes_read += total;
        let sent = transfer(src, &src_index, needed, &mut sink, cancel, progress);
        // Index what was sent even when stopping: a rerun then skips it.
        let flushed = sink.flush_all();
        sent?;
        flushed?;
        let mut copy = snap.clone();
        copy.original = Some(*id);
        copy.parent = snap.parent.and_then(|p| mapped.get(&p).copied());
        // The copy's id is derived from the source id, and written only if absent: of two
        // copies racing into one target, exactly one writes each snapshot.
        let new_id = copy_id(dst, id);
        if dst.save_snapshot_as(dst_lock, &new_id, &copy)? {
            report.copied.push((*id, new_id));
        } else {
            report.snapshots_present += 1;
        }
        mapped.insert(*id, new_id);
        target.push((new_id, copy));
    }
    report.bytes_sent = sink.bytes_sent;
    report.packs_written = sink.packs_written;
    let still: Vec<_> = selected
        .iter()
        .filter(|(id, s)| !is_present(id, s, &target))
        .collect();
    report.lag_after_secs = lag_secs(&still);
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Reads the needed blobs from the source in coalesced ranges and hands them to the sink.
fn transfer(
    src: &Repository,
    index: &Index,
    mut needed: Vec<u32>,
    sink: &mut Sink<'_>,
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<()> {
    needed
        .sort_unstable_by_key(|&p| (index.pack_at(p as usize), index.at(p as usize).entry.offset));
    // Runs of blobs in one pack, close enough to share a read.
    let mut runs: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    for &p in &needed {
        let loc = index.at(p as usize);
        match runs.last_mut() {
            Some((pack, entries))
                if *pack == loc.pack
                    && entries.last().is_some_and(|l| {
                        loc.entry.offset as u64 <= l.offset as u64 + l.length as u64 + COALESCE_GAP
                    }) =>
            {
                entries.push(loc.entry)
            }
            _ => runs.push((loc.pack, vec![loc.entry])),
        }
    }
    src.block_on(async {
        let mut fetched = stream::iter(runs)
            .map(|(pack, entries)| async move {
                let start = entries[0].offset as u64;
                let end = entries
                    .iter()
                    .map(|e| e.offset as u64 + e.length as u64)
                    .max()
                    .unwrap_or(start);
                let bytes = src.store().get_range(&pack_key(&pack), start..end).await;
                (pack, entries, start, bytes)
            })
            .buffered(4);
        while let Some((pack, entries, start, bytes)) = fetched.next().await {
            stop_if_cancelled(cancel)?;
            let bytes = bytes?;
            let object = pack_key(&pack);
            for e in entries {
                let at = (e.offset as u64 - start) as usize;
                let sealed = bytes.get(at..at + e.length as usize).ok_or_else(|| {
                    Error::corrupt(&object, "pack is shorter than its index says")
                })?;
                let payload =
                    lifeboat_crypto::open(src.key().aead(), &PackEntry::aad(e.kind, &e.id), sealed)
                        .map_err(|_| {
                            Error::corrupt(
                                &object,
                                format!("blob {} failed authentication", e.id.short()),
                            )
                        })?;
                sink.add(e, &payload).await?;
                progress.advance(e.length as u64);
            }
        }
        Ok(())
    })
}

/// Packs re-sealed blobs for the target, uploads them and checkpoints the target's index.
struct Sink<'a> {
    dst: &'a Repository,
    lock: &'a dyn WriteLock,
    data: PackWriter,
    trees: PackWriter,
    unindexed: Vec<(PackId, Vec<PackEntry>)>,
    bytes_sent: u64,
    packs_written: u64,
}

impl<'a> Sink<'a> {
    fn new(dst: &'a Repository, lock: &'a dyn WriteLock) -> Self {
        Sink {
            dst,
            lock,
            data: PackWriter::new(BlobKind::Data),
            trees: PackWriter::new(BlobKind::Tree),
            unindexed: Vec::new(),
            bytes_sent: 0,
            packs_written: 0,
        }
    }

    async fn add(&mut self, e: PackEntry, payload: &[u8]) -> Result<()> {
        let w = match e.kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.trees,
        };
        w.add_plain(self.dst.key(), e.id, payload, e.raw_len, e.compressed);
        if w.len() >= self.dst.config().pack_size_bytes as usize {
            let pack = w.finish(self.dst.key());
            self.upload(pack).await?;
            if self.unindexed.len() >= PACKS_PER_CHECKPOINT {
                self.checkpoint().await?;
            }
        }
        Ok(())
    }

    async fn upload(&mut self, pack: FinishedPack) -> Result<()> {
        // A copy that lost its target lock stops sending at once.
        self.lock.lease().check_for(self.dst).await?;
        self.bytes_sent += pack.bytes.len() as u64;
        self.packs_written += 1;
        self.dst
            .store()
            .put(&pack_key(&pack.id), pack.bytes.into())
            .await?;
        self.unindexed.push((pack.id, pack.entries));
        Ok(())
    }

    async fn checkpoint(&mut self) -> Result<()> {
        if self.unindexed.is_empty() {
            return Ok(());
        }
        self.dst
            .save_index_async(self.lock, &self.unindexed)
            .await?;
        self.unindexed.clear();
        Ok(())
    }

    /// Uploads partial packs and indexes everything: the snapshot may be written next.
    fn flush_all(&mut self) -> Result<()> {
        let dst = self.dst;
        dst.block_on(async {
            for kind in [BlobKind::Data, BlobKind::Tree] {
                let w = match kind {
                    BlobKind::Data => &mut self.data,
                    BlobKind::Tree => &mut self.trees,
                };
                if !w.is_empty() {
                    let pack = w.finish(dst.key());
                    self.upload(pack).await?;
                }
            }
            self.checkpoint().await
        })
    }
}
