//! `stats`: how big each snapshot is, how much the repository stores, and how much of that is
//! shared (dedup), compressed, or no longer referenced (garbage).
//!
//! Every tree blob is read once for the whole repository, however many snapshots share it, and
//! kept only as a compact summary ([`TreeInfo`]: child tree and data blob *index positions*,
//! 4 bytes each, plus recursive counts). Per-snapshot numbers are then computed in memory from
//! those summaries. Blob sets are bitsets over index positions ([`BlobSet`]): three of them, at
//! one bit per indexed blob each. Memory is therefore the loaded index (52 B/blob) plus about
//! 130 B per distinct tree and 4 B per distinct (tree, data blob) reference.

use std::collections::HashMap;

use jiff::Timestamp;
use lifeboat_types::{BlobId, SnapshotId};
use serde::Serialize;

use crate::crypto::SEAL_OVERHEAD;
use crate::error::{Error, Result};
use crate::index::{BlobSet, Index};
use crate::pack::BlobKind;
use crate::repository::Repository;
use crate::tree::NodeKind;

/// Numbers for one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotStats {
    /// The snapshot.
    pub id: SnapshotId,
    /// When its backup started.
    pub time: Timestamp,
    /// Host it was taken on.
    pub host: String,
    /// Its source paths.
    pub paths: Vec<String>,
    /// Regular files (each hard-link name counts).
    pub files: u64,
    /// Directories, including the ancestors of the source paths (not the virtual root).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Sum of file sizes: the bytes a full restore writes. Entries sharing `(dev, inode)` with a
    /// link count above 1 are one file on restore and are counted once.
    pub restore_size: u64,
    /// Distinct data blobs the snapshot references.
    pub data_blobs: u64,
    /// Their plaintext bytes (what a restore downloads and decrypts, before it writes copies).
    pub raw_bytes: u64,
    /// Their sealed size in packs (compressed payload plus 40 bytes of encryption each).
    pub stored_bytes: u64,
    /// Distinct tree blobs (directory listings) the snapshot references.
    pub trees: u64,
    /// Referenced data blobs that are in no index (a damaged repository; see `check`).
    pub missing_blobs: u64,
}

/// Numbers for the whole repository.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepoStats {
    /// Readable snapshots.
    pub snapshots: u64,
    /// Pack objects under `data/`.
    pub packs: u64,
    /// Their total size as listed by the store.
    pub pack_bytes: u64,
    /// Packs no index names (left by interrupted backups); their bytes count as garbage.
    pub unindexed_packs: u64,
    /// Size of those packs.
    pub unindexed_pack_bytes: u64,
    /// Distinct data blob ids in the index.
    pub data_blobs: u64,
    /// Distinct tree blob ids in the index.
    pub tree_blobs: u64,
    /// Plaintext bytes of every distinct indexed blob (data and tree).
    pub raw_bytes: u64,
    /// Sealed bytes of one copy of every distinct indexed blob: compressed payload plus the
    /// 40-byte nonce and tag each.
    pub stored_bytes: u64,
    /// Sealed bytes of extra copies of referenced blobs stored in more than one pack (left by
    /// concurrent backups).
    pub duplicate_bytes: u64,
    /// Distinct data blobs referenced by at least one snapshot.
    pub referenced_data_blobs: u64,
    /// Their plaintext bytes.
    pub referenced_raw_bytes: u64,
    /// Their sealed bytes (one copy each).
    pub referenced_stored_bytes: u64,
    /// Distinct tree blobs referenced by at least one snapshot.
    pub referenced_tree_blobs: u64,
    /// Bytes no snapshot needs: every copy of indexed blobs that no snapshot references, plus
    /// packs no index names. (Pack trailers and duplicate copies are not counted.)
    pub garbage_bytes: u64,
    /// Sum of the snapshots' restore sizes.
    pub restore_size: u64,
    /// `restore_size / referenced_raw_bytes`: how many times over the referenced data would be
    /// written by restoring every snapshot. `None` when nothing is referenced.
    pub dedup_ratio: Option<f64>,
    /// `raw_bytes / (stored_bytes − 40 × blobs)`: plaintext over compressed payload, i.e.
    /// encryption overhead excluded. `None` for an empty repository.
    pub compression_ratio: Option<f64>,
}

/// The result of [`run`].
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Every readable snapshot, oldest first.
    pub snapshots: Vec<SnapshotStats>,
    /// Repository totals.
    pub repository: RepoStats,
    /// Problems met on the way (damaged index files or snapshots, missing blobs).
    pub warnings: Vec<String>,
}

