//! Running one committed failover decision: new token → demote / STONITH / wait out the
//! lease → (Graceful) catch-up → promote. Each step is persisted before the next starts, so a
//! restarted manager resumes with the same token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lifeboat_types::{FencingToken, NodeId};
use tokio::time::Instant;

use crate::config::FailoverPolicy;
use crate::error::{Error, Result};
use crate::event::{FailoverEvent, Step};
use crate::hook::{self, Hook, HookEnv};
use crate::manager::{FailoverOutcome, Inner};
use crate::node::NodeSpec;
use crate::state::{unix_ms, Decision, FinishedDecision, StepRecord};

/// How a failover run ended early.
enum Abandon {
    /// This instance lost the managers' election: stop acting, leave the decision for the
    /// next elected instance to resume.
    Paused,
    /// The failover cannot complete; it is recorded as failed.
    Failed(String),
    /// A transient store error: keep the decision (and its token) and retry next tick.
    Retry(String),
}

impl From<Error> for Abandon {
    fn from(e: Error) -> Self {
        Abandon::Failed(e.to_string())
    }
}

type Step_<T> = std::result::Result<T, Abandon>;

/// The task renewing the new term until promote; aborted when the run ends *or is dropped*
/// (a manager killed mid-failover must not keep the term alive from beyond the grave).
struct KeepAlive(Option<tokio::task::JoinHandle<()>>);

impl KeepAlive {
    fn stop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) async fn run(
    inner: &Arc<Inner>,
    mut d: Decision,
    resumed: bool,
) -> Result<FailoverOutcome> {
    if resumed {
        tracing::info!(id = d.id, to = %d.to, token = ?d.token, "resuming failover");
    } else {
        inner.stats.lock().expect("stats mutex poisoned").total += 1;
        inner.emit(FailoverEvent::FailoverStarted {
            id: d.id,
            from: d.from.clone(),
            to: d.to.clone(),
        });
    }
    let mut keepalive = KeepAlive(None);
    let result = steps(inner, &mut d, resumed, &mut keepalive).await;
    keepalive.stop();
    release_term(inner, &d, &result).await;
    match result {
        Ok(token) => {
            let (to, from) = (d.to.clone(), d.from.clone());
            let store = inner.store()?;
            let finished = FinishedDecision {
                decision: d.clone(),
                succeeded: true,
                failure: None,
                finished_at_unix_ms: unix_ms(SystemTime::now()),
            };
            store.update(|s| {
                s.last_decision = Some(finished);
                s.primary = Some(to.clone());
                s.primary_token = Some(token);
                s.in_progress = None;
                if let Some(f) = from.filter(|f| f != &to) {
                    if !s.excluded.contains(&f) {
                        s.excluded.push(f);
                    }
                }
                s.excluded.retain(|n| n != &to);
                Ok(())
            })?;
            {
                let mut rt = inner.runtime.lock().expect("runtime mutex poisoned");
                // We renewed the new term until now: the next failover waits from here.
                rt.last_seen_held_unix_ms = Some(unix_ms(SystemTime::now()));
                rt.first_failure_at = None;
                rt.last_suppress = None;
                rt.manual_alerted_for = None;
            }
            {
                let mut st = inner.stats.lock().expect("stats mutex poisoned");
                st.successful += 1;
                st.last_failover_at = Some(SystemTime::now());
                st.last_failover_duration = Some(Duration::from_millis(
                    unix_ms(SystemTime::now()).saturating_sub(d.started_at_unix_ms),
                ));
            }
            inner.emit(FailoverEvent::FailoverCompleted {
                new_leader: to.clone(),
                token,
            });
            Ok(FailoverOutcome {
                id: d.id,
                new_leader: to,
                token,
            })
        }
        Err(Abandon::Retry(why)) => {
            tracing::warn!(
                id = d.id,
                "failover paused, retried on the next tick: {why}"
            );
            Err(Error::Failed(format!("paused, will be retried: {why}")))
        }
        Err(Abandon::Paused) => {
            tracing::warn!(
                id = d.id,
                "lost the managers' election mid-failover; the next leader resumes it"
            );
            Err(Error::NotLeader)
        }
        Err(Abandon::Failed(reason)) => {
            let reason = format!("failover {} to {}: {reason}", d.id, d.to);
            if let Ok(store) = inner.store() {
                let finished = FinishedDecision {
                    decision: d.clone(),
                    succeeded: false,
                    failure: Some(reason.clone()),
                    finished_at_unix_ms: unix_ms(SystemTime::now()),
                };
                let _ = store.update(|s| {
                    s.in_progress = None;
                    s.last_decision = Some(finished);
                    if resumed && d.automatic {
                        // A resume that could not complete moved nothing: it must not use
                        // the budget, or the fresh decision that has to follow would be
                        // downgraded to Manual and the cluster left without a primary.
                        refund(&mut s.auto_failovers_unix_ms, d.started_at_unix_ms);
                    }
                    Ok(())
                });
            }
            inner.stats.lock().expect("stats mutex poisoned").failed += 1;
            inner.emit(FailoverEvent::FailoverFailed {
                reason: reason.clone(),
            });
            Err(Error::Failed(reason))
        }
    }
}

