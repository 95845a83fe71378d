//! Directory listings ("trees"): one JSON blob per directory, content-addressed so unchanged
//! directories dedup across snapshots.

use lifeboat_types::BlobId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Tree format version, stored in every tree.
pub const TREE_VERSION: u32 = 1;

/// A file name or symlink target: raw bytes, since Unix names need not be UTF-8.
///
/// Serialized as a JSON string when valid UTF-8, else as `{"hex": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(pub Vec<u8>);

impl Name {
    /// Lossy display form.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// As an OS string (lossless on Unix).
    pub fn as_os_str(&self) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(&self.0)
    }
}

impl From<&std::ffi::OsStr> for Name {
    fn from(s: &std::ffi::OsStr) -> Self {
        use std::os::unix::ffi::OsStrExt;
        Name(s.as_bytes().to_vec())
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(s.as_bytes().to_vec())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum NameRepr {
    Text(String),
    Hex { hex: String },
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => NameRepr::Text(t.to_owned()).serialize(s),
            Err(_) => NameRepr::Hex {
                hex: hex::encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NameRepr::deserialize(d)? {
            NameRepr::Text(t) => Ok(Name(t.into_bytes())),
            NameRepr::Hex { hex } => hex::decode(hex).map(Name).map_err(serde::de::Error::custom),
        }
    }
}

/// Kind of a tree entry (special files are skipped at backup time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
}

/// One directory entry with the metadata we restore and the fields incremental backup compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Entry name.
    pub name: Name,
    /// File, dir or symlink.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits (incl. setuid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status-change time; compared by incremental backup, not restored.
    pub ctime_ns: i64,
    /// Inode; for change detection and hard links.
    pub inode: u64,
    /// Device; for hard links.
    pub dev: u64,
    /// Link count; >1 means restore re-creates hard links within the snapshot.
    pub nlink: u64,
    /// Size in bytes (files).
    pub size: u64,
    /// Data blobs in order (files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    /// Tree of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    /// Target of a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Name>,
}

impl Node {
    /// Same file as far as incremental backup can tell without reading it.
    pub fn unchanged_file(&self, other: &Node) -> bool {
        self.kind == NodeKind::File
            && other.kind == NodeKind::File
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
            && self.inode == other.inode
    }
}

/// A directory listing, nodes sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Tree {
    /// Format version.
    pub version: u32,
    /// Entries, sorted by name bytes.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Canonical encoding: the same directory always yields the same bytes (and blob id).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("trees serialize")
    }

    /// Decodes and checks the version and ordering.
    pub fn decode(b: &[u8]) -> Result<Tree, String> {
        let t: Tree =
            serde_json::from_slice(b).map_err(|e| format!("tree does not decode: {e}"))?;
        if t.version != TREE_VERSION {
            return Err(format!(
                "tree format version {} is not supported",
                t.version
            ));
        }
        if t.nodes.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err("tree entries are not sorted and unique".into());
        }
        Ok(t)
    }

    /// Finds a child by name.
    pub fn find(&self, name: &Name) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_round_trip() {
        let n = Node {
            name: Name(vec![0xff, b'a']),
            kind: NodeKind::Symlink,
            mode: 0o777,
            uid: 1,
            gid: 2,
            mtime_ns: -5,
            ctime_ns: 7,
            inode: 9,
            dev: 1,
            nlink: 1,
            size: 0,
            content: vec![],
            subtree: None,
            target: Some(Name(b"x/y".to_vec())),
        };
        let t = Tree {
            version: TREE_VERSION,
            nodes: vec![n],
        };
        let bytes = t.encode();
        assert!(String::from_utf8_lossy(&bytes).contains("\"hex\":\"ff61\""));
        assert_eq!(Tree::decode(&bytes).unwrap(), t);
        assert!(Tree::decode(b"{\"version\":9,\"nodes\":[]}").is_err());
    }
}