/// One tree blob, reduced to what the statistics need.
#[derive(Default)]
struct TreeInfo {
    /// Index positions of the subtrees, one per directory entry (a subtree that occurs twice
    /// is listed twice: restore writes it twice).
    children: Vec<u32>,
    /// Index positions of the data blobs of this directory's own files, deduplicated.
    data: Vec<u32>,
    /// `(dev, inode, size)` of this directory's own hard-linked files.
    hardlinks: Vec<(u64, u64, u64)>,
    /// Data blobs of this directory's own files that no index holds.
    missing: Vec<BlobId>,
    /// Recursive counts, with multiplicity.
    files: u64,
    dirs: u64,
    symlinks: u64,
    /// Recursive size of files that are not hard-linked.
    plain_size: u64,
}

/// Summaries of every tree reachable from the snapshots, keyed by index position.
struct Trees<'a> {
    repo: &'a Repository,
    index: &'a Index,
    info: HashMap<u32, TreeInfo>,
}

impl Trees<'_> {
    /// Reads `id` and everything below it that was not read before; returns its position.
    fn visit(&mut self, id: &BlobId) -> Result<u32> {
        let pos = self
            .index
            .position(id)
            .ok_or(Error::BlobNotFound { id: *id })? as u32;
        if self.info.contains_key(&pos) {
            return Ok(pos);
        }
        let tree = self.repo.read_tree(self.index, id)?;
        let mut t = TreeInfo::default();
        for node in &tree.nodes {
            match node.kind {
                NodeKind::File => {
                    t.files += 1;
                    if node.nlink > 1 && node.inode != 0 {
                        t.hardlinks.push((node.dev, node.inode, node.size));
                    } else {
                        t.plain_size += node.size;
                    }
                    for b in &node.content {
                        match self.index.position(b) {
                            Some(p) => t.data.push(p as u32),
                            None => t.missing.push(*b),
                        }
                    }
                }
                NodeKind::Dir => {
                    t.dirs += 1;
                    if let Some(sub) = &node.subtree {
                        let p = self.visit(sub)?;
                        let c = &self.info[&p];
                        t.files += c.files;
                        t.dirs += c.dirs;
                        t.symlinks += c.symlinks;
                        t.plain_size += c.plain_size;
                        t.children.push(p);
                    }
                }
                NodeKind::Symlink => t.symlinks += 1,
            }
        }
        t.data.sort_unstable();
        t.data.dedup();
        t.missing.sort_unstable();
        t.missing.dedup();
        t.children.shrink_to_fit();
        t.data.shrink_to_fit();
        self.info.insert(pos, t);
        Ok(pos)
    }
}

/// Reusable per-snapshot scratch sets, so each snapshot costs no allocation.
struct Scratch {
    trees: BlobSet,
    data: BlobSet,
    hardlinks: HashMap<(u64, u64), u64>,
    missing: Vec<BlobId>,
}

