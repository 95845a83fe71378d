//! What changed between two snapshots.
//!
//! Both trees are walked in lock-step, children merged by name (trees are sorted by name
//! bytes). A directory whose subtree id is the same on both sides is never entered: content
//! addressing means everything below it is identical, which is what makes a diff of two large,
//! mostly unchanged snapshots cost only the trees along the changed paths. Changes are handed to
//! a callback as they are found (depth first, by name), so memory is one pair of directory
//! listings per level of depth, plus two bitsets over the index for the blob statistics.

use std::iter::Peekable;
use std::path::{Path, PathBuf};
use std::vec::IntoIter;

use lifeboat_types::BlobId;
use serde::Serialize;

use crate::error::Error;
use crate::index::{BlobSet, Index};
use crate::repository::Repository;
use crate::tree::{Node, NodeKind};

/// How one path differs; the letter is what `lifeboat diff` prints (as `restic diff` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the second snapshot (`+`).
    Added,
    /// Only in the first snapshot (`-`).
    Removed,
    /// Content differs (`M`): a file's blob list (or size), or a symlink's target.
    Modified,
    /// Only mode, owner, group or mtime differ (`U`).
    Metadata,
    /// The entry changed type, e.g. a file became a directory (`T`).
    Type,
}

impl ChangeKind {
    /// The one-character marker of the human output.
    pub fn symbol(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'U',
            ChangeKind::Type => 'T',
        }
    }
}

/// One changed path, borrowed for the duration of the callback (nothing is accumulated).
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// Full path in the snapshot, as `ls` shows it (`/home/u/file`).
    pub path: &'a Path,
    /// What changed.
    pub kind: ChangeKind,
    /// The entry in the first snapshot (`None` when added).
    pub old: Option<&'a Node>,
    /// The entry in the second snapshot (`None` when removed).
    pub new: Option<&'a Node>,
}

/// Counts of a diff, so scripts need not tally the change list themselves.
///
/// A type change (`T`) is counted only in `type_changed`, but the bytes of a file replaced by
/// something else count as removed and those of a file that replaced something as added; the
/// entries below a directory that appeared or disappeared by a type change are listed and
/// counted as added or removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiffSummary {
    /// Files only in the second snapshot.
    pub files_added: u64,
    /// Files only in the first snapshot.
    pub files_removed: u64,
    /// Files whose content (blob list) differs.
    pub files_changed: u64,
    /// Files whose content is equal but mode/owner/mtime differ.
    pub files_metadata: u64,
    /// Directories only in the second snapshot.
    pub dirs_added: u64,
    /// Directories only in the first snapshot.
    pub dirs_removed: u64,
    /// Directories whose own mode/owner/mtime differ (changes below are listed separately).
    pub dirs_metadata: u64,
    /// Symlinks only in the second snapshot.
    pub symlinks_added: u64,
    /// Symlinks only in the first snapshot.
    pub symlinks_removed: u64,
    /// Symlinks whose target differs.
    pub symlinks_changed: u64,
    /// Symlinks whose target is equal but mode/owner/mtime differ.
    pub symlinks_metadata: u64,
    /// Entries whose type changed.
    pub type_changed: u64,
    /// Sum of the sizes of files that appeared (added, or replacing another type).
    pub bytes_added: u64,
    /// Sum of the sizes of files that disappeared (removed, or replaced by another type).
    pub bytes_removed: u64,
    /// Data blobs referenced by the second snapshot's changed entries and not by the first's.
    pub data_blobs_added: u64,
    /// Plaintext bytes of those blobs.
    pub data_bytes_added: u64,
    /// Data blobs referenced by the first snapshot's changed entries and not by the second's.
    pub data_blobs_removed: u64,
    /// Plaintext bytes of those blobs.
    pub data_bytes_removed: u64,
}

impl DiffSummary {
    /// True if the two snapshots list the same entries with the same content and metadata.
    pub fn is_empty(&self) -> bool {
        *self == DiffSummary::default()
    }
}

/// The metadata `restore` recreates (ctime, inode, device and link count are not compared: they
/// change on every copy and say nothing about what would be restored).
fn same_metadata(a: &Node, b: &Node) -> bool {
    (a.mode, a.uid, a.gid, a.mtime_ns) == (b.mode, b.uid, b.gid, b.mtime_ns)
}

