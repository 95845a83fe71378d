//! The journal archive: ships closed segments and base backups to a local directory or S3
//! (through `lifeboat-store`), and brings them back after a total loss of the local disks.
//!
//! Object layout (documented in `docs/journal-format.md`, section "Archive"):
//! `archive.json` (format, encryption, key check) · `segments/<first>-<last>-<sha16>.seg[.enc]`
//! · `backups/<name>[.enc]` · `manifest/<seq>.json[.enc]`. Data objects are created with
//! conditional puts and never replaced; a new manifest is written only after the objects it
//! lists, so a sync killed at any point leaves the previous manifest valid and a re-sync
//! finishes the job.

mod crypto;
mod error;
mod local;
mod manifest;

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use lifeboat_store::{Store, StoreOptions};

pub use crypto::ArchiveKey;
pub use error::{ArchiveError, ArchiveResult};
pub use manifest::{
    ArchiveInfo, BackupEntry, Manifest, SegmentEntry, ARCHIVE_FORMAT_NAME, ARCHIVE_FORMAT_VERSION,
};

use crate::segment;
use lifeboat_types::Lsn;
use local::{
    blocking, check_segment, list_backups, now_nanos, prepare_target, read_closed_segment,
    sha256_hex, valid_backup_name, write_file_durably,
};

/// Key of the archive's self-description.
const INFO_KEY: &str = "archive.json";
/// Older manifests kept after a new one is written (for readers that listed just before).
const MANIFESTS_KEPT: u64 = 3;
/// Segment uploads running concurrently in one sync (bounds memory to this many segments).
const UPLOADS_IN_FLIGHT: usize = 4;
/// Attempts to publish a manifest when other writers keep winning the race.
const MANIFEST_ATTEMPTS: u32 = 10;

/// What one [`Archive::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Closed segments newly listed in the manifest.
    pub segments_archived: u64,
    /// Backups newly listed in the manifest.
    pub backups_archived: u64,
    /// Objects that were already in the archive with identical content (an earlier sync was
    /// interrupted before its manifest).
    pub objects_already_present: u64,
    /// Plaintext bytes newly uploaded.
    pub bytes_uploaded: u64,
    /// Last LSN the archive holds after this sync.
    pub archived_upto_lsn: Lsn,
    /// Sequence number of the manifest now current (0: none yet).
    pub manifest_seq: u64,
}

/// How far the archive trails the local journal.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveLag {
    /// Last LSN the archive holds (0: none).
    pub archived_upto_lsn: Lsn,
    /// Last LSN in the local journal directory.
    pub local_last_lsn: Lsn,
    /// Local records not yet archived.
    pub entries: u64,
    /// Age in seconds of the oldest record not yet archived; 0 when fully archived.
    pub seconds: f64,
}

/// What [`Archive::restore_into`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Segments written to the journal directory.
    pub segments: u64,
    /// Backups written to the backup directory.
    pub backups: u64,
    /// Plaintext bytes written.
    pub bytes: u64,
    /// First LSN restored (0 when the archive holds no segment).
    pub first_lsn: Lsn,
    /// Last LSN restored.
    pub last_lsn: Lsn,
}

/// Settings for [`Archive::restore_into_with`].
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Write into directories that already hold files (same-named files are replaced).
    pub allow_non_empty: bool,
}

/// What [`Archive::apply_retention`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments dropped from the manifest and deleted.
    pub segments_deleted: u64,
    /// Backups dropped from the manifest and deleted.
    pub backups_deleted: u64,
    /// Manifest now current.
    pub manifest_seq: u64,
}

/// An opened archive location. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Archive {
    store: Store,
    key: Option<ArchiveKey>,
}