/// Computes per-snapshot and repository statistics (read-only; no lock needed).
pub fn run(repo: &Repository) -> Result<Stats> {
    let loaded = repo.load_index()?;
    let mut warnings = loaded.warnings;
    let index = &loaded.index;
    let (snaps, damaged) = repo.list_snapshots()?;
    if !damaged.is_empty() {
        warnings.extend(damaged);
        warnings.push(
            "blobs only damaged snapshots reference are counted as garbage; run `lifeboat check`"
                .into(),
        );
    }
    let packs = repo.list_packs()?;

    let mut trees = Trees {
        repo,
        index,
        info: HashMap::new(),
    };
    let roots = snaps
        .iter()
        .map(|(_, s)| trees.visit(&s.tree))
        .collect::<Result<Vec<u32>>>()?;
    let info = trees.info;

    let mut referenced = BlobSet::new(index);
    let mut scratch = Scratch {
        trees: BlobSet::new(index),
        data: BlobSet::new(index),
        hardlinks: HashMap::new(),
        missing: Vec::new(),
    };
    let mut out = Vec::with_capacity(snaps.len());
    for ((id, snap), root) in snaps.iter().zip(roots) {
        let st = snapshot_stats(index, &info, root, &mut referenced, &mut scratch);
        let r = &info[&root];
        let s = SnapshotStats {
            id: *id,
            time: snap.time,
            host: snap.host.clone(),
            paths: snap.paths.clone(),
            files: r.files,
            dirs: r.dirs,
            symlinks: r.symlinks,
            restore_size: r.plain_size + st.hardlinked_size,
            data_blobs: st.data_blobs,
            raw_bytes: st.raw_bytes,
            stored_bytes: st.stored_bytes,
            trees: st.trees,
            missing_blobs: st.missing,
        };
        if s.missing_blobs > 0 {
            warnings.push(format!(
                "snapshot {} references {} data blobs that are in no index; run `lifeboat check`",
                id.short(),
                s.missing_blobs
            ));
        }
        out.push(s);
    }

    let mut rs = RepoStats {
        snapshots: out.len() as u64,
        packs: packs.len() as u64,
        pack_bytes: packs.iter().map(|(_, n)| n).sum(),
        restore_size: out.iter().map(|s| s.restore_size).sum(),
        ..Default::default()
    };
    for (p, n) in &packs {
        if !index.has_pack(p) {
            rs.unindexed_packs += 1;
            rs.unindexed_pack_bytes += n;
        }
    }
    rs.garbage_bytes = rs.unindexed_pack_bytes;
    let mut pos = 0;
    while pos < index.len() {
        let first = index.at(pos).entry;
        let mut end = pos + 1;
        let mut extra = 0u64;
        while end < index.len() && index.at(end).entry.id == first.id {
            extra += index.at(end).entry.length as u64;
            end += 1;
        }
        let is_referenced = match first.kind {
            BlobKind::Data => {
                rs.data_blobs += 1;
                referenced.contains(pos)
            }
            BlobKind::Tree => {
                rs.tree_blobs += 1;
                info.contains_key(&(pos as u32))
            }
        };
        rs.raw_bytes += first.raw_len as u64;
        rs.stored_bytes += first.length as u64;
        if !is_referenced {
            rs.garbage_bytes += first.length as u64 + extra;
        } else {
            rs.duplicate_bytes += extra;
            match first.kind {
                BlobKind::Data => {
                    rs.referenced_data_blobs += 1;
                    rs.referenced_raw_bytes += first.raw_len as u64;
                    rs.referenced_stored_bytes += first.length as u64;
                }
                BlobKind::Tree => rs.referenced_tree_blobs += 1,
            }
        }
        pos = end;
    }
    rs.dedup_ratio = ratio(rs.restore_size, rs.referenced_raw_bytes);
    let payload = rs
        .stored_bytes
        .saturating_sub((rs.data_blobs + rs.tree_blobs) * SEAL_OVERHEAD as u64);
    rs.compression_ratio = ratio(rs.raw_bytes, payload);
    Ok(Stats {
        snapshots: out,
        repository: rs,
        warnings,
    })
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// What one snapshot's walk over the tree summaries adds up.
struct Walked {
    trees: u64,
    data_blobs: u64,
    raw_bytes: u64,
    stored_bytes: u64,
    hardlinked_size: u64,
    missing: u64,
}

/// Visits each distinct tree of one snapshot once (in memory, no I/O), collecting its distinct
/// data blobs into `referenced` as well.
fn snapshot_stats(
    index: &Index,
    info: &HashMap<u32, TreeInfo>,
    root: u32,
    referenced: &mut BlobSet,
    s: &mut Scratch,
) -> Walked {
    s.trees.clear();
    s.data.clear();
    s.hardlinks.clear();
    s.missing.clear();
    let mut w = Walked {
        trees: 0,
        data_blobs: 0,
        raw_bytes: 0,
        stored_bytes: 0,
        hardlinked_size: 0,
        missing: 0,
    };
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if !s.trees.insert(p as usize) {
            continue;
        }
        w.trees += 1;
        let t = &info[&p];
        for &d in &t.data {
            if s.data.insert(d as usize) {
                referenced.insert(d as usize);
                let e = index.at(d as usize).entry;
                w.data_blobs += 1;
                w.raw_bytes += e.raw_len as u64;
                w.stored_bytes += e.length as u64;
            }
        }
        for &(dev, inode, size) in &t.hardlinks {
            let v = s.hardlinks.entry((dev, inode)).or_insert(0);
            *v = (*v).max(size);
        }
        s.missing.extend_from_slice(&t.missing);
        stack.extend_from_slice(&t.children);
    }
    w.hardlinked_size = s.hardlinks.values().sum();
    s.missing.sort_unstable();
    s.missing.dedup();
    w.missing = s.missing.len() as u64;
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Snapshot, Summary, SNAPSHOT_VERSION};
    use crate::test_support::*;
    use crate::tree::Node;

    fn snapshot(repo: &Repository, tree: BlobId, secs: i64) -> SnapshotId {
        let lock = repo.lock_shared("test", &Default::default()).unwrap();
        repo.save_snapshot(
            &lock,
            &Snapshot {
                version: SNAPSHOT_VERSION,
                time: Timestamp::from_second(secs).unwrap(),
                host: "h".into(),
                username: "u".into(),
                paths: vec!["/x".into()],
                tags: vec![],
                parent: None,
                tree,
                original: None,
                summary: Summary::default(),
            },
        )
        .unwrap()
    }

    fn hardlink(name: &str, content: &[BlobId], size: u64) -> Node {
        Node {
            nlink: 2,
            inode: 42,
            dev: 1,
            ..file(name, content, size)
        }
    }

    #[test]
    fn per_snapshot_and_repository_numbers() {
        let (_rt, repo) = memory_repo();
        let d = put_blobs(
            &repo,
            BlobKind::Data,
            &[vec![1; 100], vec![2; 200], vec![3; 300]],
        );
        // An unreferenced blob: garbage.
        let junk = put_blobs(&repo, BlobKind::Data, &[vec![9; 1000]]);
        let _ = junk;
        // `shared` appears twice in snapshot 1 (two identical directories) and once in 2.
        let shared = put_tree(&repo, vec![file("f", &[d[0], d[1]], 300)]);
        let root1 = put_tree(
            &repo,
            vec![
                dir("a", shared),
                dir("b", shared),
                hardlink("h1", &[d[2]], 300),
                hardlink("h2", &[d[2]], 300),
                symlink("l", "f"),
            ],
        );
        let root2 = put_tree(&repo, vec![dir("a", shared), file("g", &[d[0]], 100)]);
        let s1 = snapshot(&repo, root1, 10);
        let s2 = snapshot(&repo, root2, 20);

        let st = run(&repo).unwrap();
        assert!(st.warnings.is_empty(), "{:?}", st.warnings);
        let [a, b] = &st.snapshots[..] else {
            panic!("{:?}", st.snapshots)
        };
        assert_eq!((a.id, b.id), (s1, s2));
        assert_eq!((a.files, a.dirs, a.symlinks), (4, 2, 1));
        // Two copies of f, the hard-linked pair once.
        assert_eq!(a.restore_size, 300 + 300 + 300);
        assert_eq!((a.data_blobs, a.raw_bytes), (3, 600));
        assert_eq!(a.stored_bytes, 600 + 3 * SEAL_OVERHEAD as u64);
        assert_eq!(a.trees, 2);
        assert_eq!((b.files, b.dirs, b.restore_size), (2, 1, 400));
        assert_eq!((b.data_blobs, b.raw_bytes, b.trees), (2, 300, 2));

        let r = &st.repository;
        assert_eq!(r.snapshots, 2);
        assert_eq!((r.data_blobs, r.tree_blobs), (4, 3));
        assert_eq!(r.referenced_data_blobs, 3);
        assert_eq!(r.referenced_raw_bytes, 600);
        assert_eq!(r.referenced_tree_blobs, 3);
        assert_eq!(r.garbage_bytes, 1000 + SEAL_OVERHEAD as u64);
        assert_eq!(r.unindexed_packs, 0);
        assert_eq!(r.restore_size, 900 + 400);
        assert_eq!(r.dedup_ratio, Some(1300.0 / 600.0));
        // Stored raw (no compression): payload equals plaintext.
        assert_eq!(r.compression_ratio, Some(1.0));
        assert!(r.stored_bytes + r.duplicate_bytes <= r.pack_bytes);
        assert_eq!(r.packs, 5, "one pack per put_blobs call");
    }

    #[test]
    fn unindexed_packs_and_duplicates() {
        let (_rt, repo) = memory_repo();
        let d = put_blobs(&repo, BlobKind::Data, &[vec![1; 50]]);
        // The same blob again in a second pack: a duplicate copy, not garbage.
        put_blobs(&repo, BlobKind::Data, &[vec![1; 50]]);
        let root = put_tree(&repo, vec![file("f", &d, 50)]);
        snapshot(&repo, root, 1);
        // A pack no index names.
        let mut w = crate::pack::PackWriter::new(BlobKind::Data);
        w.add_plain(repo.key(), BlobId([5; 32]), b"orphan", 6, false);
        let orphan = w.finish(repo.key());
        let orphan_len = orphan.bytes.len() as u64;
        repo.block_on(
            repo.store()
                .put(&crate::pack::pack_key(&orphan.id), orphan.bytes.into()),
        )
        .unwrap();

        let r = run(&repo).unwrap().repository;
        assert_eq!((r.unindexed_packs, r.unindexed_pack_bytes), (1, orphan_len));
        assert_eq!(r.garbage_bytes, orphan_len);
        assert_eq!(r.duplicate_bytes, 50 + SEAL_OVERHEAD as u64);
        assert_eq!(r.data_blobs, 1);
        assert_eq!(r.dedup_ratio, Some(1.0));
    }

    #[test]
    fn empty_repository() {
        let (_rt, repo) = memory_repo();
        let st = run(&repo).unwrap();
        assert!(st.snapshots.is_empty());
        assert_eq!(st.repository.dedup_ratio, None);
        assert_eq!(st.repository.compression_ratio, None);
        assert_eq!(st.repository.pack_bytes, 0);
    }
}
