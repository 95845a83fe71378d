//! Local-file side of the archive: reading and checking closed segments and backup files,
//! and writing restored files durably.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::error::{ArchiveError, ArchiveResult};
use super::manifest::SegmentEntry;
use crate::segment;
use crate::RawLsn;

/// Extension of base backup files in the backup directory.
const BACKUP_EXT: &str = ".lbb";

/// A local closed segment, read and checked.
pub(super) struct LocalSegment {
    pub(super) bytes: Vec<u8>,
    pub(super) prev_hash: String,
    pub(super) entry: SegmentEntry,
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(super) fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Reads a closed segment and checks that it holds exactly `first..=last`, chained.
pub(super) fn read_closed_segment(
    path: &Path,
    first: RawLsn,
    last: RawLsn,
) -> ArchiveResult<LocalSegment> {
    let bytes = std::fs::read(path).map_err(|e| ArchiveError::io(path, e))?;
    let (entry, prev_hash) = check_segment(path, &bytes, first, last).map_err(|reason| {
        ArchiveError::Journal(crate::Error::BadSegment {
            path: path.to_path_buf(),
            reason,
        })
    })?;
    Ok(LocalSegment {
        bytes,
        prev_hash,
        entry,
    })
}

/// Decodes a whole segment image holding exactly `first..=last` and describes it (without
/// its object key); also returns the header's previous-record hash (hex).
pub(super) fn check_segment(
    path: &Path,
    bytes: &[u8],
    first: RawLsn,
    last: RawLsn,
) -> Result<(SegmentEntry, String), String> {
    let scan = segment::scan(path, bytes, false).map_err(|e| e.to_string())?;
    if let Some((lsn, reason)) = scan.stop {
        return Err(format!("record at LSN {lsn} is damaged: {reason}"));
    }
    if scan.end != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the last record",
            bytes.len() - scan.end
        ));
    }
    if scan.header.first_lsn != first {
        return Err(format!(
            "header says first LSN {}, expected {first}",
            scan.header.first_lsn
        ));
    }
    let (Some((_, r0)), Some((_, rn))) = (scan.records.first(), scan.records.last()) else {
        return Err("segment holds no records".into());
    };
    if rn.lsn != last {
        return Err(format!("last record is LSN {}, expected {last}", rn.lsn));
    }
    let entry = SegmentEntry {
        object: String::new(),
        first_lsn: first,
        last_lsn: last,
        first_timestamp_nanos: r0.timestamp_nanos,
        last_timestamp_nanos: rn.timestamp_nanos,
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
        last_record_hash: hex::encode(scan.last_hash),
    };
    Ok((entry, hex::encode(scan.header.prev_hash)))
}

/// Writes `bytes` to `dir/name` crash-safely (temp file, fsync, rename).
pub(super) fn write_file_durably(dir: &Path, name: &str, bytes: &[u8]) -> ArchiveResult<()> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.restore.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| ArchiveError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| ArchiveError::io(&tmp, e))?;
    f.sync_all().map_err(|e| ArchiveError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| ArchiveError::io(&path, e))
}

/// Creates `dir` if needed; refuses a non-empty one unless allowed.
pub(super) fn prepare_target(dir: &Path, allow_non_empty: bool) -> ArchiveResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| ArchiveError::io(dir, e))?;
    let mut entries = std::fs::read_dir(dir).map_err(|e| ArchiveError::io(dir, e))?;
    if !allow_non_empty && entries.next().is_some() {
        return Err(ArchiveError::TargetNotEmpty {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Whether `name` is a base backup file name the archive handles: `*.lbb` of ASCII letters,
/// digits and `-_.`, not starting with a dot (so never a path or a hidden file).
pub(super) fn valid_backup_name(name: &str) -> bool {
    name.len() > BACKUP_EXT.len()
        && name.ends_with(BACKUP_EXT)
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Base backup files (`*.lbb`) in `dir`, sorted by name; a missing directory has none.
pub(super) fn list_backups(dir: &Path) -> ArchiveResult<Vec<(String, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ArchiveError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| ArchiveError::io(dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if valid_backup_name(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ArchiveResult<T> + Send + 'static,
) -> ArchiveResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArchiveError::io("<blocking task>", std::io::Error::other(e)))?
}