impl Archive {
    /// Opens (creating on first use) the archive at `location` (a path, `file://` or
    /// `s3://bucket/prefix`; S3 settings from the usual `AWS_*` variables). Refuses an
    /// encrypted archive without its key, a wrong key, or a key for a plain archive.
    pub async fn open(location: &str, key: Option<ArchiveKey>) -> ArchiveResult<Archive> {
        let store = Store::open(location, &StoreOptions::default())?;
        Self::open_store(store, key).await
    }

    /// Opens the archive at `location` without creating anything: a location holding no
    /// archive fails with [`ArchiveError::NoArchive`]. For readers (inspection, restore).
    pub async fn open_existing(location: &str, key: Option<ArchiveKey>) -> ArchiveResult<Archive> {
        let store = Store::open(location, &StoreOptions::default())?;
        Self::open_store_with(store, key, false).await
    }

    /// Same as [`Archive::open`] over an already opened store (tests, custom S3 settings).
    pub async fn open_store(store: Store, key: Option<ArchiveKey>) -> ArchiveResult<Archive> {
        Self::open_store_with(store, key, true).await
    }

    async fn open_store_with(
        store: Store,
        key: Option<ArchiveKey>,
        create: bool,
    ) -> ArchiveResult<Archive> {
        let archive = Archive { store, key };
        let info = match archive.store.get(INFO_KEY).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() && !create => {
                return Err(ArchiveError::NoArchive {
                    location: archive.store.location().to_owned(),
                })
            }
            Err(e) if e.is_not_found() => {
                let info = ArchiveInfo {
                    format: ARCHIVE_FORMAT_NAME.into(),
                    version: ARCHIVE_FORMAT_VERSION,
                    encrypted: archive.key.is_some(),
                    key_check: archive
                        .key
                        .as_ref()
                        .map_or(String::new(), |k| hex::encode(k.key_check())),
                };
                let json = serde_json::to_vec_pretty(&info).expect("serialisable");
                match archive.store.put_if_absent(INFO_KEY, json.into()).await {
                    Ok(()) | Err(lifeboat_store::Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                // Read back: if another process created it first, its settings win.
                archive.store.get(INFO_KEY).await?
            }
            Err(e) => return Err(e.into()),
        };
        archive.check_info(&info)?;
        Ok(archive)
    }

    fn check_info(&self, bytes: &[u8]) -> ArchiveResult<()> {
        let bad = |reason: String| ArchiveError::BadFormat {
            object: INFO_KEY.into(),
            reason,
        };
        let info: ArchiveInfo =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        if info.format != ARCHIVE_FORMAT_NAME {
            return Err(bad(format!(
                "format is '{}', expected '{ARCHIVE_FORMAT_NAME}': this location is not a journal archive",
                info.format
            )));
        }
        if info.version != ARCHIVE_FORMAT_VERSION {
            return Err(bad(format!(
                "layout version {} is not supported (this build reads version {ARCHIVE_FORMAT_VERSION})",
                info.version
            )));
        }
        let location = self.store.location().to_owned();
        match (&self.key, info.encrypted) {
            (None, true) => Err(ArchiveError::KeyRequired { location }),
            (Some(_), false) => Err(ArchiveError::NotEncrypted { location }),
            (None, false) => Ok(()),
            (Some(k), true) => {
                let check =
                    hex::decode(&info.key_check).map_err(|_| bad("key_check is not hex".into()))?;
                if k.matches(&check) {
                    Ok(())
                } else {
                    Err(ArchiveError::WrongKey { location })
                }
            }
        }
    }

    /// Human-readable location, for messages.
    pub fn location(&self) -> &str {
        self.store.location()
    }

    /// Whether objects are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.key.is_some()
    }

