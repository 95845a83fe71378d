//! Restore: snapshot → directory, in pack order, in parallel, with metadata.
//!
//! Files are written to a hidden temporary name and renamed into place only once every byte is
//! written, so an interrupted or failed restore (disk full, damaged blob) never leaves a partial
//! file under its real name. Unchanged files (same size and mtime) in the target are left alone.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use globset::GlobSet;
use lifeboat_types::{BlobId, PackId};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::pack::{pack_key, PackEntry};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};

/// Blobs closer than this inside a pack are fetched with one ranged read.
const COALESCE_GAP: u64 = 256 * 1024;
/// Upper bound of one ranged read.
const MAX_READ: u64 = 8 * 1024 * 1024;

/// When to rewrite a file that already exists in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overwrite {
    /// Only if size or mtime differ.
    #[default]
    IfChanged,
    /// Always.
    Always,
}

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Directory the snapshot's absolute paths are restored under.
    pub target: PathBuf,
    /// Globs on snapshot paths (e.g. `/home/u/docs` or `*.conf`); empty = everything.
    pub include: Vec<String>,
    /// Re-read and re-hash every restored file.
    pub verify: bool,
    /// Parallel pack readers.
    pub threads: usize,
    /// Existing-file policy.
    pub overwrite: Overwrite,
    /// Cancel to stop between packs: every temp file is removed and nothing half-written is
    /// renamed into place.
    pub cancel: lifeboat_types::CancelToken,
}

