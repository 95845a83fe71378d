//! The `Leadership` handle: one term, renewed in the background, lost at its local deadline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::event::{LeaderEvent, LostReason};
use lifeboat_types::Clock;
use lifeboat_types::{FencingToken, NodeId};

/// The timing a term runs with (copied from the validated config).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub lease: Duration,
    pub renew_interval: Duration,
    pub renew_deadline: Duration,
    pub safety_margin: Duration,
    pub op_timeout: Duration,
    pub retry_interval: Duration,
}

/// State shared by the handle's clones and the renew task.
pub(crate) struct Term {
    namespace: String,
    node_id: NodeId,
    token: FencingToken,
    backend: Arc<dyn Backend>,
    clock: Arc<dyn Clock>,
    timing: Timing,
    /// Local monotonic deadline (clock time): last successful renew *send* + lease − margin.
    deadline: Mutex<Duration>,
    /// `None` while valid; the reason once lost. Never goes back to `None`.
    lost: watch::Sender<Option<LostReason>>,
    events: broadcast::Sender<LeaderEvent>,
}

impl Term {
    fn deadline(&self) -> Duration {
        *self.deadline.lock().expect("deadline mutex poisoned")
    }

    /// Marks the term lost (first reason wins) and publishes `Lost` once.
    fn lose(&self, reason: LostReason) -> bool {
        let changed = self.lost.send_if_modified(|state| {
            if state.is_none() {
                *state = Some(reason);
                true
            } else {
                false
            }
        });
        if changed {
            tracing::info!(
                namespace = %self.namespace, node = %self.node_id, token = %self.token,
                "leadership lost: {reason}"
            );
            let _ = self.events.send(LeaderEvent::Lost {
                fencing_token: self.token,
                reason,
            });
        }
        changed
    }

    fn remaining(&self) -> Duration {
        if self.lost.borrow().is_some() {
            return Duration::ZERO;
        }
        self.deadline().saturating_sub(self.clock.boot())
    }
}

/// Aborts the renew task when the last handle clone is dropped.
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Proof of leadership for one term, renewed in the background.
///
/// Act as leader only while [`Leadership::is_valid`] is true, and pass
/// [`Leadership::fencing_token`] with every side effect so the resource can reject a stale
/// term. The handle becomes invalid at its *local* monotonic deadline (last renew send time
/// + lease − safety margin) even while a renew call hangs, when the store rejects a renewal,
///   when renewals keep failing for `renew_deadline`, or on resign. It never becomes valid
///   again: a new term needs a new acquisition and gets a new token. Clones share the term;
///   the renewals stop when the last clone is dropped (the lease then expires in the store).
#[derive(Clone)]
pub struct Leadership {
    term: Arc<Term>,
    _task: Arc<TaskGuard>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("namespace", &self.term.namespace)
            .field("node_id", &self.term.node_id)
            .field("token", &self.term.token)
            .field("lost", &*self.term.lost.borrow())
            .finish()
    }
}

