//! `NodeSpec`: one managed node — its health check, lag source, priority and hooks.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use lifeboat_types::NodeId;

use crate::error::BoxError;
use crate::health::HealthChecker;
use crate::hook::Hook;

/// How far a standby is behind the primary, so the least-behind one is promoted.
#[async_trait]
pub trait LagReporter: Send + Sync + 'static {
    /// Replication lag in bytes (0 = caught up). An error makes the node ineligible.
    async fn lag_bytes(&self) -> Result<u64, BoxError>;
}

/// A lag that never changes, for nodes whose lag is known out of band (and tests).
#[derive(Debug)]
pub struct FixedLag(pub std::sync::atomic::AtomicU64);

impl FixedLag {
    /// A reporter that says `bytes` until [`FixedLag::set`] changes it.
    pub fn new(bytes: u64) -> Arc<Self> {
        Arc::new(Self(std::sync::atomic::AtomicU64::new(bytes)))
    }

    /// Changes the reported lag.
    pub fn set(&self, bytes: u64) {
        self.0.store(bytes, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl LagReporter for FixedLag {
    async fn lag_bytes(&self) -> Result<u64, BoxError> {
        Ok(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// One managed node: what the manager needs to watch it, rank it and move the primary role.
#[derive(Clone)]
pub struct NodeSpec {
    pub(crate) id: NodeId,
    pub(crate) priority: u32,
    pub(crate) health: Option<Arc<dyn HealthChecker>>,
    pub(crate) lag: Option<Arc<dyn LagReporter>>,
    pub(crate) demote: Option<Hook>,
    pub(crate) stonith: Option<Hook>,
    pub(crate) promote: Option<Hook>,
}

impl fmt::Debug for NodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSpec")
            .field("id", &self.id)
            .field("priority", &self.priority)
            .field("health", &self.health.as_ref().map(|h| h.describe()))
            .field("demote", &self.demote)
            .field("stonith", &self.stonith)
            .field("promote", &self.promote)
            .finish_non_exhaustive()
    }
}

impl NodeSpec {
    /// A node with priority 1, no checker (always unhealthy until one is set) and no hooks.
    pub fn new(id: impl Into<NodeId>) -> Self {
        Self {
            id: id.into(),
            priority: 1,
            health: None,
            lag: None,
            demote: None,
            stonith: None,
            promote: None,
        }
    }

    /// Higher is preferred among equally lagging candidates; 0 = never promote.
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// The check that decides this node's health.
    pub fn health(mut self, checker: Arc<dyn HealthChecker>) -> Self {
        self.health = Some(checker);
        self
    }

    /// Where this node's replication lag comes from (none = lag 0).
    pub fn lag_reporter(mut self, lag: Arc<dyn LagReporter>) -> Self {
        self.lag = Some(lag);
        self
    }

    /// Asks this node to stop acting as primary (exit 0 = it confirmed it stopped).
    pub fn demote_hook(mut self, hook: Hook) -> Self {
        self.demote = Some(hook);
        self
    }

    /// Powers this node off / cuts it off (exit 0 = it certainly cannot write any more).
    pub fn stonith_hook(mut self, hook: Hook) -> Self {
        self.stonith = Some(hook);
        self
    }

    /// Makes this node the primary; it receives `LIFEBOAT_FENCING_TOKEN`.
    pub fn promote_hook(mut self, hook: Hook) -> Self {
        self.promote = Some(hook);
        self
    }

    /// The node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }
}
