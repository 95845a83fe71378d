//! `LeaderElection`: campaigns for one namespace and hands out `Leadership` handles.

use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::backend::{Backend, LeaderInfo};
use crate::config::{BackendConfig, LeaderConfig};
use crate::error::{Error, Result};
use crate::event::{LeaderEvent, LostReason};
use crate::leadership::{Leadership, Timing};
use lifeboat_types::{Clock, SystemClock};

/// Bound of the event channel: a subscriber that falls this far behind misses events
/// (it gets `RecvError::Lagged`) rather than slowing the renew loop down.
pub const EVENT_CHANNEL_CAPACITY: usize = 256;

struct Inner {
    config: LeaderConfig,
    backend: Arc<dyn Backend>,
    clock: Arc<dyn Clock>,
    timing: Timing,
    events: broadcast::Sender<LeaderEvent>,
    current: watch::Sender<Option<Leadership>>,
    /// Serialises acquisition attempts of this node, so two callers never both win.
    acquire: tokio::sync::Mutex<()>,
    stopped: watch::Sender<bool>,
}

/// Stops the background campaign and drops our term when the last election clone goes.
struct Guard {
    inner: Arc<Inner>,
    campaign: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(task) = self
            .campaign
            .lock()
            .expect("campaign mutex poisoned")
            .take()
        {
            task.abort();
        }
        self.inner.stopped.send_replace(true);
        self.inner.current.send_replace(None);
    }
}

/// One node's participation in a namespace's election.
///
/// ```no_run
/// # async fn f() -> Result<(), lifeboat_coord::Error> {
/// use std::time::Duration;
/// use lifeboat_coord::{LeaderConfig, LeaderElection};
/// let config = LeaderConfig::embedded("/var/lib/lifeboat/coord")
///     .namespace("my-cluster").node_id("node-1")
///     .lease_duration(Duration::from_secs(10)).renew_interval(Duration::from_secs(2));
/// let election = LeaderElection::new(config).await?;
/// let guard = election.acquire_leadership().await?;   // waits until elected
/// // ... act as leader, passing guard.fencing_token() with every write ...
/// guard.resign().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LeaderElection {
    inner: Arc<Inner>,
    guard: Arc<Guard>,
}

impl LeaderElection {
    /// Applies env overrides, validates `config` and opens its backend (connecting to a
    /// server backend; unreachable → a retryable error).
    pub async fn new(config: LeaderConfig) -> Result<Self> {
        let config = config.apply_env()?;
        config.validate()?;
        let backend = open_backend(&config).await?;
        Ok(Self::from_parts(config, backend))
    }

    /// Like [`Self::new`] without reading environment variables.
    pub async fn new_without_env(config: LeaderConfig) -> Result<Self> {
        config.validate()?;
        let backend = open_backend(&config).await?;
        Ok(Self::from_parts(config, backend))
    }

    fn from_parts(config: LeaderConfig, backend: Arc<dyn Backend>) -> Self {
        let timing = Timing {
            lease: config.lease_duration,
            renew_interval: config.renew_interval,
            renew_deadline: config.renew_deadline,
            safety_margin: config.safety_margin,
            op_timeout: config.op_timeout,
            retry_interval: config.retry_interval,
        };
        let inner = Arc::new(Inner {
            config,
            backend,
            clock: Arc::new(SystemClock),
            timing,
            events: broadcast::channel(EVENT_CHANNEL_CAPACITY).0,
            current: watch::channel(None).0,
            acquire: tokio::sync::Mutex::new(()),
            stopped: watch::channel(false).0,
        });
        let guard = Arc::new(Guard {
            inner: inner.clone(),
            campaign: Mutex::new(None),
        });
        Self { inner, guard }
    }

    /// The validated config in use.
    pub fn config(&self) -> &LeaderConfig {
        &self.inner.config
    }

    /// The backend in use (for `current()`-style inspection in tests and tools).
    pub fn backend(&self) -> Arc<dyn Backend> {
        self.inner.backend.clone()
    }

