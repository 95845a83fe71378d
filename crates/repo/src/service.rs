//! The async facade a service calls: every engine runs on its own thread, holding the typed
//! lock guard it needs for the whole run, with progress as a stream and cancellation.
//!
//! The engines are synchronous (threads and bounded channels: they are CPU and disk bound) and
//! drive store futures with `Handle::block_on`, which panics inside an async task and cannot
//! drive I/O on a caller's current-thread runtime. So the facade never runs an engine on the
//! caller's runtime: store I/O goes to one private multi-thread runtime ([`io_runtime`]), and
//! each engine runs on a dedicated OS thread whose result comes back through a oneshot
//! channel. Any runtime flavour can await a [`Job`]; none of its threads is ever blocked.
//!
//! ```no_run
//! # async fn demo() -> lifeboat_repo::Result<()> {
//! use lifeboat_repo::service::AsyncRepository;
//! let store = lifeboat_store::Store::open("/srv/backups/repo", &Default::default())?;
//! let repo = AsyncRepository::open(store, b"password".to_vec()).await?;
//! let job = repo.backup(lifeboat_repo::BackupOptions::new(vec!["/etc".into()]));
//! let mut progress = job.progress();
//! // ... show `progress.borrow()` while waiting, or `job.cancel()` on a request ...
//! let done = job.wait().await?;
//! println!("snapshot {}", done.id);
//! # Ok(()) }
//! ```

use std::sync::{Arc, OnceLock};

use jiff::tz::TimeZone;
use lifeboat_store::Store;
use lifeboat_types::{CancelToken, SnapshotId};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{oneshot, watch};

use crate::backup::{self, BackupOptions, BackupResult};
use crate::check::{self, CheckReport, ReadData};
use crate::copy::{self, CopyReport};
use crate::error::{Error, Result};
use crate::forget::{self, Removal};
use crate::lock::{LockOptions, WriteLock};
use crate::progress::Progress;
use crate::prune::{self, PruneOptions, PruneReport};
use crate::repository::{InitOptions, Repository, SnapshotList};
use crate::restore::{self, RestoreOptions, RestoreSummary};
use crate::retention::{GroupBy, Plan, Policy};

/// Worker threads of the private store-I/O runtime: store calls are I/O bound, and the engines
/// bound their own concurrency.
const IO_WORKERS: usize = 2;

/// The runtime every facade-opened repository does its store I/O on. Created on first use and
/// never dropped (dropping a runtime inside async code panics).
pub fn io_runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(IO_WORKERS)
            .thread_name("lifeboat-io")
            .enable_all()
            .build()
            .expect("cannot start the store I/O runtime")
    })
}

fn io_handle() -> Handle {
    io_runtime().handle().clone()
}

/// Starts `f` on a new OS thread now; its result arrives on the returned channel.
fn start_thread<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> oneshot::Receiver<Result<T>> {
    let (tx, rx) = oneshot::channel();
    // The closure owns the sender; if the thread cannot start we get it back to report that.
    let slot = Arc::new(std::sync::Mutex::new(Some((tx, f))));
    let theirs = slot.clone();
    let started = std::thread::Builder::new()
        .name(format!("lifeboat-{what}"))
        .spawn(move || {
            if let Some((tx, f)) = theirs.lock().expect("job slot").take() {
                let _ = tx.send(f());
            }
        });
    if let Err(e) = started {
        if let Some((tx, _)) = slot.lock().expect("job slot").take() {
            let _ = tx.send(Err(Error::io("cannot start a thread for", what, e)));
        }
    }
    rx
}

/// Awaits a thread's result; a dropped sender means the engine panicked.
async fn finished<T>(what: &'static str, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
    rx.await
        .map_err(|_| Error::EnginePanicked { engine: what })?
}

/// Runs `f` on a new OS thread and awaits its result from any runtime.
async fn on_thread<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    finished(what, start_thread(what, f)).await
}

/// Releases a job's lock without letting a failed release replace the engine's result: a
/// backup that wrote its snapshot must not be reported as failed (and retried) because the
/// lock object's delete failed; the leftover object goes stale after its expiry.
fn released<M: crate::lock::LockMode, T>(
    lock: crate::lock::RepoLock<M>,
    r: Result<T>,
) -> Result<T> {
    if let Err(e) = lock.release() {
        tracing::warn!("could not remove the lock object after the run: {e}");
    }
    r
}

/// A repository opened for a service: cheap to clone, shareable across tasks.
#[derive(Clone)]
pub struct AsyncRepository {
    repo: Arc<Repository>,
    lock_options: LockOptions,
}

impl AsyncRepository {
    /// Opens the repository at `store` with a password or key-file bytes.
    pub async fn open(store: Store, secret: Vec<u8>) -> Result<AsyncRepository> {
        let repo = on_thread("open", move || {
            Repository::open(store, io_handle(), &secret)
        })
        .await?;
        Ok(AsyncRepository::from_repository(repo))
    }

