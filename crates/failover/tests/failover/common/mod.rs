//! Shared harness: an in-memory coordination store on the real clock, a primary "agent"
//! that holds and renews the primary-role lease, switchable health, hooks that append to a
//! log file, and event waiting with a deadline.
#![allow(dead_code)]

pub mod stores;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lifeboat_coord::{
    Backend, FencingToken, LeaderConfig, LeaderElection, MemoryStore, NodeId, SystemClock,
};
use lifeboat_failover::{
    BoxError, FailoverConfigBuilder, FailoverEvent, FailoverManager, FailoverPolicy, HealthChecker,
    Hook, LagReporter,
};
use tokio::sync::broadcast;

pub const PRIMARY_NS: &str = "pg-primary";
pub const WAIT: Duration = Duration::from_secs(15);

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A health check whose answer the test switches.
#[derive(Debug)]
pub struct Flag {
    healthy: AtomicBool,
    pub calls: AtomicUsize,
}

impl Flag {
    pub fn new(healthy: bool) -> Arc<Self> {
        Arc::new(Self {
            healthy: AtomicBool::new(healthy),
            calls: AtomicUsize::new(0),
        })
    }
    pub fn set(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

#[async_trait]
impl HealthChecker for Flag {
    fn describe(&self) -> String {
        "flag".into()
    }
    async fn check(&self) -> Result<(), BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("flag says down".into())
        }
    }
}

/// A health check answering a fixed script, then `after` forever; counts its calls.
#[derive(Debug)]
pub struct Script {
    script: Vec<bool>,
    after: bool,
    pub calls: AtomicUsize,
}

impl Script {
    pub fn new(script: Vec<bool>, after: bool) -> Arc<Self> {
        Arc::new(Self {
            script,
            after,
            calls: AtomicUsize::new(0),
        })
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl HealthChecker for Script {
    fn describe(&self) -> String {
        "script".into()
    }
    async fn check(&self) -> Result<(), BoxError> {
        let i = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.script.get(i).copied().unwrap_or(self.after) {
            Ok(())
        } else {
            Err(format!("script step {i} says down").into())
        }
    }
}

/// Lag read from a file (a hook can change it: a real side effect).
#[derive(Debug)]
pub struct FileLag(pub PathBuf);

#[async_trait]
impl LagReporter for FileLag {
    async fn lag_bytes(&self) -> Result<u64, BoxError> {
        let s = tokio::fs::read_to_string(&self.0).await?;
        Ok(s.trim().parse()?)
    }
}

/// The old primary's agent: holds the primary-role lease and renews it until stopped.
pub struct Agent {
    task: tokio::task::JoinHandle<()>,
    pub token: FencingToken,
    /// Wall-clock ns of the last successful renew's send time.
    pub last_renew_ns: Arc<AtomicU64>,
}

impl Agent {
    pub async fn start(store: &MemoryStore, node: &str, lease: Duration) -> Agent {
        Self::start_with_demote_file(store, node, lease, None).await
    }

    /// Like `start`, but the agent resigns its lease (and stops) once `demote_file` exists:
    /// a demote hook that creates the file is a real request to step down.
    pub async fn start_with_demote_file(
        store: &MemoryStore,
        node: &str,
        lease: Duration,
        demote_file: Option<PathBuf>,
    ) -> Agent {
        let node = NodeId::from(node);
        let grant = store
            .try_acquire(PRIMARY_NS, &node, lease)
            .await
            .unwrap()
            .expect("primary lease free");
        let last = Arc::new(AtomicU64::new(now_ns() as u64));
        let (store2, last2, token) = (store.clone(), last.clone(), grant.token);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 10).await;
                if demote_file.as_ref().is_some_and(|f| f.exists()) {
                    let _ = store2.resign(PRIMARY_NS, &node, token).await;
                    return;
                }
                let sent = now_ns() as u64;
                if store2.renew(PRIMARY_NS, &node, token, lease).await.is_ok() {
                    last2.store(sent, Ordering::SeqCst);
                }
            }
        });
        Agent {
            task,
            token,
            last_renew_ns: last,
        }
    }

    /// The agent dies: no more renewals.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub store: MemoryStore,
}

