//! Tree building: directory blobs assembled bottom-up once every file's blobs are known.

use std::sync::atomic::Ordering;

use crossbeam_channel::Sender;
use lifeboat_types::BlobId;

use super::shared::Shared;
use super::walker::{Child, DirBuild};
use crate::compress::Compressor;
use crate::pack::{BlobKind, FinishedPack, PackWriter};
use crate::snapshot::Summary;
use crate::tree::{Tree, TREE_VERSION};

/// Assembles tree blobs bottom-up (dirs are in post-order) and returns the root tree id.
pub(super) fn build_trees(
    shared: &Shared<'_>,
    dirs: Vec<DirBuild>,
    root_children: Vec<Child>,
    results: &[Option<(Vec<BlobId>, u64)>],
    summary: &mut Summary,
    packs: &Sender<FinishedPack>,
) -> BlobId {
    let mut comp = Compressor::new(shared.repo.config().compression_level);
    let mut scratch = Vec::new();
    let mut writer = PackWriter::new(BlobKind::Tree);
    let mut tree_ids: Vec<BlobId> = Vec::with_capacity(dirs.len());
    let mut store_tree = |children: Vec<Child>, tree_ids: &[BlobId]| -> BlobId {
        let mut nodes = Vec::with_capacity(children.len());
        for c in children {
            match c {
                Child::Ready(n) => nodes.push(n),
                Child::File { mut node, job } => {
                    if let Some((ids, read)) = &results[job] {
                        node.content = ids.clone();
                        node.size = *read; // the file may have changed size while being read
                        nodes.push(node);
                    }
                }
                Child::Dir { mut node, dir } => {
                    node.subtree = Some(tree_ids[dir]);
                    nodes.push(node);
                }
            }
        }
        let bytes = Tree {
            version: TREE_VERSION,
            nodes,
        }
        .encode();
        let id = shared.repo.key().blob_id(&bytes);
        if shared.claim(&id) {
            shared.tree_blobs.fetch_add(1, Ordering::Relaxed);
            if let Some(pack) = shared.store_blob(&mut comp, &mut scratch, &mut writer, id, &bytes)
            {
                let _ = packs.send(pack);
            }
        }
        id
    };
    for d in dirs {
        let id = store_tree(d.children, &tree_ids);
        match d.parent_subtree {
            None => summary.dirs_new += 1,
            Some(p) if p == id => summary.dirs_unchanged += 1,
            Some(_) => summary.dirs_changed += 1,
        }
        tree_ids.push(id);
    }
    let root = store_tree(root_children, &tree_ids);
    if !writer.is_empty() {
        let _ = packs.send(writer.finish(shared.repo.key()));
    }
    root
}