    /// Creates a new repository at `store`.
    pub async fn init(store: Store, secret: Vec<u8>, opts: InitOptions) -> Result<AsyncRepository> {
        let repo = on_thread("init", move || {
            Repository::init(store, io_handle(), &secret, opts)
        })
        .await?;
        Ok(AsyncRepository::from_repository(repo))
    }

    fn from_repository(repo: Repository) -> AsyncRepository {
        AsyncRepository {
            repo: Arc::new(repo),
            lock_options: LockOptions::default(),
        }
    }

    /// How the jobs lock (expiry, how long to wait for a conflicting holder).
    pub fn with_lock_options(mut self, opts: LockOptions) -> AsyncRepository {
        self.lock_options = opts;
        self
    }

    /// The synchronous handle, for reads the facade does not wrap (run them on a thread).
    pub fn repository(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// Readable snapshots oldest first, and warnings about unreadable ones.
    pub async fn snapshots(&self) -> Result<(SnapshotList, Vec<String>)> {
        let repo = self.repo.clone();
        on_thread("snapshots", move || repo.list_snapshots()).await
    }

    /// Backs up under a shared lock. Cancelling indexes the packs already uploaded and writes
    /// no snapshot.
    pub fn backup(&self, mut opts: BackupOptions) -> Job<BackupResult> {
        let cancel = opts.cancel.clone();
        self.spawn("backup", cancel, move |repo, lo, progress, cancel| {
            opts.cancel = cancel.clone();
            let lock = repo.lock_shared_cancellable("backup", lo, cancel)?;
            let r = backup::run(repo, &lock, &opts, progress);
            released(lock, r)
        })
    }

    /// Restores `snapshot` (id, prefix or `latest`) under a shared lock.
    pub fn restore(&self, snapshot: String, mut opts: RestoreOptions) -> Job<RestoreSummary> {
        let cancel = opts.cancel.clone();
        self.spawn("restore", cancel, move |repo, lo, progress, cancel| {
            opts.cancel = cancel.clone();
            let lock = repo.lock_shared_cancellable("restore", lo, cancel)?;
            let (_, snap) = repo.find_snapshot(&snapshot)?;
            let r = restore::run(repo, &snap, &opts, progress);
            released(lock, r)
        })
    }

    /// Checks under a shared lock; with `record`, verified packs are recorded (continuous
    /// verification).
    pub fn check(&self, read_data: ReadData, record: bool) -> Job<CheckReport> {
        self.spawn(
            "check",
            CancelToken::new(),
            move |repo, lo, progress, cancel| {
                let lock = repo.lock_shared_cancellable("check", lo, cancel)?;
                let rec = record.then_some(&lock as &dyn WriteLock);
                let r = check::run_with(repo, read_data, rec, cancel, progress);
                released(lock, r)
            },
        )
    }

    /// Prunes under an exclusive lock (a dry run under a shared one).
    pub fn prune(&self, mut opts: PruneOptions) -> Job<PruneReport> {
        let cancel = opts.cancel.clone();
        self.spawn("prune", cancel, move |repo, lo, progress, cancel| {
            opts.cancel = cancel.clone();
            if opts.dry_run {
                let lock = repo.lock_shared_cancellable("prune", lo, cancel)?;
                let r = prune::dry_run(repo, &opts, progress);
                released(lock, r)
            } else {
                let lock = repo.lock_exclusive_cancellable("prune", lo, cancel)?;
                let r = prune::run(repo, &lock, &opts, progress);
                released(lock, r)
            }
        })
    }

    /// Copies snapshots (all when `snapshots` is empty) to the related repository `to`, under a
    /// shared lock on each.
    pub fn copy(&self, to: &AsyncRepository, snapshots: Vec<SnapshotId>) -> Job<CopyReport> {
        let dst = to.repo.clone();
        self.spawn(
            "copy",
            CancelToken::new(),
            move |repo, lo, progress, cancel| {
                let src_lock = repo.lock_shared_cancellable("copy (source)", lo, cancel)?;
                let dst_lock = dst.lock_shared_cancellable("copy", lo, cancel)?;
                let (all, _) = repo.list_snapshots()?;
                let selected = if snapshots.is_empty() {
                    all
                } else {
                    all.into_iter()
                        .filter(|(id, _)| snapshots.contains(id))
                        .collect()
                };
                let r = copy::run(repo, &dst, &dst_lock, &selected, cancel, progress);
                released(src_lock, released(dst_lock, r))
            },
        )
    }

    /// Applies a retention policy to every readable snapshot under a shared lock; with
    /// `dry_run` only plans.
    pub fn forget(
        &self,
        policy: Policy,
        group_by: GroupBy,
        tz: TimeZone,
        dry_run: bool,
    ) -> Job<ForgetOutcome> {
        self.spawn(
            "forget",
            CancelToken::new(),
            move |repo, lo, _progress, cancel| {
                let lock = repo.lock_shared_cancellable("forget", lo, cancel)?;
                let planned = forget::plan_policy(repo, &policy, group_by, &tz, &|_| true)?;
                let removal = if dry_run {
                    Removal::default()
                } else {
                    forget::remove_snapshots(
                        repo,
                        &lock,
                        &planned.doomed(),
                        cancel,
                        &mut |_, _| {},
                    )?
                };
                released(
                    lock,
                    Ok(ForgetOutcome {
                        plan: planned.plan,
                        removal,
                    }),
                )
            },
        )
    }

    fn spawn<T: Send + 'static>(
        &self,
        what: &'static str,
        cancel: CancelToken,
        body: impl FnOnce(&Repository, &LockOptions, &dyn Progress, &CancelToken) -> Result<T>
            + Send
            + 'static,
    ) -> Job<T> {
        let (state_tx, state_rx) = watch::channel(ProgressState::default());
        let repo = self.repo.clone();
        let lo = self.lock_options;
        let token = cancel.clone();
        let result = start_thread(what, move || {
            let progress = WatchProgress(state_tx);
            let r = body(&repo, &lo, &progress, &token);
            progress.0.send_modify(|s| s.finished = true);
            r
        });
        Job {
            what,
            cancel,
            progress: state_rx,
            result: Some(result),
            detached: false,
        }
    }
}