    /// Campaigns in the background: acquires when possible, and campaigns again (for a new
    /// token) after a term is lost. After a resign it waits one `renew_interval` first so a
    /// waiting peer takes over. Calling it twice is harmless.
    pub async fn start(&self) {
        let mut slot = self.guard.campaign.lock().expect("campaign mutex poisoned");
        if slot.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        self.inner.stopped.send_replace(false);
        let inner = self.inner.clone();
        *slot = Some(tokio::spawn(async move {
            loop {
                let leadership = match acquire_leadership(&inner).await {
                    Ok(l) => l,
                    Err(Error::Stopped) => return,
                    Err(e) => {
                        tracing::warn!("campaign for {} failed: {e}", inner.config.namespace);
                        tokio::time::sleep(inner.timing.retry_interval).await;
                        continue;
                    }
                };
                let reason = leadership.lost().await;
                drop(leadership);
                if reason == LostReason::Resigned {
                    tokio::time::sleep(inner.timing.renew_interval).await;
                }
            }
        }));
    }

    /// Stops the background campaign and resigns the current term, if any.
    pub async fn stop(&self) -> Result<()> {
        if let Some(task) = self
            .guard
            .campaign
            .lock()
            .expect("campaign mutex poisoned")
            .take()
        {
            task.abort();
        }
        self.inner.stopped.send_replace(true);
        // An acquisition in flight (the aborted campaign only stops at its next await) holds
        // this lock until it has published its term: wait for it, so the term published last
        // is the one resigned here rather than one that outlives `stop`.
        let _serial = self.inner.acquire.lock().await;
        match self.inner.current.send_replace(None) {
            Some(l) => l.resign().await,
            None => Ok(()),
        }
    }

    /// True while this node holds a valid term.
    pub async fn is_leader(&self) -> bool {
        self.leadership().is_some()
    }

    /// This node's current valid term, if any.
    pub fn leadership(&self) -> Option<Leadership> {
        self.inner
            .current
            .borrow()
            .as_ref()
            .filter(|l| l.is_valid())
            .cloned()
    }

    /// One attempt: the current term if this node already leads, a new term if the lease
    /// is free, `None` if another node holds it.
    pub async fn try_acquire(&self) -> Result<Option<Leadership>> {
        try_acquire(&self.inner).await
    }

    /// Waits until this node leads and returns the term's handle. With [`Self::start`]
    /// running, it returns the background campaign's term.
    pub async fn acquire_leadership(&self) -> Result<Leadership> {
        acquire_leadership(&self.inner).await
    }

    /// Alias of [`Self::acquire_leadership`] (the name DESIGN.md uses).
    pub async fn campaign(&self) -> Result<Leadership> {
        acquire_leadership(&self.inner).await
    }

    /// Renews the current term now.
    pub async fn renew(&self) -> Result<()> {
        // Clone out of the watch first: its read guard must not be held across an await.
        let current = self.inner.current.borrow().clone();
        match current {
            Some(l) => l.renew().await,
            None => Err(Error::NotLeader {
                node: self.inner.config.node_id.clone(),
                token: crate::FencingToken(0),
            }),
        }
    }

    /// Resigns the current term, if any (a no-op otherwise).
    pub async fn resign(&self) -> Result<()> {
        let current = self.inner.current.send_replace(None);
        match current {
            Some(l) => l.resign().await,
            None => Ok(()),
        }
    }

    /// Who holds the lease according to the store (any node).
    pub async fn current(&self) -> Result<Option<LeaderInfo>> {
        let inner = &self.inner;
        let budget = inner.timing.op_timeout;
        tokio::time::timeout(budget, inner.backend.current(&inner.config.namespace))
            .await
            .map_err(|_| Error::Timeout {
                backend: inner.backend.name(),
                op: "current",
                after: budget,
            })?
    }

