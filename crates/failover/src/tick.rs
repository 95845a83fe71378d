//! The manager's loop: every interval, check all nodes, read the primary's lease, and —
//! only while elected — decide whether to fail over, or say why not.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use lifeboat_types::NodeId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::candidate::{rank, CandidateInfo, Ranked, Rejected};
use crate::config::FailoverPolicy;
use crate::detector::{Detector, Transition};
use crate::error::{Error, Result};
use crate::event::{FailoverEvent, SuppressReason};
use crate::health::check_bounded;
use crate::manager::{Command, FailoverOutcome, Inner};
use crate::quorum::quorum;
use crate::state::{unix_ms, Decision};

pub(crate) async fn run(inner: Arc<Inner>, mut commands: mpsc::Receiver<Command>) {
    let period = inner.config.health_check_interval;
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => tick(&inner).await,
            cmd = commands.recv() => match cmd {
                Some(Command::Trigger { to, reason, reply }) => {
                    let _ = reply.send(manual_trigger(&inner, to, reason).await);
                }
                None => return,
            },
        }
    }
}

async fn tick(inner: &Arc<Inner>) {
    let leading = inner.is_leader();
    {
        let mut rt = inner.runtime.lock().expect("runtime mutex poisoned");
        match (leading, rt.leading_since) {
            (true, None) => rt.leading_since = Some(Instant::now()),
            (false, Some(_)) => rt.leading_since = None,
            _ => {}
        }
    }
    let store = match &inner.state {
        Ok(store) => store,
        Err(reason) => {
            // Acting without knowing about a hold or an unfinished failover is unsafe.
            inner.suppress(SuppressReason::StateUnavailable {
                reason: reason.clone(),
            });
            return;
        }
    };
    // A failover a previous instance (or term) left unfinished is resumed before anything
    // else, with its token.
    if leading {
        if let Some(d) = store.snapshot().in_progress {
            let _ = crate::execute::run(inner, d, true).await;
            return;
        }
    }
    let budget = inner.election.config().get_op_timeout();
    let holder = match tokio::time::timeout(budget, inner.backend.current(&inner.primary_ns)).await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            // Never decide on a store we cannot read: a store outage is not a primary outage.
            tracing::warn!("cannot read the primary's lease: {e}");
            check_all(inner).await;
            return;
        }
        Err(_) => {
            tracing::warn!("the coordination store did not answer within {budget:?}");
            check_all(inner).await;
            return;
        }
    };
    if let Some(h) = &holder {
        let snap = store.snapshot();
        if snap.primary.as_ref() != Some(&h.node_id) || snap.primary_token != Some(h.token) {
            let (node, token) = (h.node_id.clone(), h.token);
            let _ = store.update(|s| {
                s.primary = Some(node);
                s.primary_token = Some(token);
                Ok(())
            });
        }
        inner
            .runtime
            .lock()
            .expect("runtime mutex poisoned")
            .last_seen_held_unix_ms = Some(unix_ms(SystemTime::now()));
    }
    check_all(inner).await;
    let snap = store.snapshot();
    let Some(primary) = snap.primary.clone() else {
        return;
    };
    let suspect = {
        let mut rt = inner.runtime.lock().expect("runtime mutex poisoned");
        let suspect = rt.detectors.get(&primary).is_some_and(Detector::is_suspect);
        if !suspect {
            rt.last_suppress = None;
            rt.manual_alerted_for = None;
        }
        suspect
    };
    if !suspect || !leading {
        return;
    }
    // Signal 2: the primary's own lease. Held by it = it is alive and renewing (we are
    // probably the ones partitioned); no failover.
    if inner.config.use_lease_signal {
        if let Some(h) = holder.as_ref().filter(|h| h.node_id == primary) {
            inner.suppress(SuppressReason::SingleSignal {
                alive: format!("{primary} still holds its lease (token {})", h.token),
            });
            return;
        }
    }
    if !inner.config.observers.is_empty() {
        let votes = observer_votes(inner, &primary).await;
        let needed = quorum(inner.config.observers.len());
        if votes < needed {
            inner.suppress(SuppressReason::Minority { votes, needed });
            return;
        }
    }
    let detection = inner
        .runtime
        .lock()
        .expect("runtime mutex poisoned")
        .first_failure_at
        .map(|t| t.elapsed());
    if let Some(h) = snap.hold.clone() {
        inner.suppress(SuppressReason::Hold {
            by: h.by,
            reason: h.reason,
        });
        return;
    }
    let (ranked, rejected) = candidates(inner, &primary, &snap.excluded).await;
    if snap.downgraded || inner.config.policy == FailoverPolicy::Manual {
        if snap.downgraded {
            inner.suppress(SuppressReason::BudgetExhausted {
                used: snap.auto_failovers_unix_ms.len() as u32,
                window: inner.config.failover_window,
            });
        }
        alert_manual(inner, &primary, ranked);
        return;
    }
    let leading_for = inner
        .runtime
        .lock()
        .expect("runtime mutex poisoned")
        .leading_since
        .map(|t| t.elapsed())
        .unwrap_or_default();
    if leading_for < inner.config.startup_grace {
        inner.suppress(SuppressReason::StartupGrace {
            remaining: inner.config.startup_grace - leading_for,
        });
        return;
    }
    let now_ms = unix_ms(SystemTime::now());
    let window_ms = inner.config.failover_window.as_millis() as u64;
    let in_window: Vec<u64> = snap
        .auto_failovers_unix_ms
        .iter()
        .copied()
        .filter(|t| now_ms.saturating_sub(*t) < window_ms)
        .collect();
    if in_window.len() as u32 >= inner.config.max_auto_failovers {
        let used = in_window.len() as u32;
        let _ = store.update(|s| {
            s.downgraded = true;
            Ok(())
        });
        inner.emit(FailoverEvent::PolicyDowngraded {
            reason: format!(
                "{used} automatic failover(s) within {:?} (max_auto_failovers {}); automatic \
                 failover is off until resume_automatic()",
                inner.config.failover_window, inner.config.max_auto_failovers
            ),
        });
        inner.suppress(SuppressReason::BudgetExhausted {
            used,
            window: inner.config.failover_window,
        });
        alert_manual(inner, &primary, ranked);
        return;
    }
    if let Some(last) = in_window.iter().max() {
        let since = Duration::from_millis(now_ms.saturating_sub(*last));
        if since < inner.config.min_failover_interval {
            inner.suppress(SuppressReason::Cooldown {
                remaining: inner.config.min_failover_interval - since,
            });
            return;
        }
    }
    let Some(best) = ranked.first().cloned() else {
        inner.suppress(SuppressReason::NoCandidate { rejected });
        return;
    };
    let decision = new_decision(
        inner,
        &snap,
        best.node.clone(),
        true,
        "primary confirmed down",
    );
    let decision = match store.try_commit(decision, false) {
        Ok(d) => d,
        Err(Error::Held { by, reason }) => {
            inner.suppress(SuppressReason::Hold { by, reason });
            return;
        }
        Err(e) => {
            inner.suppress(SuppressReason::StateUnavailable {
                reason: e.to_string(),
            });
            return;
        }
    };
    if let Some(d) = detection {
        inner
            .stats
            .lock()
            .expect("stats mutex poisoned")
            .last_detection_duration = Some(d);
    }
    let _ = crate::execute::run(inner, decision, false).await;
}

