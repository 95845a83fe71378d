//! Repository locks that never strand a repository.
//!
//! Writers that only add (backup, copy) take *shared* locks; prune and `repair index`, which
//! delete, take an *exclusive* one. A lock is a sealed object `locks/<id>` that its holder
//! rewrites every `expiry / 6`.
//!
//! * **Expiry is judged by the store's clock only**: a lock is stale when its object's
//!   last-modified time is more than its expiry older than the acquirer's own, freshly written
//!   lock object. Client clock skew cannot break a lock.
//! * **A holder alive on this host is never stale**: same host name and boot id, and a process
//!   with the recorded pid *and start time* exists. A dead local holder is stale at once.
//! * **The holder fences itself**: every repository write (index, snapshot, deletion) first
//!   checks that the holder's deadline has not passed — last refresh *send* time + expiry −
//!   margin, on the boot-time clock, which keeps counting through SIGSTOP and suspend — and that
//!   nobody removed its lock. A holder paused past its expiry therefore stops before anyone
//!   else may consider its lock stale.
//!
//! See `docs/repository-format.md` §Locks for the object format and `docs/cli.md` for `unlock`.

use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use futures::stream::{self, StreamExt};
use jiff::Timestamp;
use lifeboat_store::Store;
use lifeboat_types::CancelToken;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::repository::Repository;

/// Default lock expiry: long enough that a refresh every 2.5 min survives slow stores, short
/// enough that a crashed remote holder frees the repository within a quarter hour.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// Shortest expiry accepted (tests use a few seconds).
pub const MIN_EXPIRY: Duration = Duration::from_secs(2);
/// Lock object format version.
pub const LOCK_VERSION: u32 = 1;
const AAD: &[u8] = b"lifeboat lock v1";
/// Conflicting locks younger than this may belong to an acquirer that is about to back off.
const FRESH: Duration = Duration::from_secs(10);
const FRESH_RETRIES: u32 = 3;

/// Whether other lock holders may work alongside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Adds objects only (backup, copy, check); many at once.
    Shared,
    /// Deletes objects (prune, repair); alone.
    Exclusive,
}

impl LockKind {
    fn conflicts_with(self, other: LockKind) -> bool {
        self == LockKind::Exclusive || other == LockKind::Exclusive
    }
}

/// The contents of a lock object: who holds it, for what, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Format version.
    pub version: u32,
    /// Shared or exclusive.
    pub kind: LockKind,
    /// The command holding it (e.g. "backup", "prune").
    pub operation: String,
    /// Holder's host name.
    pub host: String,
    /// Holder's kernel boot id: a pid recorded before a reboot is never alive.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Holder's process id.
    pub pid: u32,
    /// Holder's start time in clock ticks since boot: a reused pid is not the holder.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// Holder's user name.
    pub user: String,
    /// When the lock was first taken (holder's clock; informational only).
    pub created: Timestamp,
    /// Expiry the holder promised to refresh within, in milliseconds.
    pub expiry_ms: u64,
}

impl LockInfo {
    fn for_this_process(kind: LockKind, operation: &str, expiry: Duration) -> LockInfo {
        let pid = std::process::id();
        LockInfo {
            version: LOCK_VERSION,
            kind,
            operation: operation.to_owned(),
            host: crate::host_name(),
            boot_id: boot_id(),
            pid,
            pid_start: process_start(pid),
            user: crate::user_name(),
            created: Timestamp::now(),
            expiry_ms: expiry.as_millis() as u64,
        }
    }

    fn seal(&self, key: &MasterKey, object: &str) -> Vec<u8> {
        lifeboat_crypto::seal(
            key.aead(),
            &aad(object),
            &serde_json::to_vec(self).expect("lock info serializes"),
        )
    }

