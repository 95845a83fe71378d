//! Reachability: walk the trees of many snapshots once, fetching trees concurrently.
//!
//! Prune marks with it, copy collects what the target lacks. The visitor decides whether a
//! tree is new (and so descended into), which is how shared subtrees are read only once.

use futures::stream::{FuturesUnordered, StreamExt};
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
///
/// At most [`CONCURRENCY`] trees are in flight and each is visited as soon as it arrives, so
/// memory holds a few trees plus the ids still to read — never a whole level of the forest.
pub fn walk<T: Copy>(
    repo: &Repository,
    index: &Index,
    roots: impl IntoIterator<Item = (BlobId, T)>,
    mut visit: impl FnMut(BlobKind, &BlobId, T) -> Result<bool>,
) -> Result<()> {
    let mut pending = Vec::new();
    for (id, tag) in roots {
        if visit(BlobKind::Tree, &id, tag)? {
            pending.push((id, tag));
        }
    }
    // Depth-first (a stack) keeps `pending` short.
    pending.reverse();
    repo.block_on(async {
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < CONCURRENCY {
                let Some((id, tag)) = pending.pop() else {
                    break;
                };
                in_flight.push(async move { (tag, repo.read_tree_async(index, &id).await) });
            }
            let Some((tag, tree)) = in_flight.next().await else {
                return Ok(());
            };
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
                                pending.push((sub, tag));
                            }
                        }
                    }
                    NodeKind::Symlink => {}
                }
            }
        }
    })
}
