//! Comparing two directory trees the way a restore should reproduce them.
//!
//! Compared: the set of names (as raw bytes) and each entry's kind; regular files' content,
//! permission bits and mtime (to the nanosecond); symlinks' targets and mtimes; directories'
//! permission bits; and hard-link identity (two paths share an inode in one tree exactly when
//! they do in the other). The roots themselves are not compared, only what is below them.
//! Ownership, atimes and directory mtimes are not compared.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One way two trees differ (paths are relative to the compared roots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// In the expected tree only.
    Missing(PathBuf),
    /// In the actual tree only.
    Unexpected(PathBuf),
    /// Both have it, but kind, content, mode, mtime or symlink target differ.
    Differs {
        /// The entry.
        path: PathBuf,
        /// What differs, e.g. `mode 644 != 600`.
        what: String,
    },
    /// A file shares its inode with different paths in the two trees.
    HardLinks {
        /// The file.
        path: PathBuf,
        /// Other paths sharing its inode in the expected tree.
        expected: BTreeSet<PathBuf>,
        /// Other paths sharing its inode in the actual tree.
        actual: BTreeSet<PathBuf>,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Missing(p) => write!(f, "missing in actual: {}", p.display()),
            Difference::Unexpected(p) => write!(f, "unexpected in actual: {}", p.display()),
            Difference::Differs { path, what } => write!(f, "{}: {what}", path.display()),
            Difference::HardLinks {
                path,
                expected,
                actual,
            } => write!(
                f,
                "{}: hard links {expected:?} != {actual:?}",
                path.display()
            ),
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

struct Entry {
    kind: Kind,
    md: fs::Metadata,
}

fn scan(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()));
        for e in rd {
            let e = e.unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()));
            let r = rel.join(e.file_name());
            let md = fs::symlink_metadata(e.path())
                .unwrap_or_else(|err| panic!("stat {}: {err}", e.path().display()));
            let ft = md.file_type();
            let kind = if ft.is_file() {
                Kind::File
            } else if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink
            } else {
                Kind::Other
            };
            if kind == Kind::Dir {
                stack.push(r.clone());
            }
            out.insert(r, Entry { kind, md });
        }
    }
    out
}

fn mtime(md: &fs::Metadata) -> (i64, i64) {
    (md.mtime(), md.mtime_nsec())
}

/// For each regular file, the other paths in the tree sharing its inode.
fn link_groups(entries: &BTreeMap<PathBuf, Entry>) -> HashMap<PathBuf, BTreeSet<PathBuf>> {
    let mut by_inode: HashMap<(u64, u64), BTreeSet<PathBuf>> = HashMap::new();
    for (p, e) in entries {
        if e.kind == Kind::File {
            by_inode
                .entry((e.md.dev(), e.md.ino()))
                .or_default()
                .insert(p.clone());
        }
    }
    let mut out = HashMap::new();
    for group in by_inode.values() {
        for p in group {
            let mut others = group.clone();
            others.remove(p);
            out.insert(p.clone(), others);
        }
    }
    out
}