impl RestoreOptions {
    /// Defaults for restoring everything into `target`.
    pub fn new(target: PathBuf) -> Self {
        RestoreOptions {
            target,
            include: Vec::new(),
            verify: false,
            threads: std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(4),
            overwrite: Overwrite::IfChanged,
            cancel: lifeboat_types::CancelToken::new(),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreSummary {
    /// Files written.
    pub files_restored: u64,
    /// Files already identical in the target (by size and mtime).
    pub files_unchanged: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links re-created.
    pub hardlinks: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Files re-hashed by `--verify`.
    pub files_verified: u64,
    /// Problems; non-empty means some paths were not restored or lack their metadata.
    pub errors: Vec<String>,
    /// Every snapshot path (file, link, or directory whose contents could not be read) that
    /// was selected but is not in the target: the user must learn all of them, not a sample.
    pub not_restored: Vec<String>,
    /// Wall-clock seconds.
    pub duration_secs: f64,
}

/// A blob to fetch and where it goes: (entry, offset in file, file index).
type BlobTarget = (PackEntry, u64, usize);

struct FileItem {
    /// Path in the snapshot, for [`RestoreSummary::not_restored`].
    path: PathBuf,
    dest: PathBuf,
    temp: PathBuf,
    node: Node,
    remaining: AtomicUsize,
    failed: AtomicBool,
    fresh: bool,
}

/// Runs a restore of `snapshot`.
pub fn run(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let loaded = repo.load_index()?;
    let index = &loaded.index;
    let mut summary = RestoreSummary::default();
    for w in &loaded.warnings {
        progress.warn(w);
    }
    let include = build_include(&opts.include)?;

    // 1. Plan: walk the snapshot's trees.
    let mut plan = Plan::default();
    walk(
        repo,
        index,
        &snapshot.tree,
        Path::new("/"),
        include.as_ref(),
        false,
        &mut plan,
        &mut summary.errors,
        &mut summary.not_restored,
    );
    if plan.is_empty() && summary.errors.is_empty() && !opts.include.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no path in the snapshot matches {:?}",
            opts.include
        )));
    }

    // 2. Directories (metadata is applied at the end, deepest first).
    fs::create_dir_all(&opts.target)
        .map_err(|e| Error::io("cannot create target directory", &opts.target, e))?;
    // Parents come before children. A non-directory (e.g. a planted symlink) where the snapshot
    // has a directory is replaced, so nothing is ever written outside the target.
    for (rel, _) in &plan.dirs {
        let dest = opts.target.join(rel);
        match fs::symlink_metadata(&dest) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => fs::remove_file(&dest).map_err(|e| Error::io("cannot replace", &dest, e))?,
            Err(_) => {}
        }
        fs::create_dir(&dest).map_err(|e| Error::io("cannot create directory", &dest, e))?;
    }

    // 3. Files: decide what to write, create temp files, group blobs by pack.
    let mut items: Vec<FileItem> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf, PathBuf)> = Vec::new();
    let mut first_of_inode: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for (rel, node) in plan.files {
        let dest = opts.target.join(&rel);
        let path = Path::new("/").join(&rel);
        if node.nlink > 1 && node.inode != 0 {
            if let Some(first) = first_of_inode.get(&(node.dev, node.inode)) {
                links.push((first.clone(), dest, path));
                continue;
            }
            first_of_inode.insert((node.dev, node.inode), dest.clone());
        }
        let existing = fs::symlink_metadata(&dest).ok();
        if opts.overwrite == Overwrite::IfChanged {
            if let Some(md) = &existing {
                use std::os::unix::fs::MetadataExt;
                if md.is_file()
                    && md.size() == node.size
                    && md.mtime() * 1_000_000_000 + md.mtime_nsec() == node.mtime_ns
                {
                    summary.files_unchanged += 1;
                    if opts.verify {
                        items.push(FileItem::done(path, dest, node));
                    }
                    continue;
                }
            }
        }
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dest.with_file_name(format!(".{name}.lifeboat-restore"));
        if let Err(e) = create_temp(&temp, node.size) {
            // Leave nothing half-made behind: remove every temp file created so far.
            for it in items.iter().filter(|i| i.fresh) {
                let _ = fs::remove_file(&it.temp);
            }
            return Err(e);
        }
        progress.add_total(node.size);
        items.push(FileItem {
            path,
            dest,
            temp,
            remaining: AtomicUsize::new(node.content.len()),
            failed: AtomicBool::new(false),
            fresh: true,
            node,
        });
    }
    let mut by_pack: HashMap<PackId, Vec<(PackEntry, u64, usize)>> = HashMap::new();
    for (i, item) in items.iter().enumerate().filter(|(_, it)| it.fresh) {
        let mut offset = 0u64;
        for id in &item.node.content {
            match index.get(id) {
                Some(loc) => {
                    by_pack
                        .entry(loc.pack)
                        .or_default()
                        .push((loc.entry, offset, i));
                    offset += loc.entry.raw_len as u64;
                }
                None => {
                    item.failed.store(true, Ordering::Relaxed);
                    summary.errors.push(format!(
                        "{}: blob {} is missing from the index",
                        item.dest.display(),
                        id.short()
                    ));
                    break;
                }
            }
        }
    }

    // 4. Parallel, pack-ordered writes.
    let errors = Mutex::new(Vec::<String>::new());
    let fatal = Mutex::new(None::<Error>);
    let stop = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let jobs: Mutex<Vec<(PackId, Vec<BlobTarget>)>> = Mutex::new(by_pack.into_iter().collect());
    let work = || loop {
        let Some((pack, mut blobs)) = jobs.lock().expect("jobs").pop() else {
            return;
        };
        if opts.cancel.is_cancelled() {
            stop.store(true, Ordering::Relaxed);
            fatal.lock().expect("fatal").get_or_insert(Error::Cancelled);
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        blobs.sort_by_key(|b| (b.0.offset, b.2, b.1));
        if let Err(e) = restore_pack(repo, &pack, &blobs, &items, &written, progress, &errors) {
            if matches!(e, Error::Io { .. }) {
                stop.store(true, Ordering::Relaxed);
                fatal.lock().expect("fatal").get_or_insert(e);
                return;
            }
            errors.lock().expect("errors").push(format!("{e}"));
        }
    };
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(work);
        }
    });
    summary.errors.extend(errors.into_inner().expect("errors"));
    summary.bytes_written = written.load(Ordering::Relaxed);

    // 5. Finish files: rename complete ones into place; remove the rest.
    let mut completed = Vec::new();
    for item in items.iter().filter(|i| i.fresh) {
        let ok =
            !item.failed.load(Ordering::Relaxed) && item.remaining.load(Ordering::Relaxed) == 0;
        if ok && fatal.lock().expect("fatal").is_none() {
            match finish_file(item) {
                Ok(()) => {
                    summary.files_restored += 1;
                    completed.push(item);
                }
                Err(e) => {
                    // Metadata or rename failed: do not leave the temporary file behind.
                    let _ = fs::remove_file(&item.temp);
                    summary.errors.push(format!("{e}"));
                    summary.not_restored.push(item.path.display().to_string());
                }
            }
        } else {
            let _ = fs::remove_file(&item.temp);
            summary.not_restored.push(item.path.display().to_string());
            if !item.failed.load(Ordering::Relaxed) && fatal.lock().expect("fatal").is_none() {
                summary.errors.push(format!(
                    "{}: not all data could be read",
                    item.dest.display()
                ));
            }
        }
    }
    if let Some(e) = fatal.into_inner().expect("fatal") {
        return Err(e);
    }

    // 6. Links and symlinks, then directory metadata deepest first.
    for (first, dest, path) in links {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| fs::symlink_metadata(p).ok().map(|m| (m.dev(), m.ino()));
        if ino(&first).is_some() && ino(&first) == ino(&dest) {
            continue;
        }
        let _ = fs::remove_file(&dest);
        match fs::hard_link(&first, &dest) {
            Ok(()) => summary.hardlinks += 1,
            Err(e) => {
                summary.errors.push(format!(
                    "cannot link {} to {}: {e}",
                    dest.display(),
                    first.display()
                ));
                summary.not_restored.push(path.display().to_string());
            }
        }
    }
    for (rel, node) in &plan.symlinks {
        let dest = opts.target.join(rel);
        let target = node
            .target
            .as_ref()
            .map(|t| t.as_os_str().to_owned())
            .unwrap_or_default();
        if fs::read_link(&dest).is_ok_and(|t| t.as_os_str() == target) {
            continue;
        }
        let _ = fs::remove_file(&dest);
        match std::os::unix::fs::symlink(&target, &dest) {
            Ok(()) => {
                summary.symlinks += 1;
                if let Err(e) = apply_metadata(&dest, node) {
                    summary.errors.push(format!("{e}"));
                }
            }
            Err(e) => {
                summary
                    .errors
                    .push(format!("cannot create symlink {}: {e}", dest.display()));
                summary
                    .not_restored
                    .push(Path::new("/").join(rel).display().to_string());
            }
        }
    }
    for (rel, node) in plan.dirs.iter().rev() {
        summary.dirs += 1;
        if let Some(node) = node {
            if let Err(e) = apply_metadata(&opts.target.join(rel), node) {
                summary.errors.push(format!("{e}"));
            }
        }
    }

    // 7. Verify.
    if opts.verify {
        let verify_list: Vec<&FileItem> =
            items.iter().filter(|i| !i.fresh).chain(completed).collect();
        summary.files_verified =
            verify_files(repo, index, &verify_list, opts.threads, &mut summary.errors);
    }
    summary.not_restored.sort();
    summary.not_restored.dedup();
    summary.duration_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}