/// What to report for one name and which subtrees must be walked below it.
fn classify(old: Option<&Node>, new: Option<&Node>) -> (Option<ChangeKind>, Walk) {
    let dir = |n: &Node| (n.kind == NodeKind::Dir).then_some(n.subtree);
    match (old, new) {
        (Some(o), None) => (Some(ChangeKind::Removed), Walk::new(dir(o), None)),
        (None, Some(n)) => (Some(ChangeKind::Added), Walk::new(None, dir(n))),
        (Some(o), Some(n)) if o.kind != n.kind => {
            (Some(ChangeKind::Type), Walk::new(dir(o), dir(n)))
        }
        (Some(o), Some(n)) => {
            let content_differs = match o.kind {
                NodeKind::File => o.content != n.content || o.size != n.size,
                NodeKind::Symlink => o.target != n.target,
                NodeKind::Dir => false,
            };
            let kind = if content_differs {
                Some(ChangeKind::Modified)
            } else if !same_metadata(o, n) {
                Some(ChangeKind::Metadata)
            } else {
                None
            };
            let walk = if o.kind == NodeKind::Dir && o.subtree != n.subtree {
                Walk::new(Some(o.subtree), Some(n.subtree))
            } else {
                Walk::default()
            };
            (kind, walk)
        }
        (None, None) => (None, Walk::default()),
    }
}

/// Subtrees to enter below a name: `Some(None)` is a directory without a listing (empty).
#[derive(Default)]
struct Walk {
    old: Option<Option<BlobId>>,
    new: Option<Option<BlobId>>,
}

impl Walk {
    fn new(old: Option<Option<BlobId>>, new: Option<Option<BlobId>>) -> Self {
        Walk { old, new }
    }
}

/// One directory level of the lock-step walk.
struct Frame {
    path: PathBuf,
    old: Peekable<IntoIter<Node>>,
    new: Peekable<IntoIter<Node>>,
}

/// Data blobs seen on each side, for the "unique to each side" counts.
struct BlobSides<'a> {
    index: &'a Index,
    old: BlobSet,
    new: BlobSet,
}

impl BlobSides<'_> {
    /// Blobs not in the index (a damaged repository) cannot be sized and are left out.
    fn mark(&mut self, new_side: bool, content: &[BlobId]) {
        let set = if new_side {
            &mut self.new
        } else {
            &mut self.old
        };
        for id in content {
            if let Some(pos) = self.index.position(id) {
                set.insert(pos);
            }
        }
    }

    /// (blobs, plaintext bytes) in `a` but not in `b`.
    fn only(&self, a: &BlobSet, b: &BlobSet) -> (u64, u64) {
        a.iter()
            .filter(|&p| !b.contains(p))
            .fold((0, 0), |(n, bytes), p| {
                (n + 1, bytes + self.index.at(p).entry.raw_len as u64)
            })
    }
}

fn count(sum: &mut DiffSummary, sides: &mut BlobSides<'_>, c: &Change<'_>) {
    let kind_of = |n: Option<&Node>| n.map(|n| n.kind);
    match c.kind {
        ChangeKind::Added | ChangeKind::Removed => {
            let added = c.kind == ChangeKind::Added;
            let n = if added { c.new } else { c.old }.expect("side present");
            let (files, dirs, links, bytes) = if added {
                (
                    &mut sum.files_added,
                    &mut sum.dirs_added,
                    &mut sum.symlinks_added,
                    &mut sum.bytes_added,
                )
            } else {
                (
                    &mut sum.files_removed,
                    &mut sum.dirs_removed,
                    &mut sum.symlinks_removed,
                    &mut sum.bytes_removed,
                )
            };
            match n.kind {
                NodeKind::File => {
                    *files += 1;
                    *bytes += n.size;
                    sides.mark(added, &n.content);
                }
                NodeKind::Dir => *dirs += 1,
                NodeKind::Symlink => *links += 1,
            }
        }
        ChangeKind::Modified => {
            let (o, n) = (c.old.expect("old"), c.new.expect("new"));
            if o.kind == NodeKind::File {
                sum.files_changed += 1;
                sides.mark(false, &o.content);
                sides.mark(true, &n.content);
            } else {
                sum.symlinks_changed += 1;
            }
        }
        ChangeKind::Metadata => match kind_of(c.old) {
            Some(NodeKind::File) => sum.files_metadata += 1,
            Some(NodeKind::Dir) => sum.dirs_metadata += 1,
            _ => sum.symlinks_metadata += 1,
        },
        ChangeKind::Type => {
            sum.type_changed += 1;
            for (new_side, n) in [(false, c.old), (true, c.new)] {
                let n = n.expect("both sides");
                if n.kind == NodeKind::File {
                    if new_side {
                        sum.bytes_added += n.size;
                    } else {
                        sum.bytes_removed += n.size;
                    }
                    sides.mark(new_side, &n.content);
                }
            }
        }
    }
}

