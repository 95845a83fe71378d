//! A deterministic random source tree, for backup/restore round trips.
//!
//! The same seed and [`TreeSpec`] always produce the same names, sizes, contents, modes and
//! mtimes (inode numbers naturally differ). Besides `spec.files` regular files spread over
//! `spec.dirs` nested directories, every tree contains:
//!
//! * `empty_dir/`: an empty directory, and `empty_file`: a zero-length file (more random files
//!   may be empty too);
//! * `spec.large_files` files of `spec.large_file_size` random bytes;
//! * `spec.duplicates` files whose content copies another file's (in a random directory);
//! * symlinks: `link_rel` (relative, to a file), `link_dir` (to a directory),
//!   `link_dangling` (absolute, to a path that does not exist), and one with a non-UTF-8 target;
//! * `non-utf8-\xff\xfe.bin`: a file whose name is not valid UTF-8;
//! * `hardlink_a` and `<some dir>/hardlink_b`: two names of one inode;
//! * files with modes from {600, 640, 644, 444, 700, 755}, dirs from {700, 750, 755};
//! * random mtimes (with nanoseconds) between 2001 and 2023 on files, symlinks and directories.
//!
//! File content is a mix of incompressible random bytes and compressible text-like bytes.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};

/// Shape of a generated tree.
#[derive(Debug, Clone)]
pub struct TreeSpec {
    /// Regular files with random content (not counting the special entries and duplicates).
    pub files: usize,
    /// Largest file size in bytes. Sizes are skewed towards small files: `max * u³` for a
    /// uniform `u`, so the mean is about `max / 4`; a few files are forced to size 0.
    pub max_file_size: usize,
    /// Directories besides the root, nested at random.
    pub dirs: usize,
    /// Deepest nesting below the root (1 = only direct subdirectories).
    pub max_depth: usize,
    /// Extra files duplicating another file's content.
    pub duplicates: usize,
    /// Files of exactly `large_file_size` bytes (random content), e.g. to span several chunks.
    pub large_files: usize,
    /// Size of each of the `large_files`.
    pub large_file_size: usize,
}

impl Default for TreeSpec {
    fn default() -> Self {
        TreeSpec {
            files: 200,
            max_file_size: 256 * 1024,
            dirs: 20,
            max_depth: 4,
            duplicates: 10,
            large_files: 0,
            large_file_size: 0,
        }
    }
}

/// What [`generate_tree`] created.
#[derive(Debug, Clone, Default)]
pub struct TreeStats {
    /// Regular files (hard links counted once).
    pub files: usize,
    /// Directories, root excluded.
    pub dirs: usize,
    /// Symlinks.
    pub symlinks: usize,
    /// Sum of regular file sizes (hard links counted once).
    pub bytes: u64,
    /// Every regular file path created, relative to the root.
    pub file_paths: Vec<PathBuf>,
}

const FILE_MODES: [u32; 6] = [0o600, 0o640, 0o644, 0o444, 0o700, 0o755];
const DIR_MODES: [u32; 3] = [0o700, 0o750, 0o755];
const WORDS: [&str; 12] = [
    "lifeboat", "backup", "restore", "pack", "index", "snapshot", "tree", "blob", "chunk",
    "encrypt", "dedup", "verify",
];

