//! Unit-test helpers: an in-memory repository and hand-built trees, so tree walkers can be
//! tested on exact shapes (shared subtrees, missing blobs) that a real backup cannot produce.

use lifeboat_store::Store;
use lifeboat_types::BlobId;
use tokio::runtime::Runtime;

use crate::keys::KdfParams;
use crate::pack::{pack_key, BlobKind, PackWriter};
use crate::tree::{Node, NodeKind, Tree, TREE_VERSION};
use crate::{InitOptions, Repository};

/// A fresh repository on `memory://`, with the runtime it runs on.
pub fn memory_repo() -> (Runtime, Repository) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let store = Store::open("memory://", &Default::default()).expect("memory store");
    let opts = InitOptions {
        kdf: Some(KdfParams::insecure_for_tests()),
        ..Default::default()
    };
    let repo = Repository::init(store, rt.handle().clone(), b"pw", opts).expect("init");
    (rt, repo)
}

/// Stores blobs of one kind in one pack and indexes it; returns their ids.
pub fn put_blobs(repo: &Repository, kind: BlobKind, blobs: &[Vec<u8>]) -> Vec<BlobId> {
    let mut w = PackWriter::new(kind);
    let mut ids = Vec::new();
    for b in blobs {
        let id = repo.key().blob_id(b);
        w.add_plain(repo.key(), id, b, b.len() as u32, false);
        ids.push(id);
    }
    let pack = w.finish(repo.key());
    repo.block_on(repo.store().put(&pack_key(&pack.id), pack.bytes.into()))
        .expect("put pack");
    let lock = repo.lock_shared("test", &Default::default()).expect("lock");
    repo.save_index(&lock, &[(pack.id, pack.entries)])
        .expect("save index");
    ids
}

/// Stores one tree; returns its id.
pub fn put_tree(repo: &Repository, mut nodes: Vec<Node>) -> BlobId {
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let t = Tree {
        version: TREE_VERSION,
        nodes,
    };
    put_blobs(repo, BlobKind::Tree, &[t.encode()])[0]
}

/// A node with plain metadata (mode 0644/0755, owner 0, mtime 1 s).
pub fn node(name: &str, kind: NodeKind) -> Node {
    Node {
        name: name.into(),
        kind,
        mode: if kind == NodeKind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        mtime_ns: 1_000_000_000,
        ctime_ns: 1_000_000_000,
        inode: 0,
        dev: 0,
        nlink: 1,
        size: 0,
        content: vec![],
        subtree: None,
        target: None,
    }
}

/// A file node with these data blobs and size.
pub fn file(name: &str, content: &[BlobId], size: u64) -> Node {
    Node {
        content: content.to_vec(),
        size,
        ..node(name, NodeKind::File)
    }
}

/// A directory node pointing at `subtree`.
pub fn dir(name: &str, subtree: BlobId) -> Node {
    Node {
        subtree: Some(subtree),
        ..node(name, NodeKind::Dir)
    }
}

/// A symlink node.
pub fn symlink(name: &str, target: &str) -> Node {
    Node {
        target: Some(target.into()),
        ..node(name, NodeKind::Symlink)
    }
}
