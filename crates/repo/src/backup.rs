//! The backup pipeline: walk → read + chunk + hash + dedup → compress + encrypt + pack → upload.
//!
//! Stages are threads joined by bounded channels, so memory stays bounded whatever the input:
//! at most `2 × threads` chunks wait for compression, and a finished pack is handed straight
//! to an idle uploader (rendezvous).
//! Only the walker touches directories; it hands files that changed since the parent snapshot to
//! the readers and reuses the parent's blob list for the rest (size + mtime + ctime + inode).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use globset::GlobSet;
use jiff::Timestamp;
use lifeboat_types::{BlobId, PackId, SnapshotId};

use crate::chunker::Chunker;
use crate::compress::Compressor;
use crate::error::{Error, Result};
use crate::index::{Index, MAX_PACKS_PER_INDEX_FILE};
use crate::pack::{pack_key, BlobKind, FinishedPack, PackEntry, PackWriter};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::{Snapshot, Summary, SNAPSHOT_VERSION};
use crate::tree::{Name, Node, NodeKind, Tree, TREE_VERSION};
use crate::walk::{absolute, kind_of, node_from_metadata, VirtualDir, VirtualEntry};

/// Packs uploaded before an intermediate index file is written, so an interrupted backup's
/// uploads are reused by the next one.
const PACKS_PER_CHECKPOINT: usize = 32;
/// Chunk buffers larger than this are freed rather than pooled.
const POOLED_BUFFER_MAX: usize = 2 * 1024 * 1024;

/// Where a `--stdin` backup reads from.
#[derive(Debug, Clone)]
pub enum StdinSource {
    /// This process's standard input.
    Stdin,
    /// The standard output of a command (program, args); a non-zero exit fails the backup.
    Command(Vec<String>),
}

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Source paths (files or directories).
    pub paths: Vec<PathBuf>,
    /// Glob patterns matched against the full path and the file name.
    pub excludes: Vec<String>,
    /// Tags stored with the snapshot.
    pub tags: Vec<String>,
    /// Host name override.
    pub host: Option<String>,
    /// Parent snapshot for change detection (default: latest with the same host and paths).
    pub parent: Option<SnapshotId>,
    /// Re-read every file even if unchanged.
    pub force_full: bool,
    /// Back up a stream as one file with this name instead of `paths`.
    pub stdin: Option<(String, StdinSource)>,
    /// Worker threads per stage (default: available cores).
    pub threads: usize,
    /// Set to stop early; no snapshot is written.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Snapshot time to record instead of now (importing history, tests of retention).
    pub time: Option<Timestamp>,
}

impl BackupOptions {
    /// Defaults for backing up `paths`.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        BackupOptions {
            paths,
            excludes: Vec::new(),
            tags: Vec::new(),
            host: None,
            parent: None,
            force_full: false,
            stdin: None,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            interrupt: None,
            time: None,
        }
    }
}

/// A finished backup.
#[derive(Debug)]
pub struct BackupResult {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The snapshot as written.
    pub snapshot: Snapshot,
    /// Files skipped and why.
    pub warnings: Vec<String>,
}

/// A chunk not yet in the repository, on its way to compression.
struct NewBlob {
    id: BlobId,
    data: Vec<u8>,
}

struct FileJob {
    idx: usize,
    path: PathBuf,
}

/// State shared by all pipeline threads.
struct Shared<'a> {
    /// Chunk buffers handed back by compressors for readers to reuse (bounds allocator churn).
    buffers: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    repo: &'a Repository,
    index: &'a Index,
    claimed: Mutex<HashSet<BlobId>>,
    pending_index: Mutex<Vec<(PackId, Vec<PackEntry>)>>,
    error: Mutex<Option<Error>>,
    abort: AtomicBool,
    interrupt: Option<Arc<AtomicBool>>,
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    bytes_added: AtomicU64,
    bytes_stored: AtomicU64,
    bytes_read: AtomicU64,
    progress: &'a dyn Progress,
}

