//! Property test: arbitrary trees survive backup → restore byte-for-byte with metadata, and an
//! incremental second backup of the same tree reads nothing and yields the same root tree.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use lifeboat_repo::chunker::ChunkerParams;
use lifeboat_repo::progress::NoProgress;
use lifeboat_repo::{backup, restore, BackupOptions, InitOptions, Repository, RestoreOptions};
use lifeboat_store::Store;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Entry {
    File {
        data: Vec<u8>,
        mode: u32,
        mtime: i64,
    },
    Link(String),
    Dir(BTreeMap<String, Entry>, u32),
}

fn entry() -> impl Strategy<Value = Entry> {
    let name = "[a-z]{1,6}";
    let file = (
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 0..40_000),
            (any::<u8>(), 0usize..30_000).prop_map(|(b, n)| vec![b; n]),
        ],
        prop_oneof![Just(0o644u32), Just(0o600), Just(0o755), Just(0o4755)],
        0i64..2_000_000_000,
    )
        .prop_map(|(data, mode, mtime)| Entry::File { data, mode, mtime });
    let leaf = prop_oneof![4 => file, 1 => "[a-z./]{1,12}".prop_map(Entry::Link)];
    leaf.prop_recursive(3, 40, 6, move |inner| {
        (
            prop::collection::btree_map(name, inner, 0..6),
            prop_oneof![Just(0o755u32), Just(0o700)],
        )
            .prop_map(|(m, mode)| Entry::Dir(m, mode))
    })
}

fn write(path: &Path, e: &Entry) {
    match e {
        Entry::File { data, mode, mtime } => {
            fs::write(path, data).unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap();
            let t = TimeSpec::new(*mtime, 123_456_789);
            utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
        }
        Entry::Link(target) => std::os::unix::fs::symlink(target, path).unwrap(),
        Entry::Dir(children, mode) => {
            fs::create_dir(path).unwrap();
            for (n, c) in children {
                write(&path.join(n), c);
            }
            fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap();
        }
    }
}

/// Asserts `b` reproduces `a`: kinds, symlink targets, modes, mtimes, contents, recursively
/// (shared by the engine tests of this binary).
pub(crate) fn assert_same(a: &Path, b: &Path) {
    let (ma, mb) = (
        fs::symlink_metadata(a).unwrap(),
        fs::symlink_metadata(b).unwrap(),
    );
    assert_eq!(ma.file_type(), mb.file_type(), "{}", b.display());
    if ma.is_symlink() {
        assert_eq!(fs::read_link(a).unwrap(), fs::read_link(b).unwrap());
        return;
    }
    assert_eq!(ma.mode(), mb.mode(), "mode of {}", b.display());
    assert_eq!(
        (ma.mtime(), ma.mtime_nsec()),
        (mb.mtime(), mb.mtime_nsec()),
        "mtime of {}",
        b.display()
    );
    if ma.is_file() {
        assert!(
            fs::read(a).unwrap() == fs::read(b).unwrap(),
            "content of {}",
            b.display()
        );
        return;
    }
    let names = |p: &Path| {
        let mut v: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let (na, nb) = (names(a), names(b));
    assert_eq!(na, nb, "entries of {}", b.display());
    for n in na {
        assert_same(&a.join(&n), &b.join(&n));
    }
}

/// The tree id of directory `path` inside a snapshot rooted at `root`.
fn subtree(
    repo: &Repository,
    root: &lifeboat_types::BlobId,
    path: &Path,
) -> lifeboat_types::BlobId {
    let index = repo.load_index().unwrap().index;
    let mut id = *root;
    for c in path.strip_prefix("/").unwrap().components() {
        let tree = repo.read_tree(&index, &id).unwrap();
        let name = lifeboat_repo::tree::Name::from(c.as_os_str());
        id = tree
            .find(&name)
            .and_then(|n| n.subtree)
            .expect("directory in snapshot");
    }
    id
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn arbitrary_trees_round_trip(children in prop::collection::btree_map("[a-z]{1,6}", entry(), 0..8)) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        write(&src, &Entry::Dir(children, 0o755));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Store::memory();
        let opts = InitOptions {
            chunker: Some(ChunkerParams { min_size: 1024, avg_size: 4096, max_size: 16384 }),
            pack_size_bytes: Some(64 * 1024),
            kdf: Some(lifeboat_repo::keys::KdfParams::insecure_for_tests()),
            ..Default::default()
        };
        let repo = Repository::init(store, rt.handle().clone(), b"pw", opts).unwrap();
        let lock = repo.lock_shared("test", &Default::default()).unwrap();
        let first = backup::run(&repo, &lock, &BackupOptions::new(vec![src.clone()]), &NoProgress).unwrap();
        prop_assert_eq!(first.snapshot.summary.errors, 0);

        let target = tmp.path().join("out");
        let mut ro = RestoreOptions::new(target.clone());
        ro.verify = true;
        let summary = restore::run(&repo, &first.snapshot, &ro, &NoProgress).unwrap();
        prop_assert!(summary.errors.is_empty(), "{:?}", summary.errors);
        assert_same(&src, &target.join(src.strip_prefix("/").unwrap()));

        let second = backup::run(&repo, &lock, &BackupOptions::new(vec![src.clone()]), &NoProgress).unwrap();
        prop_assert_eq!(second.snapshot.summary.bytes_read, 0);
        // Ancestors of `src` (e.g. /tmp) change as tests run; the source's own tree must not.
        prop_assert_eq!(subtree(&repo, &second.snapshot.tree, &src), subtree(&repo, &first.snapshot.tree, &src));
        prop_assert_eq!(second.snapshot.parent, Some(first.id));
    }
}
