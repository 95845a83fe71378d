//! `FailoverManager`: the public handle — start, subscribe, hold, trigger, stats — and the
//! background loop that checks health every interval and acts only while this instance
//! holds the managers' election.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifeboat_coord::{Backend, LeaderElection};
use lifeboat_types::NodeId;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{FailoverConfig, FailoverPolicy};
use crate::detector::Detector;
use crate::error::{Error, Result};
use crate::event::{FailoverEvent, SuppressReason};
use crate::health::Observation;
use crate::state::{DecisionStore, HoldOutcome, PersistedState};
use crate::stats::FailoverStats;

/// Bound of the event channel; a subscriber this far behind gets `Lagged`.
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;
/// Events kept for [`FailoverManager::history`].
pub const HISTORY_CAPACITY: usize = 4096;

/// What a completed failover reports to the caller of [`FailoverManager::trigger`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverOutcome {
    /// The decision's id.
    pub id: u64,
    /// The new primary.
    pub new_leader: NodeId,
    /// Its primary-role fencing token.
    pub token: lifeboat_types::FencingToken,
}

pub(crate) enum Command {
    Trigger {
        to: NodeId,
        reason: String,
        reply: oneshot::Sender<Result<FailoverOutcome>>,
    },
}

/// Mutable, non-persisted bookkeeping of the loop.
#[derive(Default)]
pub(crate) struct Runtime {
    pub detectors: HashMap<NodeId, Detector>,
    pub last_observation: HashMap<NodeId, Observation>,
    /// When the primary's current run of failed checks began.
    pub first_failure_at: Option<Instant>,
    pub leading_since: Option<Instant>,
    /// The last time the store showed the primary holding its lease (wall clock, Unix ms).
    pub last_seen_held_unix_ms: Option<u64>,
    pub last_suppress: Option<SuppressReason>,
    pub manual_alerted_for: Option<NodeId>,
}

pub(crate) struct Inner {
    pub config: FailoverConfig,
    pub election: LeaderElection,
    pub backend: Arc<dyn Backend>,
    pub primary_ns: String,
    pub state: std::result::Result<DecisionStore, String>,
    pub events: broadcast::Sender<FailoverEvent>,
    pub history: Mutex<VecDeque<FailoverEvent>>,
    pub stats: Mutex<FailoverStats>,
    pub runtime: Mutex<Runtime>,
}

impl Inner {
    pub fn emit(&self, event: FailoverEvent) {
        tracing::info!(?event, "failover event");
        {
            let mut h = self.history.lock().expect("history mutex poisoned");
            if h.len() == HISTORY_CAPACITY {
                h.pop_front();
            }
            h.push_back(event.clone());
        }
        let _ = self.events.send(event);
    }

    /// Emits a suppression once per distinct reason in a row.
    pub fn suppress(&self, reason: SuppressReason) {
        let mut rt = self.runtime.lock().expect("runtime mutex poisoned");
        if rt.last_suppress.as_ref() == Some(&reason) {
            return;
        }
        // Countdown reasons differ every tick; report a kind once until it changes.
        let same_kind = rt
            .last_suppress
            .as_ref()
            .is_some_and(|l| std::mem::discriminant(l) == std::mem::discriminant(&reason));
        rt.last_suppress = Some(reason.clone());
        drop(rt);
        if same_kind
            && matches!(
                reason,
                SuppressReason::StartupGrace { .. } | SuppressReason::Cooldown { .. }
            )
        {
            return;
        }
        tracing::warn!("not failing over: {reason}");
        self.stats.lock().expect("stats mutex poisoned").suppressed += 1;
        self.emit(FailoverEvent::FailoverSuppressed { reason });
    }