enum ReadError {
    Io(io::Error),
    Aborted,
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl Shared<'_> {
    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().expect("error lock");
        if slot.is_none() {
            *slot = Some(e);
        }
        self.abort.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        if self
            .interrupt
            .as_ref()
            .is_some_and(|i| i.load(Ordering::Relaxed))
        {
            self.fail(Error::Interrupted);
        }
        self.abort.load(Ordering::Relaxed)
    }

    /// A pooled buffer holding a copy of `chunk`.
    fn buffer_with(&self, chunk: &[u8]) -> Vec<u8> {
        let mut v = self.buffers.1.try_recv().unwrap_or_default();
        v.clear();
        v.extend_from_slice(chunk);
        v
    }

    /// True the first time anyone asks to store this blob in this backup.
    fn claim(&self, id: &BlobId) -> bool {
        !self.index.contains(id) && self.claimed.lock().expect("claim lock").insert(*id)
    }

    /// Chunks a stream; new chunks go to the compressors. Returns the blob list and bytes read.
    fn chunk_stream(
        &self,
        chunker: &mut Chunker,
        reader: impl Read,
        blobs: &Sender<NewBlob>,
    ) -> std::result::Result<(Vec<BlobId>, u64), ReadError> {
        let key = self.repo.key();
        let mut ids = Vec::new();
        let n = chunker.chunk_reader(reader, |chunk| {
            if self.stopped() {
                return Err(ReadError::Aborted);
            }
            let id = key.blob_id(chunk);
            ids.push(id);
            if self.claim(&id) {
                blobs
                    .send(NewBlob {
                        id,
                        data: self.buffer_with(chunk),
                    })
                    .map_err(|_| ReadError::Aborted)?;
            }
            self.progress.advance(chunk.len() as u64);
            Ok(())
        })?;
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
        Ok((ids, n))
    }

    /// Compresses (when it pays) and seals a blob straight into `writer`; returns the pack
    /// once it reached the target size.
    fn store_blob(
        &self,
        comp: &mut Compressor,
        scratch: &mut Vec<u8>,
        writer: &mut PackWriter,
        id: BlobId,
        data: &[u8],
    ) -> Option<FinishedPack> {
        let raw_len = data.len() as u32;
        let compressed = comp.compress_into(data, scratch);
        let payload = if compressed { &scratch[..] } else { data };
        writer.add_plain(self.repo.key(), id, payload, raw_len, compressed);
        self.bytes_added
            .fetch_add(raw_len as u64, Ordering::Relaxed);
        (writer.len() >= self.repo.config().pack_size_bytes as usize)
            .then(|| writer.finish(self.repo.key()))
    }

    fn upload(&self, pack: FinishedPack) {
        if self.stopped() {
            return;
        }
        let len = pack.bytes.len() as u64;
        if let Err(e) = self.repo.block_on(
            self.repo
                .store()
                .put(&pack_key(&pack.id), pack.bytes.into()),
        ) {
            return self.fail(e.into());
        }
        self.bytes_stored.fetch_add(len, Ordering::Relaxed);
        let checkpoint = {
            let mut p = self.pending_index.lock().expect("index lock");
            p.push((pack.id, pack.entries));
            (p.len() >= PACKS_PER_CHECKPOINT).then(|| std::mem::take(&mut *p))
        };
        if let Some(packs) = checkpoint {
            if let Err(e) = self.repo.save_index(&packs) {
                self.fail(e);
            }
        }
    }
}

/// A directory's children while its files are still being read.
enum Child {
    Ready(Node),
    File { node: Node, job: usize },
    Dir { node: Node, dir: usize },
}

struct DirBuild {
    children: Vec<Child>,
    parent_subtree: Option<BlobId>,
}

/// The walker: owns the directory skeleton, feeds file jobs to the readers.
struct Walker<'a, 'b> {
    shared: &'b Shared<'a>,
    jobs: Sender<FileJob>,
    dirs: Vec<DirBuild>,
    next_job: usize,
    excludes: GlobSet,
    force_full: bool,
    summary: Summary,
    warnings: Vec<String>,
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

