//! The backup pipeline: walk → read + chunk + hash + dedup → compress + encrypt + pack → upload.
//!
//! Stages are threads joined by bounded channels, so memory stays bounded whatever the input:
//! at most `2 × threads` chunks wait for compression, and a finished pack is handed straight
//! to an idle uploader (rendezvous).
//! Only the walker touches directories; it hands files that changed since the parent snapshot to
//! the readers and reuses the parent's blob list for the rest (size + mtime + ctime + inode).

mod shared;
mod stream;
mod trees;
mod walker;

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver};
use globset::GlobSet;
use jiff::Timestamp;
use lifeboat_types::{BlobId, CancelToken, SnapshotId};

use crate::chunker::Chunker;
use crate::compress::Compressor;
use crate::error::{stop_if_cancelled, Error, Result};
use crate::index::MAX_PACKS_PER_INDEX_FILE;
use crate::lock::WriteLock;
use crate::pack::{BlobKind, FinishedPack, PackWriter};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::{Snapshot, Summary, SNAPSHOT_VERSION};
use crate::walk::{absolute, VirtualDir};

use shared::{FileJob, NewBlob, ReadError, Shared};
use stream::backup_stream;
use trees::build_trees;
use walker::Walker;

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
    /// Cancel to stop early: packs already uploaded are indexed, no snapshot is written.
    pub cancel: CancelToken,
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
            cancel: CancelToken::new(),
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

fn build_globs(patterns: &[String]) -> Result<GlobSet> {
    crate::walk::glob_set(patterns, "exclude")
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

/// Runs a backup and writes a snapshot; on any error or cancellation no snapshot is written,
/// but every pack already uploaded is indexed so the next backup reuses it.
pub fn run(
    repo: &Repository,
    lock: &dyn WriteLock,
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
        cancel: opts.cancel.clone(),
        lock,
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
            job_is_new: Vec::new(),
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
            job_is_new: walker_new,
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
                Err(ReadError::Io(e)) => paths_failed.push((idx, path, e)),
                Err(ReadError::Aborted) => {}
            }
        }
        readers
            .into_iter()
            .for_each(|h| h.join().expect("reader thread panicked"));
        compressors
            .into_iter()
            .for_each(|h| h.join().expect("compressor thread panicked"));
        let root_children = match walked {
            Ok(c) => c,
            Err(e) => {
                // The walker or the stream source failed (or saw the cancel): keep the
                // uploads, as on every other failure path.
                drop(pack_tx);
                uploaders
                    .into_iter()
                    .for_each(|h| h.join().expect("uploader thread panicked"));
                let e = shared.error.lock().expect("lock").take().unwrap_or(e);
                shared.index_uploaded(&mut walk_warnings);
                return Err(e);
            }
        };
        for (idx, path, e) in paths_failed {
            // Counted as new or changed when queued; it was neither stored nor kept.
            if walker_new[idx] {
                summary.files_new -= 1;
            } else {
                summary.files_changed -= 1;
            }
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
            let err = shared
                .error
                .lock()
                .expect("lock")
                .take()
                .unwrap_or(Error::Cancelled);
            shared.index_uploaded(&mut walk_warnings);
            return Err(err);
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
            shared.index_uploaded(&mut walk_warnings);
            return Err(e);
        }
        Ok((root, summary, walk_warnings))
    });
    let (root, mut summary, walk_warnings) = outcome?;
    warnings.extend(walk_warnings);

    let rest = std::mem::take(&mut *shared.pending_index.lock().expect("lock"));
    for chunk in rest.chunks(MAX_PACKS_PER_INDEX_FILE) {
        repo.save_index(lock, chunk)?;
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
    // Last chance to honour a cancel: packs and index are kept (the next backup reuses them),
    // but no snapshot appears.
    stop_if_cancelled(&opts.cancel)?;
    let id = repo.save_snapshot(lock, &snapshot)?;
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