/// Removes one budget entry of the decision started at `started_at_unix_ms`.
fn refund(budget: &mut Vec<u64>, started_at_unix_ms: u64) {
    if let Some(i) = budget.iter().position(|t| *t == started_at_unix_ms) {
        budget.remove(i);
    }
}

/// Gives up the primary-role term this run took, where keeping it would block the next
/// failover (see docs/failover.md, "Who owns the new term"):
///
/// * completed, on a store whose terms cannot be handed over (embedded: the term is this
///   process's file lock, which the promoted node's agent can never renew): resign it, or it
///   would look like a live primary and block every later failover for as long as this
///   manager runs. The promoted node keeps writing with its token; the next term's token is
///   still larger (the counter is durable);
/// * failed: the candidate was not promoted, so the term fences nothing useful; resign it so
///   the next decision can take a new one at once (every backend);
/// * paused on a non-transferable store: the next elected manager (another process) cannot
///   renew or replace our lock, so release it;
/// * otherwise (transferable store, completed or paused, or a transient retry) keep it: the
///   agent adopts it by renewing, the next leader resumes it, or it simply expires.
async fn release_term(inner: &Inner, d: &Decision, result: &Step_<FencingToken>) {
    let Some(token) = d.token else { return };
    let transferable = inner.backend.transferable_terms();
    let why = match result {
        Ok(_) if !transferable => {
            "the promoted node owns it from here; this store cannot hand a term to another process"
        }
        Err(Abandon::Failed(_)) => "the failover failed",
        Err(Abandon::Paused) if !transferable => {
            "the next elected manager cannot renew a term held by this process"
        }
        _ => return,
    };
    let budget = inner.election.config().get_op_timeout();
    let call = inner.backend.resign(&inner.primary_ns, &d.to, token);
    match tokio::time::timeout(budget, call).await {
        Ok(Ok(released)) => {
            tracing::info!(id = d.id, %token, released, "released the primary-role term: {why}")
        }
        Ok(Err(e)) => tracing::warn!(id = d.id, %token, "releasing the primary-role term: {e}"),
        Err(_) => tracing::warn!(
            id = d.id,
            %token,
            "releasing the primary-role term: no answer within {budget:?}"
        ),
    }
}

fn spec<'a>(inner: &'a Inner, node: &NodeId) -> Option<&'a NodeSpec> {
    inner.config.nodes.iter().find(|n| &n.id == node)
}

fn ensure_leading(inner: &Inner) -> Step_<()> {
    if inner.is_leader() {
        Ok(())
    } else {
        Err(Abandon::Paused)
    }
}

/// Appends a step, persists it, then announces it.
fn record(inner: &Inner, d: &mut Decision, step: Step, detail: String) -> Step_<()> {
    tracing::info!(id = d.id, ?step, %detail, "failover step");
    d.steps.push(StepRecord {
        step: step.clone(),
        at_unix_ms: unix_ms(SystemTime::now()),
        detail,
    });
    let snapshot = d.clone();
    inner.store()?.update(|s| {
        s.in_progress = Some(snapshot);
        Ok(())
    })?;
    inner.emit(FailoverEvent::FailoverStep {
        id: d.id,
        step,
        token: d.token,
    });
    Ok(())
}

