//! Turning file-system metadata into tree nodes, and the virtual root that holds the source paths.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::tree::{Name, Node, NodeKind};

/// Directories between `/` and the source paths: `/home/u/data` becomes home → u → data.
#[derive(Debug, Default)]
pub(crate) struct VirtualDir {
    pub children: BTreeMap<Name, VirtualEntry>,
}

/// A virtual directory's child: another virtual level, or a real source path.
#[derive(Debug)]
pub(crate) enum VirtualEntry {
    Dir(VirtualDir, PathBuf),
    Source(PathBuf),
}

impl VirtualDir {
    /// Builds the virtual tree from absolute, normalized source paths.
    pub fn from_paths(paths: &[PathBuf]) -> Result<VirtualDir, String> {
        let mut root = VirtualDir::default();
        for p in paths {
            let comps: Vec<&std::ffi::OsStr> = p
                .components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n),
                    _ => None,
                })
                .collect();
            if comps.is_empty() {
                return Err(format!(
                    "cannot back up {}: give a directory below /",
                    p.display()
                ));
            }
            let mut dir = &mut root;
            let mut so_far = PathBuf::from("/");
            for (i, c) in comps.iter().enumerate() {
                so_far.push(c);
                let name = Name::from(*c);
                if i + 1 == comps.len() {
                    // A source path wins over a virtual level (it includes everything below).
                    dir.children
                        .insert(name, VirtualEntry::Source(so_far.clone()));
                    break;
                }
                let entry = dir
                    .children
                    .entry(name)
                    .or_insert_with(|| VirtualEntry::Dir(VirtualDir::default(), so_far.clone()));
                match entry {
                    VirtualEntry::Dir(d, _) => dir = d,
                    VirtualEntry::Source(_) => break, // an ancestor is already a source
                }
            }
        }
        Ok(root)
    }
}

/// Compiles user globs; `flag` names the option in the error message.
pub(crate) fn glob_set(
    patterns: &[String],
    what: &'static str,
) -> Result<globset::GlobSet, crate::Error> {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        let glob = globset::Glob::new(p).map_err(|e| crate::Error::BadPattern {
            what,
            pattern: p.clone(),
            reason: e.to_string(),
        })?;
        b.add(glob);
    }
    b.build().map_err(|e| crate::Error::BadPattern {
        what,
        pattern: patterns.join(" "),
        reason: e.to_string(),
    })
}

/// Makes a path absolute and lexically normal without resolving symlinks in the last component.
pub fn absolute(p: &Path) -> std::io::Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

/// What kind of entry metadata describes; `None` for sockets, FIFOs and devices.
pub(crate) fn kind_of(md: &Metadata) -> Option<NodeKind> {
    let ft = md.file_type();
    if ft.is_file() {
        Some(NodeKind::File)
    } else if ft.is_dir() {
        Some(NodeKind::Dir)
    } else if ft.is_symlink() {
        Some(NodeKind::Symlink)
    } else {
        debug_assert!(
            ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device()
        );
        None
    }
}

/// A node with metadata filled in and no content yet.
pub(crate) fn node_from_metadata(name: Name, kind: NodeKind, md: &Metadata) -> Node {
    Node {
        name,
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        inode: md.ino(),
        dev: md.dev(),
        nlink: md.nlink(),
        size: if kind == NodeKind::File { md.size() } else { 0 },
        content: Vec::new(),
        subtree: None,
        target: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_root_nests_and_merges() {
        let v = VirtualDir::from_paths(&[
            PathBuf::from("/a/b/c"),
            PathBuf::from("/a/d"),
            PathBuf::from("/a/b"),
        ])
        .unwrap();
        let VirtualEntry::Dir(a, _) = &v.children[&Name::from("a")] else {
            panic!("a is virtual")
        };
        assert!(matches!(
            a.children[&Name::from("b")],
            VirtualEntry::Source(_)
        ));
        assert!(matches!(
            a.children[&Name::from("d")],
            VirtualEntry::Source(_)
        ));
        assert!(VirtualDir::from_paths(&[PathBuf::from("/")]).is_err());
    }

    #[test]
    fn absolute_normalizes() {
        assert_eq!(
            absolute(Path::new("/x/../y/./z")).unwrap(),
            PathBuf::from("/y/z")
        );
    }
}