    fn open(key: &MasterKey, object: &str, stored: &[u8]) -> Option<LockInfo> {
        let plain = lifeboat_crypto::open(key.aead(), &aad(object), stored).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// Why this lock no longer protects anything, or `None` if its holder may still be working.
    fn stale_reason(&self, age: Duration) -> Option<String> {
        let expiry = Duration::from_millis(self.expiry_ms);
        if self.host == crate::host_name() && self.boot_id.is_some() && self.boot_id == boot_id() {
            if !process_alive(self.pid, self.pid_start) {
                return Some(format!("process {} on this host is gone", self.pid));
            }
            // A live process that has not refreshed for a whole expiry has stopped acting on
            // it (its own deadline is earlier): a lock object a long-running service failed
            // to delete must not block it forever.
            return (age > expiry).then(|| {
                format!(
                    "process {} on this host is alive but has not refreshed it for {} (expiry {})",
                    self.pid,
                    fmt_duration(age),
                    fmt_duration(expiry)
                )
            });
        }
        (age > expiry).then(|| {
            format!(
                "not refreshed for {} (expiry {})",
                fmt_duration(age),
                fmt_duration(expiry)
            )
        })
    }
}

fn aad(object: &str) -> Vec<u8> {
    let mut a = AAD.to_vec();
    a.extend_from_slice(object.as_bytes());
    a
}

/// A lock object found in the repository.
#[derive(Debug, Clone)]
pub struct FoundLock {
    /// Object name (`locks/<id>`).
    pub object: String,
    /// Its contents; `None` if it does not decrypt (damaged, or written with another key).
    pub info: Option<LockInfo>,
    /// Time since its last refresh, by the store's clock.
    pub age: Duration,
    /// Why it is stale, if it is.
    pub stale: Option<String>,
}

impl FoundLock {
    /// One line naming the holder, for "repository is locked" messages and `unlock`.
    pub fn describe(&self) -> String {
        match &self.info {
            Some(i) => format!(
                "{} lock by `{}` on host {} (pid {}, user {}), refreshed {} ago",
                match i.kind {
                    LockKind::Shared => "shared",
                    LockKind::Exclusive => "exclusive",
                },
                i.operation,
                i.host,
                i.pid,
                i.user,
                fmt_duration(self.age)
            ),
            None => format!(
                "unreadable lock {} written {} ago",
                self.object,
                fmt_duration(self.age)
            ),
        }
    }

    fn kind(&self) -> LockKind {
        self.info.as_ref().map_or(LockKind::Exclusive, |i| i.kind)
    }
}

/// How to lock.
#[derive(Debug, Clone, Copy)]
pub struct LockOptions {
    /// How long the lock stays valid without a refresh.
    pub expiry: Duration,
    /// Keep retrying this long while another process holds a conflicting lock.
    pub retry_for: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            expiry: DEFAULT_EXPIRY,
            retry_for: Duration::ZERO,
        }
    }
}

/// Marker for a shared lock: many holders, each only adding objects (backup, copy, forget).
#[derive(Debug)]
pub enum SharedMode {}
/// Marker for an exclusive lock: one holder that may delete data (prune, repair).
#[derive(Debug)]
pub enum ExclusiveMode {}

/// The two lock modes; sealed, so only [`SharedMode`] and [`ExclusiveMode`] exist.
pub trait LockMode: sealed::Sealed + Send + Sync + 'static {
    /// What the lock object records.
    const KIND: LockKind;
}
impl LockMode for SharedMode {
    const KIND: LockKind = LockKind::Shared;
}
impl LockMode for ExclusiveMode {
    const KIND: LockKind = LockKind::Exclusive;
}
mod sealed {
    pub trait Sealed {}
    impl Sealed for super::SharedMode {}
    impl Sealed for super::ExclusiveMode {}
}

/// A held repository lock whose type says its mode; refreshed in the background, removed on
/// drop. Engines that write take one ([`WriteLock`]), engines that delete take an
/// [`ExclusiveLock`], so a caller cannot run them unlocked or skip the lock-loss fence.
pub struct RepoLock<M: LockMode> {
    shared: Arc<LockShared>,
    refresher: Option<std::thread::JoinHandle<()>>,
    store: Store,
    rt: Handle,
    object: String,
    _mode: PhantomData<M>,
}

