//! The archive's control objects: `archive.json` (format, encryption, key check) and the
//! manifest (`manifest/<seq>.json`), the list of every archived segment and base backup.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::RawLsn;

/// Object-layout version written by this code.
pub const ARCHIVE_FORMAT_VERSION: u32 = 1;
/// Value of `format` in `archive.json`.
pub const ARCHIVE_FORMAT_NAME: &str = "lifeboat-journal-archive";

/// Contents of `<archive>/archive.json`, written once when the archive is created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Always [`ARCHIVE_FORMAT_NAME`]: identifies the location as a journal archive.
    pub format: String,
    /// Object-layout version.
    pub version: u32,
    /// Whether objects are sealed with an [`super::ArchiveKey`].
    pub encrypted: bool,
    /// Hex of a sealed constant: opens only with the right key (empty when not encrypted).
    #[serde(default)]
    pub key_check: String,
}

/// One archived closed segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentEntry {
    /// Object key relative to the archive root.
    pub object: String,
    /// LSN of its first record (also its file name).
    pub first_lsn: RawLsn,
    /// LSN of its last record.
    pub last_lsn: RawLsn,
    /// Timestamp (unix nanoseconds) of its first record.
    pub first_timestamp_nanos: i64,
    /// Timestamp (unix nanoseconds) of its last record.
    pub last_timestamp_nanos: i64,
    /// Plaintext size in bytes.
    pub size: u64,
    /// SHA-256 (hex) of the plaintext segment file.
    pub sha256: String,
    /// Hash (hex) of its last record: the chain link the next segment's header must carry.
    pub last_record_hash: String,
}

impl SegmentEntry {
    /// Human description for errors.
    pub fn held(&self) -> String {
        format!("segment LSN {}..={}", self.first_lsn, self.last_lsn)
    }
}

/// One archived base backup file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupEntry {
    /// Local file name (`<start lsn>-<id>.lbb`).
    pub name: String,
    /// Object key relative to the archive root.
    pub object: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// SHA-256 (hex) of the plaintext file.
    pub sha256: String,
}

/// The archive's table of contents, written (as a new numbered object) after the data objects
/// it lists.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Object-layout version.
    pub version: u32,
    /// Sequence number; the manifest object is `manifest/<seq, 20 digits>.json[.enc]`.
    pub seq: u64,
    /// Archived segments by first LSN, contiguous.
    pub segments: BTreeMap<RawLsn, SegmentEntry>,
    /// Archived backups by file name.
    pub backups: BTreeMap<String, BackupEntry>,
    /// Retention removed every archived segment below this LSN; local segments below it are
    /// not archived again.
    #[serde(default)]
    pub retained_from_lsn: RawLsn,
}

impl Manifest {
    /// Every LSN up to this one was archived (0: none). Usually the last archived segment's
    /// last LSN; when retention has since removed every segment, the retention boundary —
    /// what was shipped stays shipped for lag and for local WAL retention.
    pub fn archived_upto_lsn(&self) -> RawLsn {
        self.segments
            .values()
            .next_back()
            .map_or(0, |s| s.last_lsn)
            .max(self.retained_from_lsn.saturating_sub(1))
    }

    /// First LSN held by the archive, if any.
    pub fn archived_from_lsn(&self) -> Option<RawLsn> {
        self.segments.keys().next().copied()
    }
}

/// Object key of manifest number `seq`.
pub(crate) fn manifest_key(seq: u64, encrypted: bool) -> String {
    format!(
        "manifest/{seq:020}.json{}",
        if encrypted { ".enc" } else { "" }
    )
}

/// Parses a manifest object key back into its sequence number.
pub(crate) fn parse_manifest_key(key: &str) -> Option<u64> {
    let rest = key.strip_prefix("manifest/")?;
    let stem = rest
        .strip_suffix(".json.enc")
        .or_else(|| rest.strip_suffix(".json"))?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keys_round_trip() {
        for enc in [false, true] {
            assert_eq!(parse_manifest_key(&manifest_key(42, enc)), Some(42));
        }
        assert_eq!(parse_manifest_key("manifest/x.json"), None);
        assert_eq!(
            parse_manifest_key("manifest/00000000000000000001.json#1"),
            None
        );
    }
}
