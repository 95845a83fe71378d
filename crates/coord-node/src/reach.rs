//! Makes an unreachable coordination store visible. The election retries a store it cannot
//! reach quietly (that is its job); an operator still has to see it. Every store call that
//! fails for lack of an answer prints a `store_unreachable` event and a stderr line naming
//! the store, with the attempt number; the first answer afterwards prints `store_reachable`.
//! The node keeps retrying: a store that comes back later is used without a restart.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lifeboat_coord::{Backend, FencingToken, Grant, LeaderInfo, NodeId, Result};
use serde_json::json;

use crate::emit::Emitter;

/// Reports store reachability for one node; shared by the opening loop and the backend.
pub struct Reachability {
    store: String,
    node: String,
    emitter: Arc<Emitter>,
    failures: AtomicU64,
}

impl Reachability {
    /// Reports for `store` (a description with any password removed) as node `node`.
    pub fn new(store: String, node: String, emitter: Arc<Emitter>) -> Arc<Self> {
        Arc::new(Self {
            store,
            node,
            emitter,
            failures: AtomicU64::new(0),
        })
    }

    /// One failed attempt: event + stderr, each time.
    pub fn failed(&self, op: &str, error: &str) {
        let attempt = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
        eprintln!(
            "lifeboat-coord-node {}: cannot reach the coordination store {} ({op}, attempt \
             {attempt}): {error}; retrying",
            self.node, self.store
        );
        self.emitter.emit_or_log(
            "store_unreachable",
            json!({ "store": self.store, "op": op, "attempt": attempt, "error": error }),
        );
    }

    /// A store answer (any answer, even "no"): reports the recovery once after failures.
    pub fn answered(&self) {
        let failed = self.failures.swap(0, Ordering::SeqCst);
        if failed > 0 {
            eprintln!(
                "lifeboat-coord-node {}: the coordination store {} answers again after {failed} \
                 failed attempt(s)",
                self.node, self.store
            );
            self.emitter.emit_or_log(
                "store_reachable",
                json!({ "store": self.store, "failed_attempts": failed }),
            );
        }
    }
}

/// Reports a call its caller stopped waiting for after the election's `op_timeout`:
/// against a black-holed store no error ever comes back, only this. A call dropped sooner
/// (the node stopping) says nothing about the store.
struct Abandoned<'a> {
    reach: &'a Reachability,
    op: &'static str,
    started: Instant,
    op_timeout: Duration,
    done: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.done && self.started.elapsed() >= self.op_timeout {
            self.reach.failed(
                self.op,
                &format!(
                    "no answer within the operation timeout ({:?})",
                    self.op_timeout
                ),
            );
        }
    }
}

/// A [`Backend`] wrapper feeding every call's outcome to a [`Reachability`].
pub struct ReportingBackend {
    inner: Arc<dyn Backend>,
    reach: Arc<Reachability>,
    op_timeout: Duration,
}

impl ReportingBackend {
    /// Wraps `inner`; a call abandoned after `op_timeout` counts as a failed attempt.
    pub fn new(inner: Arc<dyn Backend>, reach: Arc<Reachability>, op_timeout: Duration) -> Self {
        Self {
            inner,
            reach,
            op_timeout,
        }
    }

    async fn call<T>(&self, op: &'static str, f: impl Future<Output = Result<T>>) -> Result<T> {
        let mut pending = Abandoned {
            reach: &self.reach,
            op,
            started: Instant::now(),
            op_timeout: self.op_timeout,
            done: false,
        };
        let r = f.await;
        pending.done = true;
        match &r {
            Err(e) if e.is_retryable() => self.reach.failed(op, &e.to_string()),
            _ => self.reach.answered(),
        }
        r
    }
}

#[async_trait]
impl Backend for ReportingBackend {
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
        self.call(
            "try_acquire",
            self.inner.try_acquire(namespace, node, lease),
        )
        .await
    }

    async fn renew(
        &self,
        namespace: &str,
        node: &NodeId,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Duration> {
        self.call("renew", self.inner.renew(namespace, node, token, lease))
            .await
    }

    async fn resign(&self, namespace: &str, node: &NodeId, token: FencingToken) -> Result<bool> {
        self.call("resign", self.inner.resign(namespace, node, token))
            .await
    }

    async fn current(&self, namespace: &str) -> Result<Option<LeaderInfo>> {
        self.call("current", self.inner.current(namespace)).await
    }

    async fn wait_for_change(&self, namespace: &str, timeout: Duration) -> Result<()> {
        // Waiting is not an attempt: only a failure says something about the store.
        let r = self.inner.wait_for_change(namespace, timeout).await;
        if let Err(e) = &r {
            if e.is_retryable() {
                self.reach.failed("wait_for_change", &e.to_string());
            }
        }
        r
    }
}