    /// This node's leadership events (acquired, renewed, lost).
    pub async fn subscribe(&self) -> broadcast::Receiver<LeaderEvent> {
        self.inner.events.subscribe()
    }

    /// A stream of store-side holder changes (any node): yields the holder whenever it
    /// differs from the last one yielded. May skip intermediate holders; tokens never
    /// decrease. Store errors are yielded and observation continues.
    pub fn observe(&self) -> impl Stream<Item = Result<Option<LeaderInfo>>> + Send + 'static {
        let inner = self.inner.clone();
        let state: (Option<Option<(crate::NodeId, crate::FencingToken)>>, bool) = (None, true);
        futures::stream::unfold(
            (inner, state),
            |(inner, (mut last, mut first))| async move {
                loop {
                    if !first {
                        let _ = inner
                            .backend
                            .wait_for_change(&inner.config.namespace, inner.timing.retry_interval)
                            .await;
                    }
                    first = false;
                    let budget = inner.timing.op_timeout;
                    let r = tokio::time::timeout(
                        budget,
                        inner.backend.current(&inner.config.namespace),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::Timeout {
                            backend: inner.backend.name(),
                            op: "current",
                            after: budget,
                        })
                    });
                    match r {
                        Ok(info) => {
                            let key = info.as_ref().map(|i| (i.node_id.clone(), i.token));
                            if last.as_ref() != Some(&key) {
                                last = Some(key);
                                return Some((Ok(info), (inner, (last, first))));
                            }
                        }
                        Err(e) => {
                            tokio::time::sleep(inner.timing.retry_interval).await;
                            return Some((Err(e), (inner, (last, first))));
                        }
                    }
                }
            },
        )
    }
}

async fn open_backend(config: &LeaderConfig) -> Result<Arc<dyn Backend>> {
    Ok(match &config.backend {
        BackendConfig::Memory(store) => Arc::new(store.clone()),
        BackendConfig::Embedded(dir) => {
            Arc::new(crate::backend::embedded::EmbeddedBackend::open(dir)?)
        }
        #[cfg(feature = "postgres")]
        BackendConfig::Postgres(url) => Arc::new(
            crate::backend::postgres::PostgresBackend::connect(url, config.op_timeout).await?,
        ),
        #[cfg(not(feature = "postgres"))]
        BackendConfig::Postgres(_) => {
            return Err(Error::Config(
                "lifeboat-coord was built without the `postgres` feature".into(),
            ))
        }
        #[cfg(feature = "etcd")]
        BackendConfig::Etcd(endpoints) => Arc::new(
            crate::backend::etcd::EtcdBackend::connect(endpoints, config.op_timeout).await?,
        ),
        #[cfg(not(feature = "etcd"))]
        BackendConfig::Etcd(_) => {
            return Err(Error::Config(
                "lifeboat-coord was built without the `etcd` feature".into(),
            ))
        }
        BackendConfig::Custom(backend) => backend.clone(),
    })
}