impl RestoreSummary {
    /// Whether paths were selected but none of them was restored (or already in place).
    pub fn restored_nothing(&self) -> bool {
        !self.not_restored.is_empty()
            && self.files_restored + self.files_unchanged + self.symlinks + self.hardlinks == 0
    }
}

impl FileItem {
    fn done(path: PathBuf, dest: PathBuf, node: Node) -> Self {
        FileItem {
            path,
            temp: dest.clone(),
            dest,
            node,
            remaining: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            fresh: false,
        }
    }
}

/// Fetches the needed blobs of one pack (coalescing neighbours) and writes them out.
fn restore_pack(
    repo: &Repository,
    pack: &PackId,
    blobs: &[(PackEntry, u64, usize)],
    items: &[FileItem],
    written: &AtomicU64,
    progress: &dyn Progress,
    errors: &Mutex<Vec<String>>,
) -> Result<()> {
    let key = pack_key(pack);
    let mut i = 0;
    while i < blobs.len() {
        let start = blobs[i].0.offset as u64;
        let mut end = start + blobs[i].0.length as u64;
        let mut j = i + 1;
        while j < blobs.len() {
            let e = &blobs[j].0;
            let (s, t) = (e.offset as u64, e.offset as u64 + e.length as u64);
            if s > end + COALESCE_GAP || t - start > MAX_READ {
                break;
            }
            end = end.max(t);
            j += 1;
        }
        let data = match repo.block_on(repo.store().get_range(&key, start..end)) {
            Ok(d) => d,
            Err(e) => {
                fail_all(&blobs[i..j], items);
                errors
                    .lock()
                    .expect("errors")
                    .push(format!("cannot read {key}: {e}"));
                i = j;
                continue;
            }
        };
        let mut last: Option<(BlobId, Vec<u8>)> = None;
        for (entry, offset, file) in &blobs[i..j] {
            let item = &items[*file];
            if item.failed.load(Ordering::Relaxed) {
                continue;
            }
            if last.as_ref().is_none_or(|(id, _)| *id != entry.id) {
                let lo = (entry.offset as u64 - start) as usize;
                let sealed = &data[lo..lo + entry.length as usize];
                match repo.open_blob(&key, entry, sealed) {
                    Ok(p) => last = Some((entry.id, p)),
                    Err(e) => {
                        item.failed.store(true, Ordering::Relaxed);
                        errors
                            .lock()
                            .expect("errors")
                            .push(format!("{}: {e}", item.dest.display()));
                        last = None;
                        continue;
                    }
                }
            }
            let plain = &last.as_ref().expect("set above").1;
            if !(item.fresh && plain.iter().all(|b| *b == 0)) {
                let f = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&item.temp)
                    .map_err(|e| Error::io("cannot open", &item.temp, e))?;
                f.write_all_at(plain, *offset)
                    .map_err(|e| Error::io("cannot write", &item.dest, e))?;
            }
            written.fetch_add(plain.len() as u64, Ordering::Relaxed);
            progress.advance(plain.len() as u64);
            item.remaining.fetch_sub(1, Ordering::AcqRel);
        }
        i = j;
    }
    Ok(())
}