/// A shared lock: backup, copy, forget, restore and check run under one.
pub type SharedLock = RepoLock<SharedMode>;
/// An exclusive lock: prune and `repair index` run under one.
pub type ExclusiveLock = RepoLock<ExclusiveMode>;

impl<M: LockMode> std::fmt::Debug for RepoLock<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoLock")
            .field("kind", &M::KIND)
            .field("object", &self.object)
            .finish()
    }
}

/// Proof that a lock of either mode is held: every repository write passes its
/// [`WriteLock::fence`] first. Object-safe so engines can take `&dyn WriteLock`.
pub trait WriteLock: Send + Sync {
    /// Ok while the lock is held, its object exists and its lease has not run out, and the
    /// lock belongs to `repo`'s store.
    fn fence(&self, repo: &Repository) -> Result<()> {
        repo.block_on(self.lease().check_for(repo))
    }
    /// The lease the fence consults.
    fn lease(&self) -> &LockShared;
}

impl<M: LockMode> WriteLock for RepoLock<M> {
    fn lease(&self) -> &LockShared {
        &self.shared
    }
}

/// The part of a held lock that the repository's write paths consult.
pub struct LockShared {
    state: Mutex<LockState>,
    wake: Condvar,
    store: Store,
    object: String,
    /// The repository's config id: locations can coincide (every `memory://`, one bucket
    /// behind two endpoints), ids do not.
    repo_id: String,
}

impl std::fmt::Debug for LockShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockShared")
            .field("object", &self.object)
            .finish()
    }
}

struct LockState {
    /// Boot-clock time after which the holder must not act.
    deadline: Duration,
    lost: Option<String>,
    stop: bool,
}

impl LockShared {
    /// [`LockShared::check`], refusing a lock taken on another repository.
    pub async fn check_for(&self, repo: &Repository) -> Result<()> {
        if repo.config().id != self.repo_id {
            return Err(Error::LockMismatch {
                lock: format!("{} (repository {})", self.store.location(), self.repo_id),
                repository: format!(
                    "{} (repository {})",
                    repo.store().location(),
                    repo.config().id
                ),
            });
        }
        self.check().await
    }

    /// Ok while the holder may still act: its lease has not run out (local boot clock) and
    /// its lock object still exists (nobody broke it). Called before every write that could
    /// hurt another process: index and snapshot writes, deletions.
    pub async fn check(&self) -> Result<()> {
        self.check_deadline()?;
        match self.store.head(&self.object).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                let reason = "its lock object was removed (by an unlock, or by another \
                              process that judged it stale)"
                    .to_owned();
                self.state.lock().expect("lock state mutex").lost = Some(reason.clone());
                return Err(Error::LockLost { reason });
            }
            Err(e) => return Err(e.into()),
        }
        // The HEAD may have taken a while: the deadline again.
        self.check_deadline()
    }

    fn check_deadline(&self) -> Result<()> {
        let st = self.state.lock().expect("lock state mutex");
        if let Some(reason) = &st.lost {
            return Err(Error::LockLost {
                reason: reason.clone(),
            });
        }
        let now = boot_clock();
        if now >= st.deadline {
            return Err(Error::LockLost {
                reason: format!(
                    "its lease ran out {} ago (process paused, or the store unreachable for \
                     longer than the lock expiry)",
                    fmt_duration(now - st.deadline)
                ),
            });
        }
        Ok(())
    }
}

impl<M: LockMode> RepoLock<M> {
    /// Ok while the lock is held, its object exists and its lease has not run out.
    pub fn check(&self) -> Result<()> {
        self.rt.block_on(self.shared.check())
    }

    /// The lock object's name (`locks/<id>`).
    pub fn object(&self) -> &str {
        &self.object
    }

    /// Stops refreshing and removes the lock object.
    pub fn release(mut self) -> Result<()> {
        self.stop();
        self.rt.block_on(self.store.delete(&self.object))?;
        Ok(())
    }