/// Lists every difference between `expected` and `actual` (empty = equal).
pub fn compare_trees(expected: &Path, actual: &Path) -> Vec<Difference> {
    let a = scan(expected);
    let b = scan(actual);
    let mut diffs = Vec::new();
    for p in a.keys().filter(|p| !b.contains_key(*p)) {
        diffs.push(Difference::Missing(p.clone()));
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        diffs.push(Difference::Unexpected(p.clone()));
    }
    let la = link_groups(&a);
    let lb = link_groups(&b);
    for (p, ea) in &a {
        let Some(eb) = b.get(p) else { continue };
        let mut differs = |what: String| {
            diffs.push(Difference::Differs {
                path: p.clone(),
                what,
            })
        };
        if ea.kind != eb.kind {
            differs(format!("kind {:?} != {:?}", ea.kind, eb.kind));
            continue;
        }
        let mode_a = ea.md.mode() & 0o7777;
        let mode_b = eb.md.mode() & 0o7777;
        match ea.kind {
            Kind::File => {
                if mode_a != mode_b {
                    differs(format!("mode {mode_a:o} != {mode_b:o}"));
                }
                if mtime(&ea.md) != mtime(&eb.md) {
                    differs(format!("mtime {:?} != {:?}", mtime(&ea.md), mtime(&eb.md)));
                }
                if ea.md.len() != eb.md.len() {
                    differs(format!("size {} != {}", ea.md.len(), eb.md.len()));
                } else {
                    let ca = fs::read(expected.join(p)).expect("read expected file");
                    let cb = fs::read(actual.join(p)).expect("read actual file");
                    if ca != cb {
                        let at = ca.iter().zip(&cb).position(|(x, y)| x != y).unwrap_or(0);
                        differs(format!("content differs from byte {at}"));
                    }
                }
                let (ga, gb) = (la[p].clone(), lb[p].clone());
                if ga != gb {
                    diffs.push(Difference::HardLinks {
                        path: p.clone(),
                        expected: ga,
                        actual: gb,
                    });
                }
            }
            Kind::Symlink => {
                let ta = fs::read_link(expected.join(p)).expect("readlink");
                let tb = fs::read_link(actual.join(p)).expect("readlink");
                if ta != tb {
                    differs(format!("symlink target {ta:?} != {tb:?}"));
                }
                if mtime(&ea.md) != mtime(&eb.md) {
                    differs(format!(
                        "symlink mtime {:?} != {:?}",
                        mtime(&ea.md),
                        mtime(&eb.md)
                    ));
                }
            }
            Kind::Dir => {
                if mode_a != mode_b {
                    differs(format!("dir mode {mode_a:o} != {mode_b:o}"));
                }
            }
            Kind::Other => {}
        }
    }
    diffs
}

/// Panics, listing the differences, unless the trees below `expected` and `actual` are equal
/// (see the module docs for what is compared).
#[track_caller]
pub fn assert_trees_equal(expected: &Path, actual: &Path) {
    let diffs = compare_trees(expected, actual);
    if !diffs.is_empty() {
        let shown: Vec<String> = diffs.iter().take(30).map(|d| d.to_string()).collect();
        panic!(
            "trees differ: {} vs {} ({} differences):\n  {}",
            expected.display(),
            actual.display(),
            diffs.len(),
            shown.join("\n  ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn detects_each_kind_of_difference() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let spec = crate::TreeSpec {
            files: 10,
            max_file_size: 5000,
            dirs: 3,
            max_depth: 2,
            duplicates: 1,
            ..Default::default()
        };
        crate::generate_tree(a.path(), 1, &spec);
        crate::generate_tree(b.path(), 1, &spec);
        assert_trees_equal(a.path(), b.path());

        // Mode.
        let f = b.path().join("empty_file");
        let old = fs::metadata(&f).unwrap().permissions();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o123)).unwrap();
        assert_eq!(compare_trees(a.path(), b.path()).len(), 1);
        fs::set_permissions(&f, old).unwrap();

        // Hard link broken (same content, same metadata, different inode).
        let hb = b.path().join("hardlink_a");
        let md = fs::metadata(&hb).unwrap();
        let data = fs::read(&hb).unwrap();
        fs::remove_file(&hb).unwrap();
        fs::write(&hb, data).unwrap();
        fs::set_permissions(&hb, md.permissions()).unwrap();
        crate::tree::set_mtime(&hb, (md.mtime(), md.mtime_nsec()));
        let d = compare_trees(a.path(), b.path());
        assert!(
            d.iter().all(|d| matches!(d, Difference::HardLinks { .. })),
            "{d:?}"
        );
        assert_eq!(d.len(), 2, "{d:?}");

        // Content and mtime.
        crate::fault::flip_byte(&hb, 3).unwrap();
        let d: Vec<String> = compare_trees(a.path(), b.path())
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert!(d.iter().any(|d| d.contains("content differs")), "{d:?}");
        assert!(d.iter().any(|d| d.contains("mtime")), "{d:?}");

        // Missing entry.
        fs::remove_file(b.path().join("link_dangling")).unwrap();
        let d = compare_trees(a.path(), b.path());
        assert!(
            d.contains(&Difference::Missing("link_dangling".into())),
            "{d:?}"
        );
    }
}
