//! An opened repository: store + master key + config, and the object-level reads and writes
//! every operation shares.

use std::future::Future;

use futures::stream::{self, StreamExt, TryStreamExt};
use lifeboat_store::Store;
use lifeboat_types::{BlobId, IndexId, KeyId, PackId, SnapshotId};
use tokio::runtime::Handle;

use crate::chunker::ChunkerParams;
use crate::compress::decompress;
use crate::config::{RepoConfig, CONFIG_KEY};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::index::{
    decode_index, encode_index, index_key, Index, MAX_ENTRIES_PER_INDEX_FILE,
    MAX_PACKS_PER_INDEX_FILE,
};
use crate::keys::{KdfParams, KeySlot};
use crate::lock::{ExclusiveLock, LockOptions, SharedLock, WriteLock};
use crate::pack::{pack_id_from_key, pack_key, parse_trailer, BlobKind, PackEntry, TrailerError};
use crate::snapshot::{snapshot_key, Snapshot};
use crate::tree::Tree;

/// Concurrent object requests for listing-style reads.
const READ_CONCURRENCY: usize = 16;
/// Bytes fetched from a pack's end in the first try at its trailer.
const TRAILER_PROBE: u64 = 64 * 1024;

/// Options for `init`.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Chunker bounds (default 512 KiB / 1 MiB / 8 MiB).
    pub chunker: Option<ChunkerParams>,
    /// Copy chunker params and secret from this config so two repositories dedup alike.
    pub copy_chunker_from: Option<RepoConfig>,
    /// Share this key's blob-id key, so `copy` between the two repositories dedups.
    pub related_key: Option<MasterKey>,
    /// KDF cost of the first key slot; `None` means [`KdfParams::default`].
    pub kdf: Option<KdfParams>,
    /// zstd level.
    pub compression_level: Option<i32>,
    /// Target pack size.
    pub pack_size_bytes: Option<u32>,
}

/// An opened, authenticated repository.
pub struct Repository {
    store: Store,
    rt: Handle,
    key: MasterKey,
    key_id: KeyId,
    config: RepoConfig,
}

/// The index as loaded, with what went wrong while loading it.
pub struct LoadedIndex {
    /// Every blob we know of.
    pub index: Index,
    /// Index files that were read.
    pub files: Vec<IndexId>,
    /// Damaged index files and what was done about them.
    pub warnings: Vec<String>,
}

/// Snapshots with their ids, oldest first.
pub type SnapshotList = Vec<(SnapshotId, Snapshot)>;

fn key_slot_key(id: &KeyId) -> String {
    format!("keys/{}", id.to_hex())
}

