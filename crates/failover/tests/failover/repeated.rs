//! One manager fails over again and again, on every real store: automatic A → B, automatic
//! B → C, then a manual switchover C → D right after it. Each failover needs the
//! primary-role term the previous one took to be handed over or released (on the embedded
//! store it is the manager's own file lock, which would otherwise block every later
//! failover for as long as the manager runs).

use crate::common;

use std::time::Duration;

use common::stores::{Kind, Store};
use common::*;
use lifeboat_failover::{FailoverEvent, FailoverManager, FailoverPolicy, NodeSpec};
use tokio::sync::broadcast;

const NODES: [&str; 4] = ["pg-a", "pg-b", "pg-c", "pg-d"];

async fn completed(
    m: &FailoverManager,
    rx: &mut broadcast::Receiver<FailoverEvent>,
    to: &str,
) -> u64 {
    let ev = wait_for(m, rx, &format!("failover to {to}"), |e| {
        matches!(
            e,
            FailoverEvent::FailoverCompleted { .. } | FailoverEvent::FailoverFailed { .. }
        )
    })
    .await;
    match ev {
        FailoverEvent::FailoverCompleted { new_leader, token } if new_leader.as_str() == to => {
            token.get()
        }
        other => panic!(
            "expected a failover to {to}, got {other:?}; history {:#?}",
            m.history()
        ),
    }
}

/// The promote hook's log: (node, token) in order.
fn promotions(c: &Cluster) -> Vec<(String, u64)> {
    c.log_lines()
        .into_iter()
        .filter(|l| l[0] == "promote")
        .map(|l| (l[1].clone(), l[2].parse().unwrap()))
        .collect()
}

async fn fails_over_repeatedly(kind: Kind, use_lease_signal: bool) {
    let Some(store) = Store::open(kind, "repeat").await else {
        return;
    };
    let c = Cluster::new();
    let health: Vec<_> = NODES.iter().map(|_| Flag::new(true)).collect();
    let mut cfg = c
        .config(FailoverPolicy::Immediate)
        .primary_namespace(store.primary_ns.clone())
        // etcd grants whole seconds, at least 2.
        .primary_lease(Duration::from_secs(2))
        // etcd expires a lease up to ~1 s late (its lessor checks twice a second, then
        // revokes through raft); the default margin is 1.5 s.
        .safety_margin(Duration::from_secs(1))
        .use_lease_signal(use_lease_signal)
        .initial_primary("pg-a");
    for (id, h) in NODES.iter().zip(&health) {
        cfg = cfg.node(
            NodeSpec::new(*id)
                .health(h.clone())
                .stonith_hook(c.log_hook("stonith"))
                .demote_hook(c.log_hook("demote"))
                .promote_hook(c.log_hook("promote")),
        );
    }
    let election = store.election("manager-1").await;
    let m = FailoverManager::new(cfg.build_without_env().unwrap(), election).await;
    let mut rx = m.subscribe();
    m.wait_until_acting(WAIT).await.unwrap();

    // 1. Automatic: pg-a goes down.
    health[0].set(false);
    let t1 = completed(&m, &mut rx, "pg-b").await;

    // 2. Automatic again: pg-b goes down too; pg-a was demoted, so pg-c it is.
    health[1].set(false);
    let t2 = completed(&m, &mut rx, "pg-c").await;
    assert!(t2 > t1, "{kind:?}: {t2} after {t1}");

    // 3. Manual, right after: an operator switches pg-c (healthy) over to pg-d.
    let out = m
        .trigger("pg-d", "switchover after the automatic failovers")
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{kind:?}: trigger after a failover: {e}; {:#?}",
                m.history()
            )
        });
    assert_eq!(out.new_leader.as_str(), "pg-d");
    let t3 = out.token.get();
    assert!(t3 > t2, "{kind:?}: {t3} after {t2}");

    assert_eq!(
        promotions(&c),
        vec![
            ("pg-b".to_owned(), t1),
            ("pg-c".to_owned(), t2),
            ("pg-d".to_owned(), t3)
        ],
        "{kind:?}"
    );
    let demoted: Vec<_> = c
        .log_lines()
        .into_iter()
        .filter(|l| l[0] == "demote")
        .collect();
    assert!(
        demoted.iter().any(|l| l[1] == "pg-c"),
        "{kind:?}: the live pg-c was asked to demote: {demoted:?}"
    );
    let stats = m.stats();
    eprintln!(
        "{kind:?}: tokens {t1} {t2} {t3}; last failover (switchover) took {:?}",
        stats.last_failover_duration
    );
    assert_eq!((stats.successful, stats.failed), (3, 0), "{kind:?}");
    // The store's tokens kept increasing across all three terms, so pg-b's and pg-c's
    // writes are fenced by pg-d's: nothing released a term backwards.
    if let Some(h) = store.backend.current(&store.primary_ns).await.unwrap() {
        assert!(h.token.get() >= t3, "{kind:?}: {h:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_fails_over_again_and_again() {
    fails_over_repeatedly(Kind::Embedded, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fails_over_again_and_again() {
    fails_over_repeatedly(Kind::Postgres, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_fails_over_again_and_again() {
    fails_over_repeatedly(Kind::Etcd, true).await;
}

/// Without the lease signal the manager's own leftover lock was not a "still alive" signal
/// but a term the store refused to replace: the same run must pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_fails_over_again_and_again_without_the_lease_signal() {
    fails_over_repeatedly(Kind::Embedded, false).await;
}

/// A failover that fails after taking its term (the promote hook fails once) gives the term
/// back: on the embedded store the next decision would otherwise wait for the manager's own
/// lock and fail too, and so would every one after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_failed_failover_releases_its_term_for_the_next_decision() {
    let store = Store::open(Kind::Embedded, "failed").await.unwrap();
    let c = Cluster::new();
    let once = c.dir.path().join("fail-once");
    write(&once, "");
    let promote = lifeboat_failover::Hook::new(
        format!(
            "if [ -e '{once}' ]; then rm '{once}'; echo 'not yet' >&2; exit 1; fi; \
             echo \"promote $LIFEBOAT_NODE_ID $LIFEBOAT_FENCING_TOKEN\" >> '{log}'",
            once = once.display(),
            log = c.log().display()
        ),
        Duration::from_secs(10),
    );
    let a = Flag::new(true);
    let cfg = c
        .config(FailoverPolicy::Immediate)
        .primary_namespace(store.primary_ns.clone())
        .initial_primary("pg-a")
        .node(
            NodeSpec::new("pg-a")
                .health(a.clone())
                .stonith_hook(c.log_hook("stonith")),
        )
        .node(
            NodeSpec::new("pg-b")
                .health(Flag::new(true))
                .promote_hook(promote),
        );
    let election = store.election("manager-1").await;
    let m = FailoverManager::new(cfg.build_without_env().unwrap(), election).await;
    let mut rx = m.subscribe();
    m.wait_until_acting(WAIT).await.unwrap();
    a.set(false);
    let failed = wait_for(&m, &mut rx, "the first attempt fails", |e| {
        matches!(e, FailoverEvent::FailoverFailed { .. })
    })
    .await;
    assert!(format!("{failed:?}").contains("not yet"), "{failed:?}");
    let token = completed(&m, &mut rx, "pg-b").await;
    assert_eq!(promotions(&c), vec![("pg-b".to_owned(), token)]);
    assert_eq!(token, 2, "the second decision's own, new term");
}
