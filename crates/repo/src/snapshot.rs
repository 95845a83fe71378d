//! Snapshots: the named, timestamped root of one backup.

use jiff::Timestamp;
use lifeboat_types::{BlobId, SnapshotId};
use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;

/// Snapshot format version.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Object name of a snapshot.
pub fn snapshot_key(id: &SnapshotId) -> String {
    format!("snapshots/{}", id.to_hex())
}

/// What a backup did, stored with the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Files not in the parent.
    pub files_new: u64,
    /// Files whose metadata changed since the parent (re-read).
    pub files_changed: u64,
    /// Files reused from the parent without reading.
    pub files_unchanged: u64,
    /// Directories not in the parent.
    pub dirs_new: u64,
    /// Directories whose listing changed.
    pub dirs_changed: u64,
    /// Directories identical to the parent.
    pub dirs_unchanged: u64,
    /// Data blobs written.
    pub data_blobs_added: u64,
    /// Tree blobs written.
    pub tree_blobs_added: u64,
    /// Bytes of files in the snapshot.
    pub total_bytes: u64,
    /// Bytes actually read from disk.
    pub bytes_read: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added: u64,
    /// Bytes written to the repository (after compression and encryption).
    pub bytes_stored: u64,
    /// Source entries that could not be read (skipped with a warning).
    pub errors: u64,
    /// Wall-clock seconds.
    pub duration_secs: f64,
}

/// A snapshot object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version.
    pub version: u32,
    /// When the backup started.
    pub time: Timestamp,
    /// Host that made it.
    pub host: String,
    /// User that made it.
    pub username: String,
    /// Absolute source paths (or the stdin file name).
    pub paths: Vec<String>,
    /// User tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Snapshot used for change detection.
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// Root tree.
    pub tree: BlobId,
    /// The snapshot this one was copied from (another repository's id): copy skips it next time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    /// What happened.
    pub summary: Summary,
}

fn aad(id: &SnapshotId) -> Vec<u8> {
    let mut a = b"lifeboat snapshot v1".to_vec();
    a.extend_from_slice(&id.0);
    a
}

impl Snapshot {
    /// Seals the snapshot, bound to its id so files cannot be swapped.
    pub fn seal(&self, key: &MasterKey, id: &SnapshotId) -> Vec<u8> {
        lifeboat_crypto::seal(
            key.aead(),
            &aad(id),
            &serde_json::to_vec(self).expect("snapshots serialize"),
        )
    }

    /// Opens and decodes a snapshot object.
    pub fn open(key: &MasterKey, id: &SnapshotId, stored: &[u8]) -> Result<Snapshot, String> {
        let plain =
            lifeboat_crypto::open(key.aead(), &aad(id), stored).map_err(|e| e.to_string())?;
        let s: Snapshot =
            serde_json::from_slice(&plain).map_err(|e| format!("does not decode: {e}"))?;
        if s.version != SNAPSHOT_VERSION {
            return Err(format!(
                "snapshot format version {} is not supported",
                s.version
            ));
        }
        Ok(s)
    }
}