impl Repository {
    /// Creates a new repository at `store`, protected by `secret`.
    pub fn init(store: Store, rt: Handle, secret: &[u8], opts: InitOptions) -> Result<Repository> {
        if rt.block_on(store.exists(CONFIG_KEY))? {
            return Err(Error::AlreadyInitialized {
                location: store.location().to_owned(),
            });
        }
        let mut config = RepoConfig::generate();
        if let Some(c) = opts.chunker {
            c.validate().map_err(Error::InvalidInput)?;
            config.chunker = c;
        }
        if let Some(from) = &opts.copy_chunker_from {
            config.chunker = from.chunker;
            config.chunker_key = from.chunker_key.clone();
        }
        if let Some(l) = opts.compression_level {
            config.compression_level = l;
        }
        if let Some(p) = opts.pack_size_bytes {
            config.pack_size_bytes = p;
        }
        let key = match &opts.related_key {
            Some(k) => k.related(),
            None => MasterKey::generate(),
        };
        let (key_id, slot) = KeySlot::wrap(&key, secret, opts.kdf.unwrap_or_default(), "initial")
            .map_err(|reason| Error::Kdf { reason })?;
        let slot_bytes = serde_json::to_vec_pretty(&slot).expect("key slots serialize");
        rt.block_on(store.put(&key_slot_key(&key_id), slot_bytes.into()))?;
        // The config goes last and only if absent: a concurrent init loses cleanly.
        match rt.block_on(store.put_if_absent(CONFIG_KEY, config.seal(&key).into())) {
            Ok(()) => {}
            Err(lifeboat_store::Error::AlreadyExists { .. }) => {
                let _ = rt.block_on(store.delete(&key_slot_key(&key_id)));
                return Err(Error::AlreadyInitialized {
                    location: store.location().to_owned(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Repository {
            store,
            rt,
            key,
            key_id,
            config,
        })
    }

    /// Opens an existing repository with a password or key-file bytes.
    pub fn open(store: Store, rt: Handle, secret: &[u8]) -> Result<Repository> {
        let stored = match rt.block_on(store.get(CONFIG_KEY)) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(Error::NotInitialized {
                    location: store.location().to_owned(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        RepoConfig::peek_version(&stored)?;
        let slots = rt.block_on(list_key_slots(&store))?;
        for (key_id, slot) in &slots {
            let slot = match slot {
                Ok(s) => s,
                Err(_) => continue,
            };
            if slot.version > crate::keys::KEY_FORMAT_VERSION {
                continue;
            }
            // A slot we cannot evaluate (unknown KDF, bad parameters) must not lock out the others.
            if let Ok(Some(key)) = slot.unwrap_key(secret) {
                let config = RepoConfig::open(&key, &stored)?;
                return Ok(Repository {
                    store,
                    rt,
                    key,
                    key_id: *key_id,
                    config,
                });
            }
        }
        Err(Error::WrongPassword {
            location: store.location().to_owned(),
        })
    }

    /// Takes a shared lock (see [`crate::lock`]) for an operation that only adds objects;
    /// the guard is what the write paths ask for.
    pub fn lock_shared(&self, operation: &str, opts: &LockOptions) -> Result<SharedLock> {
        crate::lock::acquire(self, operation, opts)
    }

    /// Takes an exclusive lock for an operation that deletes data (prune, repair).
    pub fn lock_exclusive(&self, operation: &str, opts: &LockOptions) -> Result<ExclusiveLock> {
        crate::lock::acquire(self, operation, opts)
    }

    /// [`Repository::lock_shared`] whose wait for conflicting holders stops on `cancel`.
    pub fn lock_shared_cancellable(
        &self,
        operation: &str,
        opts: &LockOptions,
        cancel: &lifeboat_types::CancelToken,
    ) -> Result<SharedLock> {
        crate::lock::acquire_cancellable(self, operation, opts, cancel)
    }

    /// [`Repository::lock_exclusive`] whose wait for conflicting holders stops on `cancel`.
    pub fn lock_exclusive_cancellable(
        &self,
        operation: &str,
        opts: &LockOptions,
        cancel: &lifeboat_types::CancelToken,
    ) -> Result<ExclusiveLock> {
        crate::lock::acquire_cancellable(self, operation, opts, cancel)
    }

    /// Runs a store future to completion from synchronous code.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The runtime handle store calls run on.
    pub fn runtime(&self) -> &Handle {
        &self.rt
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The master key.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The key slot this session opened.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    // ---- keys --------------------------------------------------------------------------

    /// Every key slot (damaged ones as errors).
    pub fn list_keys(&self) -> Result<Vec<(KeyId, std::result::Result<KeySlot, String>)>> {
        self.block_on(list_key_slots(&self.store))
    }

    /// Adds a slot for another password or key file.
    pub fn add_key(&self, secret: &[u8], label: &str, kdf: Option<KdfParams>) -> Result<KeyId> {
        let (id, slot) = KeySlot::wrap(&self.key, secret, kdf.unwrap_or_default(), label)
            .map_err(|reason| Error::Kdf { reason })?;
        let bytes = serde_json::to_vec_pretty(&slot).expect("key slots serialize");
        self.block_on(self.store.put_if_absent(&key_slot_key(&id), bytes.into()))?;
        Ok(id)
    }

    /// Removes a slot; refuses the one in use (so the last one can never go either).
    pub fn remove_key(&self, id: &KeyId) -> Result<()> {
        if *id == self.key_id {
            return Err(Error::KeyInUse { id: id.short() });
        }
        let slots = self.list_keys()?;
        if !slots.iter().any(|(k, _)| k == id) {
            return Err(Error::KeyNotFound {
                reference: id.short(),
            });
        }
        self.block_on(self.store.delete(&key_slot_key(id)))?;
        Ok(())
    }

    /// Replaces the password (or key file) this handle was opened with: adds a slot for the
    /// new secret, then removes the old slot. A crash in between leaves both working, never
    /// neither. Afterwards this handle names the new slot.
    pub fn change_password(
        &mut self,
        secret: &[u8],
        label: &str,
        kdf: Option<KdfParams>,
    ) -> Result<KeyId> {
        let new = self.add_key(secret, label, kdf)?;
        let old = self.key_id;
        self.key_id = new;
        self.block_on(self.store.delete(&key_slot_key(&old)))?;
        Ok(new)
    }

    /// Resolves a key slot from a full id or unique prefix.
    pub fn resolve_key(&self, reference: &str) -> Result<KeyId> {
        if reference.trim().is_empty() {
            return Err(Error::KeyNotFound {
                reference: reference.into(),
            });
        }
        let ids: Vec<KeyId> = self
            .list_keys()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.to_hex().starts_with(&reference.to_ascii_lowercase()))
            .collect();
        match ids.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::KeyNotFound {
                reference: reference.into(),
            }),
            _ => Err(Error::AmbiguousKey {
                reference: reference.into(),
            }),
        }
    }

    // ---- snapshots ---------------------------------------------------------------------

    /// Writes a snapshot; the last step of a backup.
    pub fn save_snapshot(&self, lock: &dyn WriteLock, snap: &Snapshot) -> Result<SnapshotId> {
        lock.fence(self)?;
        let id = SnapshotId(rand::random());
        self.block_on(
            self.store
                .put_if_absent(&snapshot_key(&id), snap.seal(&self.key, &id).into()),
        )?;
        Ok(id)
    }

    /// Writes a snapshot under a chosen id unless one exists; false if it already did.
    pub fn save_snapshot_as(
        &self,
        lock: &dyn WriteLock,
        id: &SnapshotId,
        snap: &Snapshot,
    ) -> Result<bool> {
        lock.fence(self)?;
        match self.block_on(
            self.store
                .put_if_absent(&snapshot_key(id), snap.seal(&self.key, id).into()),
        ) {
            Ok(()) => Ok(true),
            Err(lifeboat_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every snapshot sorted by time; damaged ones are returned as errors naming the object.
    pub fn list_snapshots_checked(
        &self,
    ) -> Result<Vec<(SnapshotId, std::result::Result<Snapshot, Error>)>> {
        let metas = self.block_on(self.store.list("snapshots/"))?;
        let ids: Vec<SnapshotId> = metas
            .iter()
            .filter_map(|m| m.key.strip_prefix("snapshots/")?.parse().ok())
            .collect();
        let mut out: Vec<(SnapshotId, std::result::Result<Snapshot, Error>)> = self.block_on(
            stream::iter(ids)
                .map(|id| async move {
                    let key = snapshot_key(&id);
                    let r = match self.store.get(&key).await {
                        Ok(b) => {
                            Snapshot::open(&self.key, &id, &b).map_err(|e| Error::corrupt(key, e))
                        }
                        Err(e) => Err(e.into()),
                    };
                    (id, r)
                })
                .buffer_unordered(READ_CONCURRENCY)
                .collect(),
        );
        // Readable snapshots by time, then damaged ones by id: a total order.
        out.sort_by_key(|(id, r)| (r.is_err(), r.as_ref().ok().map(|s| s.time), *id));
        Ok(out)
    }

    /// Readable snapshots (oldest first) and damaged ones with what is wrong.
    fn partition_snapshots(&self) -> Result<(SnapshotList, Vec<(SnapshotId, Error)>)> {
        let mut ok = Vec::new();
        let mut damaged = Vec::new();
        for (id, r) in self.list_snapshots_checked()? {
            match r {
                Ok(s) => ok.push((id, s)),
                Err(e) => damaged.push((id, e)),
            }
        }
        Ok((ok, damaged))
    }

    /// Every readable snapshot sorted by time, plus warnings for damaged ones.
    pub fn list_snapshots(&self) -> Result<(SnapshotList, Vec<String>)> {
        let (ok, damaged) = self.partition_snapshots()?;
        let warnings = damaged
            .iter()
            .map(|(id, e)| format!("skipping snapshot {}: {e}", id.short()))
            .collect();
        Ok((ok, warnings))
    }

    /// Resolves "latest", a full id or a unique id prefix.
    pub fn find_snapshot(&self, reference: &str) -> Result<(SnapshotId, Snapshot)> {
        // Every id starts with "": an unset `$ID` must not select a snapshot.
        if reference.trim().is_empty() {
            return Err(Error::EmptySnapshotReference);
        }
        let (snaps, damaged) = self.partition_snapshots()?;
        if reference != "latest"
            && !snaps
                .iter()
                .any(|(id, _)| id.to_hex().starts_with(reference))
        {
            // Say "damaged", not "no such snapshot", when the one asked for is unreadable.
            if let Some((_, e)) = damaged
                .into_iter()
                .find(|(id, _)| id.to_hex().starts_with(reference))
            {
                return Err(e);
            }
        }
        if reference == "latest" {
            return snaps.into_iter().last().ok_or(Error::SnapshotNotFound {
                reference: reference.into(),
            });
        }
        let mut matches: Vec<_> = snaps
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(reference))
            .collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(Error::SnapshotNotFound {
                reference: reference.into(),
            }),
            _ => Err(Error::AmbiguousSnapshot {
                reference: reference.into(),
            }),
        }
    }

    // ---- index -------------------------------------------------------------------------

    /// Writes index files for these packs (after the packs themselves are stored), splitting
    /// so that no file exceeds [`MAX_PACKS_PER_INDEX_FILE`] packs or
    /// [`MAX_ENTRIES_PER_INDEX_FILE`] entries: loading then never holds a huge file decoded.
    pub fn save_index(
        &self,
        lock: &dyn WriteLock,
        packs: &[(PackId, Vec<PackEntry>)],
    ) -> Result<Vec<IndexId>> {
        self.block_on(self.save_index_async(lock, packs))
    }

    /// [`Repository::save_index`] from async code.
    pub async fn save_index_async(
        &self,
        lock: &dyn WriteLock,
        packs: &[(PackId, Vec<PackEntry>)],
    ) -> Result<Vec<IndexId>> {
        let mut written = Vec::new();
        let (mut start, mut entries) = (0, 0);
        for (i, (_, e)) in packs.iter().enumerate() {
            if i > start
                && (i - start >= MAX_PACKS_PER_INDEX_FILE
                    || entries + e.len() > MAX_ENTRIES_PER_INDEX_FILE)
            {
                written.push(self.save_index_file(lock, &packs[start..i]).await?);
                (start, entries) = (i, 0);
            }
            entries += e.len();
        }
        if start < packs.len() {
            written.push(self.save_index_file(lock, &packs[start..]).await?);
        }
        Ok(written)
    }

    async fn save_index_file(
        &self,
        lock: &dyn WriteLock,
        packs: &[(PackId, Vec<PackEntry>)],
    ) -> Result<IndexId> {
        lock.lease().check_for(self).await?;
        let (id, bytes) = encode_index(&self.key, packs);
        self.store.put(&index_key(&id), bytes.into()).await?;
        Ok(id)
    }

    /// Loads every index file. A damaged index file is reported, and the packs it may have
    /// covered are read from their trailers instead, so restores keep working.
    pub fn load_index(&self) -> Result<LoadedIndex> {
        let metas = self.block_on(self.store.list("index/"))?;
        let ids: Vec<IndexId> = metas
            .iter()
            .filter_map(|m| m.key.strip_prefix("index/")?.parse().ok())
            .collect();
        // Reserve from the stored sizes (an entry never stores in fewer than ~30 bytes) and
        // add each file as it arrives: peak memory stays near the index itself, and the
        // over-reserved tail is never touched, so it costs address space, not RSS.
        let stored: u64 = metas.iter().map(|m| m.size).sum();
        let mut index = Index::new();
        index.reserve((stored / 30) as usize);
        let mut files = Vec::new();
        let mut warnings = Vec::new();
        // Fetch concurrently, decode one file at a time: at most one file is held decoded.
        self.block_on(async {
            let mut fetched = stream::iter(ids)
                .map(|id| async move { (id, self.store.get(&index_key(&id)).await) })
                .buffer_unordered(READ_CONCURRENCY);
            while let Some((id, bytes)) = fetched.next().await {
                let key = index_key(&id);
                let decoded = match bytes {
                    Ok(b) => decode_index(&self.key, &b).map_err(|e| Error::corrupt(key, e)),
                    Err(e) => Err(e.into()),
                };
                match decoded {
                    Ok(packs) => {
                        files.push(id);
                        for (p, entries) in &packs {
                            index.add_pack(*p, entries);
                        }
                    }
                    Err(e) => warnings.push(format!("{e}")),
                }
            }
        });
        if !warnings.is_empty() {
            let packs = self.list_packs()?;
            let missing: Vec<(PackId, u64)> = packs
                .into_iter()
                .filter(|(p, _)| !index.has_pack(p))
                .collect();
            let n = missing.len();
            for (p, r) in self.read_trailers(&missing) {
                match r {
                    Ok(entries) => index.add_pack(p, &entries),
                    Err(e) => warnings.push(format!("{e}")),
                }
            }
            warnings.push(format!(
                "read {n} pack trailers to replace the damaged index; run `lifeboat repair index` to make this permanent"
            ));
        }
        index.finalize();
        Ok(LoadedIndex {
            index,
            files,
            warnings,
        })
    }

    /// Every pack object with its size.
    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        let metas = self.block_on(self.store.list("data/"))?;
        Ok(metas
            .iter()
            .filter_map(|m| Some((pack_id_from_key(&m.key)?, m.size)))
            .collect())
    }

    /// Reads and authenticates the trailers of many packs concurrently.
    pub fn read_trailers(&self, packs: &[(PackId, u64)]) -> Vec<(PackId, Result<Vec<PackEntry>>)> {
        self.block_on(
            stream::iter(packs.iter().copied())
                .map(|(id, size)| async move { (id, self.read_trailer(&id, size).await) })
                .buffer_unordered(READ_CONCURRENCY)
                .collect(),
        )
    }

    /// Reads one pack's trailer with a single ranged read in the common case.
    pub async fn read_trailer(&self, id: &PackId, size: u64) -> Result<Vec<PackEntry>> {
        let key = pack_key(id);
        let probe = size.min(TRAILER_PROBE);
        let tail = self.store.get_range(&key, size - probe..size).await?;
        match parse_trailer(&self.key, &tail, size) {
            Ok(e) => Ok(e),
            Err(TrailerError::NeedMore(n)) => {
                let tail = self.store.get_range(&key, size - n as u64..size).await?;
                parse_trailer(&self.key, &tail, size)
                    .map_err(|e| Error::corrupt(key, e.to_string()))
            }
            Err(e) => Err(Error::corrupt(key, e.to_string())),
        }
    }

    // ---- blobs -------------------------------------------------------------------------

    /// Decrypts, decompresses and returns a blob's plaintext.
    pub fn read_blob(&self, index: &Index, id: &BlobId) -> Result<Vec<u8>> {
        self.block_on(self.read_blob_async(index, id))
    }

    /// [`Repository::read_blob`] for callers that fetch many blobs concurrently.
    pub async fn read_blob_async(&self, index: &Index, id: &BlobId) -> Result<Vec<u8>> {
        let loc = index.get(id).ok_or(Error::BlobNotFound { id: *id })?;
        let key = pack_key(&loc.pack);
        let e = loc.entry;
        let sealed = self
            .store
            .get_range(&key, e.offset as u64..e.offset as u64 + e.length as u64)
            .await?;
        self.open_blob(&key, &e, &sealed)
    }

    /// Opens one sealed blob already fetched from pack `object`.
    pub fn open_blob(&self, object: &str, e: &PackEntry, sealed: &[u8]) -> Result<Vec<u8>> {
        let plain = lifeboat_crypto::open(self.key.aead(), &PackEntry::aad(e.kind, &e.id), sealed)
            .map_err(|_| {
                Error::corrupt(
                    object,
                    format!(
                        "blob {} at offset {} failed authentication",
                        e.id.short(),
                        e.offset
                    ),
                )
            })?;
        if e.compressed {
            decompress(&plain, e.raw_len as usize)
                .map_err(|r| Error::corrupt(object, format!("blob {}: {r}", e.id.short())))
        } else if plain.len() != e.raw_len as usize {
            Err(Error::corrupt(
                object,
                format!("blob {} has the wrong length", e.id.short()),
            ))
        } else {
            Ok(plain)
        }
    }

    /// Reads and decodes a tree blob.
    pub fn read_tree(&self, index: &Index, id: &BlobId) -> Result<Tree> {
        self.block_on(self.read_tree_async(index, id))
    }

    /// [`Repository::read_tree`] for callers that walk many trees concurrently.
    pub async fn read_tree_async(&self, index: &Index, id: &BlobId) -> Result<Tree> {
        let loc = index.get(id).ok_or(Error::BlobNotFound { id: *id })?;
        if loc.entry.kind != BlobKind::Tree {
            return Err(Error::corrupt(
                pack_key(&loc.pack),
                format!("blob {} is not a tree", id.short()),
            ));
        }
        let plain = self.read_blob_async(index, id).await?;
        if self.key.blob_id(&plain) != *id {
            return Err(Error::corrupt(
                pack_key(&loc.pack),
                format!("tree {} does not match its id", id.short()),
            ));
        }
        Tree::decode(&plain).map_err(|e| Error::corrupt(format!("tree {}", id.short()), e))
    }
}

async fn list_key_slots(
    store: &Store,
) -> Result<Vec<(KeyId, std::result::Result<KeySlot, String>)>> {
    let metas = store.list("keys/").await?;
    let ids: Vec<KeyId> = metas
        .iter()
        .filter_map(|m| m.key.strip_prefix("keys/")?.parse().ok())
        .collect();
    stream::iter(ids)
        .map(|id| async move {
            let bytes = store.get(&key_slot_key(&id)).await?;
            let slot = serde_json::from_slice::<KeySlot>(&bytes)
                .map_err(|e| format!("key slot does not decode: {e}"));
            Ok::<_, Error>((id, slot))
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await
}