    fn stop(&mut self) {
        {
            let mut st = self.shared.state.lock().expect("lock state mutex");
            st.stop = true;
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
    }
}

impl<M: LockMode> Drop for RepoLock<M> {
    fn drop(&mut self) {
        if self.refresher.is_some() {
            self.stop();
            let _ = self.rt.block_on(self.store.delete(&self.object));
        }
    }
}

/// Takes a lock of `kind` for `operation`, waiting up to `opts.retry_for` for conflicting
/// holders; conflicting stale locks are removed (and reported through `tracing`).
pub fn acquire<M: LockMode>(
    repo: &Repository,
    operation: &str,
    opts: &LockOptions,
) -> Result<RepoLock<M>> {
    acquire_cancellable(repo, operation, opts, &CancelToken::new())
}

/// [`acquire`] whose wait for conflicting holders stops with [`Error::Cancelled`] as soon as
/// `cancel` is set (a service shutting down must not wait out `retry_for`).
pub fn acquire_cancellable<M: LockMode>(
    repo: &Repository,
    operation: &str,
    opts: &LockOptions,
    cancel: &CancelToken,
) -> Result<RepoLock<M>> {
    let kind = M::KIND;
    if opts.expiry < MIN_EXPIRY {
        return Err(Error::InvalidInput(format!(
            "lock expiry {} is too short (minimum {})",
            fmt_duration(opts.expiry),
            fmt_duration(MIN_EXPIRY)
        )));
    }
    let started = boot_clock();
    let mut fresh_retries = 0;
    loop {
        let info = LockInfo::for_this_process(kind, operation, opts.expiry);
        let object = format!("locks/{}", hex::encode(rand::random::<[u8; 16]>()));
        let sent = boot_clock();
        repo.block_on(
            repo.store()
                .put_if_absent(&object, info.seal(repo.key(), &object).into()),
        )?;
        let survey = survey_locks(repo, Some(&object));
        let blockers = match survey {
            Ok(found) => {
                let mut live = Vec::new();
                for f in found {
                    if !kind.conflicts_with(f.kind()) {
                        continue;
                    }
                    match &f.stale {
                        Some(why) => {
                            tracing::warn!("removing stale {} ({why})", f.describe());
                            if let Err(e) = repo.block_on(repo.store().delete(&f.object)) {
                                // Leave no lock of ours behind when giving up.
                                let _ = repo.block_on(repo.store().delete(&object));
                                return Err(e.into());
                            }
                        }
                        None => live.push(f),
                    }
                }
                live
            }
            Err(e) => {
                let _ = repo.block_on(repo.store().delete(&object));
                return Err(e);
            }
        };
        if blockers.is_empty() {
            let margin = opts.expiry / 10;
            let shared = Arc::new(LockShared {
                state: Mutex::new(LockState {
                    deadline: sent + opts.expiry - margin,
                    lost: None,
                    stop: false,
                }),
                wake: Condvar::new(),
                store: repo.store().clone(),
                object: object.clone(),
                repo_id: repo.config().id.clone(),
            });
            let refresher = spawn_refresher(
                shared.clone(),
                repo.store().clone(),
                repo.runtime().clone(),
                repo.key().clone(),
                object.clone(),
                info,
                opts.expiry,
            );
            return Ok(RepoLock {
                shared,
                refresher: Some(refresher),
                store: repo.store().clone(),
                rt: repo.runtime().clone(),
                object,
                _mode: PhantomData,
            });
        }
        repo.block_on(repo.store().delete(&object))?;
        let waited = boot_clock().saturating_sub(started);
        let racing = blockers.iter().all(|b| b.age < FRESH) && fresh_retries < FRESH_RETRIES;
        if waited >= opts.retry_for && !racing {
            return Err(Error::Locked {
                holders: blockers
                    .iter()
                    .map(FoundLock::describe)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        if racing {
            fresh_retries += 1;
        }
        // Randomized back-off so two acquirers that saw each other do not collide again.
        let pause = Duration::from_millis(200 + rand::random::<u64>() % 800);
        let pause = pause
            .min(opts.retry_for.saturating_sub(waited))
            .max(pause / 2);
        if cancel.wait_timeout(pause) {
            return Err(Error::Cancelled);
        }
    }
}

/// Every lock in the repository, with staleness judged against the store's clock now.
///
/// Writes (and removes) a short-lived probe lock to learn the store's time.
pub fn list_locks(repo: &Repository) -> Result<Vec<FoundLock>> {
    let info = LockInfo::for_this_process(LockKind::Shared, "unlock", MIN_EXPIRY);
    let probe = format!("locks/{}", hex::encode(rand::random::<[u8; 16]>()));
    repo.block_on(
        repo.store()
            .put_if_absent(&probe, info.seal(repo.key(), &probe).into()),
    )?;
    let found = survey_locks(repo, Some(&probe));
    repo.block_on(repo.store().delete(&probe))?;
    found
}

/// What [`unlock`] found and removed.
#[derive(Debug, Clone)]
pub struct Unlocked {
    /// Every lock present, with staleness judged against the store's clock.
    pub found: Vec<FoundLock>,
    /// Objects removed (stale ones, or all with `all`).
    pub removed: Vec<String>,
}

/// Removes stale locks — or, with `all`, every lock (only when their holders are known to be
/// dead: a live holder notices at its next fence and stops). Reports what it found.
pub fn unlock(repo: &Repository, all: bool) -> Result<Unlocked> {
    let found = list_locks(repo)?;
    let mut removed = Vec::new();
    for f in &found {
        if all || f.stale.is_some() {
            match repo.block_on(repo.store().delete(&f.object)) {
                Ok(()) => {}
                // Released by its holder meanwhile: gone either way.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            removed.push(f.object.clone());
        }
    }
    Ok(Unlocked { found, removed })
}

/// Reads every lock but `own`, aging each against `own`'s last-modified time.
fn survey_locks(repo: &Repository, own: Option<&str>) -> Result<Vec<FoundLock>> {
    let metas = repo.block_on(repo.store().list("locks/"))?;
    let now = match own.and_then(|o| metas.iter().find(|m| m.key == o)) {
        Some(m) => m.last_modified,
        None => match own {
            Some(o) => repo.block_on(repo.store().head(o))?.last_modified,
            None => SystemTime::now(),
        },
    };
    let others: Vec<_> = metas
        .into_iter()
        .filter(|m| Some(m.key.as_str()) != own)
        .collect();
    let found: Vec<Option<FoundLock>> = repo.block_on(
        stream::iter(others)
            .map(|m| async move {
                let age = now.duration_since(m.last_modified).unwrap_or_default();
                match repo.store().get(&m.key).await {
                    Ok(bytes) => {
                        let info = LockInfo::open(repo.key(), &m.key, &bytes);
                        let stale = match &info {
                            Some(i) => i.stale_reason(age),
                            None => (age > DEFAULT_EXPIRY)
                                .then(|| format!("unreadable and {} old", fmt_duration(age))),
                        };
                        Some(FoundLock {
                            object: m.key,
                            info,
                            age,
                            stale,
                        })
                    }
                    // Released between list and get.
                    Err(e) if e.is_not_found() => None,
                    Err(_) => Some(FoundLock {
                        object: m.key,
                        info: None,
                        age,
                        stale: None,
                    }),
                }
            })
            .buffer_unordered(16)
            .collect(),
    );
    Ok(found.into_iter().flatten().collect())
}

fn spawn_refresher(
    shared: Arc<LockShared>,
    store: Store,
    rt: Handle,
    key: MasterKey,
    object: String,
    info: LockInfo,
    expiry: Duration,
) -> std::thread::JoinHandle<()> {
    let interval = expiry / 6;
    let margin = expiry / 10;
    std::thread::Builder::new()
        .name("lock-refresh".into())
        .spawn(move || loop {
            let deadline = {
                let st = shared.state.lock().expect("lock state mutex");
                let (st, _) = shared
                    .wake
                    .wait_timeout_while(st, interval, |s| !s.stop)
                    .expect("lock state mutex");
                if st.stop {
                    return;
                }
                st.deadline
            };
            let sent = boot_clock();
            if sent >= deadline {
                let mut st = shared.state.lock().expect("lock state mutex");
                st.lost = Some(format!(
                    "it could not be refreshed within its expiry of {}",
                    fmt_duration(expiry)
                ));
                return;
            }
            let bytes = info.seal(&key, &object);
            // The timeout must be created inside the runtime (it needs its timer).
            let attempt = rt.block_on(async {
                tokio::time::timeout(deadline - sent, async {
                    store.head(&object).await?;
                    store.put(&object, bytes.into()).await
                })
                .await
            });
            let mut st = shared.state.lock().expect("lock state mutex");
            match attempt {
                Ok(Ok(())) => st.deadline = sent + expiry - margin,
                Ok(Err(e)) if e.is_not_found() => {
                    st.lost = Some(
                        "its lock object was removed (by `lifeboat unlock`, or by another \
                         process that judged it stale)"
                            .into(),
                    );
                    return;
                }
                Ok(Err(e)) => tracing::warn!("refreshing lock {object}: {e}; will retry"),
                Err(_) => tracing::warn!("refreshing lock {object} timed out; will retry"),
            }
        })
        .expect("spawn lock refresher thread")
}

/// The boot-time clock every lock deadline uses: the one shared by coordination's leases.
fn boot_clock() -> Duration {
    lifeboat_types::clock::boot_time()
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields resume after the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn process_alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => match start {
            Some(s) => process_start(pid).is_none_or(|now| now == s),
            None => true,
        },
        Err(_) => false,
    }
}

/// "3m12s" style durations for messages.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(host: &str, pid: u32) -> LockInfo {
        let mut i = LockInfo::for_this_process(LockKind::Shared, "test", Duration::from_secs(60));
        i.host = host.into();
        i.pid = pid;
        i
    }

    #[test]
    fn local_holder_is_stale_when_its_process_is_gone_or_it_stopped_refreshing() {
        // info() sets a 60 s expiry. A live local holder within it is never stale...
        let me = info(&crate::host_name(), std::process::id());
        assert_eq!(me.stale_reason(Duration::from_secs(59)), None);
        // ...but one that has not refreshed for a whole expiry has stopped acting on it (its
        // own deadline passed): the object a service failed to delete must not block forever.
        let why = me.stale_reason(Duration::from_secs(86_400)).expect("stale");
        assert!(why.contains("alive but has not refreshed"), "{why}");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut gone = info(&crate::host_name(), pid);
        gone.pid_start = Some(1);
        assert!(gone.stale_reason(Duration::ZERO).is_some());
        // Same pid, different start time: a reused pid is not the holder.
        let mut reused = info(&crate::host_name(), std::process::id());
        reused.pid_start = reused.pid_start.map(|s| s + 1);
        assert!(reused.stale_reason(Duration::ZERO).is_some());
    }

    #[test]
    fn remote_holder_is_stale_only_after_its_expiry_by_store_time() {
        let remote = info("some-other-host", 1);
        assert_eq!(remote.stale_reason(Duration::from_secs(59)), None);
        assert!(remote.stale_reason(Duration::from_secs(61)).is_some());
        let mut old_boot = info(&crate::host_name(), std::process::id());
        old_boot.boot_id = Some("another-boot".into());
        assert!(old_boot.stale_reason(Duration::from_secs(61)).is_some());
    }

    #[test]
    fn shared_locks_coexist_exclusive_ones_do_not() {
        use LockKind::*;
        assert!(!Shared.conflicts_with(Shared));
        assert!(Shared.conflicts_with(Exclusive));
        assert!(Exclusive.conflicts_with(Shared));
        assert!(Exclusive.conflicts_with(Exclusive));
    }

    #[test]
    fn lock_objects_are_bound_to_their_name() {
        let key = MasterKey::generate();
        let i = info("h", 7);
        let sealed = i.seal(&key, "locks/aa");
        assert_eq!(LockInfo::open(&key, "locks/aa", &sealed), Some(i));
        assert_eq!(LockInfo::open(&key, "locks/bb", &sealed), None);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(59)), "59s");
        assert_eq!(fmt_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(fmt_duration(Duration::from_secs(7380)), "2h03m");
    }
}
