//! Builds a synthetic repository with millions of tiny blobs, for measuring prune and check
//! memory per blob without backing up terabytes.
//!
//! `cargo run --release -p lifeboat-repo --example synth_repo -- DIR BLOBS PASSWORD`
//!
//! Blobs are 32-byte payloads (unique by construction), 4096 to a pack (as many as a pack of
//! 4 KiB files holds), grouped 100 to a file and 100 files to a directory. Two snapshots: "old" references blobs [0, 0.6 N), "new" references
//! [0.4 N, N). Forgetting "old" leaves 40 % of the blobs unused, mostly in whole packs (deleted)
//! and one boundary pack (repacked). The snapshot ids are printed, old first.

use std::time::Instant;

use jiff::Timestamp;
use lifeboat_repo::pack::{pack_key, BlobKind, FinishedPack, PackEntry, PackWriter};
use lifeboat_repo::snapshot::{Snapshot, Summary, SNAPSHOT_VERSION};
use lifeboat_repo::tree::{Name, Node, NodeKind, Tree, TREE_VERSION};
use lifeboat_repo::{InitOptions, Repository};
use lifeboat_store::Store;
use lifeboat_types::{BlobId, PackId};

const PER_FILE: u64 = 100;
const FILES_PER_DIR: u64 = 100;
/// A 16 MiB pack of 4 KiB small files holds about this many blobs.
const BLOBS_PER_PACK: usize = 4096;
const BLOB_LEN: usize = 32;

struct Writer<'a> {
    repo: &'a Repository,
    pack: PackWriter,
    done: Vec<(PackId, Vec<PackEntry>)>,
}

impl Writer<'_> {
    fn add(&mut self, id: BlobId, payload: &[u8]) {
        self.pack
            .add_plain(self.repo.key(), id, payload, payload.len() as u32, false);
        if self.pack.len() >= self.repo.config().pack_size_bytes as usize
            || self.pack.blob_count() >= BLOBS_PER_PACK
        {
            let p = self.pack.finish(self.repo.key());
            self.upload(p);
        }
    }

    fn upload(&mut self, p: FinishedPack) {
        self.repo
            .block_on(self.repo.store().put(&pack_key(&p.id), p.bytes.into()))
            .expect("upload pack");
        self.done.push((p.id, p.entries));
        if self.done.len() >= 64 {
            self.flush_index();
        }
    }

    fn flush_index(&mut self) {
        if !self.pack.is_empty() {
            let p = self.pack.finish(self.repo.key());
            self.repo
                .block_on(self.repo.store().put(&pack_key(&p.id), p.bytes.into()))
                .expect("upload pack");
            self.done.push((p.id, p.entries));
        }
        if !self.done.is_empty() {
            let lock = self
                .repo
                .lock_shared("synth_repo", &Default::default())
                .expect("lock");
            self.repo.save_index(&lock, &self.done).expect("save index");
            self.done.clear();
        }
    }
}

fn node(name: String, kind: NodeKind) -> Node {
    Node {
        name: Name(name.into_bytes()),
        kind,
        mode: if kind == NodeKind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        inode: 0,
        dev: 0,
        nlink: 1,
        size: 0,
        content: Vec::new(),
        subtree: None,
        target: None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, blobs, password] = &args[..] else {
        eprintln!("usage: synth_repo DIR BLOBS PASSWORD");
        std::process::exit(2);
    };
    let n: u64 = blobs.parse().expect("BLOBS is a number");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = Store::open(dir, &Default::default()).expect("open store");
    let repo = Repository::init(
        store,
        rt.handle().clone(),
        password.as_bytes(),
        InitOptions::default(),
    )
    .expect("init");
    let started = Instant::now();
    let mut data = Writer {
        repo: &repo,
        pack: PackWriter::new(BlobKind::Data),
        done: Vec::new(),
    };
    let mut ids = Vec::with_capacity(n as usize);
    let mut payload = [0u8; BLOB_LEN];
    for i in 0..n {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        payload[8..16].copy_from_slice(
            &(i ^ 0x5bd1_e995)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .to_le_bytes(),
        );
        let id = repo.key().blob_id(&payload);
        data.add(id, &payload);
        ids.push(id);
    }
    data.flush_index();
    eprintln!("{n} data blobs in {:.1}s", started.elapsed().as_secs_f64());

    let mut trees = Writer {
        repo: &repo,
        pack: PackWriter::new(BlobKind::Tree),
        done: Vec::new(),
    };
    let put_tree = |t: &Tree, w: &mut Writer| -> BlobId {
        let bytes = t.encode();
        let id = repo.key().blob_id(&bytes);
        w.add(id, &bytes);
        id
    };
    let snapshot_of = |range: std::ops::Range<u64>, w: &mut Writer| -> BlobId {
        let files: Vec<Node> = ids[range.start as usize..range.end as usize]
            .chunks(PER_FILE as usize)
            .enumerate()
            .map(|(f, chunk)| {
                let mut nd = node(
                    format!("file{:08}", range.start / PER_FILE + f as u64),
                    NodeKind::File,
                );
                nd.size = (chunk.len() * BLOB_LEN) as u64;
                nd.content = chunk.to_vec();
                nd
            })
            .collect();
        let dirs: Vec<Node> = files
            .chunks(FILES_PER_DIR as usize)
            .enumerate()
            .map(|(d, chunk)| {
                let sub = put_tree(
                    &Tree {
                        version: TREE_VERSION,
                        nodes: chunk.to_vec(),
                    },
                    w,
                );
                let mut nd = node(format!("dir{d:06}"), NodeKind::Dir);
                nd.subtree = Some(sub);
                nd
            })
            .collect();
        put_tree(
            &Tree {
                version: TREE_VERSION,
                nodes: dirs,
            },
            w,
        )
    };
    let old_root = snapshot_of(0..n * 6 / 10, &mut trees);
    let new_root = snapshot_of(n * 4 / 10..n, &mut trees);
    trees.flush_index();
    for (root, name) in [(old_root, "old"), (new_root, "new")] {
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            time: Timestamp::now(),
            host: "synthetic".into(),
            username: "bench".into(),
            paths: vec![format!("/synthetic/{name}")],
            tags: vec![name.into()],
            parent: None,
            tree: root,
            original: None,
            summary: Summary::default(),
        };
        let lock = repo
            .lock_shared("synth_repo", &Default::default())
            .expect("lock");
        let id = repo.save_snapshot(&lock, &snap).expect("save snapshot");
        println!("{}", id.to_hex());
    }
    eprintln!(
        "repository ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