    fn walk_virtual(&mut self, v: &VirtualDir, parent: Option<&Tree>) -> Result<Vec<Child>> {
        let mut children = Vec::new();
        for (name, entry) in &v.children {
            if self.shared.stopped() {
                return Err(Error::Interrupted);
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
                return Err(Error::Interrupted);
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
                                .unwrap_or(Error::Interrupted)
                        })?;
                    children.push(Child::File { node, job });
                }
            }
        }
        Ok(())
    }
}

fn build_globs(patterns: &[String]) -> Result<GlobSet> {
    crate::walk::glob_set(patterns, "--exclude")
}

/// Opens a file for reading without updating its atime where the OS allows it.
fn open_source(path: &Path) -> io::Result<File> {
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        r => r,
    }
}

/// Runs a backup and writes a snapshot; on any error or interrupt no snapshot is written.
pub fn run(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupResult> {
    let started = Instant::now();
    let time = opts.time.unwrap_or_else(Timestamp::now);
    let host = opts.host.clone().unwrap_or_else(crate::host_name);
    let loaded = repo.load_index()?;
    let mut warnings = loaded.warnings.clone();
    let index = loaded.index;

    let sources: Vec<PathBuf> = if opts.stdin.is_some() {
        Vec::new()
    } else {
        if opts.paths.is_empty() {
            return Err(Error::InvalidInput(
                "nothing to back up: give at least one path".into(),
            ));
        }
        let mut v = Vec::new();
        for p in &opts.paths {
            let abs = absolute(p).map_err(|e| Error::io("cannot resolve", p, e))?;
            std::fs::symlink_metadata(&abs)
                .map_err(|e| Error::io("cannot read source", &abs, e))?;
            v.push(abs);
        }
        v.sort();
        v.dedup();
        v
    };
    let path_strings: Vec<String> = match &opts.stdin {
        Some((name, _)) => vec![format!("/{name}")],
        None => sources.iter().map(|p| p.display().to_string()).collect(),
    };

    let parent = find_parent(repo, opts, &host, &path_strings)?;
    let parent_tree = match &parent {
        Some((_, s)) => match repo.read_tree(&index, &s.tree) {
            Ok(t) => Some(t),
            Err(e) => {
                warnings.push(format!(
                    "cannot read parent snapshot's tree: {e}; reading every file"
                ));
                None
            }
        },
        None => None,
    };

    let threads = opts.threads.max(1);
    let shared = Shared {
        repo,
        index: &index,
        claimed: Mutex::new(HashSet::new()),
        pending_index: Mutex::new(Vec::new()),
        error: Mutex::new(None),
        abort: AtomicBool::new(false),
        interrupt: opts.interrupt.clone(),
        data_blobs: AtomicU64::new(0),
        tree_blobs: AtomicU64::new(0),
        bytes_added: AtomicU64::new(0),
        bytes_stored: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        progress,
        buffers: bounded(threads * 2),
    };
    let chunker_key = repo.config().chunker_key_bytes()?;
    let params = repo.config().chunker;
    let level = repo.config().compression_level;
    let excludes = build_globs(&opts.excludes)?;

    let (blob_tx, blob_rx) = bounded::<NewBlob>(threads * 2);
    let (pack_tx, pack_rx) = bounded::<FinishedPack>(0); // rendezvous: no pack waits in a queue
    let (job_tx, job_rx) = bounded::<FileJob>(1024);
    let (done_tx, done_rx) = unbounded::<(
        usize,
        PathBuf,
        std::result::Result<(Vec<BlobId>, u64), ReadError>,
    )>();

    let outcome = std::thread::scope(|s| -> Result<(BlobId, Summary, Vec<String>)> {
        let shared = &shared;
        // A local disk absorbs a pack in milliseconds; remote stores need requests in flight.
        let upload_threads = if repo.store().is_local() {
            1
        } else {
            threads.max(4)
        };
        let uploaders: Vec<_> = (0..upload_threads)
            .map(|_| {
                let rx: Receiver<FinishedPack> = pack_rx.clone();
                s.spawn(move || rx.iter().for_each(|p| shared.upload(p)))
            })
            .collect();
        drop(pack_rx);
        let compressors: Vec<_> = (0..threads)
            .map(|_| {
                let rx = blob_rx.clone();
                let tx = pack_tx.clone();
                s.spawn(move || {
                    // Each compressor fills its own pack: no lock, no copy of sealed bytes.
                    let (mut comp, mut scratch) = (Compressor::new(level), Vec::new());
                    let reserve = repo.config().pack_size_bytes as usize
                        + params.max_size as usize
                        + (1 << 20);
                    let mut writer = PackWriter::with_capacity(BlobKind::Data, reserve);
                    for blob in rx.iter() {
                        if shared.abort.load(Ordering::Relaxed) {
                            continue;
                        }
                        shared.data_blobs.fetch_add(1, Ordering::Relaxed);
                        if let Some(pack) = shared.store_blob(
                            &mut comp,
                            &mut scratch,
                            &mut writer,
                            blob.id,
                            &blob.data,
                        ) {
                            let _ = tx.send(pack);
                        }
                        // Pool only average-sized buffers; rare 8 MiB ones would pin memory.
                        if blob.data.capacity() <= POOLED_BUFFER_MAX {
                            let _ = shared.buffers.0.try_send(blob.data);
                        }
                    }
                    if !writer.is_empty() && !shared.abort.load(Ordering::Relaxed) {
                        let _ = tx.send(writer.finish(shared.repo.key()));
                    }
                })
            })
            .collect();
        drop(blob_rx);
        let readers: Vec<_> = (0..threads)
            .map(|_| {
                let jobs = job_rx.clone();
                let done = done_tx.clone();
                let blobs = blob_tx.clone();
                s.spawn(move || {
                    let mut chunker = Chunker::new(params, &chunker_key);
                    for job in jobs.iter() {
                        let r = if shared.abort.load(Ordering::Relaxed) {
                            Err(ReadError::Aborted)
                        } else {
                            open_source(&job.path)
                                .map_err(ReadError::Io)
                                .and_then(|f| shared.chunk_stream(&mut chunker, f, &blobs))
                        };
                        let _ = done.send((job.idx, job.path, r));
                    }
                })
            })
            .collect();
        drop(job_rx);
        drop(done_tx);

        let mut walker = Walker {
            shared,
            jobs: job_tx,
            dirs: Vec::new(),
            next_job: 0,
            excludes,
            force_full: opts.force_full,
            summary: Summary::default(),
            warnings: Vec::new(),
        };
        let walked = match &opts.stdin {
            Some((name, src)) => backup_stream(
                shared,
                &mut walker,
                name,
                src,
                params,
                &chunker_key,
                &blob_tx,
            ),
            None => VirtualDir::from_paths(&sources)
                .map_err(Error::InvalidInput)
                .and_then(|v| walker.walk_virtual(&v, parent_tree.as_ref())),
        };
        let Walker {
            dirs,
            next_job,
            mut summary,
            warnings: mut walk_warnings,
            jobs,
            ..
        } = walker;
        drop(jobs); // readers finish once the queue drains
        drop(blob_tx);

        // Collect every file's blob list (readers finish when the job channel drains).
        let mut results: Vec<Option<(Vec<BlobId>, u64)>> = vec![None; next_job];
        let mut paths_failed = Vec::new();
        for (idx, path, r) in done_rx.iter() {
            match r {
                Ok(r) => results[idx] = Some(r),
                Err(ReadError::Io(e)) => paths_failed.push((path, e)),
                Err(ReadError::Aborted) => {}
            }
        }
        readers
            .into_iter()
            .for_each(|h| h.join().expect("reader thread panicked"));
        compressors
            .into_iter()
            .for_each(|h| h.join().expect("compressor thread panicked"));
        let root_children = walked?;
        for (path, e) in paths_failed {
            summary.errors += 1;
            let msg = format!("cannot read {}: {e}; skipped", path.display());
            shared.progress.warn(&msg);
            walk_warnings.push(msg);
        }
        if shared.stopped() {
            drop(pack_tx);
            uploaders
                .into_iter()
                .for_each(|h| h.join().expect("uploader thread panicked"));
            return Err(shared
                .error
                .lock()
                .expect("lock")
                .take()
                .unwrap_or(Error::Interrupted));
        }

        let root = build_trees(
            shared,
            dirs,
            root_children,
            &results,
            &mut summary,
            &pack_tx,
        );
        drop(pack_tx);
        uploaders
            .into_iter()
            .for_each(|h| h.join().expect("uploader thread panicked"));
        if let Some(e) = shared.error.lock().expect("lock").take() {
            return Err(e);
        }
        Ok((root, summary, walk_warnings))
    });
    let (root, mut summary, walk_warnings) = outcome?;
    warnings.extend(walk_warnings);

    let rest = std::mem::take(&mut *shared.pending_index.lock().expect("lock"));
    for chunk in rest.chunks(MAX_PACKS_PER_INDEX_FILE) {
        repo.save_index(chunk)?;
    }
    summary.data_blobs_added = shared.data_blobs.load(Ordering::Relaxed);
    summary.tree_blobs_added = shared.tree_blobs.load(Ordering::Relaxed);
    summary.bytes_added = shared.bytes_added.load(Ordering::Relaxed);
    summary.bytes_stored = shared.bytes_stored.load(Ordering::Relaxed);
    summary.bytes_read = shared.bytes_read.load(Ordering::Relaxed);
    summary.duration_secs = started.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time,
        host,
        username: crate::user_name(),
        paths: path_strings,
        tags: opts.tags.clone(),
        parent: parent.map(|(id, _)| id),
        tree: root,
        original: None,
        summary,
    };
    // Last chance to honour Ctrl-C: packs and index are kept (the next backup reuses them),
    // but no snapshot appears.
    if opts
        .interrupt
        .as_ref()
        .is_some_and(|i| i.load(Ordering::SeqCst))
    {
        return Err(Error::Interrupted);
    }
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupResult {
        id,
        snapshot,
        warnings,
    })
}

