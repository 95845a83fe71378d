//! Base-backup files: one self-describing file per snapshot,
//! `<backup_dir>/<20-digit start LSN>-<id>.lbb`, written crash-atomically.
//!
//! Layout: `magic "LBBACKUP"` (8) · `version` u32 · `meta_len` u32 · metadata (JSON,
//! `meta_len` bytes) · content (`content_len` bytes: the snapshot, zstd-compressed or not) ·
//! SHA-256 of every preceding byte (32). See `docs/journal-format.md`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::record::Hash;
use crate::segment::sync_dir;
use crate::RawLsn;
use lifeboat_types::{Lsn, Term};

/// Backup file magic.
pub const BACKUP_MAGIC: [u8; 8] = *b"LBBACKUP";
/// Backup file format version written by this code.
pub const BACKUP_VERSION: u32 = 1;
/// Backup file extension.
pub const BACKUP_EXT: &str = "lbb";
const MAX_META: u32 = 1024 * 1024;
const PREFIX_LEN: usize = 16;

/// A base backup's metadata (the file's JSON header plus where it is and how big).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackup {
    /// Random id, unique per backup.
    pub id: String,
    /// When the backup was taken.
    pub created_at: SystemTime,
    /// Last LSN applied in the snapshot (0: the initial state); replay starts after it.
    pub start_lsn: Lsn,
    /// Timestamp of record `start_lsn` (unix ns; 0 for the initial state): the backup can
    /// serve timestamp targets at or after it.
    pub start_timestamp_nanos: i64,
    /// Hash of record `start_lsn`: the chain anchor replay checks the next record against.
    pub start_hash: Hash,
    /// Leadership term of the writer that took it.
    pub term: Term,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// Snapshot size before compression.
    pub snapshot_len: u64,
    /// Whether the content is zstd-compressed.
    pub compressed: bool,
    /// SHA-256 of the uncompressed snapshot.
    pub snapshot_sha256: Hash,
    /// The file.
    pub path: PathBuf,
}

/// On-disk JSON metadata, version 1.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    id: String,
    created_at_nanos: i64,
    start_lsn: RawLsn,
    start_timestamp_nanos: i64,
    start_hash: String,
    term: u64,
    compression: String,
    snapshot_len: u64,
    content_len: u64,
    snapshot_sha256: String,
}

/// What a new backup is stamped with (the rest is computed when writing).
#[derive(Debug, Clone, Copy)]
pub struct BackupStamp {
    /// Last LSN applied in the snapshot.
    pub start_lsn: Lsn,
    /// Timestamp of that record.
    pub start_timestamp_nanos: i64,
    /// Hash of that record.
    pub start_hash: Hash,
    /// Writer term.
    pub term: Term,
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Unix nanoseconds to `SystemTime` (negative values clamp to the epoch).
pub fn time_from_nanos(n: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n.max(0) as u64)
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadBackup {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn hash32(hex_str: &str, path: &Path, field: &str) -> Result<Hash> {
    let v = hex::decode(hex_str).map_err(|e| bad(path, format!("{field}: {e}")))?;
    v.try_into()
        .map_err(|_| bad(path, format!("{field} is not 32 bytes")))
}

/// Writes a backup of `snapshot` crash-atomically (temp file, fsync, rename, directory fsync):
/// a crash leaves either no backup or a complete one (plus a `.tmp` removed at next open).
pub fn write_backup(
    dir: &Path,
    stamp: BackupStamp,
    snapshot: &[u8],
    compress: bool,
) -> Result<BaseBackup> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let content = if compress {
        zstd::bulk::compress(snapshot, 3).map_err(|e| Error::io(dir, e))?
    } else {
        snapshot.to_vec()
    };
    let created_at = SystemTime::now();
    let id = format!("{:016x}", rand::random::<u64>());
    let snapshot_sha256: Hash = Sha256::digest(snapshot).into();
    let meta = Meta {
        id: id.clone(),
        created_at_nanos: nanos(created_at),
        start_lsn: stamp.start_lsn.get(),
        start_timestamp_nanos: stamp.start_timestamp_nanos,
        start_hash: hex::encode(stamp.start_hash),
        term: stamp.term.get(),
        compression: if compress { "zstd" } else { "none" }.into(),
        snapshot_len: snapshot.len() as u64,
        content_len: content.len() as u64,
        snapshot_sha256: hex::encode(snapshot_sha256),
    };
    let meta_json = serde_json::to_vec(&meta).expect("metadata serialises");
    let mut bytes = Vec::with_capacity(PREFIX_LEN + meta_json.len() + content.len() + 32);
    bytes.extend_from_slice(&BACKUP_MAGIC);
    bytes.extend_from_slice(&BACKUP_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&meta_json);
    bytes.extend_from_slice(&content);
    let trailer: Hash = Sha256::digest(&bytes).into();
    bytes.extend_from_slice(&trailer);

    let name = format!("{:020}-{id}.{BACKUP_EXT}", stamp.start_lsn.get());
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(&bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)?;
    Ok(BaseBackup {
        id,
        created_at,
        start_lsn: stamp.start_lsn,
        start_timestamp_nanos: stamp.start_timestamp_nanos,
        start_hash: stamp.start_hash,
        term: stamp.term,
        size_bytes: bytes.len() as u64,
        snapshot_len: snapshot.len() as u64,
        compressed: compress,
        snapshot_sha256,
        path,
    })
}

fn parse_prefix(path: &Path, prefix: &[u8]) -> Result<u32> {
    if prefix.len() < PREFIX_LEN || prefix[..8] != BACKUP_MAGIC {
        return Err(bad(path, "not a base-backup file (bad magic)"));
    }
    let version = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes"));
    if version != BACKUP_VERSION {
        return Err(bad(path, format!("unsupported backup version {version}")));
    }
    let meta_len = u32::from_le_bytes(prefix[12..16].try_into().expect("4 bytes"));
    if meta_len > MAX_META {
        return Err(bad(
            path,
            format!("metadata length {meta_len} is implausible"),
        ));
    }
    Ok(meta_len)
}

fn from_meta(path: &Path, meta: Meta, size_bytes: u64) -> Result<BaseBackup> {
    let compressed = match meta.compression.as_str() {
        "zstd" => true,
        "none" => false,
        other => return Err(bad(path, format!("unknown compression {other:?}"))),
    };
    Ok(BaseBackup {
        id: meta.id,
        created_at: time_from_nanos(meta.created_at_nanos),
        start_lsn: Lsn(meta.start_lsn),
        start_timestamp_nanos: meta.start_timestamp_nanos,
        start_hash: hash32(&meta.start_hash, path, "start_hash")?,
        term: Term::from(meta.term),
        size_bytes,
        snapshot_len: meta.snapshot_len,
        compressed,
        snapshot_sha256: hash32(&meta.snapshot_sha256, path, "snapshot_sha256")?,
        path: path.to_path_buf(),
    })
}

/// Reads a backup's metadata (header only; the content is checked by [`load_backup`]).
pub fn read_meta(path: &Path) -> Result<BaseBackup> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut prefix = [0u8; PREFIX_LEN];
    f.read_exact(&mut prefix)
        .map_err(|e| bad(path, format!("cannot read header: {e}")))?;
    let meta_len = parse_prefix(path, &prefix)?;
    let mut meta = vec![0u8; meta_len as usize];
    f.read_exact(&mut meta)
        .map_err(|e| bad(path, format!("cannot read metadata: {e}")))?;
    let meta: Meta =
        serde_json::from_slice(&meta).map_err(|e| bad(path, format!("metadata: {e}")))?;
    if size != PREFIX_LEN as u64 + meta_len as u64 + meta.content_len + 32 {
        return Err(bad(
            path,
            format!("file is {size} bytes, metadata implies another size (truncated?)"),
        ));
    }
    from_meta(path, meta, size)
}