    pub fn store(&self) -> Result<&DecisionStore> {
        self.state.as_ref().map_err(|reason| Error::State {
            path: self.config.state_path.clone().unwrap_or_default(),
            reason: reason.clone(),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.election.leadership().is_some()
    }
}

/// Watches the managed nodes and moves the primary role when the primary is down — only
/// while this instance holds `election` (the managers' own election); others observe.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use std::{sync::Arc, time::Duration};
/// use lifeboat_coord::{LeaderConfig, LeaderElection};
/// use lifeboat_failover::*;
/// let election = LeaderElection::new(LeaderConfig::memory().namespace("pg-managers")
///     .node_id("manager-1")).await?;
/// let config = FailoverConfig::builder()
///     .health_check_interval(Duration::from_secs(1)).health_check_timeout(Duration::from_secs(1))
///     .unhealthy_threshold(3).healthy_threshold(2)
///     .policy(FailoverPolicy::Graceful { grace_period: Duration::from_secs(5) })
///     .node(NodeSpec::new("pg-a").health(Arc::new(HttpHealthChecker::new("http://10.0.0.1:8008/health"))))
///     .node(NodeSpec::new("pg-b").health(Arc::new(HttpHealthChecker::new("http://10.0.0.2:8008/health")))
///         .promote_hook(Hook::new("lifeboat-agent promote", Duration::from_secs(30))))
///     .state_path("/var/lib/lifeboat/failover.json")
///     .build()?;
/// let failover = FailoverManager::new(config, election).await;
/// let mut events = failover.subscribe();
/// # Ok(()) }
/// ```
pub struct FailoverManager {
    inner: Arc<Inner>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Drop for FailoverManager {
    fn drop(&mut self) {
        // Dropping the manager stops it at once, mid-step if need be: the persisted state
        // lets the next instance resume with the same token.
        self.task.abort();
    }
}

impl FailoverManager {
    /// Starts the manager: it campaigns through `election` (calling `start()` on it) and
    /// checks health every interval. It never fails: a state file it cannot read makes it
    /// refuse to act (reported as `FailoverSuppressed { StateUnavailable }`).
    pub async fn new(config: FailoverConfig, election: LeaderElection) -> Self {
        let primary_ns = config
            .primary_namespace
            .clone()
            .unwrap_or_else(|| format!("{}-primary", election.config().get_namespace()));
        let state = DecisionStore::open(config.state_path.as_deref()).map_err(|e| e.to_string());
        let (commands, rx) = mpsc::channel(16);
        let inner = Arc::new(Inner {
            backend: election.backend(),
            election: election.clone(),
            primary_ns,
            state,
            events: broadcast::channel(EVENT_CHANNEL_CAPACITY).0,
            history: Mutex::new(VecDeque::new()),
            stats: Mutex::new(FailoverStats::default()),
            runtime: Mutex::new(Runtime::default()),
            config,
        });
        if let Ok(store) = &inner.state {
            let s = store.snapshot();
            if s.primary.is_none() {
                if let Some(p) = inner.config.initial_primary.clone() {
                    let _ = store.update(|st| {
                        st.primary = Some(p);
                        Ok(())
                    });
                }
            }
        }
        election.start().await;
        let task = tokio::spawn(crate::tick::run(inner.clone(), rx));
        Self {
            inner,
            commands,
            task,
        }
    }

    /// Events from now on (health changes, failovers, suppressions).
    pub fn subscribe(&self) -> broadcast::Receiver<FailoverEvent> {
        self.inner.events.subscribe()
    }

    /// The last [`HISTORY_CAPACITY`] events, oldest first.
    pub fn history(&self) -> Vec<FailoverEvent> {
        self.inner
            .history
            .lock()
            .expect("history mutex poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// Counters and the last detection/failover durations.
    pub fn stats(&self) -> FailoverStats {
        self.inner
            .stats
            .lock()
            .expect("stats mutex poisoned")
            .clone()
    }

    /// Each node's detector verdict (`true` = healthy) and its last check, by node id.
    pub fn node_health(&self) -> Vec<(NodeId, bool, Option<Observation>)> {
        let rt = self.inner.runtime.lock().expect("runtime mutex poisoned");
        self.inner
            .config
            .nodes
            .iter()
            .map(|n| {
                let healthy = rt.detectors.get(&n.id).is_some_and(|d| d.is_healthy());
                (
                    n.id.clone(),
                    healthy,
                    rt.last_observation.get(&n.id).cloned(),
                )
            })
            .collect()
    }

    /// The persisted decision state (hold, in-progress failover, budget), if readable.
    pub fn state(&self) -> Result<PersistedState> {
        Ok(self.inner.store()?.snapshot())
    }

    /// The coordination namespace of the managed primary's role.
    pub fn primary_namespace(&self) -> &str {
        &self.inner.primary_ns
    }

    /// The policy in force: the configured one, or Manual after the budget was used up.
    pub fn effective_policy(&self) -> FailoverPolicy {
        match self.inner.store().map(|s| s.snapshot().downgraded) {
            Ok(false) => self.inner.config.policy,
            _ => FailoverPolicy::Manual,
        }
    }

    /// True while this instance holds the managers' election and may act.
    pub fn is_acting(&self) -> bool {
        self.inner.is_leader()
    }

    /// Sets the operator hold (manual-intervention flag): no automatic failover while set.
    /// Compare-and-set against the failover decision: see [`HoldOutcome`].
    pub fn hold(&self, by: &str, reason: &str) -> Result<HoldOutcome> {
        self.inner.store()?.set_hold(by, reason)
    }

    /// Releases the operator hold; returns whether one was set.
    pub fn release_hold(&self) -> Result<bool> {
        self.inner.store()?.release_hold()
    }

    /// Turns automatic failover back on after the budget fell back to Manual, and clears
    /// the window's count.
    pub fn resume_automatic(&self) -> Result<()> {
        self.inner.store()?.update(|s| {
            s.downgraded = false;
            s.auto_failovers_unix_ms.clear();
            Ok(())
        })
    }

    /// Lets a demoted old primary be a candidate again (after it was rebuilt as a standby);
    /// there is no automatic fail-back.
    pub fn readmit(&self, node: &NodeId) -> Result<bool> {
        self.inner.store()?.update(|s| {
            let before = s.excluded.len();
            s.excluded.retain(|n| n != node);
            Ok(s.excluded.len() != before)
        })
    }

    /// Operator-requested failover (or switchover) to `to`, fenced like an automatic one.
    /// Allowed under a hold (it is the operator acting) and under any policy; refused by a
    /// non-elected manager instance. Returns when the candidate was promoted.
    pub async fn trigger(&self, to: impl Into<NodeId>, reason: &str) -> Result<FailoverOutcome> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Trigger {
                to: to.into(),
                reason: reason.to_owned(),
                reply,
            })
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Waits until this instance leads the managers' election or `timeout` passes.
    pub async fn wait_until_acting(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.inner.is_leader() {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "becoming the acting failover manager",
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}