impl Cluster {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            store: MemoryStore::new(Arc::new(SystemClock)),
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("hooks.log")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("failover.json")
    }

    /// A hook appending `<what> $LIFEBOAT_NODE_ID $LIFEBOAT_FENCING_TOKEN <ns>` to the log.
    pub fn log_hook(&self, what: &str) -> Hook {
        Hook::new(
            format!(
                "echo \"{what} $LIFEBOAT_NODE_ID $LIFEBOAT_FENCING_TOKEN $(date +%s%N)\" >> '{}'",
                self.log().display()
            ),
            Duration::from_secs(10),
        )
    }

    pub fn log_lines(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    }

    pub async fn election(&self, node: &str, lease: Duration) -> LeaderElection {
        let renew = lease / 5;
        let cfg = LeaderConfig::with_backend(Arc::new(self.store.clone()))
            .namespace("managers")
            .node_id(node)
            .lease_duration(lease)
            .renew_interval(renew)
            .renew_deadline(lease / 2)
            .safety_margin(lease / 10)
            .op_timeout(renew)
            .retry_interval(Duration::from_millis(20));
        LeaderElection::new_without_env(cfg).await.unwrap()
    }

    /// Fast defaults: 20 ms checks, suspect after 3, clear after 2, primary lease 600 ms +
    /// 100 ms margin, no startup grace, no cooldown, a generous budget, state on disk.
    pub fn config(&self, policy: FailoverPolicy) -> FailoverConfigBuilder {
        lifeboat_failover::FailoverConfig::builder()
            .health_check_interval(Duration::from_millis(20))
            .health_check_timeout(Duration::from_millis(200))
            .unhealthy_threshold(3)
            .healthy_threshold(2)
            .policy(policy)
            .primary_namespace(PRIMARY_NS)
            .primary_lease(Duration::from_millis(600))
            .safety_margin(Duration::from_millis(100))
            .startup_grace(Duration::ZERO)
            .min_failover_interval(Duration::ZERO)
            .max_auto_failovers(100)
            .state_path(self.state())
    }

    /// A manager and its event stream (subscribed before its first tick), once elected.
    pub async fn manager(
        &self,
        config: FailoverConfigBuilder,
        node: &str,
    ) -> (FailoverManager, broadcast::Receiver<FailoverEvent>) {
        self.manager_with_lease(config, node, Duration::from_secs(2))
            .await
    }

    pub async fn manager_with_lease(
        &self,
        config: FailoverConfigBuilder,
        node: &str,
        lease: Duration,
    ) -> (FailoverManager, broadcast::Receiver<FailoverEvent>) {
        let election = self.election(node, lease).await;
        let m = FailoverManager::new(config.build_without_env().unwrap(), election).await;
        let rx = m.subscribe();
        m.wait_until_acting(WAIT).await.unwrap();
        (m, rx)
    }
}

/// Waits for the first event matching `pred`; panics with the history on timeout.
pub async fn wait_for(
    m: &FailoverManager,
    rx: &mut broadcast::Receiver<FailoverEvent>,
    what: &str,
    pred: impl Fn(&FailoverEvent) -> bool,
) -> FailoverEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if pred(&e) => return e,
            Ok(Ok(_)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event channel closed waiting for {what}: {e}"),
            Err(_) => panic!("timed out waiting for {what}; history: {:#?}", m.history()),
        }
    }
}

pub fn started(m: &FailoverManager) -> usize {
    m.history()
        .iter()
        .filter(|e| matches!(e, FailoverEvent::FailoverStarted { .. }))
        .count()
}

pub fn write(path: &Path, s: &str) {
    std::fs::write(path, s).unwrap();
}
