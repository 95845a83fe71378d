//! State every pipeline thread shares: the dedup claim set, pending index, counters, and
//! the chunk → blob → pack → upload steps.
use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};
use lifeboat_types::{BlobId, CancelToken, PackId};

use super::PACKS_PER_CHECKPOINT;
use crate::chunker::Chunker;
use crate::compress::Compressor;
use crate::error::Error;
use crate::index::Index;
use crate::lock::WriteLock;
use crate::pack::{pack_key, FinishedPack, PackEntry, PackWriter};
use crate::progress::Progress;
use crate::repository::Repository;

/// A chunk not yet in the repository, on its way to compression.
pub(super) struct NewBlob {
    pub(super) id: BlobId,
    pub(super) data: Vec<u8>,
}

pub(super) struct FileJob {
    pub(super) idx: usize,
    pub(super) path: std::path::PathBuf,
}

/// State shared by all pipeline threads.
pub(super) struct Shared<'a> {
    /// Chunk buffers handed back by compressors for readers to reuse (bounds allocator churn).
    pub(super) buffers: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    pub(super) repo: &'a Repository,
    pub(super) index: &'a Index,
    pub(super) claimed: Mutex<HashSet<BlobId>>,
    pub(super) pending_index: Mutex<Vec<(PackId, Vec<PackEntry>)>>,
    pub(super) error: Mutex<Option<Error>>,
    pub(super) abort: AtomicBool,
    pub(super) cancel: CancelToken,
    pub(super) lock: &'a dyn WriteLock,
    pub(super) data_blobs: AtomicU64,
    pub(super) tree_blobs: AtomicU64,
    pub(super) bytes_added: AtomicU64,
    pub(super) bytes_stored: AtomicU64,
    pub(super) bytes_read: AtomicU64,
    pub(super) progress: &'a dyn Progress,
}

pub(super) enum ReadError {
    Io(io::Error),
    Aborted,
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl Shared<'_> {
    pub(super) fn fail(&self, e: Error) {
        let mut slot = self.error.lock().expect("error lock");
        if slot.is_none() {
            *slot = Some(e);
        }
        self.abort.store(true, Ordering::SeqCst);
    }

    pub(super) fn stopped(&self) -> bool {
        if self.cancel.is_cancelled() {
            self.fail(Error::Cancelled);
        }
        self.abort.load(Ordering::Relaxed)
    }

    /// A pooled buffer holding a copy of `chunk`.
    pub(super) fn buffer_with(&self, chunk: &[u8]) -> Vec<u8> {
        let mut v = self.buffers.1.try_recv().unwrap_or_default();
        v.clear();
        v.extend_from_slice(chunk);
        v
    }

    /// True the first time anyone asks to store this blob in this backup.
    pub(super) fn claim(&self, id: &BlobId) -> bool {
        !self.index.contains(id) && self.claimed.lock().expect("claim lock").insert(*id)
    }

    /// Chunks a stream; new chunks go to the compressors. Returns the blob list and bytes read.
    pub(super) fn chunk_stream(
        &self,
        chunker: &mut Chunker,
        reader: impl Read,
        blobs: &Sender<NewBlob>,
    ) -> std::result::Result<(Vec<BlobId>, u64), ReadError> {
        let key = self.repo.key();
        let mut ids = Vec::new();
        let n = chunker.chunk_reader(reader, |chunk| {
            if self.stopped() {
                return Err(ReadError::Aborted);
            }
            let id = key.blob_id(chunk);
            ids.push(id);
            if self.claim(&id) {
                blobs
                    .send(NewBlob {
                        id,
                        data: self.buffer_with(chunk),
                    })
                    .map_err(|_| ReadError::Aborted)?;
            }
            self.progress.advance(chunk.len() as u64);
            Ok(())
        })?;
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
        Ok((ids, n))
    }

    /// Compresses (when it pays) and seals a blob straight into `writer`; returns the pack
    /// once it reached the target size.
    pub(super) fn store_blob(
        &self,
        comp: &mut Compressor,
        scratch: &mut Vec<u8>,
        writer: &mut PackWriter,
        id: BlobId,
        data: &[u8],
    ) -> Option<FinishedPack> {
        let raw_len = data.len() as u32;
        let compressed = comp.compress_into(data, scratch);
        let payload = if compressed { &scratch[..] } else { data };
        writer.add_plain(self.repo.key(), id, payload, raw_len, compressed);
        self.bytes_added
            .fetch_add(raw_len as u64, Ordering::Relaxed);
        (writer.len() >= self.repo.config().pack_size_bytes as usize)
            .then(|| writer.finish(self.repo.key()))
    }

    pub(super) fn upload(&self, pack: FinishedPack) {
        if self.stopped() {
            return;
        }
        let len = pack.bytes.len() as u64;
        // A holder that lost its lock stops uploading at once, not at the next index write
        // (one HEAD per pack: negligible next to the pack itself).
        if let Err(e) = self.lock.fence(self.repo) {
            return self.fail(e);
        }
        if let Err(e) = self.repo.block_on(
            self.repo
                .store()
                .put(&pack_key(&pack.id), pack.bytes.into()),
        ) {
            return self.fail(e.into());
        }
        self.bytes_stored.fetch_add(len, Ordering::Relaxed);
        let checkpoint = {
            let mut p = self.pending_index.lock().expect("index lock");
            p.push((pack.id, pack.entries));
            (p.len() >= PACKS_PER_CHECKPOINT).then(|| std::mem::take(&mut *p))
        };
        if let Some(packs) = checkpoint {
            if let Err(e) = self.repo.save_index(self.lock, &packs) {
                // Keep them for the final attempt in `index_uploaded`.
                self.pending_index.lock().expect("index lock").extend(packs);
                self.fail(e);
            }
        }
    }

    /// After a failed or cancelled run: indexes the packs already uploaded, so the next backup
    /// reuses them instead of uploading them again. A failure here is only a warning (the
    /// packs stay as unindexed garbage for prune; the run's own error is what matters).
    pub(super) fn index_uploaded(&self, warnings: &mut Vec<String>) {
        let packs = std::mem::take(&mut *self.pending_index.lock().expect("index lock"));
        for chunk in packs.chunks(crate::index::MAX_PACKS_PER_INDEX_FILE) {
            if let Err(e) = self.repo.save_index(self.lock, chunk) {
                let msg = format!("cannot index the packs uploaded before stopping: {e}");
                self.progress.warn(&msg);
                warnings.push(msg);
                return;
            }
        }
    }
}
