//! The durable writer: open-time recovery, appends with group commit, rotation, fencing.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;

use nix::fcntl::{Flock, FlockArg};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::record::{self, Hash, RecordError, MAX_PAYLOAD, RECORD_DATA};
use crate::segment::{self, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::RawLsn;
use lifeboat_types::{Lsn, Term};

/// How a journal is laid out and written.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// Rotate to a new segment once the active one would exceed this many bytes.
    pub segment_size: u64,
    /// Preallocate each new segment to `segment_size` so appends do not grow the file.
    pub preallocate: bool,
    /// Test hook: group-commit fsync number `n` (1-based) fails with an injected I/O error.
    #[doc(hidden)]
    pub fail_fsync_number: Option<u64>,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_size: 16 * 1024 * 1024,
            preallocate: true,
            fail_fsync_number: None,
        }
    }
}

/// A torn tail found and set aside at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that had it.
    pub segment: PathBuf,
    /// Offset where valid data ended (the segment was truncated here).
    pub offset: u64,
    /// Where the damaged bytes were copied.
    pub saved_to: PathBuf,
    /// Why decoding stopped.
    pub reason: RecordError,
    /// An intact record followed the damage: possibly lost acknowledged data, worth a look.
    pub intact_records_after: bool,
}

/// Counters and positions, for monitoring and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalStats {
    /// LSN the next append will get.
    pub next_lsn: Lsn,
    /// Last LSN written to the file (maybe not yet durable).
    pub written_lsn: Lsn,
    /// Last LSN known durable (fsynced).
    pub durable_lsn: Lsn,
    /// Highest term recorded.
    pub highest_term: Term,
    /// Appends accepted by this instance.
    pub append_count: u64,
    /// Data fsyncs issued by group commit (rotation syncs not included).
    pub fsync_count: u64,
    /// Segment files.
    pub segment_count: u64,
    /// Records in the active segment.
    pub active_segment_entries: u64,
    /// Bytes used in the active segment (header included).
    pub active_segment_bytes: u64,
    /// The torn tail set aside when this instance opened, if any.
    pub torn_tail: Option<TornTail>,
}

struct State {
    file: Arc<File>,
    path: PathBuf,
    salt: u64,
    write_pos: u64,
    next_lsn: RawLsn,
    last_hash: Hash,
    last_ts: i64,
    highest_term: u64,
    seg_entries: u64,
    segment_count: u64,
    appends: u64,
    poisoned: Option<String>,
    /// The active segment was trimmed by a rotation whose next segment could not be created:
    /// the next append must retry the rotation instead of writing past the trimmed end.
    closed: bool,
}

/// A record written (not necessarily durable yet) by [`Journal::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Its LSN.
    pub lsn: RawLsn,
    /// The timestamp the writer stamped on it (unix nanoseconds).
    pub timestamp_nanos: i64,
    /// Its record hash (the next record's `prev_hash`), so snapshots can anchor the chain.
    pub hash: Hash,
}

/// A closed segment offered to [`Journal::remove_closed_segments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedSegment {
    /// LSN of its first record.
    pub first_lsn: RawLsn,
    /// LSN of its last record.
    pub last_lsn: RawLsn,
    /// The file.
    pub path: PathBuf,
    /// When it was last modified (closed segments are immutable: when it was closed).
    pub modified: SystemTime,
}

/// An open journal directory. One writer per directory, enforced with an exclusive `flock` on
/// `<dir>/LOCK`; many concurrent `append` callers inside the process are fine.
pub struct Journal {
    dir: PathBuf,
    _lock: Flock<File>,
    opts: JournalOptions,
    state: Mutex<State>,
    sync_lock: tokio::sync::Mutex<()>,
    durable: AtomicU64,
    fsyncs: AtomicU64,
    fsync_attempts: AtomicU64,
    torn_tail: Option<TornTail>,
    /// The next segment, zero-filled in the background (see [`segment::prepare_spare`]).
    spare: Arc<Spare>,
}

impl Drop for Journal {
    fn drop(&mut self) {
        // A ready spare is 16 MiB of zeros nobody will use; a spare still being written is
        // removed by its thread (it finds the journal gone) or by the next open.
        if let Some(p) = self
            .spare
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = fs::remove_file(p);
        }
    }
}