fn find_parent(
    repo: &Repository,
    opts: &BackupOptions,
    host: &str,
    paths: &[String],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    if opts.force_full || opts.stdin.is_some() {
        return Ok(None);
    }
    if let Some(id) = opts.parent {
        return repo.find_snapshot(&id.to_hex()).map(Some);
    }
    let (snaps, _) = repo.list_snapshots()?;
    Ok(snaps
        .into_iter()
        .rev()
        .find(|(_, s)| s.host == host && s.paths == paths))
}

/// Backs up a stream (stdin or a command's stdout) as a single file at the snapshot root.
fn backup_stream(
    shared: &Shared<'_>,
    walker: &mut Walker<'_, '_>,
    name: &str,
    src: &StdinSource,
    params: crate::chunker::ChunkerParams,
    chunker_key: &[u8; 32],
    blobs: &Sender<NewBlob>,
) -> Result<Vec<Child>> {
    if name.is_empty() || name.contains('/') {
        return Err(Error::InvalidInput(format!(
            "--stdin-filename {name:?} must be a plain file name"
        )));
    }
    let mut chunker = Chunker::new(params, chunker_key);
    let map_err = |e: ReadError, what: &str| match e {
        ReadError::Io(e) => Error::io("cannot read", what, e),
        ReadError::Aborted => shared
            .error
            .lock()
            .expect("lock")
            .take()
            .unwrap_or(Error::Interrupted),
    };
    let (ids, size) = match src {
        StdinSource::Stdin => shared
            .chunk_stream(&mut chunker, io::stdin().lock(), blobs)
            .map_err(|e| map_err(e, "stdin"))?,
        StdinSource::Command(argv) => {
            let (prog, args) = argv
                .split_first()
                .ok_or_else(|| Error::InvalidInput("no command given".into()))?;
            let shown = argv.join(" ");
            let mut child = Command::new(prog)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| Error::CommandFailed {
                    command: shown.clone(),
                    status: format!("cannot start: {e}"),
                })?;
            let out = child.stdout.take().expect("stdout is piped");
            let r = shared.chunk_stream(&mut chunker, out, blobs);
            if r.is_err() {
                let _ = child.kill();
            }
            let status = child
                .wait()
                .map_err(|e| Error::io("cannot wait for", prog, e))?;
            let r = r.map_err(|e| map_err(e, prog))?;
            if !status.success() {
                // Ctrl-C on a terminal reaches the command too; report the interrupt, not its death.
                if shared
                    .interrupt
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::SeqCst))
                {
                    return Err(Error::Interrupted);
                }
                shared.fail(Error::CommandFailed {
                    command: shown.clone(),
                    status: status.to_string(),
                });
                return Err(Error::CommandFailed {
                    command: shown,
                    status: status.to_string(),
                });
            }
            r
        }
    };
    let now = Timestamp::now().as_nanosecond() as i64;
    walker.summary.files_new += 1;
    walker.summary.total_bytes += size;
    Ok(vec![Child::Ready(Node {
        name: Name::from(name),
        kind: NodeKind::File,
        mode: 0o600,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        mtime_ns: now,
        ctime_ns: now,
        inode: 0,
        dev: 0,
        nlink: 1,
        size,
        content: ids,
        subtree: None,
        target: None,
    })])
}