fn env_for(inner: &Inner, d: &Decision, node: &NodeId, token: FencingToken) -> HookEnv {
    HookEnv {
        node: node.clone(),
        token,
        old_primary: d.from.clone(),
        old_token: d.from_token,
        new_primary: d.to.clone(),
        namespace: inner.primary_ns.clone(),
    }
}

async fn store_call<T>(
    inner: &Inner,
    what: &'static str,
    f: impl std::future::Future<Output = lifeboat_coord::Result<T>>,
) -> Step_<T> {
    let budget = inner.election.config().get_op_timeout();
    match tokio::time::timeout(budget, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Abandon::Failed(format!("coordination store {what}: {e}"))),
        Err(_) => Err(Abandon::Failed(format!(
            "coordination store {what}: no answer within {budget:?}"
        ))),
    }
}

async fn steps(
    inner: &Arc<Inner>,
    d: &mut Decision,
    resumed: bool,
    keepalive: &mut KeepAlive,
) -> Step_<FencingToken> {
    ensure_leading(inner)?;
    let lease = inner.config.primary_lease;
    let token = take_token(inner, d).await?;
    if resumed {
        record(inner, d, Step::Resumed, format!("token {token}"))?;
    }
    keepalive.0 = Some(spawn_keepalive(inner, d.to.clone(), token, lease));
    if d.has(&Step::Promoted) {
        return Ok(token);
    }
    let old = d.from.as_ref().and_then(|f| spec(inner, f)).cloned();
    let grace_deadline = match d.policy {
        FailoverPolicy::Graceful { grace_period } => Some(
            SystemTime::UNIX_EPOCH + Duration::from_millis(d.started_at_unix_ms) + grace_period,
        ),
        _ => None,
    };
    let fenced = |d: &Decision| {
        d.has(&Step::Demoted) || d.has(&Step::Stonithed) || d.has(&Step::WaitedOutLease)
    };
    if !fenced(d) {
        ensure_leading(inner)?;
        if let Some(old) = old.as_ref().filter(|o| o.id != d.to) {
            if let Some(h) = old.demote.as_ref().filter(|_| !d.has(&Step::DemoteFailed)) {
                // Graceful: the controlled hand-over gets at most the rest of the grace period.
                let bounded = match grace_deadline {
                    Some(g) => Hook::new(
                        h.command.clone(),
                        h.timeout
                            .min(g.duration_since(SystemTime::now()).unwrap_or_default()),
                    ),
                    None => h.clone(),
                };
                let env = env_for(inner, d, &old.id, token);
                match hook::run(&bounded, "demote", &env).await {
                    Ok(()) => record(inner, d, Step::Demoted, format!("{} demoted", old.id))?,
                    Err(e) => record(inner, d, Step::DemoteFailed, e.to_string())?,
                }
            }
            if !fenced(d) {
                if let Some(h) = &old.stonith {
                    ensure_leading(inner)?;
                    let env = env_for(inner, d, &old.id, token);
                    match hook::run(h, "stonith", &env).await {
                        Ok(()) => record(inner, d, Step::Stonithed, format!("{} is off", old.id))?,
                        Err(e) => record(inner, d, Step::StonithFailed, e.to_string())?,
                    }
                }
            }
        }
        if !fenced(d) {
            wait_out_lease(inner, d).await?;
        }
    }
    if let (Some(g), true) = (grace_deadline, d.has(&Step::Demoted)) {
        if !d.has(&Step::CaughtUp) && !d.has(&Step::CatchUpTimedOut) {
            catch_up(inner, d, g).await?;
        }
    }
    ensure_leading(inner)?;
    // The new term must still be ours right before promoting: a renew is the guard.
    let ns = inner.primary_ns.clone();
    store_call(
        inner,
        "renew before promote",
        inner.backend.renew(&ns, &d.to, token, lease),
    )
    .await?;
    if let Some(h) = spec(inner, &d.to).and_then(|s| s.promote.clone()) {
        let env = env_for(inner, d, &d.to, token);
        hook::run(&h, "promote", &env).await?;
    }
    record(
        inner,
        d,
        Step::Promoted,
        format!("{} promoted with token {token}", d.to),
    )?;
    Ok(token)
}