/// What a policy `forget` decided and removed.
#[derive(Debug)]
pub struct ForgetOutcome {
    /// Keep/remove per snapshot with reasons.
    pub plan: Plan,
    /// What was deleted (nothing on a dry run).
    pub removal: Removal,
}

/// Where a running job is, as the last value of a `watch` channel: cheap to update per chunk,
/// and a slow reader only ever sees the newest state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressState {
    /// Bytes the job knows it has to process so far (grows while a backup walks).
    pub total_bytes: u64,
    /// Bytes processed.
    pub done_bytes: u64,
    /// Warnings so far (unreadable files, damaged objects skipped).
    pub warnings: u64,
    /// The newest warning.
    pub last_warning: Option<String>,
    /// The engine returned (successfully or not).
    pub finished: bool,
}

struct WatchProgress(watch::Sender<ProgressState>);

impl Progress for WatchProgress {
    fn add_total(&self, bytes: u64) {
        self.0.send_modify(|s| s.total_bytes += bytes);
    }

    fn advance(&self, bytes: u64) {
        self.0.send_modify(|s| s.done_bytes += bytes);
    }

    fn warn(&self, message: &str) {
        self.0.send_modify(|s| {
            s.warnings += 1;
            s.last_warning = Some(message.to_owned());
        });
    }
}

/// A running engine. Dropping it cancels the run (use [`Job::detach`] to let it finish
/// unobserved); [`Job::wait`] returns its result.
pub struct Job<T> {
    what: &'static str,
    cancel: CancelToken,
    progress: watch::Receiver<ProgressState>,
    result: Option<oneshot::Receiver<Result<T>>>,
    detached: bool,
}

impl<T> Job<T> {
    /// Asks the engine to stop at its next safe point; [`Job::wait`] then returns
    /// [`Error::Cancelled`] (or the result, if it finished first).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The job's cancellation token (e.g. to cancel from another task).
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Progress updates: `borrow()` for the newest, `changed().await` to wait for the next.
    pub fn progress(&self) -> watch::Receiver<ProgressState> {
        self.progress.clone()
    }

    /// Progress as a stream of states, ending when the job finishes.
    pub fn progress_stream(&self) -> impl futures::Stream<Item = ProgressState> + Send + 'static {
        futures::stream::unfold(Some(self.progress.clone()), |rx| async move {
            let mut rx = rx?;
            rx.changed().await.ok()?;
            let state = rx.borrow_and_update().clone();
            let next = (!state.finished).then_some(rx);
            Some((state, next))
        })
    }

    /// Lets the run go on without anyone waiting for it.
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// Waits for the engine's result. Dropping this future before it completes (a timeout, a
    /// `select!` branch) cancels the job, as dropping the job does.
    pub async fn wait(mut self) -> Result<T> {
        let rx = self.result.take().expect("a job's result is taken once");
        let guard = CancelOnDrop(Some(self.cancel.clone()));
        let r = finished(self.what, rx).await;
        guard.disarm();
        r
    }
}

/// Cancels a token when dropped, unless disarmed first.
struct CancelOnDrop(Option<CancelToken>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.cancel();
        }
    }
}

impl<T> Drop for Job<T> {
    fn drop(&mut self) {
        if !self.detached && self.result.is_some() {
            self.cancel.cancel();
        }
    }
}
