//! Policies and the fenced path, verified from real hook side effects (shell commands that
//! append to a log file): fence before promote, a larger token, lease + margin without a
//! hook, the Graceful hand-over, Manual, and a manager restarted mid-failover.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use lifeboat_coord::{Backend, FencingToken};
use lifeboat_failover::{FailoverEvent, FailoverPolicy, Hook, NodeSpec, Step};

const LEASE: Duration = Duration::from_millis(600);
const MARGIN: Duration = Duration::from_millis(100);

fn token_of(line: &[String]) -> u64 {
    line[2].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_runs_stonith_before_promote_with_a_larger_token() {
    let c = Cluster::new();
    let (a, b) = (Flag::new(true), Flag::new(true));
    let agent = Agent::start(&c.store, "pg-a", LEASE).await;
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .node(
            NodeSpec::new("pg-a")
                .health(a.clone())
                .stonith_hook(c.log_hook("stonith")),
        )
        .node(
            NodeSpec::new("pg-b")
                .health(b.clone())
                .promote_hook(c.log_hook("promote")),
        );
    let (m, mut rx) = c.manager(cfg, "m1").await;

    agent.kill();
    a.set(false);
    let done = wait_for(&m, &mut rx, "completed", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
    let FailoverEvent::FailoverCompleted { new_leader, token } = done else {
        unreachable!()
    };
    assert_eq!(new_leader.as_str(), "pg-b");
    assert!(
        token > agent.token,
        "new token {token} must exceed the old {}",
        agent.token
    );

    let lines = c.log_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (lines[0][0].as_str(), lines[0][1].as_str()),
        ("stonith", "pg-a")
    );
    assert_eq!(
        (lines[1][0].as_str(), lines[1][1].as_str()),
        ("promote", "pg-b")
    );
    assert_eq!(token_of(&lines[0]), token.get());
    assert_eq!(token_of(&lines[1]), token.get());
    // The store agrees: pg-b holds the primary role with that token.
    let holder = c.store.current(PRIMARY_NS).await.unwrap().unwrap();
    assert_eq!((holder.node_id.as_str(), holder.token), ("pg-b", token));

    let stats = m.stats();
    assert_eq!((stats.total, stats.successful, stats.failed), (1, 1, 0));
    assert!(stats.last_failover_at.is_some());
    assert!(
        stats.last_detection_duration.is_some(),
        "{stats:?} {:#?}",
        m.history()
    );
    assert!(stats.last_failover_duration.is_some());
    let s = m.state().unwrap();
    assert_eq!(s.primary.unwrap().as_str(), "pg-b");
    assert!(s.in_progress.is_none());
    // Each step is recorded with a timestamp, in order.
    let last = s.last_decision.expect("finished decision recorded");
    assert!(last.succeeded);
    let steps: Vec<_> = last.decision.steps.iter().map(|r| r.step.clone()).collect();
    assert_eq!(steps, [Step::TokenTaken, Step::Stonithed, Step::Promoted]);
    assert!(last
        .decision
        .steps
        .windows(2)
        .all(|w| w[0].at_unix_ms <= w[1].at_unix_ms));
    assert_eq!(last.decision.token, Some(token));
    let health = m.node_health();
    assert!(health
        .iter()
        .any(|(n, ok, obs)| n.as_str() == "pg-b" && *ok && obs.is_some()));
    println!(
        "detection {:?}, failover {:?}",
        stats.last_detection_duration.unwrap(),
        stats.last_failover_duration.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_hook_promote_waits_lease_plus_margin_after_the_last_renew() {
    let c = Cluster::new();
    let (a, b) = (Flag::new(true), Flag::new(true));
    let agent = Agent::start(&c.store, "pg-a", LEASE).await;
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .node(NodeSpec::new("pg-a").health(a.clone()))
        .node(
            NodeSpec::new("pg-b")
                .health(b.clone())
                .promote_hook(c.log_hook("promote")),
        );
    let (m, mut rx) = c.manager(cfg, "m1").await;

    agent.kill();
    a.set(false);
    wait_for(&m, &mut rx, "completed", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
    let last_renew = agent.last_renew_ns.load(Ordering::SeqCst) as u128;
    let lines = c.log_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let promoted_at: u128 = lines[0][3].parse().unwrap();
    let earliest = last_renew + (LEASE + MARGIN).as_nanos();
    assert!(
        promoted_at >= earliest,
        "promoted {} ms after the old primary's last renew, before lease + margin ({:?})",
        (promoted_at - last_renew) / 1_000_000,
        LEASE + MARGIN
    );
    assert!(token_of(&lines[0]) > agent.token.get());
    assert!(m.history().iter().any(|e| matches!(
        e,
        FailoverEvent::FailoverStep {
            step: Step::WaitedOutLease,
            ..
        }
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_with_a_cooperative_old_primary_hands_over_without_loss() {
    let c = Cluster::new();
    let lag = c.dir.path().join("lag-b");
    write(&lag, "4096");
    let (a, b) = (Flag::new(true), Flag::new(true));
    let agent = Agent::start(&c.store, "pg-a", LEASE).await;
    // The demote hook confirms the stop and, like a real demoted primary whose WAL the
    // standby then replays to the end, lets pg-b's lag reach 0.
    let demote = Hook::new(
        format!(
            "echo \"demote $LIFEBOAT_NODE_ID $LIFEBOAT_FENCING_TOKEN $(date +%s%N)\" >> '{}' && echo 0 > '{}'",
            c.log().display(),
            lag.display()
        ),
        Duration::from_secs(10),
    );
    let cfg = c
        .config(FailoverPolicy::Graceful {
            grace_period: Duration::from_secs(5),
        })
        .primary_lease(Duration::from_secs(5))
        .node(NodeSpec::new("pg-a").health(a.clone()).demote_hook(demote))
        .node(
            NodeSpec::new("pg-b")
                .health(b.clone())
                .lag_reporter(std::sync::Arc::new(FileLag(lag.clone())))
                .promote_hook(c.log_hook("promote")),
        );
    let (m, mut rx) = c.manager(cfg, "m1").await;
    // Without a confirmation the manager would wait primary_lease + margin (5.1 s) before
    // promoting; the demote confirmation fences the old primary, so no such wait happens.
    agent.kill();
    a.set(false);
    wait_for(&m, &mut rx, "started", |e| {
        matches!(e, FailoverEvent::FailoverStarted { .. })
    })
    .await;
    let t0 = std::time::Instant::now();
    wait_for(&m, &mut rx, "completed", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
    let took = t0.elapsed();
    let steps: Vec<Step> = m
        .history()
        .into_iter()
        .filter_map(|e| match e {
            FailoverEvent::FailoverStep { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            Step::TokenTaken,
            Step::Demoted,
            Step::CaughtUp,
            Step::Promoted
        ]
    );
    let lines = c.log_lines();
    assert_eq!(lines[0][0], "demote");
    assert_eq!(lines[1][0], "promote");
    assert!(
        took < Duration::from_secs(5),
        "hand-over took {took:?}, a lease wait"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_with_an_unresponsive_old_primary_falls_back_to_the_fenced_path() {
    let c = Cluster::new();
    let (a, b) = (Flag::new(true), Flag::new(true));
    let agent = Agent::start(&c.store, "pg-a", LEASE).await;
    let grace = Duration::from_millis(300);
    let demote = Hook::new(
        format!(
            "echo \"demote-start $LIFEBOAT_NODE_ID $LIFEBOAT_FENCING_TOKEN $(date +%s%N)\" >> '{}'; sleep 30",
            c.log().display()
        ),
        Duration::from_secs(60),
    );
    let cfg = c
        .config(FailoverPolicy::Graceful {
            grace_period: grace,
        })
        .node(NodeSpec::new("pg-a").health(a.clone()).demote_hook(demote))
        .node(
            NodeSpec::new("pg-b")
                .health(b.clone())
                .promote_hook(c.log_hook("promote")),
        );
    let (m, mut rx) = c.manager(cfg, "m1").await;
    agent.kill();
    a.set(false);
    wait_for(&m, &mut rx, "completed", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
    let steps: Vec<Step> = m
        .history()
        .into_iter()
        .filter_map(|e| match e {
            FailoverEvent::FailoverStep { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            Step::TokenTaken,
            Step::DemoteFailed,
            Step::WaitedOutLease,
            Step::Promoted
        ]
    );
    let lines = c.log_lines();
    assert_eq!(lines[0][0], "demote-start");
    assert_eq!(lines[1][0], "promote");
    let demote_at: u128 = lines[0][3].parse().unwrap();
    let promote_at: u128 = lines[1][3].parse().unwrap();
    assert!(promote_at - demote_at >= grace.as_nanos() - 50_000_000);
    let last_renew = agent.last_renew_ns.load(Ordering::SeqCst) as u128;
    assert!(promote_at >= last_renew + (LEASE + MARGIN).as_nanos());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_alerts_and_waits_for_trigger() {
    let c = Cluster::new();
    let (a, b, cc) = (Flag::new(true), Flag::new(true), Flag::new(true));
    let agent = Agent::start(&c.store, "pg-a", LEASE).await;
    let cfg = c
        .config(FailoverPolicy::Manual)
        .node(
            NodeSpec::new("pg-a")
                .health(a.clone())
                .stonith_hook(c.log_hook("stonith")),
        )
        .node(
            NodeSpec::new("pg-b")
                .health(b.clone())
                .lag_reporter(lifeboat_failover::FixedLag::new(10))
                .promote_hook(c.log_hook("promote")),
        )
        .node(
            NodeSpec::new("pg-c")
                .health(cc.clone())
                .lag_reporter(lifeboat_failover::FixedLag::new(0))
                .promote_hook(c.log_hook("promote")),
        );
    let (m, mut rx) = c.manager(cfg, "m1").await;
    agent.kill();
    a.set(false);
    let alert = wait_for(&m, &mut rx, "manual alert", |e| {
        matches!(e, FailoverEvent::ManualInterventionRequired { .. })
    })
    .await;
    let FailoverEvent::ManualInterventionRequired {
        node_id,
        candidates,
    } = alert
    else {
        unreachable!()
    };
    assert_eq!(node_id.as_str(), "pg-a");
    let ranked: Vec<&str> = candidates.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(ranked, ["pg-c", "pg-b"]);
    // Nothing happens on its own, however long the primary stays down: another 20 checks.
    let calls = a.calls.load(Ordering::SeqCst);
    while a.calls.load(Ordering::SeqCst) < calls + 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(started(&m), 0);
    assert!(c.log_lines().is_empty());

    let outcome = m.trigger("pg-b", "operator picked pg-b").await.unwrap();
    assert_eq!(outcome.new_leader.as_str(), "pg-b");
    let lines = c.log_lines();
    assert_eq!(lines[0][0], "stonith");
    assert_eq!(
        (lines[1][0].as_str(), lines[1][1].as_str()),
        ("promote", "pg-b")
    );
    assert_eq!(token_of(&lines[1]), outcome.token.get());
    assert!(outcome.token > agent.token);
    // A second trigger to the new primary itself is refused with a reason.
    let e = m.trigger("pg-b", "again").await.unwrap_err();
    assert!(e.to_string().contains("already the primary"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_dropped_after_taking_the_token_is_resumed_with_the_same_token() {
    let c = Cluster::new();
    let (a, b) = (Flag::new(true), Flag::new(true));
    let agent = Agent::start(&c.store, "pg-a", LEASE).await;
    let marker = c.dir.path().join("block-demote");
    write(&marker, "");
    // Blocks while the marker exists (the first manager dies inside it), then confirms.
    let demote = Hook::new(
        format!(
            "echo \"demote-start $LIFEBOAT_NODE_ID $LIFEBOAT_FENCING_TOKEN\" >> '{log}'; \
             while [ -e '{marker}' ]; do sleep 0.02; done; \
             echo \"demote $LIFEBOAT_NODE_ID $LIFEBOAT_FENCING_TOKEN\" >> '{log}'",
            log = c.log().display(),
            marker = marker.display()
        ),
        Duration::from_secs(30),
    );
    let cfg = || {
        c.config(FailoverPolicy::Immediate)
            // Long enough for a second manager to be elected before the term runs out.
            .primary_lease(Duration::from_secs(5))
            .node(
                NodeSpec::new("pg-a")
                    .health(a.clone())
                    .demote_hook(demote.clone()),
            )
            .node(
                NodeSpec::new("pg-b")
                    .health(b.clone())
                    .promote_hook(c.log_hook("promote")),
            )
    };
    let manager_lease = Duration::from_millis(500);
    let (m1, mut rx1) = c.manager_with_lease(cfg(), "m1", manager_lease).await;
    // Make pg-a's lease run out quickly: its agent dies now.
    agent.kill();
    a.set(false);
    let ev = wait_for(&m1, &mut rx1, "token taken", |e| {
        matches!(
            e,
            FailoverEvent::FailoverStep {
                step: Step::TokenTaken,
                ..
            }
        )
    })
    .await;
    let FailoverEvent::FailoverStep {
        token: Some(token), ..
    } = ev
    else {
        unreachable!()
    };
    drop(m1);
    drop(rx1);
    let persisted = lifeboat_failover::DecisionStore::open(Some(&c.state()))
        .unwrap()
        .snapshot();
    let d = persisted.in_progress.expect("the decision is persisted");
    assert_eq!(d.token, Some(token));
    assert!(!d.has(&Step::Promoted));

    std::fs::remove_file(&marker).unwrap();
    let (m2, mut rx2) = c.manager_with_lease(cfg(), "m2", manager_lease).await;
    let done = wait_for(&m2, &mut rx2, "completed", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
    let FailoverEvent::FailoverCompleted {
        new_leader,
        token: t2,
    } = done
    else {
        unreachable!()
    };
    assert_eq!((new_leader.as_str(), t2), ("pg-b", token));
    let h2 = m2.history();
    assert!(h2.iter().any(|e| matches!(
        e,
        FailoverEvent::FailoverStep {
            step: Step::Resumed,
            ..
        }
    )));
    assert!(!h2.iter().any(|e| matches!(
        e,
        FailoverEvent::FailoverStep {
            step: Step::TokenTaken,
            ..
        }
    )));
    assert_eq!(started(&m2), 0, "resumed, not started anew");
    let promote: Vec<_> = c
        .log_lines()
        .into_iter()
        .filter(|l| l[0] == "promote")
        .collect();
    assert_eq!(promote.len(), 1);
    assert_eq!(token_of(&promote[0]), token.get());
    // No other token was ever taken for the role.
    let holder = c.store.current(PRIMARY_NS).await.unwrap().unwrap();
    assert_eq!(holder.token, token);
    assert_eq!(token, FencingToken(agent.token.get() + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_promotes_after_the_grace_period_when_the_candidate_does_not_catch_up() {
    let c = Cluster::new();
    let (a, b) = (Flag::new(true), Flag::new(true));
    let agent = Agent::start(&c.store, "pg-a", LEASE).await;
    let grace = Duration::from_millis(400);
    let cfg = c
        .config(FailoverPolicy::Graceful {
            grace_period: grace,
        })
        .node(
            NodeSpec::new("pg-a")
                .health(a.clone())
                .demote_hook(c.log_hook("demote")),
        )
        .node(
            NodeSpec::new("pg-b")
                .health(b.clone())
                .lag_reporter(lifeboat_failover::FixedLag::new(512))
                .promote_hook(c.log_hook("promote")),
        );
    let (m, mut rx) = c.manager(cfg, "m1").await;
    agent.kill();
    a.set(false);
    wait_for(&m, &mut rx, "completed", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
    let last = m.state().unwrap().last_decision.unwrap().decision;
    let steps: Vec<Step> = last.steps.iter().map(|r| r.step.clone()).collect();
    assert_eq!(
        steps,
        [
            Step::TokenTaken,
            Step::Demoted,
            Step::CatchUpTimedOut,
            Step::Promoted
        ]
    );
    let timed_out = &last.steps[2];
    assert!(timed_out.detail.contains("512"), "{}", timed_out.detail);
    assert!(timed_out.at_unix_ms >= last.started_at_unix_ms + grace.as_millis() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_from_a_live_primary_asks_it_to_resign_first() {
    let c = Cluster::new();
    let (a, b) = (Flag::new(true), Flag::new(true));
    let resign = c.dir.path().join("resign-pg-a");
    let agent = Agent::start_with_demote_file(&c.store, "pg-a", LEASE, Some(resign.clone())).await;
    let demote = Hook::new(
        format!(
            "echo \"demote $LIFEBOAT_NODE_ID $LIFEBOAT_FENCING_TOKEN $(date +%s%N)\" >> '{}' && touch '{}'",
            c.log().display(),
            resign.display()
        ),
        Duration::from_secs(10),
    );
    let cfg = c
        .config(FailoverPolicy::Manual)
        .primary_lease(Duration::from_secs(5))
        .node(NodeSpec::new("pg-a").health(a.clone()).demote_hook(demote))
        .node(
            NodeSpec::new("pg-b")
                .health(b.clone())
                .promote_hook(c.log_hook("promote")),
        );
    let (m, _rx) = c.manager(cfg, "m1").await;
    // Wait until the manager has seen pg-a as the primary and pg-b as healthy.
    while !(m.state().unwrap().primary.is_some()
        && m.node_health()
            .iter()
            .any(|(n, ok, _)| n.as_str() == "pg-b" && *ok))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = std::time::Instant::now();
    let out = m
        .trigger("pg-b", "planned maintenance of pg-a")
        .await
        .unwrap();
    // The live primary resigned on request: no lease wait (5 s) was needed.
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(out.token > agent.token);
    let lines = c.log_lines();
    assert_eq!(lines[0][0], "demote");
    // The demote hook of a live holder is told the holder's own token.
    assert_eq!(token_of(&lines[0]), agent.token.get());
    assert_eq!(
        (lines[1][0].as_str(), token_of(&lines[1])),
        ("promote", out.token.get())
    );
    let steps: Vec<Step> = m
        .state()
        .unwrap()
        .last_decision
        .unwrap()
        .decision
        .steps
        .iter()
        .map(|r| r.step.clone())
        .collect();
    assert_eq!(steps, [Step::Demoted, Step::TokenTaken, Step::Promoted]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_demote_and_stonith_hooks_fall_back_to_the_lease_wait() {
    let c = Cluster::new();
    let (a, b) = (Flag::new(true), Flag::new(true));
    let agent = Agent::start(&c.store, "pg-a", LEASE).await;
    let failing = |what: &str| {
        Hook::new(
            format!(
                "echo \"{what} $LIFEBOAT_NODE_ID $LIFEBOAT_FENCING_TOKEN $(date +%s%N)\" >> '{}'; echo 'no route to host' >&2; exit 7",
                c.log().display()
            ),
            Duration::from_secs(10),
        )
    };
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .node(
            NodeSpec::new("pg-a")
                .health(a.clone())
                .demote_hook(failing("demote"))
                .stonith_hook(failing("stonith")),
        )
        .node(
            NodeSpec::new("pg-b")
                .health(b.clone())
                .promote_hook(c.log_hook("promote")),
        );
    let (m, mut rx) = c.manager(cfg, "m1").await;
    agent.kill();
    a.set(false);
    wait_for(&m, &mut rx, "completed", |e| {
        matches!(e, FailoverEvent::FailoverCompleted { .. })
    })
    .await;
    let last = m.state().unwrap().last_decision.unwrap().decision;
    let steps: Vec<Step> = last.steps.iter().map(|r| r.step.clone()).collect();
    assert_eq!(
        steps,
        [
            Step::TokenTaken,
            Step::DemoteFailed,
            Step::StonithFailed,
            Step::WaitedOutLease,
            Step::Promoted
        ]
    );
    // The hook's exit status and stderr are in the record.
    assert!(
        last.steps[1].detail.contains("no route to host"),
        "{}",
        last.steps[1].detail
    );
    let words: Vec<String> = c.log_lines().iter().map(|l| l[0].clone()).collect();
    assert_eq!(words, ["demote", "stonith", "promote"]);
    let promote_at: u128 = c.log_lines()[2][3].parse().unwrap();
    let last_renew = agent.last_renew_ns.load(Ordering::SeqCst) as u128;
    assert!(promote_at >= last_renew + (LEASE + MARGIN).as_nanos());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_promote_hook_fails_the_failover() {
    let c = Cluster::new();
    let (a, b) = (Flag::new(true), Flag::new(true));
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .initial_primary("pg-a")
        .node(
            NodeSpec::new("pg-a")
                .health(a.clone())
                .stonith_hook(c.log_hook("stonith")),
        )
        .node(
            NodeSpec::new("pg-b")
                .health(b.clone())
                .promote_hook(Hook::new("exit 1", Duration::from_secs(5))),
        );
    let (m, mut rx) = c.manager(cfg, "m1").await;
    a.set(false);
    let ev = wait_for(&m, &mut rx, "failed", |e| {
        matches!(e, FailoverEvent::FailoverFailed { .. })
    })
    .await;
    let FailoverEvent::FailoverFailed { reason } = ev else {
        unreachable!()
    };
    assert!(reason.contains("promote hook for pg-b failed"), "{reason}");
    let stats = m.stats();
    assert_eq!((stats.total, stats.failed, stats.successful), (1, 1, 0));
    let s = m.state().unwrap();
    assert!(s.in_progress.is_none());
    assert!(!s.last_decision.unwrap().succeeded);
    assert_eq!(
        s.primary.unwrap().as_str(),
        "pg-a",
        "the primary did not change"
    );
}