fn fail_all(blobs: &[(PackEntry, u64, usize)], items: &[FileItem]) {
    for (_, _, f) in blobs {
        items[*f].failed.store(true, Ordering::Relaxed);
    }
}

/// Creates a fresh temp file, never following a symlink planted at its name.
fn create_temp(temp: &Path, size: u64) -> Result<()> {
    match fs::remove_file(temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io("cannot remove stale temp file", temp, e))
        }
        _ => {}
    }
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(temp)
        .map_err(|e| Error::io("cannot create file", temp, e))?;
    f.set_len(size)
        .map_err(|e| Error::io("cannot size file", temp, e))
}

fn finish_file(item: &FileItem) -> Result<()> {
    // Metadata through a no-follow handle: a symlink swapped in cannot redirect chmod/chown.
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&item.temp)
        .map_err(|e| Error::io("cannot open", &item.temp, e))?;
    let node = &item.node;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::fchown(&f, Some(node.uid), Some(node.gid))
            .map_err(|e| Error::io("cannot chown", &item.temp, e))?;
    }
    f.set_permissions(fs::Permissions::from_mode(node.mode))
        .map_err(|e| Error::io("cannot chmod", &item.temp, e))?;
    f.set_modified(mtime_to_system_time(node.mtime_ns))
        .map_err(|e| Error::io("cannot set mtime", &item.temp, e))?;
    drop(f);
    fs::rename(&item.temp, &item.dest)
        .map_err(|e| Error::io("cannot rename into place", &item.dest, e))
}

fn mtime_to_system_time(ns: i64) -> std::time::SystemTime {
    let d = std::time::Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        std::time::UNIX_EPOCH + d
    } else {
        std::time::UNIX_EPOCH - d
    }
}

/// Mode, owner (when root) and mtime; symlinks get owner and mtime only.
fn apply_metadata(path: &Path, node: &Node) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))
            .map_err(|e| Error::io("cannot chown", path, e))?;
    }
    if node.kind != NodeKind::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(node.mode))
            .map_err(|e| Error::io("cannot chmod", path, e))?;
    }
    let t = TimeSpec::new(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000),
    );
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| Error::io("cannot set mtime", path, std::io::Error::from(e)))
}

#[derive(Default)]
struct Plan {
    dirs: Vec<(PathBuf, Option<Node>)>,
    files: Vec<(PathBuf, Node)>,
    symlinks: Vec<(PathBuf, Node)>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.symlinks.is_empty() && self.dirs.is_empty()
    }
}

fn build_include(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    crate::walk::glob_set(patterns, "include").map(Some)
}

