//! A [`Backend`] wrapper that records how long each lease operation took, so lease-op
//! latency is measured inside the process that makes the calls, and that releases grants
//! whose caller stopped waiting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lifeboat_coord::{Backend, Error, FencingToken, Grant, LeaderInfo, NodeId, Result};
use tokio::task::JoinHandle;

/// Completed-call durations per operation name, in microseconds.
pub type Samples = BTreeMap<&'static str, Vec<u64>>;

/// Wraps a backend and times `try_acquire`, `renew`, `resign` and `current` calls that
/// complete (calls cancelled by a timeout are not recorded: their duration is unknown).
///
/// `try_acquire` runs in its own task: when the election's `op_timeout` drops the call (a
/// slow fsync, a slow store) and the grant arrives afterwards, nobody would ever renew or
/// release it. Server stores expire it after a lease, but the embedded store's flock stays
/// held by this live process for good, so nobody could lead again. Such an abandoned grant
/// is resigned as soon as it arrives.
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

/// Resigns the grant of a `try_acquire` whose caller stopped waiting for it.
struct ReleaseIfAbandoned {
    call: Option<JoinHandle<Result<Option<Grant>>>>,
    inner: Arc<dyn Backend>,
    namespace: String,
    node: NodeId,
}

impl Drop for ReleaseIfAbandoned {
    fn drop(&mut self) {
        let Some(call) = self.call.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.inner.clone();
        let namespace = std::mem::take(&mut self.namespace);
        let node = self.node.clone();
        runtime.spawn(async move {
            if let Ok(Ok(Some(grant))) = call.await {
                tracing::warn!(
                    token = %grant.token,
                    "try_acquire answered after its caller gave up; releasing the grant"
                );
                if let Err(e) = inner.resign(&namespace, &node, grant.token).await {
                    tracing::warn!("releasing abandoned grant {}: {e}", grant.token);
                }
            }
        });
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

    fn transferable_terms(&self) -> bool {
        self.inner.transferable_terms()
    }

    async fn try_acquire(
        &self,
        namespace: &str,
        node: &NodeId,
        lease: Duration,
    ) -> Result<Option<Grant>> {
        let t = Instant::now();
        let (inner, ns, id) = (self.inner.clone(), namespace.to_owned(), node.clone());
        let mut guard = ReleaseIfAbandoned {
            call: Some(tokio::spawn(async move {
                inner.try_acquire(&ns, &id, lease).await
            })),
            inner: self.inner.clone(),
            namespace: namespace.to_owned(),
            node: node.clone(),
        };
        let joined = guard.call.as_mut().expect("call just set").await;
        // Answered: the caller gets the grant, nothing to release.
        guard.call = None;
        self.record("try_acquire", t);
        match joined {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Unavailable {
                backend: self.inner.name(),
                op: "try_acquire",
                source: Box::new(e),
            }),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_coord::{MemoryStore, SystemClock};

    /// A store whose grants arrive late; `answered` fires when one has been made.
    struct Slow(MemoryStore, Arc<tokio::sync::Notify>);

    #[async_trait]
    impl Backend for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        async fn try_acquire(
            &self,
            ns: &str,
            node: &NodeId,
            lease: Duration,
        ) -> Result<Option<Grant>> {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let r = self.0.try_acquire(ns, node, lease).await;
            self.1.notify_one();
            r
        }
        async fn renew(
            &self,
            ns: &str,
            node: &NodeId,
            t: FencingToken,
            lease: Duration,
        ) -> Result<Duration> {
            self.0.renew(ns, node, t, lease).await
        }
        async fn resign(&self, ns: &str, node: &NodeId, t: FencingToken) -> Result<bool> {
            self.0.resign(ns, node, t).await
        }
        async fn current(&self, ns: &str) -> Result<Option<LeaderInfo>> {
            self.0.current(ns).await
        }
        async fn wait_for_change(&self, ns: &str, timeout: Duration) -> Result<()> {
            self.0.wait_for_change(ns, timeout).await
        }
    }

    #[tokio::test]
    async fn abandoned_grant_is_released() {
        let store = MemoryStore::new(Arc::new(SystemClock));
        let answered = Arc::new(tokio::sync::Notify::new());
        let timed = TimedBackend::new(Arc::new(Slow(store.clone(), answered.clone())));
        let a = NodeId::new("a");
        let lease = Duration::from_secs(30);
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            timed.try_acquire("ns", &a, lease),
        )
        .await;
        assert!(gave_up.is_err(), "the slow call should have timed out");
        answered.notified().await;
        // The late grant is taken and then resigned: another node gets the lease long
        // before the 30 s lease would have expired.
        let b = NodeId::new("b");
        let deadline = Instant::now() + Duration::from_secs(5);
        let grant = loop {
            if let Some(g) = store.try_acquire("ns", &b, lease).await.unwrap() {
                break g;
            }
            assert!(
                Instant::now() < deadline,
                "abandoned grant was never released"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(
            grant.token > FencingToken(1),
            "{grant:?}: the abandoned grant had token 1"
        );
        // A call that is waited for keeps its grant.
        let other = MemoryStore::new(Arc::new(SystemClock));
        let c = TimedBackend::new(Arc::new(Slow(other, Arc::default())));
        assert!(c.try_acquire("ns", &a, lease).await.unwrap().is_some());
    }
}