    fn suffix(&self) -> &'static str {
        if self.key.is_some() {
            ".enc"
        } else {
            ""
        }
    }

    fn seal(&self, object: &str, plain: Vec<u8>) -> Bytes {
        match &self.key {
            Some(k) => k.seal(object.as_bytes(), &plain).into(),
            None => plain.into(),
        }
    }

    fn unseal(&self, object: &str, data: Bytes) -> Result<Vec<u8>, String> {
        match &self.key {
            Some(k) => k.open(object.as_bytes(), &data),
            None => Ok(data.into()),
        }
    }

    /// Downloads and opens an object the manifest lists; missing and damaged objects are
    /// reported with what they held.
    async fn fetch(&self, object: &str, held: &str, sha256: &str) -> ArchiveResult<Vec<u8>> {
        let data = match self.store.get(object).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => {
                return Err(ArchiveError::Missing {
                    object: object.into(),
                    held: held.into(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let plain = self
            .unseal(object, data)
            .map_err(|reason| ArchiveError::Damaged {
                object: object.into(),
                held: held.into(),
                reason,
            })?;
        let got = sha256_hex(&plain);
        if got != sha256 {
            return Err(ArchiveError::Damaged {
                object: object.into(),
                held: held.into(),
                reason: format!("SHA-256 is {got}, the manifest says {sha256}"),
            });
        }
        Ok(plain)
    }

    /// Creates `object` with `plain` unless it exists; an existing object must hold the same
    /// plaintext (an interrupted earlier sync) or this is a conflict. Returns whether it
    /// uploaded.
    async fn put_object(&self, object: &str, plain: Vec<u8>, sha256: &str) -> ArchiveResult<bool> {
        let sealed = self.seal(object, plain);
        match self.store.put_if_absent(object, sealed).await {
            Ok(()) => Ok(true),
            Err(lifeboat_store::Error::AlreadyExists { .. }) => {
                let existing = self.store.get(object).await?;
                match self.unseal(object, existing) {
                    Ok(p) if sha256_hex(&p) == sha256 => Ok(false),
                    Ok(_) => Err(ArchiveError::Conflict {
                        object: object.into(),
                        reason: "the archive already holds this object with different content"
                            .into(),
                    }),
                    Err(reason) => Err(ArchiveError::Conflict {
                        object: object.into(),
                        reason: format!(
                            "an existing object with this name cannot be opened: {reason}"
                        ),
                    }),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sequence numbers of the manifests present, ascending.
    async fn manifest_seqs(&self) -> ArchiveResult<Vec<u64>> {
        let mut seqs: Vec<u64> = self
            .store
            .list("manifest")
            .await?
            .iter()
            .filter_map(|m| manifest::parse_manifest_key(&m.key))
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// The current manifest (the highest-numbered one), authenticated when encrypted; an
    /// empty manifest (seq 0) for a new archive.
    pub async fn manifest(&self) -> ArchiveResult<Manifest> {
        for _ in 0..MANIFEST_ATTEMPTS {
            let Some(&seq) = self.manifest_seqs().await?.last() else {
                return Ok(Manifest {
                    version: ARCHIVE_FORMAT_VERSION,
                    ..Manifest::default()
                });
            };
            let object = manifest::manifest_key(seq, self.key.is_some());
            let data = match self.store.get(&object).await {
                Ok(d) => d,
                // Pruned between list and get by a concurrent writer: list again.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let plain = self
                .unseal(&object, data)
                .map_err(|reason| ArchiveError::BadFormat {
                    object: object.clone(),
                    reason,
                })?;
            let m: Manifest =
                serde_json::from_slice(&plain).map_err(|e| ArchiveError::BadFormat {
                    object: object.clone(),
                    reason: format!("not a valid manifest: {e}"),
                })?;
            if m.seq != seq || m.version != ARCHIVE_FORMAT_VERSION {
                return Err(ArchiveError::BadFormat {
                    object,
                    reason: format!(
                        "manifest says seq {} version {}, expected seq {seq} version {ARCHIVE_FORMAT_VERSION}",
                        m.seq, m.version
                    ),
                });
            }
            return Ok(m);
        }
        Err(ArchiveError::BadFormat {
            object: "manifest/".into(),
            reason: "manifests keep disappearing while being read".into(),
        })
    }

    /// Publishes `m` as manifest `m.seq`; `Ok(false)` if another writer took that number.
    async fn publish(&self, m: &Manifest) -> ArchiveResult<bool> {
        let object = manifest::manifest_key(m.seq, self.key.is_some());
        let json = serde_json::to_vec(m).expect("serialisable");
        let sealed = self.seal(&object, json);
        match self.store.put_if_absent(&object, sealed).await {
            Ok(()) => Ok(true),
            Err(lifeboat_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes manifests older than the last few (best effort: a failure leaves garbage only).
    async fn prune_manifests(&self, current: u64) {
        let Ok(seqs) = self.manifest_seqs().await else {
            return;
        };
        for seq in seqs.into_iter().filter(|s| s + MANIFESTS_KEPT <= current) {
            let object = manifest::manifest_key(seq, self.key.is_some());
            if let Err(e) = self.store.delete(&object).await {
                tracing::warn!("could not delete old archive manifest {object}: {e}");
            }
        }
    }

    /// Uploads every closed segment of `wal_dir` and every `.lbb` file in `backup_dir` not yet
    /// archived, then publishes a manifest listing them. Idempotent and safe to kill at any
    /// point: objects already uploaded by an interrupted run are recognised by content.
    pub async fn sync(&self, wal_dir: &Path, backup_dir: &Path) -> ArchiveResult<SyncReport> {
        let base = self.manifest().await?;
        let mut report = SyncReport::default();
        let mut new_segments = Vec::new();
        let mut new_backups = Vec::new();

        let segs = segment::list_segments(wal_dir)?;
        // After retention removed every segment, continuity still starts at its boundary.
        let mut upto = base
            .archived_upto_lsn()
            .max(base.retained_from_lsn.saturating_sub(1));
        let chain = base
            .segments
            .values()
            .next_back()
            .map(|s| s.last_record_hash.clone());
        let mut pending = Vec::new();
        for w in segs.windows(2) {
            let (first, path) = (w[0].0, w[0].1.clone());
            let last = w[1].0 - 1;
            let len = std::fs::metadata(&path)
                .map_err(|e| ArchiveError::io(&path, e))?
                .len();
            if let Some(e) = base.segments.get(&first) {
                if e.last_lsn != last || e.size != len {
                    return Err(ArchiveError::Conflict {
                        object: e.object.clone(),
                        reason: format!(
                            "archived segment holds LSN {first}..={} ({} bytes), the local one \
                             LSN {first}..={last} ({len} bytes)",
                            e.last_lsn, e.size
                        ),
                    });
                }
                continue;
            }
            if last < base.retained_from_lsn {
                continue; // archived earlier and since removed by archive retention
            }
            if last <= upto {
                return Err(ArchiveError::Conflict {
                    object: path.display().to_string(),
                    reason: format!(
                        "local segment LSN {first}..={last} overlaps archived segments with \
                         different boundaries"
                    ),
                });
            }
            if upto > 0 && first != upto + 1 {
                return Err(ArchiveError::Gap {
                    archived_upto: Lsn(upto),
                    next_local: Lsn(first),
                });
            }
            upto = last;
            pending.push((first, last, path));
        }
        // Read and check in LSN order (never upload a segment that breaks the chain), upload
        // up to UPLOADS_IN_FLIGHT at once; the manifest is published only after all of them.
        // Owned (Arc, clones) rather than borrowed by the per-item futures: borrowed captures
        // make the whole sync future fail the `Send + 'static` check of `tokio::spawn`
        // (rustc's higher-ranked lifetime limitation), and the manager spawns it.
        let chain = std::sync::Arc::new(std::sync::Mutex::new(chain));
        let this = self.clone();
        let uploads = futures::stream::iter(pending)
            .then(move |(first, last, path)| {
                let chain = chain.clone();
                async move {
                    let local = blocking(move || read_closed_segment(&path, first, last)).await?;
                    let mut chain = chain.lock().unwrap_or_else(|p| p.into_inner());
                    if chain.as_ref().is_some_and(|h| *h != local.prev_hash) {
                        return Err(ArchiveError::Conflict {
                            object: segment::segment_name(first),
                            reason: "the local segment does not continue the archived hash \
                                     chain (its header's previous-record hash differs)"
                                .into(),
                        });
                    }
                    *chain = Some(local.entry.last_record_hash.clone());
                    Ok(local)
                }
            })
            .map_ok(move |local| {
                let this = this.clone();
                async move {
                    let (first, last) = (local.entry.first_lsn, local.entry.last_lsn);
                    let object = format!(
                        "segments/{first:020}-{last:020}-{}.seg{}",
                        &local.entry.sha256[..16],
                        this.suffix()
                    );
                    let uploaded = this
                        .put_object(&object, local.bytes, &local.entry.sha256)
                        .await?;
                    Ok((
                        SegmentEntry {
                            object,
                            ..local.entry
                        },
                        uploaded,
                    ))
                }
            })
            .try_buffered(UPLOADS_IN_FLIGHT);
        let done: Vec<(SegmentEntry, bool)> = uploads.try_collect().await?;
        for (entry, uploaded) in done {
            if uploaded {
                report.bytes_uploaded += entry.size;
            } else {
                report.objects_already_present += 1;
            }
            new_segments.push(entry);
        }

        for (name, path) in list_backups(backup_dir)? {
            let len = std::fs::metadata(&path)
                .map_err(|e| ArchiveError::io(&path, e))?
                .len();
            if let Some(e) = base.backups.get(&name) {
                if e.size != len {
                    return Err(ArchiveError::Conflict {
                        object: e.object.clone(),
                        reason: format!(
                            "archived backup {name} is {} bytes, the local file {len}",
                            e.size
                        ),
                    });
                }
                continue;
            }
            let p = path.clone();
            let bytes =
                blocking(move || std::fs::read(&p).map_err(|e| ArchiveError::io(&p, e))).await?;
            let sha256 = sha256_hex(&bytes);
            let object = format!("backups/{name}{}", self.suffix());
            let size = bytes.len() as u64;
            if self.put_object(&object, bytes, &sha256).await? {
                report.bytes_uploaded += size;
            } else {
                report.objects_already_present += 1;
            }
            new_backups.push(BackupEntry {
                name,
                object,
                size,
                sha256,
            });
        }

        report.segments_archived = new_segments.len() as u64;
        report.backups_archived = new_backups.len() as u64;
        if new_segments.is_empty() && new_backups.is_empty() {
            report.archived_upto_lsn = Lsn(base.archived_upto_lsn());
            report.manifest_seq = base.seq;
            return Ok(report);
        }
        let m = self
            .publish_with(base, |m| {
                for s in &new_segments {
                    if let Some(e) = m.segments.get(&s.first_lsn) {
                        if e.sha256 != s.sha256 {
                            return Err(ArchiveError::Conflict {
                                object: s.object.clone(),
                                reason: format!(
                                    "another writer archived different content for {}",
                                    s.held()
                                ),
                            });
                        }
                    }
                    m.segments.insert(s.first_lsn, s.clone());
                }
                for b in &new_backups {
                    if let Some(e) = m.backups.get(&b.name) {
                        if e.sha256 != b.sha256 {
                            return Err(ArchiveError::Conflict {
                                object: b.object.clone(),
                                reason: "another writer archived a different backup under \
                                         this name"
                                    .into(),
                            });
                        }
                    }
                    m.backups.insert(b.name.clone(), b.clone());
                }
                Ok(())
            })
            .await?;
        report.archived_upto_lsn = Lsn(m.archived_upto_lsn());
        report.manifest_seq = m.seq;
        Ok(report)
    }

    /// Applies `change` to `base` and publishes it as the next manifest; when another writer
    /// published first, re-applies the change to the newer manifest (bounded attempts).
    async fn publish_with(
        &self,
        mut base: Manifest,
        change: impl Fn(&mut Manifest) -> ArchiveResult<()>,
    ) -> ArchiveResult<Manifest> {
        for _ in 0..MANIFEST_ATTEMPTS {
            let mut m = base.clone();
            change(&mut m)?;
            m.seq = base.seq + 1;
            m.version = ARCHIVE_FORMAT_VERSION;
            if self.publish(&m).await? {
                self.prune_manifests(m.seq).await;
                return Ok(m);
            }
            base = self.manifest().await?;
        }
        Err(ArchiveError::Conflict {
            object: "manifest/".into(),
            reason: format!("lost the race to publish a manifest {MANIFEST_ATTEMPTS} times"),
        })
    }

    /// What is durable locally but not archived: records after the archive's last LSN, and
    /// the age of the oldest of them (0 when fully archived).
    pub async fn lag(&self, wal_dir: &Path) -> ArchiveResult<ArchiveLag> {
        let upto = self.manifest().await?.archived_upto_lsn();
        let dir = wal_dir.to_path_buf();
        let (entries, oldest, last) = blocking(move || {
            let mut entries = 0u64;
            let mut oldest = None;
            let mut last = upto;
            for r in crate::iter_from(&dir, upto + 1)? {
                let r = r?;
                oldest.get_or_insert(r.timestamp_nanos);
                entries += 1;
                last = r.lsn;
            }
            Ok((entries, oldest, last))
        })
        .await?;
        let seconds = oldest.map_or(0.0, |ts| (now_nanos() - ts).max(0) as f64 / 1e9);
        Ok(ArchiveLag {
            archived_upto_lsn: Lsn(upto),
            local_last_lsn: Lsn(last),
            entries,
            seconds,
        })
    }

    /// Total-loss recovery into empty directories: see [`Archive::restore_into_with`].
    pub async fn restore_into(
        &self,
        wal_dir: &Path,
        backup_dir: &Path,
    ) -> ArchiveResult<RestoreReport> {
        self.restore_into_with(wal_dir, backup_dir, &RestoreOptions::default())
            .await
    }

    /// Downloads every archived segment and backup, authenticates it (when encrypted), checks
    /// its SHA-256 against the manifest and each segment's records and hash chain, and writes
    /// it durably into `wal_dir` / `backup_dir`, so local recovery can run on them. Any
    /// missing or damaged object fails the restore, naming the object and what it held.
    pub async fn restore_into_with(
        &self,
        wal_dir: &Path,
        backup_dir: &Path,
        opts: &RestoreOptions,
    ) -> ArchiveResult<RestoreReport> {
        prepare_target(wal_dir, opts.allow_non_empty)?;
        prepare_target(backup_dir, opts.allow_non_empty)?;
        let m = self.manifest().await?;
        let mut report = RestoreReport::default();
        let mut prev: Option<&SegmentEntry> = None;
        for s in m.segments.values() {
            let held = s.held();
            if let Some(p) = prev {
                if s.first_lsn != p.last_lsn + 1 {
                    return Err(ArchiveError::BadFormat {
                        object: manifest::manifest_key(m.seq, self.key.is_some()),
                        reason: format!(
                            "segments are not contiguous: LSN {} is followed by {}",
                            p.last_lsn, s.first_lsn
                        ),
                    });
                }
            }
            let bytes = self.fetch(&s.object, &held, &s.sha256).await?;
            let name = segment::segment_name(s.first_lsn);
            let checked = check_segment(Path::new(&name), &bytes, s.first_lsn, s.last_lsn)
                .and_then(|(c, prev_hash)| {
                    if c.last_record_hash != s.last_record_hash {
                        Err("last record hash differs from the manifest".into())
                    } else if prev.is_some_and(|p| p.last_record_hash != prev_hash) {
                        Err("header does not chain to the previous archived segment".into())
                    } else {
                        Ok(())
                    }
                });
            if let Err(reason) = checked {
                return Err(ArchiveError::Damaged {
                    object: s.object.clone(),
                    held,
                    reason,
                });
            }
            let dir = wal_dir.to_path_buf();
            report.bytes += bytes.len() as u64;
            blocking(move || write_file_durably(&dir, &name, &bytes)).await?;
            if report.segments == 0 {
                report.first_lsn = Lsn(s.first_lsn);
            }
            report.segments += 1;
            report.last_lsn = Lsn(s.last_lsn);
            prev = Some(s);
        }
        for b in m.backups.values() {
            if !valid_backup_name(&b.name) {
                return Err(ArchiveError::BadFormat {
                    object: manifest::manifest_key(m.seq, self.key.is_some()),
                    reason: format!("backup name {:?} is not a plain *.lbb file name", b.name),
                });
            }
            let bytes = self
                .fetch(&b.object, &format!("backup {}", b.name), &b.sha256)
                .await?;
            let (dir, name) = (backup_dir.to_path_buf(), b.name.clone());
            report.bytes += bytes.len() as u64;
            blocking(move || write_file_durably(&dir, &name, &bytes)).await?;
            report.backups += 1;
        }
        for dir in [wal_dir, backup_dir] {
            segment::sync_dir(dir)?;
        }
        Ok(report)
    }

    /// Archive retention: drops from the manifest every segment whose last LSN is below
    /// `keep_from_lsn` and every backup not named in `keep_backups`, publishes that manifest,
    /// and only then deletes the objects (a crash in between leaves unreferenced objects, never
    /// a manifest pointing at deleted ones).
    pub async fn apply_retention(
        &self,
        keep_from_lsn: Lsn,
        keep_backups: &[String],
    ) -> ArchiveResult<RetentionReport> {
        let keep: BTreeSet<&str> = keep_backups.iter().map(String::as_str).collect();
        let base = self.manifest().await?;
        let doomed = |m: &Manifest| -> (Vec<SegmentEntry>, Vec<BackupEntry>) {
            (
                m.segments
                    .values()
                    .filter(|s| s.last_lsn < keep_from_lsn.get())
                    .cloned()
                    .collect(),
                m.backups
                    .values()
                    .filter(|b| !keep.contains(b.name.as_str()))
                    .cloned()
                    .collect(),
            )
        };
        let (segs, backups) = doomed(&base);
        if segs.is_empty() && backups.is_empty() {
            return Ok(RetentionReport {
                manifest_seq: base.seq,
                ..RetentionReport::default()
            });
        }
        let before = base.clone();
        let m = self
            .publish_with(base, |m| {
                let (segs, backups) = doomed(m);
                for s in &segs {
                    m.segments.remove(&s.first_lsn);
                    m.retained_from_lsn = m.retained_from_lsn.max(s.last_lsn + 1);
                }
                for b in &backups {
                    m.backups.remove(&b.name);
                }
                Ok(())
            })
            .await?;
        // Delete what the published manifest no longer references (recomputed against it, in
        // case a concurrent writer changed the set).
        let mut report = RetentionReport {
            manifest_seq: m.seq,
            ..RetentionReport::default()
        };
        let referenced: BTreeSet<&str> = m
            .segments
            .values()
            .map(|s| s.object.as_str())
            .chain(m.backups.values().map(|b| b.object.as_str()))
            .collect();
        let (segs, backups) = doomed(&before);
        for s in segs
            .iter()
            .filter(|s| !referenced.contains(s.object.as_str()))
        {
            self.store.delete(&s.object).await?;
            report.segments_deleted += 1;
        }
        for b in backups
            .iter()
            .filter(|b| !referenced.contains(b.object.as_str()))
        {
            self.store.delete(&b.object).await?;
            report.backups_deleted += 1;
        }
        Ok(report)
    }
}