/// Builds an uncommitted decision (id assigned by the commit).
fn new_decision(
    inner: &Inner,
    snap: &crate::state::PersistedState,
    to: NodeId,
    automatic: bool,
    reason: &str,
) -> Decision {
    let now = unix_ms(SystemTime::now());
    let seen = inner
        .runtime
        .lock()
        .expect("runtime mutex poisoned")
        .last_seen_held_unix_ms;
    // Without confirmation, wait a whole lease + margin after the last moment the old
    // primary was seen holding its lease (normally its last renew was no later), or after
    // now if we never saw it. And at least a margin after now: an automatic decision is
    // taken only once the store shows the lease expired, so every renew of the old primary
    // was at least a lease before now — this bound holds even if our polling missed its
    // last renew.
    let wait = inner.config.primary_lease + inner.config.safety_margin;
    let base = seen.unwrap_or(now);
    let not_before =
        (base + wait.as_millis() as u64).max(now + inner.config.safety_margin.as_millis() as u64);
    Decision {
        id: 0,
        from: snap.primary.clone(),
        from_token: snap.primary_token,
        to,
        automatic,
        policy: if automatic {
            inner.config.policy
        } else {
            match inner.config.policy {
                FailoverPolicy::Manual => FailoverPolicy::Immediate,
                p => p,
            }
        },
        reason: reason.to_owned(),
        started_at_unix_ms: now,
        promote_not_before_unix_ms: not_before,
        token: None,
        steps: Vec::new(),
    }
}

fn alert_manual(inner: &Inner, primary: &NodeId, candidates: Vec<Ranked>) {
    {
        let mut rt = inner.runtime.lock().expect("runtime mutex poisoned");
        if rt.manual_alerted_for.as_ref() == Some(primary) {
            return;
        }
        rt.manual_alerted_for = Some(primary.clone());
    }
    inner.emit(FailoverEvent::ManualInterventionRequired {
        node_id: primary.clone(),
        candidates,
    });
}

