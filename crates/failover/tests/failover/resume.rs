//! A manager that dies mid-failover, with the default anti-flapping budget (one automatic
//! failover per hour): when its term ran out before the next manager started, the resume
//! fails — and that failed resume must not use the budget, or the fresh decision that has to
//! follow would be downgraded to Manual and leave the cluster without a primary.

use crate::common;

use std::time::Duration;

use common::*;
use lifeboat_coord::Backend;
use lifeboat_failover::{FailoverEvent, FailoverPolicy, Hook, NodeSpec, Step};

const LEASE: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resume_does_not_use_the_budget_and_a_fresh_decision_promotes() {
    let c = Cluster::new();
    let (a, b) = (Flag::new(true), Flag::new(true));
    let marker = c.dir.path().join("block-demote");
    write(&marker, "");
    // Blocks while the marker exists (the first manager dies inside it), then confirms.
    let demote = Hook::new(
        format!(
            "while [ -e '{marker}' ]; do sleep 0.02; done; \
             echo \"demote $LIFEBOAT_NODE_ID $LIFEBOAT_FENCING_TOKEN\" >> '{log}'",
            log = c.log().display(),
            marker = marker.display()
        ),
        Duration::from_secs(30),
    );
    let cfg = || {
        c.config(FailoverPolicy::Immediate)
            // The defaults: one automatic failover per hour, ten minutes apart.
            .max_auto_failovers(1)
            .failover_window(Duration::from_secs(3600))
            .min_failover_interval(Duration::from_secs(600))
            .primary_lease(LEASE)
            .initial_primary("pg-a")
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
        token: Some(first), ..
    } = ev
    else {
        unreachable!()
    };
    // The manager dies inside the demote hook; nobody renews the new term any more.
    drop(m1);
    drop(rx1);
    let mut expired = false;
    for _ in 0..100 {
        if c.store.current(PRIMARY_NS).await.unwrap().is_none() {
            expired = true;
            break;
        }
        // Wakes at the lease's expiry (store clock).
        c.store
            .wait_for_change(PRIMARY_NS, Duration::from_secs(1))
            .await
            .unwrap();
    }
    assert!(expired, "term {first} never expired");
    std::fs::remove_file(&marker).unwrap();

    let (m2, mut rx2) = c.manager_with_lease(cfg(), "m2", manager_lease).await;
    let failed = wait_for(&m2, &mut rx2, "the resume fails", |e| {
        matches!(e, FailoverEvent::FailoverFailed { .. })
    })
    .await;
    assert!(
        format!("{failed:?}").contains("cannot be renewed"),
        "{failed:?}"
    );
    let done = wait_for(&m2, &mut rx2, "a fresh failover", |e| {
        matches!(
            e,
            FailoverEvent::FailoverCompleted { .. } | FailoverEvent::PolicyDowngraded { .. }
        )
    })
    .await;
    let FailoverEvent::FailoverCompleted { new_leader, token } = done else {
        panic!(
            "expected a fresh failover, got {done:?}; history {:#?}",
            m2.history()
        );
    };
    assert_eq!(new_leader.as_str(), "pg-b");
    assert!(token > first, "a new term: {token} after {first}");
    assert_eq!(started(&m2), 1, "decided afresh once");
    assert_eq!(m2.effective_policy(), FailoverPolicy::Immediate);
    let state = m2.state().unwrap();
    assert!(!state.downgraded);
    assert_eq!(
        state.auto_failovers_unix_ms.len(),
        1,
        "only the failover that happened counts"
    );
    let promoted: Vec<_> = c
        .log_lines()
        .into_iter()
        .filter(|l| l[0] == "promote")
        .collect();
    assert_eq!(promoted.len(), 1, "{promoted:?}");
    assert_eq!(promoted[0][2], token.get().to_string());
}