/// A spare segment being prepared or ready.
#[derive(Default)]
struct Spare {
    ready: Mutex<Option<PathBuf>>,
    busy: std::sync::atomic::AtomicBool,
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn read_all(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, recovering from a crash: verifies every
    /// segment and the chain between them, sets a torn tail of the last segment aside and
    /// truncates it, and fails with the LSN on any other damage.
    pub fn open(dir: impl AsRef<Path>, opts: JournalOptions) -> Result<Journal> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock = lock_dir(&dir)?;
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            if entry.file_name().to_string_lossy().ends_with(".seg.tmp") {
                // A predecessor's spare thread may remove its own file concurrently.
                match fs::remove_file(entry.path()) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::io(entry.path(), e))
                    }
                    _ => {}
                }
            }
        }
        let prealloc = if opts.preallocate {
            opts.segment_size
        } else {
            0
        };
        let segments = segment::list_segments(&dir)?;
        if segments.is_empty() {
            let header = SegmentHeader {
                salt: rand::random(),
                first_lsn: 1,
                prev_hash: [0; 32],
            };
            let (file, path) = segment::create_segment(&dir, &header, prealloc)?;
            let state = State {
                file: Arc::new(file),
                path,
                salt: header.salt,
                write_pos: SEGMENT_HEADER_LEN as u64,
                next_lsn: 1,
                last_hash: [0; 32],
                last_ts: 0,
                highest_term: 0,
                seg_entries: 0,
                segment_count: 1,
                appends: 0,
                poisoned: None,
                closed: false,
            };
            return Ok(Self::new(dir, lock, opts, state, 0, None));
        }

        let mut next_lsn: Option<RawLsn> = None;
        let mut last_hash: Hash = [0; 32];
        let mut highest_term = 0;
        let mut last_ts = 0;
        let mut torn_tail = None;
        let n = segments.len();
        let mut last = None;
        for (i, (name_lsn, path)) in segments.iter().enumerate() {
            let bytes = read_all(path)?;
            let scan = segment::scan(path, &bytes, false)?;
            let h = &scan.header;
            if h.first_lsn != *name_lsn {
                return Err(Error::BadSegment {
                    path: path.clone(),
                    reason: format!(
                        "header says first LSN {}, name says {name_lsn}",
                        h.first_lsn
                    ),
                });
            }
            if let Some(expected) = next_lsn {
                if h.first_lsn != expected {
                    return Err(Error::Corrupt {
                        lsn: expected.into(),
                        path: path.clone(),
                        reason: RecordError::LsnMismatch {
                            expected,
                            found: h.first_lsn,
                        },
                    });
                }
                if h.prev_hash != last_hash {
                    return Err(Error::Corrupt {
                        lsn: h.first_lsn.into(),
                        path: path.clone(),
                        reason: RecordError::ChainMismatch {
                            expected: hex::encode(last_hash),
                            found: hex::encode(h.prev_hash),
                        },
                    });
                }
            }
            for (_, r) in &scan.records {
                highest_term = highest_term.max(r.term);
                last_ts = last_ts.max(r.timestamp_nanos);
            }
            let is_last = i + 1 == n;
            if let Some((lsn, reason)) = scan.stop.clone() {
                // Damage followed by intact records is a torn tail only if an unwritten (zero)
                // sector explains it; otherwise it is rot in acknowledged data: refuse.
                let mid_log = scan
                    .valid_after_stop
                    .is_some_and(|next| !segment::zero_sector_in(&bytes, scan.end, next));
                if !is_last || !reason.is_tear_like() || mid_log {
                    return Err(Error::Corrupt {
                        lsn: lsn.into(),
                        path: path.clone(),
                        reason,
                    });
                }
                torn_tail = Some(set_aside_tail(
                    &dir,
                    path,
                    &bytes,
                    scan.end,
                    prealloc,
                    reason,
                    scan.valid_after_stop.is_some(),
                )?);
            }
            next_lsn = Some(h.first_lsn + scan.records.len() as u64);
            last_hash = scan.last_hash;
            if is_last {
                last = Some((
                    path.clone(),
                    h.salt,
                    scan.end as u64,
                    scan.records.len() as u64,
                ));
            }
        }
        let (path, salt, end, entries) = last.expect("at least one segment");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // Records a crashed process wrote may still be only in the page cache: make them
        // durable before reporting them so. Re-preallocate in case the crash came between
        // trimming a full segment and creating the next one.
        // On a full disk, open anyway: the segment is then treated as closed, so the first
        // append retries the allocation by rotating (failing cleanly with `DiskFull`) instead
        // of writing past the allocated end.
        let closed = match segment::preallocate(&file, prealloc) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => true,
            Err(e) => return Err(Error::io(&path, e)),
        };
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        let next = next_lsn.expect("at least one segment");
        let state = State {
            file: Arc::new(file),
            path,
            salt,
            write_pos: end,
            next_lsn: next,
            last_hash,
            last_ts,
            highest_term,
            seg_entries: entries,
            segment_count: n as u64,
            appends: 0,
            poisoned: None,
            closed,
        };
        Ok(Self::new(dir, lock, opts, state, next - 1, torn_tail))
    }

    fn new(
        dir: PathBuf,
        lock: Flock<File>,
        opts: JournalOptions,
        state: State,
        durable: RawLsn,
        torn_tail: Option<TornTail>,
    ) -> Self {
        let j = Journal {
            dir,
            _lock: lock,
            opts,
            state: Mutex::new(state),
            sync_lock: tokio::sync::Mutex::new(()),
            durable: AtomicU64::new(durable),
            fsyncs: AtomicU64::new(0),
            fsync_attempts: AtomicU64::new(0),
            torn_tail,
            spare: Arc::new(Spare::default()),
        };
        j.prepare_spare();
        j
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the file half-described: every field
        // update follows a completed write; recover the guard rather than propagate the panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `payload` under `term` and returns its LSN once the record is durable.
    /// Concurrent callers share fsyncs (group commit). Fails if `term` is lower than the
    /// highest recorded term, or if the journal is poisoned.
    pub async fn append(&self, term: u64, payload: &[u8]) -> Result<RawLsn> {
        let lsn = self.write(term, payload)?.lsn;
        self.wait_durable(lsn).await?;
        Ok(lsn)
    }

    /// First half of [`Journal::append`]: writes the record (not yet durable) and returns its
    /// LSN, timestamp and hash. Callers that must order work by LSN (the PITR manager queues
    /// the operation under its own lock) call this, then [`Journal::wait_durable`].
    pub fn write(&self, term: u64, payload: &[u8]) -> Result<Written> {
        let mut st = self.lock();
        if let Some(p) = &st.poisoned {
            return Err(Error::Poisoned(p.clone()));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        if term < st.highest_term {
            return Err(Error::StaleTerm {
                term: term.into(),
                highest: st.highest_term.into(),
            });
        }
        let len = record::padded(record::HEADER_LEN + payload.len()) as u64;
        let full =
            st.write_pos > SEGMENT_HEADER_LEN as u64 && st.write_pos + len > self.opts.segment_size;
        if full || st.closed {
            self.rotate(&mut st)?;
        }
        let lsn = st.next_lsn;
        let ts = now_nanos().max(st.last_ts);
        let (bytes, hash) =
            record::encode(st.salt, RECORD_DATA, lsn, ts, term, &st.last_hash, payload);
        if let Err(e) = st.file.write_all_at(&bytes, st.write_pos) {
            st.poisoned = Some(format!("write of LSN {lsn} failed: {e}"));
            return Err(Error::io(&st.path, e));
        }
        st.write_pos += len;
        st.next_lsn += 1;
        st.last_hash = hash;
        st.last_ts = ts;
        st.highest_term = term;
        st.seg_entries += 1;
        st.appends += 1;
        Ok(Written {
            lsn,
            timestamp_nanos: ts,
            hash,
        })
    }

    /// Closes the active segment now, if it holds any record, so everything written so far
    /// can be archived (PostgreSQL's `pg_switch_wal`). Returns the last LSN of the closed
    /// segment, or `None` when the active segment was empty. Records in it become durable.
    pub fn switch_segment(&self) -> Result<Option<RawLsn>> {
        let mut st = self.lock();
        if let Some(p) = &st.poisoned {
            return Err(Error::Poisoned(p.clone()));
        }
        if st.seg_entries == 0 && !st.closed {
            return Ok(None);
        }
        let last = st.next_lsn - 1;
        self.rotate(&mut st)?;
        Ok(Some(last))
    }

    /// Closes the active segment (trimmed to its data and fsynced) and starts the next one.
    /// A failure to trim or sync poisons the journal (durability unknown); a failure to create
    /// the next segment (typically ENOSPC while preallocating) does not: the closed segment
    /// is intact and durable, so the error is returned and the next append retries.
    fn rotate(&self, st: &mut State) -> Result<()> {
        if !st.closed {
            let trimmed = st
                .file
                .set_len(st.write_pos)
                .and_then(|()| st.file.sync_all());
            if let Err(e) = trimmed {
                st.poisoned = Some(format!("closing segment {} failed: {e}", st.path.display()));
                return Err(Error::io(&st.path, e));
            }
            st.closed = true;
            self.durable.fetch_max(st.next_lsn - 1, Ordering::SeqCst);
        }
        let header = SegmentHeader {
            salt: rand::random(),
            first_lsn: st.next_lsn,
            prev_hash: st.last_hash,
        };
        let prealloc = if self.opts.preallocate {
            self.opts.segment_size
        } else {
            0
        };
        let spare = self
            .spare
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let (file, path) = match spare {
            Some(spare) => match segment::create_segment_from_spare(&self.dir, &header, &spare) {
                Ok(made) => made,
                Err(e) => {
                    tracing::warn!("spare segment unusable, creating one: {e}");
                    let _ = fs::remove_file(&spare);
                    segment::create_segment(&self.dir, &header, prealloc)?
                }
            },
            None => segment::create_segment(&self.dir, &header, prealloc)?,
        };
        self.prepare_spare();
        st.file = Arc::new(file);
        st.path = path;
        st.salt = header.salt;
        st.write_pos = SEGMENT_HEADER_LEN as u64;
        st.seg_entries = 0;
        st.segment_count += 1;
        st.closed = false;
        Ok(())
    }

    /// Starts zero-filling the next segment on a background thread, unless one is ready or
    /// being made (or preallocation is off). Failure (e.g. a full disk) only means the next
    /// rotation creates its segment itself.
    fn prepare_spare(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if !self.opts.preallocate || self.spare.busy.swap(true, SeqCst) {
            return;
        }
        if self
            .spare
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            self.spare.busy.store(false, SeqCst);
            return;
        }
        let (dir, len, spare) = (
            self.dir.clone(),
            self.opts.segment_size,
            Arc::downgrade(&self.spare),
        );
        let spawned = std::thread::Builder::new()
            .name("journal-spare".into())
            .spawn(move || {
                let made = segment::prepare_spare(&dir, len);
                let Some(spare) = spare.upgrade() else {
                    // The journal is gone; its successor removes leftovers at open.
                    if let Ok(p) = made {
                        let _ = fs::remove_file(p);
                    }
                    return;
                };
                match made {
                    Ok(p) => *spare.ready.lock().unwrap_or_else(|e| e.into_inner()) = Some(p),
                    Err(e) => tracing::debug!("no spare segment: {e}"),
                }
                spare.busy.store(false, SeqCst);
                // The journal may have been dropped between `upgrade` and the store above; then
                // ours is the last reference and nobody will use (or remove) the spare.
                if Arc::strong_count(&spare) == 1 {
                    if let Some(p) = spare.ready.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        let _ = fs::remove_file(p);
                    }
                }
            });
        if spawned.is_err() {
            self.spare.busy.store(false, SeqCst);
        }
    }

    /// Deletes closed segments from the oldest on, while `deletable` agrees; stops at the
    /// first one it refuses (the log stays contiguous) and never touches the active segment.
    /// Runs under the writer lock so no rotation races it. Returns the deleted files.
    pub fn remove_closed_segments(
        &self,
        mut deletable: impl FnMut(&ClosedSegment) -> bool,
    ) -> Result<Vec<PathBuf>> {
        let mut st = self.lock();
        let segments = segment::list_segments(&self.dir)?;
        let mut removed = Vec::new();
        for pair in segments.windows(2) {
            let ((first, path), (next_first, _)) = (&pair[0], &pair[1]);
            if *path == st.path {
                break;
            }
            let modified = fs::metadata(path)
                .and_then(|m| m.modified())
                .map_err(|e| Error::io(path, e))?;
            let seg = ClosedSegment {
                first_lsn: *first,
                last_lsn: next_first - 1,
                path: path.clone(),
                modified,
            };
            if !deletable(&seg) {
                break;
            }
            fs::remove_file(path).map_err(|e| Error::io(path, e))?;
            st.segment_count = st.segment_count.saturating_sub(1);
            removed.push(path.clone());
        }
        if !removed.is_empty() {
            segment::sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Returns once every record up to `lsn` is durable: the first waiter fsyncs everything
    /// written so far, those queued behind it usually find their record already covered.
    pub async fn wait_durable(&self, lsn: RawLsn) -> Result<()> {
        loop {
            if self.durable.load(Ordering::SeqCst) >= lsn {
                return Ok(());
            }
            let _guard = self.sync_lock.lock().await;
            if self.durable.load(Ordering::SeqCst) >= lsn {
                return Ok(());
            }
            let (file, path, target) = {
                let st = self.lock();
                if let Some(p) = &st.poisoned {
                    return Err(Error::Poisoned(p.clone()));
                }
                (st.file.clone(), st.path.clone(), st.next_lsn - 1)
            };
            let inject = self.opts.fail_fsync_number
                == Some(self.fsync_attempts.fetch_add(1, Ordering::SeqCst) + 1);
            let res = tokio::task::spawn_blocking(move || {
                if inject {
                    return Err(std::io::Error::other("injected fsync failure"));
                }
                file.sync_data()
            })
            .await;
            match res {
                Ok(Ok(())) => {
                    self.fsyncs.fetch_add(1, Ordering::SeqCst);
                    self.durable.fetch_max(target, Ordering::SeqCst);
                }
                Ok(Err(e)) => {
                    self.lock().poisoned =
                        Some(format!("fdatasync of {} failed: {e}", path.display()));
                    return Err(Error::io(path, e));
                }
                Err(join) => {
                    let msg = format!("fdatasync task failed: {join}");
                    self.lock().poisoned = Some(msg.clone());
                    return Err(Error::TaskFailed {
                        task: "fdatasync",
                        reason: join.to_string(),
                    });
                }
            }
        }
    }

    /// Current positions and counters.
    pub fn stats(&self) -> JournalStats {
        let st = self.lock();
        JournalStats {
            next_lsn: Lsn(st.next_lsn),
            written_lsn: Lsn(st.next_lsn - 1),
            durable_lsn: Lsn(self.durable.load(Ordering::SeqCst)),
            highest_term: Term::from(st.highest_term),
            append_count: st.appends,
            fsync_count: self.fsyncs.load(Ordering::SeqCst),
            segment_count: st.segment_count,
            active_segment_entries: st.seg_entries,
            active_segment_bytes: st.write_pos,
            torn_tail: self.torn_tail.clone(),
        }
    }
}

/// Takes the directory's exclusive writer lock (released when the journal is dropped or the
/// process dies).
fn lock_dir(dir: &Path) -> Result<Flock<File>> {
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err((_, e)) => Err(Error::io(&path, e.into())),
    }
}

/// Copies the bytes after `end` to `<segment>.torn-<end>`, truncates the segment there
/// (re-preallocating with zeros) and makes all of it durable.
fn set_aside_tail(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    end: usize,
    prealloc: u64,
    reason: RecordError,
    intact_records_after: bool,
) -> Result<TornTail> {
    let saved_to = PathBuf::from(format!("{}.torn-{end}", path.display()));
    let tail = &bytes[end..];
    let last_nonzero = tail.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    {
        let mut f = File::create(&saved_to).map_err(|e| Error::io(&saved_to, e))?;
        std::io::Write::write_all(&mut f, &tail[..last_nonzero])
            .map_err(|e| Error::io(&saved_to, e))?;
        f.sync_all().map_err(|e| Error::io(&saved_to, e))?;
    }
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.set_len(end as u64).map_err(|e| Error::io(path, e))?;
    segment::preallocate(&f, prealloc).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))?;
    segment::sync_dir(dir)?;
    Ok(TornTail {
        segment: path.to_path_buf(),
        offset: end as u64,
        saved_to,
        reason,
        intact_records_after,
    })
}