/// Assembles tree blobs bottom-up (dirs are in post-order) and returns the root tree id.
fn build_trees(
    shared: &Shared<'_>,
    dirs: Vec<DirBuild>,
    root_children: Vec<Child>,
    results: &[Option<(Vec<BlobId>, u64)>],
    summary: &mut Summary,
    packs: &Sender<FinishedPack>,
) -> BlobId {
    let mut comp = Compressor::new(shared.repo.config().compression_level);
    let mut scratch = Vec::new();
    let mut writer = PackWriter::new(BlobKind::Tree);
    let mut tree_ids: Vec<BlobId> = Vec::with_capacity(dirs.len());
    let mut store_tree = |children: Vec<Child>, tree_ids: &[BlobId]| -> BlobId {
        let mut nodes = Vec::with_capacity(children.len());
        for c in children {
            match c {
                Child::Ready(n) => nodes.push(n),
                Child::File { mut node, job } => {
                    if let Some((ids, read)) = &results[job] {
                        node.content = ids.clone();
                        node.size = *read; // the file may have changed size while being read
                        nodes.push(node);
                    }
                }
                Child::Dir { mut node, dir } => {
                    node.subtree = Some(tree_ids[dir]);
                    nodes.push(node);
                }
            }
        }
        let bytes = Tree {
            version: TREE_VERSION,
            nodes,
        }
        .encode();
        let id = shared.repo.key().blob_id(&bytes);
        if shared.claim(&id) {
            shared.tree_blobs.fetch_add(1, Ordering::Relaxed);
            if let Some(pack) = shared.store_blob(&mut comp, &mut scratch, &mut writer, id, &bytes)
            {
                let _ = packs.send(pack);
            }
        }
        id
    };
    for d in dirs {
        let id = store_tree(d.children, &tree_ids);
        match d.parent_subtree {
            None => summary.dirs_new += 1,
            Some(p) if p == id => summary.dirs_unchanged += 1,
            Some(_) => summary.dirs_changed += 1,
        }
        tree_ids.push(id);
    }
    let root = store_tree(root_children, &tree_ids);
    if !writer.is_empty() {
        let _ = packs.send(writer.finish(shared.repo.key()));
    }
    root
}