/// The new primary-role term for the candidate: its token is larger than every earlier
/// one, so the old primary's writes are rejected by every token-checking resource.
async fn take_token(inner: &Inner, d: &mut Decision) -> Step_<FencingToken> {
    let ns = inner.primary_ns.clone();
    let lease = inner.config.primary_lease;
    if let Some(t) = d.token {
        // Resuming: the same token, never a new one. It must still be current.
        let budget = inner.election.config().get_op_timeout();
        let renew = tokio::time::timeout(budget, inner.backend.renew(&ns, &d.to, t, lease));
        return match renew.await {
            Ok(Ok(_)) => Ok(t),
            // The store cannot be asked right now: keep the decision and its token, retry
            // on the next tick.
            Err(_) => Err(Abandon::Retry(format!(
                "renewing term {t}: no answer within {budget:?}"
            ))),
            Ok(Err(e)) if e.is_retryable() => {
                Err(Abandon::Retry(format!("renewing term {t}: {e}")))
            }
            Ok(Err(e)) => {
                let holder = inner.backend.current(&ns).await.ok().flatten();
                Err(Abandon::Failed(format!(
                    "its term {t} cannot be renewed any more ({e}; the store now shows {holder:?}): \
                     it expired or was superseded while no manager ran; a new failover will be \
                     decided afresh"
                )))
            }
        };
    }
    // A grant may have happened just before a crash, unrecorded: adopt it.
    if let Some(h) = store_call(inner, "current", inner.backend.current(&ns)).await? {
        if h.node_id == d.to {
            store_call(
                inner,
                "renew",
                inner.backend.renew(&ns, &d.to, h.token, lease),
            )
            .await?;
            d.token = Some(h.token);
            record(
                inner,
                d,
                Step::TokenTaken,
                format!("adopted term {}", h.token),
            )?;
            return Ok(h.token);
        }
    }
    let waited = Instant::now();
    let mut deadline = waited + lease + inner.config.safety_margin;
    let mut asked = false;
    loop {
        ensure_leading(inner)?;
        let grant = store_call(
            inner,
            "try_acquire",
            inner.backend.try_acquire(&ns, &d.to, lease),
        )
        .await?;
        if let Some(g) = grant {
            if let Some(old) = d.from_token {
                if g.token <= old {
                    return Err(Abandon::Failed(format!(
                        "the store granted token {} which is not above the old primary's {old}",
                        g.token
                    )));
                }
            }
            d.token = Some(g.token);
            record(
                inner,
                d,
                Step::TokenTaken,
                format!("term {} for {}", g.token, d.to),
            )?;
            return Ok(g.token);
        }
        let holder = store_call(inner, "current", inner.backend.current(&ns)).await?;
        if !asked {
            // The store may have granted a longer lease than configured (etcd rounds up to
            // whole seconds, at least 2 s): give an unrenewed term its real time to expire.
            if let Some(left) = holder.as_ref().and_then(|h| h.expires_in) {
                deadline = deadline.max(Instant::now() + left + inner.config.safety_margin);
            }
        }
        // Someone still holds the role (a switchover from a live primary): ask it once to
        // demote, which releases its lease; otherwise the lease must run out.
        if !asked {
            asked = true;
            if let Some(h) = &holder {
                if let Some(hook) = spec(inner, &h.node_id).and_then(|s| s.demote.clone()) {
                    let env = HookEnv {
                        node: h.node_id.clone(),
                        token: h.token,
                        old_primary: Some(h.node_id.clone()),
                        old_token: Some(h.token),
                        new_primary: d.to.clone(),
                        namespace: ns.clone(),
                    };
                    match hook::run(&hook, "demote", &env).await {
                        Ok(()) => record(
                            inner,
                            d,
                            Step::Demoted,
                            format!("{} demoted and asked to resign", h.node_id),
                        )?,
                        Err(e) => record(inner, d, Step::DemoteFailed, e.to_string())?,
                    }
                    continue;
                }
            }
        }
        if Instant::now() >= deadline {
            let who = holder
                .as_ref()
                .map(|h| format!("{} with token {}", h.node_id, h.token))
                .unwrap_or_else(|| "a holder".into());
            return Err(Abandon::Failed(format!(
                "the primary-role term of {who} is still held after {:?}: it was neither \
                 resigned nor left to expire, so something still renews it (the node's agent); \
                 moving the role away from a live holder needs a demote hook that makes its \
                 agent resign",
                waited.elapsed()
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = inner
            .backend
            .wait_for_change(&ns, left.min(Duration::from_millis(200)))
            .await;
    }
}

/// Renews the new term on the candidate's behalf until promote (the candidate's agent then
/// adopts it by renewing (node, token) itself).
fn spawn_keepalive(
    inner: &Arc<Inner>,
    node: NodeId,
    token: FencingToken,
    lease: Duration,
) -> tokio::task::JoinHandle<()> {
    let backend = inner.backend.clone();
    let ns = inner.primary_ns.clone();
    tokio::spawn(async move {
        let every = (lease / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = backend.renew(&ns, &node, token, lease).await {
                tracing::warn!("keeping term {token} of {node} alive failed: {e}");
                if e.is_not_leader() {
                    return;
                }
            }
        }
    })
}

/// No confirmation that the old primary stopped: wait until a whole lease + safety margin
/// after it was last seen holding its lease, so its own local deadline has certainly passed.
async fn wait_out_lease(inner: &Inner, d: &mut Decision) -> Step_<()> {
    let started = Instant::now();
    // The bound is persisted as wall-clock time (it must survive a restart); while we wait
    // in-process, the monotonic clock must agree too, so a forward step of the wall clock
    // cannot shorten the wait (a backward step only lengthens it).
    let left_at_start = Duration::from_millis(
        d.promote_not_before_unix_ms
            .saturating_sub(unix_ms(SystemTime::now())),
    );
    let mono_deadline = started + left_at_start;
    let poll = inner
        .config
        .health_check_interval
        .max(Duration::from_millis(10));
    loop {
        ensure_leading(inner)?;
        let now = unix_ms(SystemTime::now());
        let wall_left = Duration::from_millis(d.promote_not_before_unix_ms.saturating_sub(now));
        let mono_left = mono_deadline.saturating_duration_since(Instant::now());
        let left = wall_left.max(mono_left);
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(poll)).await;
    }
    record(
        inner,
        d,
        Step::WaitedOutLease,
        format!("waited {:?} for the old lease + margin", started.elapsed()),
    )
}

/// Graceful: after a confirmed demote, wait (within the grace period) until the candidate
/// reports lag 0, so the hand-over loses nothing.
async fn catch_up(inner: &Inner, d: &mut Decision, until: SystemTime) -> Step_<()> {
    let reporter = spec(inner, &d.to).and_then(|s| s.lag.clone());
    let poll = inner
        .config
        .health_check_interval
        .min(Duration::from_millis(100));
    let mut last = None;
    loop {
        ensure_leading(inner)?;
        let lag = match &reporter {
            None => Some(0),
            Some(r) => tokio::time::timeout(inner.config.health_check_timeout, r.lag_bytes())
                .await
                .ok()
                .and_then(|r| r.ok()),
        };
        if lag == Some(0) {
            return record(inner, d, Step::CaughtUp, format!("{} reports lag 0", d.to));
        }
        last = lag.or(last);
        if SystemTime::now() >= until {
            return record(
                inner,
                d,
                Step::CatchUpTimedOut,
                format!(
                    "{} still lags {last:?} bytes at the end of the grace period",
                    d.to
                ),
            );
        }
        tokio::time::sleep(poll).await;
    }
}
