//! Reachability: walk the trees of many snapshots once, fetching each level concurrently.
//!
//! Prune marks with it, copy collects what the target lacks. The visitor decides whether a
//! tree is new (and so descended into), which is how shared subtrees are read only once.

use futures::stream::{self, StreamExt};
use lifeboat_types::BlobId;

use crate::error::Result;
use crate::index::Index;
use crate::pack::BlobKind;
use crate::repository::Repository;
use crate::tree::NodeKind;

/// Concurrent tree reads per level.
const CONCURRENCY: usize = 16;

/// Walks from `roots` (tree id, caller's tag). `visit(kind, id, tag)` is called for every root,
/// subtree and data blob reached; return `true` for a tree to descend into it.
pub fn walk<T: Copy + Send>(
    repo: &Repository,
    index: &Index,
    roots: impl IntoIterator<Item = (BlobId, T)>,
    mut visit: impl FnMut(BlobKind, &BlobId, T) -> Result<bool>,
) -> Result<()> {
    let mut frontier = Vec::new();
    for (id, tag) in roots {
        if visit(BlobKind::Tree, &id, tag)? {
            frontier.push((id, tag));
        }
    }
    while !frontier.is_empty() {
        let trees: Vec<_> = repo.block_on(
            stream::iter(std::mem::take(&mut frontier))
                .map(|(id, tag)| async move { (tag, repo.read_tree_async(index, &id).await) })
                .buffer_unordered(CONCURRENCY)
                .collect(),
        );
        for (tag, tree) in trees {
            for node in tree?.nodes {
                match node.kind {
                    NodeKind::File => {
                        for c in &node.content {
                            visit(BlobKind::Data, c, tag)?;
                        }
                    }
                    NodeKind::Dir => {
                        if let Some(sub) = node.subtree {
                            if visit(BlobKind::Tree, &sub, tag)? {
                                frontier.push((sub, tag));
                            }
                        }
                    }
                    NodeKind::Symlink => {}
                }
            }
        }
    }
    Ok(())
}
