//! `PitrManager`: the live state machine in front of the journal. Logs operations durably,
//! applies them in LSN order, takes base backups (also in the background), applies backup and
//! WAL retention, and recovers to a timestamp, an LSN or the latest record.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use crate::archive::{Archive, ArchiveKey};
use crate::archiving::{archive_round, ArchiveRound};
use crate::error::{Error, Result};
use crate::pitr::backup::{self, BackupStamp, BaseBackup};
use crate::pitr::config::PitrConfig;
use crate::pitr::recovery::{recover_limited, Recovery, RecoveryOptions, RecoveryTarget};
use crate::pitr::state::{encode_op, StateMachine};
use crate::reader::{self, VerifyReport};
use crate::record::Hash;
use crate::writer::{ClosedSegment, Written};
use crate::{segment, Journal, JournalOptions, RawLsn};
use lifeboat_types::{CancelToken, Lsn, Term};

/// WAL counters for monitoring.
#[derive(Debug, Clone, PartialEq)]
pub struct WalStats {
    /// Last durable LSN.
    pub current_lsn: Lsn,
    /// Records in the active segment.
    pub active_segment_entries: u64,
    /// Closed segments shipped to the archive (0 until an archive is wired in).
    pub archived_segment_count: u64,
    /// Bytes of WAL on disk (closed segments plus the used part of the active one).
    pub bytes: u64,
    /// Segment files on disk.
    pub segment_count: u64,
    /// Group-commit fsyncs by this instance.
    pub fsync_count: u64,
    /// Appends by this instance.
    pub append_count: u64,
    /// Oldest LSN still in the local WAL.
    pub first_lsn: Lsn,
    /// Highest term recorded in the WAL.
    pub highest_term: Term,
    /// Last LSN the archive holds (`None`: no archive configured).
    pub archived_upto_lsn: Option<Lsn>,
    /// Durable records not yet in the archive (`None`: no archive configured).
    pub archive_lag_entries: Option<u64>,
    /// Age in seconds of the oldest record not yet archived (0 when fully archived; an upper
    /// bound for records written since the last archive round). `None`: no archive, or no
    /// round finished yet.
    pub archive_lag_seconds: Option<f64>,
    /// Why the last archive round failed, if it did (cleared by the next success).
    pub archive_last_error: Option<String>,
}

/// What the manager remembers of its archive rounds, for `wal_stats`.
#[derive(Default)]
struct ArchiveStatus {
    /// Unix ns at or before which every unarchived record was written (see `WalStats`).
    oldest_unarchived_bound_nanos: Option<i64>,
    last_error: Option<String>,
}

struct Live<S> {
    state: S,
    lsn: RawLsn,
    timestamp_nanos: i64,
    hash: Hash,
}

struct Inner<S: StateMachine> {
    config: PitrConfig,
    journal: Journal,
    term: AtomicU64,
    /// Written (maybe not yet durable) operations in LSN order, awaiting apply.
    pending: Mutex<VecDeque<(Written, S::Op)>>,
    live: Mutex<Live<S>>,
    backup_lock: tokio::sync::Mutex<()>,
    /// Closed segments with last LSN ≤ this may be deleted (`u64::MAX`: no archive to wait for).
    archived_upto: AtomicU64,
    archived_segments: AtomicU64,
    archive: Option<Archive>,
    archive_kick: Arc<tokio::sync::Notify>,
    archive_status: Mutex<ArchiveStatus>,
    /// One round at a time (the background task and `archive_now`).
    archive_lock: tokio::sync::Mutex<()>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks completes before unlocking; a panic in `apply` leaves a
    // state that later calls may still read.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::TaskFailed {
            task: "pitr blocking task",
            reason: e.to_string(),
        })?
}

/// The PITR front end over one WAL directory and one backup directory (one per process:
/// the WAL's writer lock is exclusive).
pub struct PitrManager<S: StateMachine> {
    inner: Arc<Inner<S>>,
    task: Option<tokio::task::JoinHandle<()>>,
    archive_task: Option<tokio::task::JoinHandle<()>>,
}

impl<S: StateMachine> Drop for PitrManager<S> {
    fn drop(&mut self) {
        for t in [self.task.take(), self.archive_task.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
        }
    }
}

