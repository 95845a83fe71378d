//! The walker: stats the sources depth-first, reuses unchanged files from the parent snapshot
//! and hands the rest to the readers as jobs.

use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;
use globset::GlobSet;
use lifeboat_types::BlobId;

use super::shared::{FileJob, Shared};
use crate::error::{Error, Result};
use crate::snapshot::Summary;
use crate::tree::{Name, Node, NodeKind, Tree};
use crate::walk::{kind_of, node_from_metadata, VirtualDir, VirtualEntry};

/// A directory's children while its files are still being read.
pub(super) enum Child {
    Ready(Node),
    File { node: Node, job: usize },
    Dir { node: Node, dir: usize },
}

pub(super) struct DirBuild {
    pub(super) children: Vec<Child>,
    pub(super) parent_subtree: Option<BlobId>,
}

/// The walker: owns the directory skeleton, feeds file jobs to the readers.
pub(super) struct Walker<'a, 'b> {
    pub(super) shared: &'b Shared<'a>,
    pub(super) jobs: Sender<FileJob>,
    pub(super) dirs: Vec<DirBuild>,
    pub(super) next_job: usize,
    /// Per job: whether the file is new (else changed) — to correct the counts if it fails.
    pub(super) job_is_new: Vec<bool>,
    pub(super) excludes: GlobSet,
    pub(super) force_full: bool,
    pub(super) summary: Summary,
    pub(super) warnings: Vec<String>,
}

impl Walker<'_, '_> {
    fn warn(&mut self, msg: String) {
        self.shared.progress.warn(&msg);
        self.warnings.push(msg);
    }

    fn error(&mut self, msg: String) {
        self.summary.errors += 1;
        self.warn(msg);
    }

    fn excluded(&self, path: &Path) -> bool {
        !self.excludes.is_empty()
            && (self.excludes.is_match(path)
                || path.file_name().is_some_and(|n| self.excludes.is_match(n)))
    }

    /// The parent snapshot's tree for a child directory, if it had one.
    fn parent_child_tree(&mut self, parent: Option<&Tree>, name: &Name) -> Option<Tree> {
        let id = parent?.find(name)?.subtree?;
        match self.shared.repo.read_tree(self.shared.index, &id) {
            Ok(t) => Some(t),
            Err(e) => {
                self.warn(format!(
                    "cannot read parent tree {}: {e}; re-reading files below",
                    id.short()
                ));
                None
            }
        }
    }

    fn push_dir(&mut self, children: Vec<Child>, parent_subtree: Option<BlobId>) -> usize {
        self.dirs.push(DirBuild {
            children,
            parent_subtree,
        });
        self.dirs.len() - 1
    }

    pub(super) fn walk_virtual(
        &mut self,
        v: &VirtualDir,
        parent: Option<&Tree>,
    ) -> Result<Vec<Child>> {
        let mut children = Vec::new();
        for (name, entry) in &v.children {
            if self.shared.stopped() {
                return Err(Error::Cancelled);
            }
            let path = match entry {
                VirtualEntry::Dir(_, p) | VirtualEntry::Source(p) => p,
            };
            // Ancestors of a source may be symlinks to directories (e.g. /var/run): follow those.
            let md = match entry {
                VirtualEntry::Dir(..) => std::fs::metadata(path),
                VirtualEntry::Source(_) => std::fs::symlink_metadata(path),
            }
            .map_err(|e| Error::io("cannot read source", path, e))?;
            match entry {
                VirtualEntry::Source(p) => {
                    self.add_entry(&mut children, name.clone(), p, md, parent)?
                }
                VirtualEntry::Dir(sub, p) => {
                    if !md.is_dir() {
                        return Err(Error::InvalidInput(format!(
                            "{} is not a directory",
                            p.display()
                        )));
                    }
                    let node = node_from_metadata(name.clone(), NodeKind::Dir, &md);
                    let ptree = self.parent_child_tree(parent, name);
                    let sub_children = self.walk_virtual(sub, ptree.as_ref())?;
                    let psub = parent.and_then(|t| t.find(name)).and_then(|n| n.subtree);
                    let dir = self.push_dir(sub_children, psub);
                    children.push(Child::Dir { node, dir });
                }
            }
        }
        Ok(children)
    }

    fn walk_dir(&mut self, path: &Path, parent: Option<&Tree>) -> Result<Vec<Child>> {
        let mut entries: Vec<(Name, PathBuf)> = match std::fs::read_dir(path) {
            Ok(rd) => rd
                .filter_map(|e| match e {
                    Ok(e) => Some((Name::from(e.file_name().as_os_str()), e.path())),
                    Err(_) => None,
                })
                .collect(),
            Err(e) => {
                self.error(format!("cannot read directory {}: {e}", path.display()));
                return Ok(Vec::new());
            }
        };
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut children = Vec::with_capacity(entries.len());
        for (name, p) in entries {
            if self.shared.stopped() {
                return Err(Error::Cancelled);
            }
            if self.excluded(&p) {
                continue;
            }
            match std::fs::symlink_metadata(&p) {
                Ok(md) => self.add_entry(&mut children, name, &p, md, parent)?,
                Err(e) => self.error(format!("cannot stat {}: {e}", p.display())),
            }
        }
        Ok(children)
    }

    fn add_entry(
        &mut self,
        children: &mut Vec<Child>,
        name: Name,
        path: &Path,
        md: std::fs::Metadata,
        parent: Option<&Tree>,
    ) -> Result<()> {
        let Some(kind) = kind_of(&md) else {
            self.warn(format!("skipping special file {}", path.display()));
            return Ok(());
        };
        let mut node = node_from_metadata(name, kind, &md);
        let old = parent.and_then(|t| t.find(&node.name));
        match kind {
            NodeKind::Dir => {
                let ptree = self.parent_child_tree(parent, &node.name);
                let sub = self.walk_dir(path, ptree.as_ref())?;
                let dir = self.push_dir(sub, old.and_then(|o| o.subtree));
                children.push(Child::Dir { node, dir });
            }
            NodeKind::Symlink => match std::fs::read_link(path) {
                Ok(t) => {
                    node.target = Some(Name::from(t.as_os_str()));
                    children.push(Child::Ready(node));
                }
                Err(e) => self.error(format!("cannot read symlink {}: {e}", path.display())),
            },
            NodeKind::File => {
                self.summary.total_bytes += node.size;
                let reusable = old.filter(|o| {
                    !self.force_full
                        && o.unchanged_file(&node)
                        && o.content.iter().all(|b| self.shared.index.contains(b))
                });
                if let Some(o) = reusable {
                    node.content = o.content.clone();
                    self.summary.files_unchanged += 1;
                    children.push(Child::Ready(node));
                } else {
                    if old.is_some() {
                        self.summary.files_changed += 1;
                    } else {
                        self.summary.files_new += 1;
                    }
                    self.shared.progress.add_total(node.size);
                    let job = self.next_job;
                    self.next_job += 1;
                    self.job_is_new.push(old.is_none());
                    self.jobs
                        .send(FileJob {
                            idx: job,
                            path: path.to_path_buf(),
                        })
                        .map_err(|_| {
                            self.shared
                                .error
                                .lock()
                                .expect("lock")
                                .take()
                                .unwrap_or(Error::Cancelled)
                        })?;
                    children.push(Child::File { node, job });
                }
            }
        }
        Ok(())
    }
}