async fn manual_trigger(inner: &Arc<Inner>, to: NodeId, reason: String) -> Result<FailoverOutcome> {
    if !inner.is_leader() {
        return Err(Error::NotLeader);
    }
    let store = inner.store()?;
    let spec = inner
        .config
        .nodes
        .iter()
        .find(|n| n.id == to)
        .ok_or_else(|| Error::UnknownNode(to.clone()))?;
    let snap = store.snapshot();
    if snap.primary.as_ref() == Some(&to) {
        return Err(Error::Ineligible {
            node: to,
            reason: "it is already the primary".into(),
        });
    }
    if spec.priority == 0 {
        return Err(Error::Ineligible {
            node: to,
            reason: "priority 0 (never promote)".into(),
        });
    }
    let decision = new_decision(inner, &snap, to, false, &reason);
    let decision = store.try_commit(decision, true)?;
    crate::execute::run(inner, decision, false).await
}

/// Runs every node's check once, concurrently, and feeds the detectors.
async fn check_all(inner: &Inner) {
    let cfg = &inner.config;
    let checks = cfg.nodes.iter().map(|n| async move {
        let obs = match &n.health {
            Some(h) => Some(check_bounded(h, cfg.health_check_timeout).await),
            None => None,
        };
        (n.id.clone(), obs)
    });
    let results = join_all(checks).await;
    let primary = inner.store().ok().and_then(|s| s.snapshot().primary);
    let mut events = Vec::new();
    {
        let mut rt = inner.runtime.lock().expect("runtime mutex poisoned");
        for (id, obs) in results {
            let healthy = obs.as_ref().is_some_and(|o| o.healthy);
            let detail = obs
                .as_ref()
                .and_then(|o| o.detail.clone())
                .unwrap_or_else(|| "no health checker configured".into());
            let d = rt
                .detectors
                .entry(id.clone())
                .or_insert_with(|| Detector::new(cfg.unhealthy_threshold, cfg.healthy_threshold));
            let transition = d.observe(healthy);
            let failures = d.consecutive_failures();
            if primary.as_ref() == Some(&id) {
                if healthy {
                    rt.first_failure_at = None;
                } else if rt.first_failure_at.is_none() {
                    // Counted from the first failure of this run (`failures` checks ago).
                    let back = cfg.health_check_interval * failures.saturating_sub(1);
                    let now = Instant::now();
                    rt.first_failure_at = Some(now.checked_sub(back).unwrap_or(now));
                }
            }
            match transition {
                Transition::BecameSuspect => events.push(FailoverEvent::NodeUnhealthy {
                    node_id: id.clone(),
                    reason: detail,
                }),
                Transition::Cleared => events.push(FailoverEvent::NodeRecovered {
                    node_id: id.clone(),
                }),
                Transition::None => {}
            }
            if let Some(o) = obs {
                rt.last_observation.insert(id, o);
            }
        }
    }
    for e in events {
        inner.emit(e);
    }
}

async fn observer_votes(inner: &Inner, primary: &NodeId) -> usize {
    let timeout = inner.config.health_check_timeout;
    let votes = inner.config.observers.iter().map(|o| async move {
        match tokio::time::timeout(timeout, o.sees_down(primary)).await {
            Ok(Ok(down)) => down,
            Ok(Err(e)) => {
                tracing::debug!("observer {} gave no vote: {e}", o.id());
                false
            }
            Err(_) => false,
        }
    });
    join_all(votes).await.into_iter().filter(|d| *d).count()
}

/// Filters and ranks every node except the primary.
pub(crate) async fn candidates(
    inner: &Inner,
    primary: &NodeId,
    excluded: &[NodeId],
) -> (Vec<Ranked>, Vec<Rejected>) {
    let timeout = inner.config.health_check_timeout;
    let healthy: std::collections::HashMap<NodeId, bool> = {
        let rt = inner.runtime.lock().expect("runtime mutex poisoned");
        rt.detectors
            .iter()
            .map(|(k, d)| (k.clone(), d.is_healthy()))
            .collect()
    };
    let infos = inner
        .config
        .nodes
        .iter()
        .filter(|n| &n.id != primary)
        .map(|n| {
            let healthy = healthy.get(&n.id).copied().unwrap_or(false);
            async move {
                let lag = match &n.lag {
                    None => Ok(0),
                    Some(r) => match tokio::time::timeout(timeout, r.lag_bytes()).await {
                        Ok(Ok(l)) => Ok(l),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no lag report within {timeout:?}")),
                    },
                };
                CandidateInfo {
                    node: n.id.clone(),
                    priority: n.priority,
                    healthy,
                    lag,
                    excluded: excluded
                        .contains(&n.id)
                        .then(|| "demoted old primary; awaiting readmit()".to_owned()),
                }
            }
        });
    let infos = join_all(infos).await;
    rank(&infos, inner.config.max_lag)
}
