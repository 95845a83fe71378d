//! A [`Backend`] wrapper that records how long each lease operation took, so lease-op
//! latency is measured inside the process that makes the calls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lifeboat_coord::{Backend, FencingToken, Grant, LeaderInfo, NodeId, Result};

/// Completed-call durations per operation name, in microseconds.
pub type Samples = BTreeMap<&'static str, Vec<u64>>;

/// Wraps a backend and times `try_acquire`, `renew`, `resign` and `current` calls that
/// complete (calls cancelled by a timeout are not recorded: their duration is unknown).
pub struct TimedBackend {
    inner: Arc<dyn Backend>,
    samples: Arc<Mutex<Samples>>,
}

impl TimedBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            samples: Arc::default(),
        }
    }

    /// A handle to drain the samples from another task.
    pub fn samples(&self) -> Arc<Mutex<Samples>> {
        self.samples.clone()
    }

    fn record(&self, op: &'static str, started: Instant) {
        let us = started.elapsed().as_micros() as u64;
        self.samples
            .lock()
            .expect("samples mutex poisoned")
            .entry(op)
            .or_default()
            .push(us);
    }
}

/// Takes all samples recorded so far, leaving the store empty.
pub fn drain(samples: &Mutex<Samples>) -> Samples {
    std::mem::take(&mut *samples.lock().expect("samples mutex poisoned"))
}

#[async_trait]
impl Backend for TimedBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn try_acquire(
        &self,
        namespace: &str,
        node: &NodeId,
        lease: Duration,
    ) -> Result<Option<Grant>> {
        let t = Instant::now();
        let r = self.inner.try_acquire(namespace, node, lease).await;
        self.record("try_acquire", t);
        r
    }

    async fn renew(
        &self,
        namespace: &str,
        node: &NodeId,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Duration> {
        let t = Instant::now();
        let r = self.inner.renew(namespace, node, token, lease).await;
        self.record("renew", t);
        r
    }

    async fn resign(&self, namespace: &str, node: &NodeId, token: FencingToken) -> Result<bool> {
        let t = Instant::now();
        let r = self.inner.resign(namespace, node, token).await;
        self.record("resign", t);
        r
    }

    async fn current(&self, namespace: &str) -> Result<Option<LeaderInfo>> {
        let t = Instant::now();
        let r = self.inner.current(namespace).await;
        self.record("current", t);
        r
    }

    async fn wait_for_change(&self, namespace: &str, timeout: Duration) -> Result<()> {
        self.inner.wait_for_change(namespace, timeout).await
    }
}