/// Reads and checks a whole backup (trailer hash, decompression, snapshot hash) and returns
/// the snapshot bytes.
pub fn load_backup(backup: &BaseBackup) -> Result<Vec<u8>> {
    let path = &backup.path;
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < PREFIX_LEN + 32 {
        return Err(bad(path, "file too short"));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    let actual: Hash = Sha256::digest(body).into();
    if actual[..] != trailer[..] {
        return Err(bad(path, "file checksum (SHA-256 trailer) mismatch"));
    }
    let meta_len = parse_prefix(path, body)? as usize;
    let content = body
        .get(PREFIX_LEN + meta_len..)
        .ok_or_else(|| bad(path, "metadata runs past the end"))?;
    let snapshot = if backup.compressed {
        zstd::bulk::decompress(content, backup.snapshot_len as usize)
            .map_err(|e| bad(path, format!("zstd: {e}")))?
    } else {
        content.to_vec()
    };
    let sha: Hash = Sha256::digest(&snapshot).into();
    if sha != backup.snapshot_sha256 || snapshot.len() as u64 != backup.snapshot_len {
        return Err(bad(path, "snapshot SHA-256 mismatch"));
    }
    Ok(snapshot)
}

/// Backups in `dir` ordered oldest to newest (by start LSN, then creation time), plus the
/// files that look like backups but whose header is damaged.
pub fn list_backups(dir: &Path) -> Result<(Vec<BaseBackup>, Vec<Error>)> {
    let mut ok = Vec::new();
    let mut damaged = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((ok, damaged)),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(BACKUP_EXT) {
            continue;
        }
        match read_meta(&path) {
            Ok(b) => ok.push(b),
            Err(e) => damaged.push(e),
        }
    }
    ok.sort_by_key(|b| (b.start_lsn, b.created_at));
    Ok((ok, damaged))
}

/// Deletes `*.lbb.tmp` leftovers of interrupted backups.
pub fn clean_temp(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_name().to_string_lossy().ends_with(".lbb.tmp") {
            fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Deletes the oldest backups beyond `keep`; returns the ones deleted.
pub fn apply_retention(dir: &Path, keep: usize) -> Result<Vec<BaseBackup>> {
    let (backups, _) = list_backups(dir)?;
    let excess = backups.len().saturating_sub(keep);
    let doomed: Vec<BaseBackup> = backups.into_iter().take(excess).collect();
    for b in &doomed {
        fs::remove_file(&b.path).map_err(|e| Error::io(&b.path, e))?;
    }
    if !doomed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(doomed)
}