/// Generates a tree under `root` (created if missing; must be empty) from `seed`.
///
/// Panics on any I/O error: this is test code.
pub fn generate_tree(root: &Path, seed: u64, spec: &TreeSpec) -> TreeStats {
    fs::create_dir_all(root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
    assert!(
        fs::read_dir(root).expect("read root").next().is_none(),
        "{} is not empty",
        root.display()
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = TreeStats::default();

    // Directories: (relative path, depth). Index 0 is the root.
    let mut dirs: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    for i in 0..spec.dirs {
        let candidates: Vec<usize> = (0..dirs.len())
            .filter(|&d| dirs[d].1 < spec.max_depth.max(1))
            .collect();
        let parent = *candidates
            .choose(&mut rng)
            .expect("root is always a candidate");
        let rel = dirs[parent].0.join(format!("dir{i:03}"));
        let depth = dirs[parent].1 + 1;
        fs::create_dir(root.join(&rel)).expect("create dir");
        dirs.push((rel, depth));
    }
    stats.dirs = spec.dirs;

    // Regular files.
    let mut contents: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for i in 0..spec.files {
        let dir = &dirs[rng.gen_range(0..dirs.len())].0;
        let ext = ["bin", "txt", "dat", ""][rng.gen_range(0..4)];
        let name = if ext.is_empty() {
            format!("file{i:04}")
        } else {
            format!("file{i:04}.{ext}")
        };
        let size = if i % 50 == 7 {
            0
        } else {
            let u: f64 = rng.gen();
            (spec.max_file_size as f64 * u * u * u) as usize
        };
        let data = content(&mut rng, size);
        let rel = dir.join(name);
        write_file(root, &rel, &data);
        contents.push((rel, data));
    }

    for i in 0..spec.large_files {
        let dir = &dirs[rng.gen_range(0..dirs.len())].0;
        let mut data = vec![0u8; spec.large_file_size];
        rng.fill_bytes(&mut data);
        let rel = dir.join(format!("large{i:02}.bin"));
        write_file(root, &rel, &data);
        contents.push((rel, data));
    }

    // Special entries.
    write_file(root, Path::new("empty_file"), &[]);
    contents.push(("empty_file".into(), Vec::new()));
    fs::create_dir(root.join("empty_dir")).expect("create empty_dir");
    stats.dirs += 1;
    dirs.push(("empty_dir".into(), 1));

    let weird = PathBuf::from(OsStr::from_bytes(b"non-utf8-\xff\xfe.bin"));
    let data = content(&mut rng, 3000);
    write_file(root, &weird, &data);
    contents.push((weird, data));

    for i in 0..spec.duplicates {
        if contents.is_empty() {
            break;
        }
        let (_, data) = contents[rng.gen_range(0..contents.len())].clone();
        let dir = &dirs[rng.gen_range(0..dirs.len() - 1)].0; // never into empty_dir
        let rel = dir.join(format!("dup{i:03}"));
        write_file(root, &rel, &data);
        contents.push((rel, data));
    }

    let data = content(&mut rng, 20_000);
    write_file(root, Path::new("hardlink_a"), &data);
    contents.push(("hardlink_a".into(), data));
    let link_dir = dirs[rng.gen_range(0..dirs.len() - 1)].0.clone();
    let link_b = link_dir.join("hardlink_b");
    fs::hard_link(root.join("hardlink_a"), root.join(&link_b)).expect("hard link");

    // Symlinks.
    let target_file = &contents[0].0;
    let rel_target = Path::new(".").join(target_file);
    let mut symlinks: Vec<PathBuf> = Vec::new();
    std::os::unix::fs::symlink(&rel_target, root.join("link_rel")).expect("symlink");
    symlinks.push("link_rel".into());
    let some_dir = if dirs.len() > 2 {
        dirs[1].0.clone()
    } else {
        PathBuf::from("empty_dir")
    };
    std::os::unix::fs::symlink(&some_dir, root.join("link_dir")).expect("symlink");
    symlinks.push("link_dir".into());
    std::os::unix::fs::symlink(
        "/nonexistent/lifeboat-testkit/target",
        root.join("link_dangling"),
    )
    .expect("symlink");
    symlinks.push("link_dangling".into());
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"target-\xff"),
        root.join("link_non_utf8_target"),
    )
    .expect("symlink");
    symlinks.push("link_non_utf8_target".into());
    stats.symlinks = symlinks.len();

    // Modes and mtimes: files, then symlinks, then directories deepest first.
    for (rel, data) in &contents {
        let p = root.join(rel);
        let mode = *FILE_MODES.choose(&mut rng).expect("modes");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        set_mtime(&p, random_mtime(&mut rng));
        stats.files += 1;
        stats.bytes += data.len() as u64;
        stats.file_paths.push(rel.clone());
    }
    stats.file_paths.push(link_b);
    for s in &symlinks {
        set_mtime(&root.join(s), random_mtime(&mut rng));
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.1));
    for (rel, _) in &dirs {
        let p = root.join(rel);
        if !rel.as_os_str().is_empty() {
            let mode = *DIR_MODES.choose(&mut rng).expect("modes");
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        set_mtime(&p, random_mtime(&mut rng));
    }
    stats
}

/// Random content of `size` bytes: incompressible or text-like, chosen at random.
fn content(rng: &mut StdRng, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    if rng.gen_bool(0.7) {
        rng.fill_bytes(&mut data);
    } else {
        let mut out = Vec::with_capacity(size + 16);
        while out.len() < size {
            out.extend_from_slice(WORDS.choose(rng).expect("words").as_bytes());
            out.push(if rng.gen_bool(0.1) { b'\n' } else { b' ' });
        }
        out.truncate(size);
        data = out;
    }
    data
}

fn write_file(root: &Path, rel: &Path, data: &[u8]) {
    let p = root.join(rel);
    let mut f = fs::File::create(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    f.write_all(data).expect("write");
}

/// Nanoseconds since the epoch between 2001 and 2023.
fn random_mtime(rng: &mut StdRng) -> (i64, i64) {
    (
        rng.gen_range(978_307_200..1_700_000_000),
        rng.gen_range(0..1_000_000_000),
    )
}

/// Sets mtime (and atime) without following symlinks.
pub fn set_mtime(path: &Path, (sec, nsec): (i64, i64)) {
    let t = TimeSpec::new(sec, nsec);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tree() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let spec = TreeSpec {
            files: 30,
            max_file_size: 10_000,
            dirs: 5,
            max_depth: 3,
            duplicates: 3,
            large_files: 1,
            large_file_size: 100_000,
        };
        let sa = generate_tree(a.path(), 7, &spec);
        let sb = generate_tree(b.path(), 7, &spec);
        assert_eq!(sa.bytes, sb.bytes);
        crate::assert_trees_equal(a.path(), b.path());
        let c = tempfile::tempdir().unwrap();
        generate_tree(c.path(), 8, &spec);
        assert!(!crate::compare_trees(a.path(), c.path()).is_empty());
    }
}