impl Leadership {
    /// Starts a term granted at local time `send` (when the acquire request was sent).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        namespace: String,
        node_id: NodeId,
        token: FencingToken,
        granted_lease: Duration,
        send: Duration,
        backend: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
        timing: Timing,
        events: broadcast::Sender<LeaderEvent>,
    ) -> Self {
        let deadline = (send + granted_lease).saturating_sub(timing.safety_margin);
        let term = Arc::new(Term {
            namespace,
            node_id,
            token,
            backend,
            clock,
            timing,
            deadline: Mutex::new(deadline),
            lost: watch::channel(None).0,
            events,
        });
        let task = tokio::spawn(renew_loop(term.clone(), send));
        Self {
            term,
            _task: Arc::new(TaskGuard(task)),
        }
    }

    /// This term's fencing token: pass it with every write to shared state.
    pub fn fencing_token(&self) -> FencingToken {
        self.term.token
    }

    /// Alias of [`Self::fencing_token`] (the name DESIGN.md uses).
    pub fn token(&self) -> FencingToken {
        self.term.token
    }

    /// The node holding this term.
    pub fn node_id(&self) -> &NodeId {
        &self.term.node_id
    }

    /// The election namespace.
    pub fn namespace(&self) -> &str {
        &self.term.namespace
    }

    /// True while this node may act as leader: not lost and before the local deadline.
    pub fn is_valid(&self) -> bool {
        !self.remaining().is_zero()
    }

    /// Time left until the local deadline (zero once lost).
    pub fn remaining(&self) -> Duration {
        self.term.remaining()
    }

    /// Why the term ended, or `None` while it is valid (or has just passed its deadline
    /// without the renew task having noticed yet; check [`Self::is_valid`]).
    pub fn lost_reason(&self) -> Option<LostReason> {
        *self.term.lost.borrow()
    }

    /// Resolves when the term ends (at the latest at the local deadline), with the reason.
    pub async fn lost(&self) -> LostReason {
        let mut rx = self.term.lost.subscribe();
        loop {
            if let Some(reason) = *rx.borrow_and_update() {
                return reason;
            }
            let left = self.term.remaining();
            if left.is_zero() {
                self.term.lose(LostReason::LocalDeadline);
                continue;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(left) => {}
            }
        }
    }

    /// Renews now (in addition to the background renewals). Fails with `NotLeader` if the
    /// term is over.
    pub async fn renew(&self) -> Result<()> {
        let term = &self.term;
        let not_leader = || Error::NotLeader {
            node: term.node_id.clone(),
            token: term.token,
        };
        let budget = term.timing.op_timeout.min(term.remaining());
        if budget.is_zero() {
            return Err(not_leader());
        }
        let send = term.clock.boot();
        match renew_once(term, budget).await {
            Ok(lease) => {
                extend(term, send, lease);
                Ok(())
            }
            Err(e) if e.is_not_leader() => {
                term.lose(LostReason::Rejected);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Ends the term: stops acting at once, then releases the lease in the store (CAS on
    /// node + token) so a waiting campaigner takes over immediately. Releasing a term that
    /// is already over is a no-op.
    pub async fn resign(&self) -> Result<()> {
        let term = &self.term;
        term.lose(LostReason::Resigned);
        let budget = term.timing.op_timeout;
        let call = term
            .backend
            .resign(&term.namespace, &term.node_id, term.token);
        match tokio::time::timeout(budget, call).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(Error::Timeout {
                backend: term.backend.name(),
                op: "resign",
                after: budget,
            }),
        }
    }

    /// Runs `f` with the token only if at least `min_remaining` of the local lease is left,
    /// so a side effect does not start just before the deadline.
    pub async fn guard<T, F, Fut>(&self, min_remaining: Duration, f: F) -> Result<T>
    where
        F: FnOnce(FencingToken) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let left = self.remaining();
        if left.is_zero() || left < min_remaining {
            return Err(Error::NotLeader {
                node: self.term.node_id.clone(),
                token: self.term.token,
            });
        }
        Ok(f(self.term.token).await)
    }
}

async fn renew_once(term: &Term, budget: Duration) -> Result<Duration> {
    let call = term.backend.renew(
        &term.namespace,
        &term.node_id,
        term.token,
        term.timing.lease,
    );
    match tokio::time::timeout(budget, call).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            backend: term.backend.name(),
            op: "renew",
            after: budget,
        }),
    }
}

/// Moves the deadline forward after a renewal sent at `send` succeeded.
fn extend(term: &Term, send: Duration, lease: Duration) {
    let new = (send + lease).saturating_sub(term.timing.safety_margin);
    let mut deadline = term.deadline.lock().expect("deadline mutex poisoned");
    if new > *deadline {
        *deadline = new;
    }
}

/// Renews every `renew_interval`; loses the term on rejection, at the renew deadline or at
/// the local deadline — whichever comes first, even if a renew call never returns.
async fn renew_loop(term: Arc<Term>, mut last_ok_send: Duration) {
    let timing = term.timing;
    let mut lost_rx = term.lost.subscribe();
    let mut next = last_ok_send + timing.renew_interval;
    loop {
        // Lost elsewhere (the local-deadline watchdog, `lost()`, resign): still fall through
        // to the release below — returning here left an embedded flock held forever.
        if lost_rx.borrow_and_update().is_some() {
            break;
        }
        let now = term.clock.boot();
        let deadline = term.deadline();
        if now >= deadline {
            term.lose(LostReason::LocalDeadline);
            break;
        }
        if now < next {
            tokio::select! {
                _ = tokio::time::sleep(next.min(deadline) - now) => {}
                _ = lost_rx.changed() => {}
            }
            continue;
        }
        let send = term.clock.boot();
        // Never let a call outlive the lease: its answer would come too late to matter.
        let budget = timing.op_timeout.min(deadline.saturating_sub(send));
        let result = tokio::select! {
            r = renew_once(&term, budget) => r,
            _ = lost_rx.changed() => break,
        };
        match result {
            Ok(lease) => {
                if term.lost.borrow().is_some() {
                    break;
                }
                extend(&term, send, lease);
                last_ok_send = send;
                next = send + timing.renew_interval;
                let _ = term.events.send(LeaderEvent::Renewed {
                    fencing_token: term.token,
                });
                continue;
            }
            Err(e) if e.is_not_leader() => {
                term.lose(LostReason::Rejected);
                break;
            }
            Err(e) => {
                tracing::warn!(
                    namespace = %term.namespace, token = %term.token,
                    "renewing leadership failed: {e}; retrying"
                );
            }
        }
        let now = term.clock.boot();
        if now >= term.deadline() {
            term.lose(LostReason::LocalDeadline);
            break;
        }
        if now.saturating_sub(last_ok_send) >= timing.renew_deadline {
            term.lose(LostReason::RenewDeadline);
            break;
        }
        next = now + timing.retry_interval.min(timing.renew_interval);
    }
    // We stopped acting; release the lease if the store still has it, so others need not
    // wait for it to expire. CAS on our token: harmless if someone else holds it already.
    let call = term
        .backend
        .resign(&term.namespace, &term.node_id, term.token);
    let _ = tokio::time::timeout(timing.op_timeout, call).await;
}