impl<S: StateMachine> PitrManager<S> {
    /// Opens the WAL (crash recovery included), removes interrupted backup temp files,
    /// rebuilds the live state (newest backup + replay) and starts the background backup task
    /// if an interval is configured. Must run inside a tokio runtime.
    pub async fn open(config: PitrConfig) -> Result<Self> {
        // The archive first: a wrong key or an unreachable archive is refused before the
        // journal's writer lock is taken.
        let archive = match &config.archive {
            None => None,
            Some(location) => {
                let key = match &config.archive_key_file {
                    Some(p) => {
                        Some(ArchiveKey::from_file(p).map_err(|e| Error::Archive(Box::new(e)))?)
                    }
                    None => None,
                };
                Some(
                    Archive::open(location, key)
                        .await
                        .map_err(|e| Error::Archive(Box::new(e)))?,
                )
            }
        };
        let cfg = config.clone();
        let (journal, rec) = blocking(move || {
            backup::clean_temp(&cfg.backup_directory)?;
            let journal = Journal::open(
                &cfg.wal_directory,
                JournalOptions {
                    segment_size: cfg.wal_segment_size,
                    preallocate: cfg.preallocate,
                    ..JournalOptions::default()
                },
            )?;
            let last = journal.stats().durable_lsn.get();
            let rec = recover_limited::<S>(
                &cfg.wal_directory,
                &cfg.backup_directory,
                RecoveryTarget::Latest,
                &RecoveryOptions {
                    verify_anchor: cfg.verify_wal,
                    ..RecoveryOptions::default()
                },
                Lsn(last),
            )?;
            if rec.lsn != Lsn(last) {
                return Err(Error::BackupAheadOfWal {
                    backup_id: rec.base_backup_id.unwrap_or_default(),
                    backup_lsn: rec.lsn,
                    wal_last: Lsn(last),
                });
            }
            Ok((journal, rec))
        })
        .await?;
        let term = journal.stats().highest_term.get();
        let inner = Arc::new(Inner {
            archived_upto: AtomicU64::new(if config.archive.is_some() {
                0
            } else {
                u64::MAX
            }),
            config,
            journal,
            term: AtomicU64::new(term),
            pending: Mutex::new(VecDeque::new()),
            live: Mutex::new(Live {
                state: rec.state,
                lsn: rec.lsn.get(),
                timestamp_nanos: rec.timestamp_nanos,
                hash: rec.hash,
            }),
            backup_lock: tokio::sync::Mutex::new(()),
            archived_segments: AtomicU64::new(0),
            archive,
            archive_kick: Arc::new(tokio::sync::Notify::new()),
            archive_status: Mutex::new(ArchiveStatus::default()),
            archive_lock: tokio::sync::Mutex::new(()),
        });
        let task = inner
            .config
            .base_backup_interval
            .map(|every| tokio::spawn(background_backups(Arc::downgrade(&inner), every)));
        let archive_task = inner.archive.is_some().then(|| {
            tokio::spawn(background_archiving(
                Arc::downgrade(&inner),
                inner.archive_kick.clone(),
                inner.config.archive_interval,
            ))
        });
        Ok(PitrManager {
            inner,
            task,
            archive_task,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &PitrConfig {
        &self.inner.config
    }

    /// The term `log_change` writes with.
    pub fn term(&self) -> Term {
        Term::from(self.inner.term.load(Ordering::SeqCst))
    }

    /// Sets the leadership term for later `log_change` calls (a new leader raises it; the WAL
    /// then rejects appends from writers still on an older term).
    pub fn set_term(&self, term: Term) {
        self.inner.term.store(term.get(), Ordering::SeqCst);
    }

    /// Logs `op` under the manager's term; returns its LSN once it is durable and applied.
    pub async fn log_change(&self, op: S::Op) -> Result<Lsn> {
        self.log_change_with_term(self.term(), op).await
    }

    /// Logs `op` under an explicit term (fails with `StaleTerm` if a higher one is recorded).
    pub async fn log_change_with_term(&self, term: Term, op: S::Op) -> Result<Lsn> {
        let payload = encode_op(&op)?;
        let inner = &self.inner;
        let written = {
            let mut pending = locked(&inner.pending);
            let w = inner.journal.write(term.get(), &payload)?;
            pending.push_back((w, op));
            w
        };
        inner.journal.wait_durable(written.lsn).await?;
        inner.apply_through(written.lsn);
        Ok(Lsn(written.lsn))
    }

    /// Reads the live state (`lsn` = last applied LSN).
    pub fn with_state<R>(&self, f: impl FnOnce(&S, Lsn) -> R) -> R {
        let live = locked(&self.inner.live);
        f(&live.state, Lsn(live.lsn))
    }

    /// Snapshots the live state into a new base backup, then applies backup and WAL retention.
    pub async fn create_base_backup(&self) -> Result<BaseBackup> {
        create_backup(&self.inner).await
    }

    /// Recovers the state at `target` from the backups and the WAL (the live state is not
    /// touched). Records not yet durable are never included.
    pub async fn recover(&self, target: RecoveryTarget) -> Result<Recovery<S>> {
        self.recover_cancellable(target, &CancelToken::new()).await
    }

    /// [`PitrManager::recover`] that stops with [`Error::Cancelled`] once `cancel` is
    /// cancelled (checked every few records), so a caller can abandon a long replay.
    pub async fn recover_cancellable(
        &self,
        target: RecoveryTarget,
        cancel: &CancelToken,
    ) -> Result<Recovery<S>> {
        let cfg = self.inner.config.clone();
        let limit = self.inner.journal.stats().durable_lsn;
        let opts = RecoveryOptions {
            verify_anchor: cfg.verify_wal,
            cancel: cancel.clone(),
        };
        blocking(move || {
            recover_limited::<S>(
                &cfg.wal_directory,
                &cfg.backup_directory,
                target,
                &opts,
                limit,
            )
        })
        .await
    }

    /// WAL counters.
    pub async fn wal_stats(&self) -> WalStats {
        let s = self.inner.journal.stats();
        let dir = self.inner.config.wal_directory.clone();
        let active = s.active_segment_bytes;
        let (bytes, first_lsn) = tokio::task::spawn_blocking(move || {
            let segs = segment::list_segments(&dir).unwrap_or_default();
            let first = segs.first().map_or(1, |s| s.0);
            let closed: u64 = segs
                .iter()
                .take(segs.len().saturating_sub(1))
                .filter_map(|(_, p)| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            (closed + active, first)
        })
        .await
        .unwrap_or((active, 1));
        let (archived_upto_lsn, archive_lag_entries, archive_lag_seconds, archive_last_error) =
            if self.inner.archive.is_some() {
                let upto = self.inner.archived_upto.load(Ordering::SeqCst);
                let entries = s.durable_lsn.get().saturating_sub(upto);
                let st = locked(&self.inner.archive_status);
                let seconds = st.oldest_unarchived_bound_nanos.map(|bound| {
                    if entries == 0 {
                        0.0
                    } else {
                        (unix_nanos(SystemTime::now()) - bound).max(0) as f64 / 1e9
                    }
                });
                (
                    Some(Lsn(upto)),
                    Some(entries),
                    seconds,
                    st.last_error.clone(),
                )
            } else {
                (None, None, None, None)
            };
        WalStats {
            archived_upto_lsn,
            archive_lag_entries,
            archive_lag_seconds,
            archive_last_error,
            current_lsn: s.durable_lsn,
            active_segment_entries: s.active_segment_entries,
            archived_segment_count: self.inner.archived_segments.load(Ordering::SeqCst),
            bytes,
            segment_count: s.segment_count,
            fsync_count: s.fsync_count,
            append_count: s.append_count,
            first_lsn: Lsn(first_lsn),
            highest_term: s.highest_term,
        }
    }

    /// Checks CRCs and the hash chain of the whole WAL; counts records from `from_lsn`.
    pub async fn verify_wal_integrity(&self, from_lsn: Lsn) -> Result<VerifyReport> {
        let dir = self.inner.config.wal_directory.clone();
        blocking(move || reader::verify(&dir, from_lsn.get())).await
    }

    /// Retained base backups, oldest first (newest last). Files with a damaged header are
    /// left out (and logged); recovery skips them too.
    pub async fn list_backups(&self) -> Result<Vec<BaseBackup>> {
        let dir = self.inner.config.backup_directory.clone();
        blocking(move || {
            let (ok, damaged) = backup::list_backups(&dir)?;
            for e in damaged {
                tracing::warn!("{e}");
            }
            Ok(ok)
        })
        .await
    }

    /// Deletes closed WAL segments that retention allows (see [`PitrManager::segment_deletable`]);
    /// returns the deleted files. Also run after every base backup.
    pub async fn apply_wal_retention(&self) -> Result<Vec<PathBuf>> {
        apply_wal_retention(&self.inner).await
    }

    /// Archive hook: every closed segment whose last LSN is ≤ `lsn` is safely archived, so
    /// retention may delete it. Until called, an instance with an archive configured deletes
    /// no segment; without an archive there is no such constraint.
    pub fn set_archived_upto(&self, lsn: Lsn, archived_segment_count: u64) {
        self.inner.archived_upto.store(lsn.get(), Ordering::SeqCst);
        self.inner
            .archived_segments
            .store(archived_segment_count, Ordering::SeqCst);
    }

    /// The retention rule: a closed segment may go once it is older than `wal_retention`,
    /// holds no LSN after the oldest retained backup's start LSN, and (with an archive) has
    /// been archived. `oldest_backup_lsn = None` (no backup yet) keeps everything.
    pub fn segment_deletable(
        &self,
        seg: &ClosedSegment,
        oldest_backup_lsn: Option<Lsn>,
        now: SystemTime,
    ) -> bool {
        self.inner
            .deletable(seg, oldest_backup_lsn.map(Lsn::get), now)
    }

    /// Ships closed segments and new backups to the configured archive now, publishes how far
    /// it reaches (so WAL retention may delete what is archived) and mirrors local retention
    /// into it. The background task does the same every `archive_interval`.
    pub async fn archive_now(&self) -> Result<ArchiveRound> {
        archive_once(&self.inner).await
    }

    /// The underlying journal (stats, torn-tail report).
    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }
}

impl<S: StateMachine> Inner<S> {
    /// Applies queued operations up to `lsn` (all durable: durability is monotonic).
    fn apply_through(&self, lsn: RawLsn) {
        let mut live = locked(&self.live);
        let mut pending = locked(&self.pending);
        while pending.front().is_some_and(|(w, _)| w.lsn <= lsn) {
            let (w, op) = pending.pop_front().expect("front exists");
            live.state.apply(&op);
            live.lsn = w.lsn;
            live.timestamp_nanos = w.timestamp_nanos;
            live.hash = w.hash;
        }
    }

    fn deletable(
        &self,
        seg: &ClosedSegment,
        oldest_backup: Option<RawLsn>,
        now: SystemTime,
    ) -> bool {
        let old_enough = now
            .duration_since(seg.modified)
            .is_ok_and(|age| age >= self.config.wal_retention);
        let needed_by_backup = oldest_backup.is_none_or(|start| seg.last_lsn > start);
        let archived = seg.last_lsn <= self.archived_upto.load(Ordering::SeqCst);
        old_enough && !needed_by_backup && archived
    }
}

async fn apply_wal_retention<S: StateMachine>(inner: &Arc<Inner<S>>) -> Result<Vec<PathBuf>> {
    let inner = inner.clone();
    blocking(move || {
        let (backups, _) = backup::list_backups(&inner.config.backup_directory)?;
        let oldest = backups.first().map(|b| b.start_lsn.get());
        let now = SystemTime::now();
        inner
            .journal
            .remove_closed_segments(|seg| inner.deletable(seg, oldest, now))
    })
    .await
}

async fn create_backup<S: StateMachine>(inner: &Arc<Inner<S>>) -> Result<BaseBackup> {
    let _one_at_a_time = inner.backup_lock.lock().await;
    let (snapshot, stamp) = {
        let live = locked(&inner.live);
        (
            live.state.snapshot(),
            BackupStamp {
                start_lsn: Lsn(live.lsn),
                start_timestamp_nanos: live.timestamp_nanos,
                start_hash: live.hash,
                term: Term::from(inner.term.load(Ordering::SeqCst)),
            },
        )
    };
    if inner.archive.is_some() {
        // Close the segment holding the backup's start LSN, so the archive round this backup
        // kicks off ships that WAL together with the backup: a restored archive then never
        // holds a backup ahead of its WAL, and the restored journal can be reopened.
        let j = inner.clone();
        blocking(move || j.journal.switch_segment().map(drop)).await?;
    }
    let dir = inner.config.backup_directory.clone();
    let compress = inner.config.compress_backups;
    let keep = inner.config.backup_retention_count;
    let made = blocking(move || {
        let made = backup::write_backup(&dir, stamp, &snapshot, compress)?;
        backup::apply_retention(&dir, keep)?;
        Ok(made)
    })
    .await?;
    apply_wal_retention(inner).await?;
    inner.archive_kick.notify_one();
    Ok(made)
}

fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

async fn archive_once<S: StateMachine>(inner: &Arc<Inner<S>>) -> Result<ArchiveRound> {
    let Some(archive) = &inner.archive else {
        return Err(Error::NoArchive);
    };
    let _one_at_a_time = inner.archive_lock.lock().await;
    let started = unix_nanos(SystemTime::now());
    let result = archive_round(
        archive,
        &inner.config.wal_directory,
        &inner.config.backup_directory,
    )
    .await;
    let mut st = locked(&inner.archive_status);
    match result {
        Ok(round) => {
            inner
                .archived_upto
                .store(round.sync.archived_upto_lsn.get(), Ordering::SeqCst);
            inner
                .archived_segments
                .store(round.archived_segments, Ordering::SeqCst);
            let lag_secs = round.lag.as_ref().map_or(0.0, |l| l.seconds);
            st.oldest_unarchived_bound_nanos = Some(started - (lag_secs * 1e9) as i64);
            st.last_error = None;
            Ok(round)
        }
        Err(e) => {
            st.last_error = Some(e.to_string());
            Err(Error::Archive(Box::new(e)))
        }
    }
}

async fn background_archiving<S: StateMachine>(
    inner: Weak<Inner<S>>,
    kick: Arc<tokio::sync::Notify>,
    every: std::time::Duration,
) {
    let timeout = inner.upgrade().and_then(|i| i.config.archive_timeout);
    let mut last_switch = tokio::time::Instant::now();
    loop {
        {
            // Holds the manager only for the round; dropping the manager aborts this task at
            // its next await (a round in progress may keep the WAL lock until then).
            let Some(inner) = inner.upgrade() else { return };
            if let Some(t) = timeout {
                if last_switch.elapsed() >= t {
                    // Restart the clock whatever happens: an empty segment has nothing to
                    // ship, and a failed switch is retried one timeout later — never a busy
                    // loop of archive rounds on an idle or full journal.
                    if inner.journal.stats().active_segment_entries > 0 {
                        let j = inner.clone();
                        if let Err(e) = blocking(move || j.journal.switch_segment()).await {
                            tracing::warn!(
                                "archive timeout: closing the active segment failed: {e}"
                            );
                        }
                    }
                    last_switch = tokio::time::Instant::now();
                }
            }
            match archive_once(&inner).await {
                Ok(r) => tracing::debug!(
                    upto = r.sync.archived_upto_lsn.get(),
                    segments = r.sync.segments_archived,
                    backups = r.sync.backups_archived,
                    "archive round"
                ),
                Err(e) => tracing::warn!("archive round failed (retried in {every:?}): {e}"),
            }
            // Segments the archive now holds may be deletable.
            if let Err(e) = apply_wal_retention(&inner).await {
                tracing::warn!("WAL retention after archiving failed: {e}");
            }
        }
        let nap = timeout.map_or(every, |t| {
            every.min(
                t.saturating_sub(last_switch.elapsed())
                    .max(std::time::Duration::from_millis(10)),
            )
        });
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = kick.notified() => {}
        }
    }
}

async fn background_backups<S: StateMachine>(inner: Weak<Inner<S>>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    // A backup slower than the interval delays the next one instead of bursting.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick fires immediately
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        match create_backup(&inner).await {
            Ok(b) => tracing::info!(id = %b.id, lsn = b.start_lsn.get(), "periodic base backup"),
            Err(e) => tracing::warn!("periodic base backup failed: {e}"),
        }
    }
}