/// Compares the trees `old` and `new` (snapshot root trees, or any two trees) and calls
/// `on_change` for every differing path, depth first in name order; returns the counts.
///
/// `E` is the caller's error type, so a callback that writes output can fail with its own
/// errors (a closed pipe) and stop the walk.
pub fn diff<E: From<Error>>(
    repo: &Repository,
    index: &Index,
    old: &BlobId,
    new: &BlobId,
    mut on_change: impl FnMut(&Change<'_>) -> Result<(), E>,
) -> Result<DiffSummary, E> {
    let mut sum = DiffSummary::default();
    let mut sides = BlobSides {
        index,
        old: BlobSet::new(index),
        new: BlobSet::new(index),
    };
    let read = |id: Option<Option<BlobId>>| -> Result<Vec<Node>, Error> {
        match id {
            Some(Some(id)) => Ok(repo.read_tree(index, &id)?.nodes),
            _ => Ok(Vec::new()),
        }
    };
    let frame = |path: PathBuf, old: Vec<Node>, new: Vec<Node>| Frame {
        path,
        old: old.into_iter().peekable(),
        new: new.into_iter().peekable(),
    };
    let mut stack = Vec::new();
    if old != new {
        stack.push(frame(
            PathBuf::from("/"),
            read(Some(Some(*old)))?,
            read(Some(Some(*new)))?,
        ));
    }
    while let Some(top) = stack.last_mut() {
        let (o, n) = match (top.old.peek(), top.new.peek()) {
            (None, None) => {
                stack.pop();
                continue;
            }
            (Some(a), Some(b)) => match a.name.cmp(&b.name) {
                std::cmp::Ordering::Less => (top.old.next(), None),
                std::cmp::Ordering::Greater => (None, top.new.next()),
                std::cmp::Ordering::Equal => (top.old.next(), top.new.next()),
            },
            (Some(_), None) => (top.old.next(), None),
            (None, Some(_)) => (None, top.new.next()),
        };
        let name = &o.as_ref().or(n.as_ref()).expect("one side present").name;
        let path = top.path.join(name.as_os_str());
        let (kind, walk) = classify(o.as_ref(), n.as_ref());
        if let Some(kind) = kind {
            let c = Change {
                path: &path,
                kind,
                old: o.as_ref(),
                new: n.as_ref(),
            };
            count(&mut sum, &mut sides, &c);
            on_change(&c)?;
        }
        if walk.old.is_some() || walk.new.is_some() {
            let (old_nodes, new_nodes) = (read(walk.old)?, read(walk.new)?);
            stack.push(frame(path, old_nodes, new_nodes));
        }
    }
    (sum.data_blobs_added, sum.data_bytes_added) = sides.only(&sides.new, &sides.old);
    (sum.data_blobs_removed, sum.data_bytes_removed) = sides.only(&sides.old, &sides.new);
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::BlobKind;
    use crate::test_support::*;

    /// Runs a diff and returns its lines as `"<symbol> <path>"`.
    fn lines(repo: &Repository, a: &BlobId, b: &BlobId) -> (Vec<String>, DiffSummary) {
        let index = repo.load_index().unwrap().index;
        let mut out = Vec::new();
        let sum = diff::<Error>(repo, &index, a, b, |c| {
            out.push(format!("{} {}", c.kind.symbol(), c.path.display()));
            Ok(())
        })
        .unwrap();
        (out, sum)
    }

    #[test]
    fn every_kind_of_change_with_counts() {
        let (_rt, repo) = memory_repo();
        let d = put_blobs(
            &repo,
            BlobKind::Data,
            &[vec![1; 100], vec![2; 200], vec![3; 300], vec![4; 400]],
        );
        let (b1, b2, b3, b4) = (d[0], d[1], d[2], d[3]);
        let sub_old = put_tree(&repo, vec![file("gone", &[b2], 200)]);
        let sub_new = put_tree(&repo, vec![file("fresh", &[b4], 400), symlink("ln", "x")]);
        let old = put_tree(
            &repo,
            vec![
                file("same", &[b1], 100),
                file("edit", &[b1, b2], 300),
                file("chmod", &[b1], 100),
                file("becomes-dir", &[b3], 300),
                dir("dropped", sub_old),
                symlink("link", "a"),
            ],
        );
        let new = put_tree(
            &repo,
            vec![
                file("same", &[b1], 100),
                file("edit", &[b1, b4], 500),
                Node {
                    mode: 0o600,
                    ..file("chmod", &[b1], 100)
                },
                dir("becomes-dir", sub_new),
                dir("added", sub_new),
                symlink("link", "b"),
            ],
        );
        let (got, sum) = lines(&repo, &old, &new);
        assert_eq!(
            got,
            [
                "+ /added",
                "+ /added/fresh",
                "+ /added/ln",
                "T /becomes-dir",
                "+ /becomes-dir/fresh",
                "+ /becomes-dir/ln",
                "U /chmod",
                "- /dropped",
                "- /dropped/gone",
                "M /edit",
                "M /link",
            ]
        );
        assert_eq!(sum.files_added, 2);
        assert_eq!(sum.dirs_added, 1);
        assert_eq!(sum.symlinks_added, 2);
        assert_eq!((sum.files_removed, sum.dirs_removed), (1, 1));
        assert_eq!((sum.files_changed, sum.files_metadata), (1, 1));
        assert_eq!((sum.symlinks_changed, sum.type_changed), (1, 1));
        assert_eq!(sum.bytes_added, 800, "two added copies of fresh");
        assert_eq!(
            sum.bytes_removed,
            200 + 300,
            "gone + the file that became a dir"
        );
        // Old side's changed entries: b1 b2 (edit), b2 (gone), b3 (becomes-dir).
        // New side's: b1 b4 (edit), b4 (fresh). b1 is on both sides.
        assert_eq!((sum.data_blobs_removed, sum.data_bytes_removed), (2, 500));
        assert_eq!((sum.data_blobs_added, sum.data_bytes_added), (1, 400));

        // Reversed, everything mirrors.
        let (back, rsum) = lines(&repo, &new, &old);
        assert_eq!(rsum.files_added, sum.files_removed);
        assert_eq!(rsum.bytes_added, sum.bytes_removed);
        assert_eq!(rsum.data_bytes_added, sum.data_bytes_removed);
        assert!(back.contains(&"- /added/ln".to_string()), "{back:?}");
    }

    #[test]
    fn identical_subtrees_are_never_entered() {
        let (_rt, repo) = memory_repo();
        // A subtree id that is in no pack: reading it would fail, so a passing diff proves the
        // walk skipped it on both sides.
        let phantom = BlobId([0xab; 32]);
        let d = put_blobs(&repo, BlobKind::Data, &[vec![9; 10]]);
        let old = put_tree(&repo, vec![dir("big", phantom), file("x", &[], 0)]);
        let new = put_tree(&repo, vec![dir("big", phantom), file("x", &d, 10)]);
        let (got, sum) = lines(&repo, &old, &new);
        assert_eq!(got, ["M /x"]);
        assert_eq!((sum.data_blobs_added, sum.data_bytes_added), (1, 10));

        // Same subtree, other directory metadata: reported, still not entered.
        let newer = put_tree(
            &repo,
            vec![
                Node {
                    uid: 7,
                    ..dir("big", phantom)
                },
                file("x", &d, 10),
            ],
        );
        let (got, sum) = lines(&repo, &new, &newer);
        assert_eq!(got, ["U /big"]);
        assert_eq!(sum.dirs_metadata, 1);

        // A tree against itself: nothing at all is read.
        let (got, sum) = lines(&repo, &phantom, &phantom);
        assert!(got.is_empty() && sum.is_empty());
    }

    #[test]
    fn callback_errors_stop_the_walk() {
        let (_rt, repo) = memory_repo();
        let old = put_tree(&repo, vec![]);
        let new = put_tree(&repo, vec![file("a", &[], 0), file("b", &[], 0)]);
        let index = repo.load_index().unwrap().index;
        let mut seen = 0;
        let r = diff(&repo, &index, &old, &new, |_| {
            seen += 1;
            Err(Error::InvalidInput("stop".into()))
        });
        assert!(r.is_err());
        assert_eq!(seen, 1);
    }
}