/// Collects what to restore below `tree`; returns true if anything was selected. A tree
/// that cannot be read is an error, and its directory is listed in `not_restored`.
#[allow(clippy::too_many_arguments)]
fn walk(
    repo: &Repository,
    index: &Index,
    tree: &BlobId,
    at: &Path,
    include: Option<&GlobSet>,
    selected: bool,
    plan: &mut Plan,
    errors: &mut Vec<String>,
    not_restored: &mut Vec<String>,
) -> bool {
    let t = match repo.read_tree(index, tree) {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!("cannot restore below {}: {e}", at.display()));
            not_restored.push(format!("{} (everything below it)", at.display()));
            return false;
        }
    };
    let mut any = false;
    for node in t.nodes {
        let path = at.join(node.name.as_os_str());
        let rel = path
            .strip_prefix("/")
            .expect("paths are absolute")
            .to_path_buf();
        let sel = selected
            || include.is_none_or(|g| {
                g.is_match(&path) || path.file_name().is_some_and(|n| g.is_match(n))
            });
        match node.kind {
            NodeKind::Dir => {
                let idx = plan.dirs.len();
                plan.dirs.push((rel, None));
                let sub = node.subtree.expect("dir nodes carry a subtree");
                let inner = walk(
                    repo,
                    index,
                    &sub,
                    &path,
                    include,
                    sel,
                    plan,
                    errors,
                    not_restored,
                );
                if sel || inner {
                    plan.dirs[idx].1 = Some(node);
                    any = true;
                } else {
                    plan.dirs.remove(idx);
                }
            }
            NodeKind::File if sel => {
                plan.files.push((rel, node));
                any = true;
            }
            NodeKind::Symlink if sel => {
                plan.symlinks.push((rel, node));
                any = true;
            }
            _ => {}
        }
    }
    any
}

/// Re-reads restored files and compares each blob-sized range with its id.
fn verify_files(
    repo: &Repository,
    index: &Index,
    files: &[&FileItem],
    threads: usize,
    errors: &mut Vec<String>,
) -> u64 {
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    let verified = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = files.get(i) else { return };
                match verify_one(repo, index, item) {
                    Ok(()) => {
                        verified.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => found
                        .lock()
                        .expect("found")
                        .push(format!("verify {}: {e}", item.dest.display())),
                }
            });
        }
    });
    errors.extend(found.into_inner().expect("found"));
    verified.into_inner()
}

fn verify_one(
    repo: &Repository,
    index: &Index,
    item: &FileItem,
) -> std::result::Result<(), String> {
    let mut f = fs::File::open(&item.dest).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    for (n, id) in item.node.content.iter().enumerate() {
        let len = index
            .get(id)
            .ok_or("blob missing from index")?
            .entry
            .raw_len as usize;
        buf.resize(len, 0);
        f.read_exact(&mut buf)
            .map_err(|e| format!("short file: {e}"))?;
        if repo.key().blob_id(&buf) != *id {
            return Err(format!("content differs in chunk {n}"));
        }
    }
    if f.read(&mut [0u8; 1]).map_err(|e| e.to_string())? != 0 {
        return Err("file is longer than in the snapshot".into());
    }
    Ok(())
}

/// Lists a snapshot's entries below `prefix` (for `ls`).
pub fn list(repo: &Repository, snapshot: &Snapshot, prefix: &str) -> Result<Vec<(String, Node)>> {
    let loaded = repo.load_index()?;
    let prefix = Path::new(prefix);
    let mut stack: Vec<(PathBuf, BlobId)> = vec![(PathBuf::from("/"), snapshot.tree)];
    let mut seen = BTreeMap::new();
    while let Some((at, id)) = stack.pop() {
        let t = repo.read_tree(&loaded.index, &id)?;
        for node in t.nodes {
            let path = at.join(node.name.as_os_str());
            // Component-wise: `ls SNAP /x/a` must not list the sibling `/x/ab`.
            let below = path.starts_with(prefix);
            // Descend only where something below can match: into the prefix or its ancestors.
            if node.kind == NodeKind::Dir && (below || prefix.starts_with(&path)) {
                if let Some(sub) = node.subtree {
                    stack.push((path.clone(), sub));
                }
            }
            if below {
                seen.insert(path.display().to_string(), node);
            }
        }
    }
    Ok(seen.into_iter().collect())
}