async fn try_acquire(inner: &Inner) -> Result<Option<Leadership>> {
    let _serial = inner.acquire.lock().await;
    if let Some(l) = inner.current.borrow().as_ref().filter(|l| l.is_valid()) {
        return Ok(Some(l.clone()));
    }
    let cfg = &inner.config;
    let budget = inner.timing.op_timeout;
    // The local deadline counts from the moment the request is sent: the store may grant
    // at any point after that, so this is the conservative start of the lease.
    let send = inner.clock.boot();
    // The call runs as its own task behind a guard: if we stop waiting (timeout, or this
    // future is dropped) and the store grants anyway, the guard resigns that grant instead of
    // leaving a lease — on the embedded store a flock — held by nobody.
    let backend = inner.backend.clone();
    let (ns, node, lease) = (
        cfg.namespace.clone(),
        cfg.node_id.clone(),
        cfg.lease_duration,
    );
    let mut call = ReleaseIfAbandoned {
        call: Some(tokio::spawn(async move {
            backend.try_acquire(&ns, &node, lease).await
        })),
        backend: inner.backend.clone(),
        namespace: cfg.namespace.clone(),
        node: cfg.node_id.clone(),
    };
    let handle = call.call.as_mut().expect("set above");
    let joined = tokio::time::timeout(budget, handle)
        .await
        .map_err(|_| Error::Timeout {
            backend: inner.backend.name(),
            op: "try_acquire",
            after: budget,
        })?;
    call.call = None; // answered in time: ours to use
    let grant = joined.map_err(|e| Error::Unavailable {
        backend: inner.backend.name(),
        op: "try_acquire",
        source: Box::new(e),
    })??;
    let Some(grant) = grant else {
        return Ok(None);
    };
    tracing::info!(namespace = %cfg.namespace, node = %cfg.node_id, token = %grant.token,
        "leadership acquired");
    let leadership = Leadership::start(
        cfg.namespace.clone(),
        cfg.node_id.clone(),
        grant.token,
        grant.lease,
        send,
        inner.backend.clone(),
        inner.clock.clone(),
        inner.timing,
        inner.events.clone(),
    );
    // Publish the handle before the event, so a subscriber reacting to `Acquired` finds it
    // in `leadership()`.
    inner.current.send_replace(Some(leadership.clone()));
    let _ = inner.events.send(LeaderEvent::Acquired {
        node_id: cfg.node_id.clone(),
        fencing_token: grant.token,
    });
    Ok(Some(leadership))
}

async fn acquire_leadership(inner: &Inner) -> Result<Leadership> {
    let mut stopped = inner.stopped.subscribe();
    stopped.mark_unchanged();
    loop {
        match try_acquire(inner).await {
            Ok(Some(l)) => return Ok(l),
            Ok(None) => {
                let wait = inner
                    .backend
                    .wait_for_change(&inner.config.namespace, inner.timing.retry_interval);
                let wait = tokio::time::timeout(inner.timing.retry_interval * 2, wait);
                tokio::select! {
                    r = wait => {
                        if let Ok(Err(e)) = r {
                            tracing::debug!("waiting for a leader change failed: {e}");
                            tokio::time::sleep(inner.timing.retry_interval).await;
                        }
                    }
                    _ = wait_for_current(inner) => {}
                }
            }
            Err(e) if e.is_retryable() => {
                tracing::debug!("acquire attempt failed: {e}; retrying");
                tokio::time::sleep(inner.timing.retry_interval).await;
            }
            Err(e) => return Err(e),
        }
        // A stop() (or dropping the election) during this call ends it.
        if stopped.has_changed().unwrap_or(true) && *stopped.borrow_and_update() {
            return Err(Error::Stopped);
        }
    }
}

/// Resolves when another caller of this election (e.g. the background campaign) has set a
/// valid term, so waiting callers return it at once.
async fn wait_for_current(inner: &Inner) {
    let mut rx = inner.current.subscribe();
    loop {
        if rx
            .borrow_and_update()
            .as_ref()
            .is_some_and(|l| l.is_valid())
        {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Resigns the grant of a `try_acquire` whose caller stopped waiting for it.
struct ReleaseIfAbandoned {
    call: Option<JoinHandle<Result<Option<crate::backend::Grant>>>>,
    backend: Arc<dyn Backend>,
    namespace: String,
    node: crate::NodeId,
}

impl Drop for ReleaseIfAbandoned {
    fn drop(&mut self) {
        let Some(call) = self.call.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            call.abort();
            return;
        };
        let backend = self.backend.clone();
        let namespace = std::mem::take(&mut self.namespace);
        let node = self.node.clone();
        runtime.spawn(async move {
            if let Ok(Ok(Some(grant))) = call.await {
                tracing::warn!(token = %grant.token,
                    "try_acquire answered after its caller gave up; releasing the grant");
                if let Err(e) = backend.resign(&namespace, &node, grant.token).await {
                    tracing::warn!("releasing abandoned grant {}: {e}", grant.token);
                }
            }
        });
    }
}
