//! When the manager fails over and when it refuses to: hysteresis, the two-signal rule,
//! observer quorum, operator hold (and its race with a decision), candidate ranking, and
//! anti-flapping (startup grace, cooldown, budget → Manual, no automatic fail-back).

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use lifeboat_coord::NodeId;
use lifeboat_failover::{
    rank, BoxError, CandidateInfo, Decision, DecisionStore, FailoverEvent, FailoverPolicy,
    FixedLag, HoldOutcome, NodeSpec, Observer, SuppressReason,
};

const LEASE: Duration = Duration::from_millis(600);

fn suppressed(m: &lifeboat_failover::FailoverManager) -> Vec<SuppressReason> {
    m.history()
        .into_iter()
        .filter_map(|e| match e {
            FailoverEvent::FailoverSuppressed { reason } => Some(reason),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_flapping_below_the_threshold_never_triggers() {
    let c = Cluster::new();
    // fail, fail, ok — 30 times: never 3 failures in a row. Then down for good.
    let flaps: Vec<bool> = (0..30).flat_map(|_| [false, false, true]).collect();
    let flap_len = flaps.len();
    let a = Script::new(flaps, false);
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .initial_primary("pg-a")
        .node(NodeSpec::new("pg-a").health(a.clone()))
        .node(
            NodeSpec::new("pg-b")
                .health(Flag::new(true))
                .promote_hook(c.log_hook("promote")),
        );
    // No agent: pg-a's lease is absent, so the health signal alone decides here.
    let (m, mut rx) = c.manager(cfg, "m1").await;
    let ev = wait_for(
        &m,
        &mut rx,
        "unhealthy",
        |e| matches!(e, FailoverEvent::NodeUnhealthy { node_id, .. } if node_id.as_str() == "pg-a"),
    )
    .await;
    assert!(matches!(ev, FailoverEvent::NodeUnhealthy { .. }));
    assert!(
        a.calls() >= flap_len + 3,
        "pg-a was declared unhealthy after only {} checks ({flap_len} were flapping)",
        a.calls()
    );
    wait_for(&m, &mut rx, "completed", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
    assert_eq!(started(&m), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_lease_is_a_second_signal_that_blocks_failover() {
    let c = Cluster::new();
    let a = Flag::new(true);
    let agent = Agent::start(&c.store, "pg-a", LEASE).await;
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .node(NodeSpec::new("pg-a").health(a.clone()))
        .node(
            NodeSpec::new("pg-b")
                .health(Flag::new(true))
                .promote_hook(c.log_hook("promote")),
        );
    let (m, mut rx) = c.manager(cfg, "m1").await;
    // The health endpoint is unreachable from the manager, but pg-a keeps renewing.
    a.set(false);
    let ev = wait_for(&m, &mut rx, "single-signal suppression", |e| {
        matches!(e, FailoverEvent::FailoverSuppressed { .. })
    })
    .await;
    assert!(
        matches!(&ev, FailoverEvent::FailoverSuppressed { reason: SuppressReason::SingleSignal { alive } } if alive.contains("pg-a")),
        "{ev:?}"
    );
    // Several lease lengths later nothing has happened.
    let calls = a.calls.load(Ordering::SeqCst);
    while a.calls.load(Ordering::SeqCst) < calls + 60 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(started(&m), 0);
    // The second signal arrives (its agent dies, the lease expires): now it fails over.
    agent.kill();
    wait_for(&m, &mut rx, "completed", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
}

#[derive(Debug)]
struct Vote(&'static str, AtomicBool);

#[async_trait]
impl Observer for Vote {
    fn id(&self) -> String {
        self.0.into()
    }
    async fn sees_down(&self, _node: &NodeId) -> Result<bool, BoxError> {
        Ok(self.1.load(Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_of_observers_never_triggers() {
    let c = Cluster::new();
    let votes: Vec<Arc<Vote>> = ["o1", "o2", "o3"]
        .into_iter()
        .map(|n| Arc::new(Vote(n, AtomicBool::new(false))))
        .collect();
    let a = Flag::new(false);
    let mut cfg = c
        .config(FailoverPolicy::Immediate)
        .initial_primary("pg-a")
        .node(NodeSpec::new("pg-a").health(a.clone()))
        .node(
            NodeSpec::new("pg-b")
                .health(Flag::new(true))
                .promote_hook(c.log_hook("promote")),
        );
    for v in &votes {
        cfg = cfg.observer(v.clone());
    }
    votes[0].1.store(true, Ordering::SeqCst);
    let (m, mut rx) = c.manager(cfg, "m1").await;
    let ev = wait_for(&m, &mut rx, "minority", |e| {
        matches!(e, FailoverEvent::FailoverSuppressed { .. })
    })
    .await;
    assert_eq!(
        ev,
        FailoverEvent::FailoverSuppressed {
            reason: SuppressReason::Minority {
                votes: 1,
                needed: 2
            }
        }
    );
    let calls = a.calls.load(Ordering::SeqCst);
    while a.calls.load(Ordering::SeqCst) < calls + 30 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(started(&m), 0);
    votes[2].1.store(true, Ordering::SeqCst);
    wait_for(&m, &mut rx, "completed", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_suppresses_until_released() {
    let c = Cluster::new();
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .initial_primary("pg-a")
        .node(NodeSpec::new("pg-a").health(Flag::new(false)))
        .node(
            NodeSpec::new("pg-b")
                .health(Flag::new(true))
                .promote_hook(c.log_hook("promote")),
        );
    // Hold set in the state file before the manager starts (e.g. by an operator tool).
    DecisionStore::open(Some(&c.state()))
        .unwrap()
        .set_hold("alice", "kernel upgrade")
        .unwrap();
    let (m, mut rx) = c.manager(cfg, "m1").await;
    let ev = wait_for(&m, &mut rx, "hold", |e| {
        matches!(e, FailoverEvent::FailoverSuppressed { .. })
    })
    .await;
    assert_eq!(
        ev,
        FailoverEvent::FailoverSuppressed {
            reason: SuppressReason::Hold {
                by: "alice".into(),
                reason: "kernel upgrade".into()
            }
        }
    );
    assert_eq!(started(&m), 0);
    assert!(m.release_hold().unwrap());
    wait_for(&m, &mut rx, "completed", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
}

fn decision(to: &str) -> Decision {
    Decision {
        id: 0,
        from: Some("pg-a".into()),
        from_token: None,
        to: to.into(),
        automatic: true,
        policy: FailoverPolicy::Immediate,
        reason: "race".into(),
        started_at_unix_ms: 0,
        promote_not_before_unix_ms: 0,
        token: None,
        steps: Vec::new(),
    }
}

/// The compare-and-set itself, raced by two OS threads released by a barrier, 1000 times.
#[test]
fn hold_versus_decision_race_has_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hold_won, mut decision_won) = (0, 0);
    for i in 0..1000 {
        // Every 50th round persists to disk, the rest in memory (fsync is slow).
        let path = (i % 50 == 0).then(|| dir.path().join(format!("s{i}.json")));
        let store = Arc::new(DecisionStore::open(path.as_deref()).unwrap());
        let barrier = Arc::new(Barrier::new(2));
        let (s1, b1) = (store.clone(), barrier.clone());
        let holder = std::thread::spawn(move || {
            b1.wait();
            s1.set_hold("ops", "race").unwrap()
        });
        let (s2, b2) = (store.clone(), barrier.clone());
        let decider = std::thread::spawn(move || {
            b2.wait();
            s2.try_commit(decision("pg-b"), false)
        });
        let hold = holder.join().unwrap();
        let commit = decider.join().unwrap();
        match (&hold, &commit) {
            (HoldOutcome::Held, Err(lifeboat_failover::Error::Held { .. })) => hold_won += 1,
            (HoldOutcome::AfterDecision { id, .. }, Ok(d)) if *id == d.id => decision_won += 1,
            other => panic!("round {i}: both or neither won: {other:?}"),
        }
        let s = store.snapshot();
        assert!(s.hold.is_some());
        assert_eq!(s.in_progress.is_some(), commit.is_ok());
    }
    println!("hold won {hold_won}, decision won {decision_won}");
    assert_eq!(hold_won + decision_won, 1000);
}

/// The same race through the manager: an operator sets the hold while the manager is
/// detecting and deciding. Either the hold wins (no failover ever starts) or the decision
/// won (the hold says so, and that one failover completes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_versus_manager_decision_race() {
    let mut outcomes = (0, 0);
    for i in 0..20u64 {
        let c = Cluster::new();
        let a = Flag::new(true);
        let cfg = c
            .config(FailoverPolicy::Immediate)
            .health_check_interval(Duration::from_millis(5))
            .initial_primary("pg-a")
            .node(NodeSpec::new("pg-a").health(a.clone()))
            .node(NodeSpec::new("pg-b").health(Flag::new(true)));
        let (m, mut rx) = c.manager(cfg, "m1").await;
        // Wait until pg-b is known healthy, then fail pg-a and race the hold against the
        // decision three checks later, at a varying offset.
        let t = a.calls.load(Ordering::SeqCst);
        while a.calls.load(Ordering::SeqCst) < t + 3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        a.set(false);
        tokio::time::sleep(Duration::from_micros(1000 * (i % 10) + 5000)).await;
        let hold = m.hold("ops", "race").unwrap();
        match hold {
            HoldOutcome::Held => {
                wait_for(&m, &mut rx, "hold suppression", |e| {
                    matches!(
                        e,
                        FailoverEvent::FailoverSuppressed {
                            reason: SuppressReason::Hold { .. }
                        }
                    )
                })
                .await;
                assert_eq!(
                    started(&m),
                    0,
                    "round {i}: the hold won but a failover started"
                );
                outcomes.0 += 1;
            }
            HoldOutcome::AfterDecision { .. } => {
                wait_for(&m, &mut rx, "completed", |e| {
                    matches!(e, FailoverEvent::FailoverCompleted { .. })
                })
                .await;
                assert_eq!(started(&m), 1);
                outcomes.1 += 1;
            }
        }
    }
    println!("hold won {}, decision won {}", outcomes.0, outcomes.1);
}

#[test]
fn ranking_filters_and_orders() {
    let c = |node: &str, priority: u32, healthy: bool, lag: Result<u64, &str>| CandidateInfo {
        node: node.into(),
        priority,
        healthy,
        lag: lag.map_err(str::to_owned),
        excluded: None,
    };
    let infos = vec![
        c("n-prio0", 0, true, Ok(0)),
        c("n-sick", 5, false, Ok(0)),
        c("n-far", 5, true, Ok(2_000_000)),
        c("n-unknown", 5, true, Err("timeout")),
        c("n-b", 1, true, Ok(100)),
        c("n-a", 1, true, Ok(100)),
        c("n-hi", 9, true, Ok(100)),
        c("n-best", 1, true, Ok(10)),
    ];
    let (ok, rejected) = rank(&infos, 1_000_000);
    let order: Vec<&str> = ok.iter().map(|r| r.node.as_str()).collect();
    // Lowest lag first, then higher priority, then node id.
    assert_eq!(order, ["n-best", "n-hi", "n-a", "n-b"]);
    let mut names: Vec<&str> = rejected.iter().map(|r| r.node.as_str()).collect();
    names.sort();
    assert_eq!(names, ["n-far", "n-prio0", "n-sick", "n-unknown"]);
    assert!(rejected.iter().any(|r| r.reason.contains("max_lag")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_promotes_the_best_ranked_candidate() {
    let c = Cluster::new();
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .max_lag(1000)
        .initial_primary("pg-a")
        .node(NodeSpec::new("pg-a").health(Flag::new(false)))
        .node(
            NodeSpec::new("pg-b")
                .health(Flag::new(true))
                .lag_reporter(FixedLag::new(100)),
        )
        .node(
            NodeSpec::new("pg-c")
                .health(Flag::new(true))
                .lag_reporter(FixedLag::new(10)),
        )
        .node(
            NodeSpec::new("pg-d")
                .priority(0)
                .health(Flag::new(true))
                .lag_reporter(FixedLag::new(0)),
        )
        .node(
            NodeSpec::new("pg-e")
                .health(Flag::new(true))
                .lag_reporter(FixedLag::new(5000)),
        );
    let (m, mut rx) = c.manager(cfg, "m1").await;
    let ev = wait_for(&m, &mut rx, "started", |e| {
        matches!(e, FailoverEvent::FailoverStarted { .. })
    })
    .await;
    let FailoverEvent::FailoverStarted { to, .. } = ev else {
        unreachable!()
    };
    assert_eq!(to.as_str(), "pg-c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_failover_during_the_startup_grace() {
    let c = Cluster::new();
    let grace = Duration::from_millis(500);
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .startup_grace(grace)
        .initial_primary("pg-a")
        .node(NodeSpec::new("pg-a").health(Flag::new(false)))
        .node(NodeSpec::new("pg-b").health(Flag::new(true)));
    let t0 = tokio::time::Instant::now();
    let (m, mut rx) = c.manager(cfg, "m1").await;
    let ev = wait_for(&m, &mut rx, "grace", |e| {
        matches!(e, FailoverEvent::FailoverSuppressed { .. })
    })
    .await;
    assert!(matches!(
        ev,
        FailoverEvent::FailoverSuppressed {
            reason: SuppressReason::StartupGrace { .. }
        }
    ));
    wait_for(&m, &mut rx, "started", |e| {
        matches!(e, FailoverEvent::FailoverStarted { .. })
    })
    .await;
    assert!(
        t0.elapsed() >= grace,
        "started {:?} after start",
        t0.elapsed()
    );
}

/// pg-a fails over to pg-b; then pg-b fails too, while pg-a is healthy again.
async fn second_failure(
    c: &Cluster,
    cfg: lifeboat_failover::FailoverConfigBuilder,
) -> (
    lifeboat_failover::FailoverManager,
    tokio::sync::broadcast::Receiver<FailoverEvent>,
    Arc<Flag>,
) {
    let (a, b) = (Flag::new(false), Flag::new(true));
    let cfg = cfg
        .initial_primary("pg-a")
        .node(NodeSpec::new("pg-a").health(a.clone()))
        .node(NodeSpec::new("pg-b").health(b.clone()));
    let (m, mut rx) = c.manager(cfg, "m1").await;
    wait_for(&m, &mut rx, "first failover", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
    a.set(true);
    b.set(false);
    (m, rx, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_failure_within_the_cooldown_is_suppressed() {
    let c = Cluster::new();
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .min_failover_interval(Duration::from_secs(3600));
    let (m, mut rx, _a) = second_failure(&c, cfg).await;
    m.readmit(&"pg-a".into()).unwrap();
    // First pg-b's fresh term (granted by the failover, renewed by nobody) runs out —
    // until then its lease is the "alive" signal — then the cooldown is the reason.
    let ev = wait_for(&m, &mut rx, "cooldown", |e| {
        matches!(e, FailoverEvent::FailoverSuppressed { reason } if !matches!(reason, SuppressReason::SingleSignal { .. }))
    })
    .await;
    assert!(
        matches!(ev, FailoverEvent::FailoverSuppressed { reason: SuppressReason::Cooldown { remaining } } if remaining > Duration::from_secs(3500)),
        "{ev:?}"
    );
    assert_eq!(started(&m), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_budget_falls_back_to_manual_with_an_alert() {
    let c = Cluster::new();
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .max_auto_failovers(1)
        .failover_window(Duration::from_secs(3600));
    let (m, mut rx, _a) = second_failure(&c, cfg).await;
    m.readmit(&"pg-a".into()).unwrap();
    let ev = wait_for(&m, &mut rx, "downgrade", |e| {
        matches!(e, FailoverEvent::PolicyDowngraded { .. })
    })
    .await;
    assert!(matches!(ev, FailoverEvent::PolicyDowngraded { .. }));
    let ev = wait_for(&m, &mut rx, "manual alert", |e| {
        matches!(e, FailoverEvent::ManualInterventionRequired { .. })
    })
    .await;
    let FailoverEvent::ManualInterventionRequired {
        node_id,
        candidates,
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(node_id.as_str(), "pg-b");
    assert_eq!(candidates[0].node.as_str(), "pg-a");
    assert_eq!(m.effective_policy(), FailoverPolicy::Manual);
    assert!(suppressed(&m)
        .iter()
        .any(|r| matches!(r, SuppressReason::BudgetExhausted { used: 1, .. })));
    assert_eq!(started(&m), 1);
    // The operator turns automation back on: the pending failure is handled.
    m.resume_automatic().unwrap();
    wait_for(&m, &mut rx, "second failover", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { new_leader, .. } if new_leader.as_str() == "pg-a")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_automatic_fail_back_to_the_demoted_primary() {
    let c = Cluster::new();
    let cfg = c.config(FailoverPolicy::Immediate);
    let (m, mut rx, _a) = second_failure(&c, cfg).await;
    let ev = wait_for(&m, &mut rx, "no candidate", |e| {
        matches!(e, FailoverEvent::FailoverSuppressed { reason } if !matches!(reason, SuppressReason::SingleSignal { .. }))
    })
    .await;
    let FailoverEvent::FailoverSuppressed {
        reason: SuppressReason::NoCandidate { rejected },
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert_eq!(rejected[0].node.as_str(), "pg-a");
    assert!(rejected[0].reason.contains("demoted"), "{rejected:?}");
    assert_eq!(m.state().unwrap().excluded, vec![NodeId::from("pg-a")]);
    // Re-admitted by the operator (rebuilt as a standby), it is a candidate again.
    assert!(m.readmit(&"pg-a".into()).unwrap());
    wait_for(&m, &mut rx, "fail-over to pg-a", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { new_leader, .. } if new_leader.as_str() == "pg-a")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_elected_manager_acts() {
    let c = Cluster::new();
    let cfg = || {
        c.config(FailoverPolicy::Immediate)
            .initial_primary("pg-a")
            .node(NodeSpec::new("pg-a").health(Flag::new(true)))
            .node(NodeSpec::new("pg-b").health(Flag::new(true)))
    };
    let (m1, _rx1) = c.manager(cfg(), "m1").await;
    let other = c.election("m2", Duration::from_secs(2)).await;
    let m2 =
        lifeboat_failover::FailoverManager::new(cfg().build_without_env().unwrap(), other).await;
    assert!(m1.is_acting());
    assert!(!m2.is_acting());
    let e = m2
        .trigger("pg-b", "from the wrong instance")
        .await
        .unwrap_err();
    assert!(matches!(e, lifeboat_failover::Error::NotLeader), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_file_makes_the_manager_refuse_to_act() {
    let c = Cluster::new();
    write(&c.state(), "{ this is not json");
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .initial_primary("pg-a")
        .node(NodeSpec::new("pg-a").health(Flag::new(false)))
        .node(NodeSpec::new("pg-b").health(Flag::new(true)));
    let election = c.election("m1", Duration::from_secs(2)).await;
    let m =
        lifeboat_failover::FailoverManager::new(cfg.build_without_env().unwrap(), election).await;
    let mut rx = m.subscribe();
    let ev = wait_for(&m, &mut rx, "state unavailable", |e| {
        matches!(e, FailoverEvent::FailoverSuppressed { .. })
    })
    .await;
    let FailoverEvent::FailoverSuppressed {
        reason: SuppressReason::StateUnavailable { reason },
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert!(reason.contains("not valid JSON"), "{reason}");
    assert!(m.hold("ops", "x").is_err());
    m.wait_until_acting(WAIT).await.unwrap();
    let e = m.trigger("pg-b", "x").await.unwrap_err();
    assert!(e.to_string().contains("failover state file"), "{e}");
    assert_eq!(started(&m), 0);
}

/// The default timing (1 s checks, suspect after 3, 10 s startup grace) in tokio's paused
/// virtual time: deterministic, and instant in real time. No hooks (processes and paused
/// time do not mix: the runtime would jump past their timeouts) and no state file.
#[tokio::test(start_paused = true)]
async fn default_timing_in_virtual_time() {
    let c = Cluster::new();
    let a = Flag::new(false);
    let cfg = lifeboat_failover::FailoverConfig::builder()
        .policy(FailoverPolicy::Immediate)
        .primary_namespace(PRIMARY_NS)
        .initial_primary("pg-a")
        .node(NodeSpec::new("pg-a").health(a.clone()))
        .node(NodeSpec::new("pg-b").health(Flag::new(true)))
        .build_without_env()
        .unwrap();
    let election = c.election("m1", Duration::from_secs(10)).await;
    let t0 = tokio::time::Instant::now();
    let m = lifeboat_failover::FailoverManager::new(cfg, election).await;
    let mut rx = m.subscribe();
    let ev = wait_for(&m, &mut rx, "unhealthy", |e| {
        matches!(e, FailoverEvent::NodeUnhealthy { .. })
    })
    .await;
    assert!(
        matches!(ev, FailoverEvent::NodeUnhealthy { node_id, .. } if node_id.as_str() == "pg-a")
    );
    // Three failed checks, one second apart, starting one interval after start.
    assert_eq!(t0.elapsed().as_secs(), 3);
    assert_eq!(a.calls.load(Ordering::SeqCst), 3);
    let ev = wait_for(&m, &mut rx, "grace", |e| {
        matches!(e, FailoverEvent::FailoverSuppressed { .. })
    })
    .await;
    assert!(matches!(
        ev,
        FailoverEvent::FailoverSuppressed { reason: SuppressReason::StartupGrace { remaining } }
            if remaining > Duration::from_secs(6)
    ));
    wait_for(&m, &mut rx, "started", |e| {
        matches!(e, FailoverEvent::FailoverStarted { .. })
    })
    .await;
    let at = t0.elapsed();
    assert!(
        at >= Duration::from_secs(10) && at <= Duration::from_secs(12),
        "started at {at:?}"
    );
}
