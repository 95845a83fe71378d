//! Backend conformance suite: the same properties checked on memory, embedded, PostgreSQL
//! and etcd, at the `Backend` level and through `LeaderElection` / `Leadership`.
//!
//! NB: destructive only within fresh random namespaces; PostgreSQL and etcd run when
//! `LIFEBOAT_TEST_PG` / `LIFEBOAT_TEST_ETCD` are set (and fail if `LIFEBOAT_REQUIRE_*=1`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lifeboat_coord::{
    Backend, EmbeddedBackend, EtcdBackend, FencingToken, Grant, LeaderConfig, LeaderElection,
    LeaderEvent, LeaderInfo, LostReason, ManualClock, MemoryStore, NodeId, PostgresBackend, Result,
};

/// One backend under test: how to open a node's connection and how to make a lease expire.
enum Kind {
    Memory {
        store: MemoryStore,
        clock: ManualClock,
    },
    Embedded {
        dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
    },
    Etcd {
        endpoint: String,
    },
}

struct Harness {
    kind: Kind,
    /// Lease used for backend-level calls.
    lease: Duration,
}

fn env_service(var: &str, require: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var(require).as_deref() == Ok("1") => {
            panic!("{require}=1 but {var} is not set")
        }
        _ => {
            eprintln!("skipping: set {var} to run this test against a real server");
            None
        }
    }
}

fn unique_ns(tag: &str) -> String {
    format!(
        "t-{tag}-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time after epoch")
            .as_nanos()
    )
}

impl Harness {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Memory { .. } => "memory",
            Kind::Embedded { .. } => "embedded",
            Kind::Postgres { .. } => "postgres",
            Kind::Etcd { .. } => "etcd",
        }
    }

    /// A fresh "node": its own connection / file descriptors.
    async fn backend(&self) -> Arc<dyn Backend> {
        match &self.kind {
            Kind::Memory { store, .. } => Arc::new(store.clone()),
            Kind::Embedded { dir } => Arc::new(EmbeddedBackend::open(dir.path()).expect("open")),
            Kind::Postgres { url } => Arc::new(
                PostgresBackend::connect(url, Duration::from_secs(2))
                    .await
                    .expect("connect to PostgreSQL"),
            ),
            Kind::Etcd { endpoint } => Arc::new(
                EtcdBackend::connect(std::slice::from_ref(endpoint), Duration::from_secs(2))
                    .await
                    .expect("connect to etcd"),
            ),
        }
    }

    /// True when an old holder can still call the store after its lease expired (all but
    /// embedded, where "expiry" is the holder process dying).
    fn holder_survives_expiry(&self) -> bool {
        !matches!(self.kind, Kind::Embedded { .. })
    }

    /// Makes `holder`'s lease in `ns` expire in the store's own way, and waits until the
    /// store agrees. Consumes the holder's handle (embedded: dropping it is the death).
    async fn expire(&self, ns: &str, holder: Arc<dyn Backend>) -> Option<Arc<dyn Backend>> {
        match &self.kind {
            Kind::Memory { store, clock } => {
                clock.advance(self.lease + Duration::from_millis(1));
                store.notify_clock_moved();
                Some(holder)
            }
            Kind::Embedded { .. } => {
                drop(holder);
                None
            }
            Kind::Postgres { .. } | Kind::Etcd { .. } => {
                let probe = self.backend().await;
                let start = Instant::now();
                while probe.current(ns).await.expect("current").is_some() {
                    assert!(
                        start.elapsed() < Duration::from_secs(6),
                        "lease never expired"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some(holder)
            }
        }
    }

    /// An election config on this backend; memory elections use a store on the system
    /// clock, because the `Leadership` handle's timers run in real time.
    fn config(&self, ns: &str, node: &str, backend: Option<Arc<dyn Backend>>) -> LeaderConfig {
        let base = match (&self.kind, backend) {
            (_, Some(b)) => LeaderConfig::with_backend(b),
            (Kind::Memory { .. }, None) => unreachable!("memory elections pass their store"),
            (Kind::Embedded { dir }, None) => LeaderConfig::embedded(dir.path()),
            (Kind::Postgres { url }, None) => LeaderConfig::postgres(url.clone()),
            (Kind::Etcd { endpoint }, None) => LeaderConfig::etcd([endpoint.clone()]),
        };
        let base = base.namespace(ns).node_id(node);
        if matches!(self.kind, Kind::Etcd { .. }) {
            // etcd leases are whole seconds, 2 s minimum.
            base.lease_duration(Duration::from_secs(2))
                .renew_interval(Duration::from_millis(400))
                .renew_deadline(Duration::from_millis(1200))
                .safety_margin(Duration::from_millis(500))
                .op_timeout(Duration::from_millis(1000))
                .retry_interval(Duration::from_millis(200))
        } else {
            base.lease_duration(Duration::from_millis(1000))
                .renew_interval(Duration::from_millis(200))
                .renew_deadline(Duration::from_millis(600))
                .safety_margin(Duration::from_millis(200))
                .op_timeout(Duration::from_millis(500))
                .retry_interval(Duration::from_millis(100))
        }
    }

    /// A per-test backend for elections (memory: a fresh store on the system clock).
    async fn election_backend(&self) -> Option<Arc<dyn Backend>> {
        match self.kind {
            Kind::Memory { .. } => Some(Arc::new(MemoryStore::new(Arc::new(
                lifeboat_coord::SystemClock,
            )))),
            _ => None,
        }
    }

    async fn election(
        &self,
        ns: &str,
        node: &str,
        shared: &Option<Arc<dyn Backend>>,
    ) -> LeaderElection {
        LeaderElection::new_without_env(self.config(ns, node, shared.clone()))
            .await
            .expect("open election")
    }
}

fn n(id: &str) -> NodeId {
    NodeId::new(id)
}

async fn acquire(b: &dyn Backend, ns: &str, node: &str, lease: Duration) -> Option<Grant> {
    b.try_acquire(ns, &n(node), lease)
        .await
        .expect("try_acquire")
}

// ---------------------------------------------------------------- backend-level properties

async fn exclusive_grant(h: &Harness) {
    let ns = unique_ns("excl");
    let (b1, b2) = (h.backend().await, h.backend().await);
    let g = acquire(&*b1, &ns, "n1", h.lease)
        .await
        .expect("free lease is granted");
    assert!(g.token.0 > 0);
    assert!(
        acquire(&*b2, &ns, "n2", h.lease).await.is_none(),
        "second node got a held lease"
    );
    assert!(
        acquire(&*b1, &ns, "n1", h.lease).await.is_none(),
        "holder re-acquired its own lease"
    );
    assert!(b1.resign(&ns, &n("n1"), g.token).await.expect("resign"));
}

async fn tokens_strictly_increase(h: &Harness) {
    let ns = unique_ns("tok");
    let mut last = FencingToken(0);
    let mut check = |t: FencingToken, when: &str| {
        assert!(t > last, "{when}: token {t} not above {last}");
        last = t;
    };
    let b1 = h.backend().await;
    let g = acquire(&*b1, &ns, "n1", h.lease).await.expect("grant");
    check(g.token, "first grant");
    assert!(b1.resign(&ns, &n("n1"), g.token).await.expect("resign"));
    let g = acquire(&*b1, &ns, "n1", h.lease)
        .await
        .expect("grant after resign");
    check(g.token, "same node after resign");
    let b2 = h.backend().await;
    let g2 = {
        let _survivor = h.expire(&ns, b1).await;
        acquire(&*b2, &ns, "n2", h.lease)
            .await
            .expect("grant after expiry")
    };
    check(g2.token, "other node after expiry");
    // Re-open: a brand-new connection / instance continues the sequence.
    assert!(b2.resign(&ns, &n("n2"), g2.token).await.expect("resign"));
    drop(b2);
    let b3 = h.backend().await;
    let g3 = acquire(&*b3, &ns, "n3", h.lease)
        .await
        .expect("grant after re-open");
    check(g3.token, "after re-open");
    b3.resign(&ns, &n("n3"), g3.token).await.expect("resign");
}

async fn renew_is_compare_and_set(h: &Harness) {
    let ns = unique_ns("renew");
    let (b1, b2) = (h.backend().await, h.backend().await);
    let g = acquire(&*b1, &ns, "n1", h.lease).await.expect("grant");
    let e = b2
        .renew(&ns, &n("n2"), g.token, h.lease)
        .await
        .expect_err("non-holder renewed");
    assert!(e.is_not_leader(), "{e}");
    let old = FencingToken(g.token.0 - 1);
    let e = b1
        .renew(&ns, &n("n1"), old, h.lease)
        .await
        .expect_err("old token renewed");
    assert!(e.is_not_leader(), "{e}");
    b1.renew(&ns, &n("n1"), g.token, h.lease)
        .await
        .expect("holder renews");
    assert!(b1.resign(&ns, &n("n1"), g.token).await.expect("resign"));
    let e = b1
        .renew(&ns, &n("n1"), g.token, h.lease)
        .await
        .expect_err("renewed after resign");
    assert!(e.is_not_leader(), "{e}");
}

async fn stale_resign_keeps_new_holder(h: &Harness) {
    let ns = unique_ns("resign");
    let (b1, b2) = (h.backend().await, h.backend().await);
    let g1 = acquire(&*b1, &ns, "n1", h.lease).await.expect("grant");
    assert!(b1.resign(&ns, &n("n1"), g1.token).await.expect("resign"));
    let g2 = acquire(&*b2, &ns, "n2", h.lease)
        .await
        .expect("grant to n2");
    assert!(!b1
        .resign(&ns, &n("n1"), g1.token)
        .await
        .expect("stale resign answers"));
    assert!(!b1
        .resign(&ns, &n("n2"), g1.token)
        .await
        .expect("wrong-token resign answers"));
    let cur = b2
        .current(&ns)
        .await
        .expect("current")
        .expect("n2 still holds");
    assert_eq!((cur.node_id, cur.token), (n("n2"), g2.token));
    b2.renew(&ns, &n("n2"), g2.token, h.lease)
        .await
        .expect("n2 still renews");
    assert!(b2.resign(&ns, &n("n2"), g2.token).await.expect("resign"));
}

async fn expiry_lets_another_node_in(h: &Harness) {
    let ns = unique_ns("exp");
    let (b1, b2) = (h.backend().await, h.backend().await);
    let g1 = acquire(&*b1, &ns, "n1", h.lease).await.expect("grant");
    let survivor = h.expire(&ns, b1).await;
    let g2 = acquire(&*b2, &ns, "n2", h.lease)
        .await
        .expect("grant after expiry");
    assert!(g2.token > g1.token);
    if let Some(b1) = survivor.filter(|_| h.holder_survives_expiry()) {
        let e = b1
            .renew(&ns, &n("n1"), g1.token, h.lease)
            .await
            .expect_err("expired renewed");
        assert!(e.is_not_leader(), "{e}");
        assert!(!b1
            .resign(&ns, &n("n1"), g1.token)
            .await
            .expect("resign answers"));
    }
    let cur = b2.current(&ns).await.expect("current").expect("holder");
    assert_eq!((cur.node_id, cur.token), (n("n2"), g2.token));
    b2.resign(&ns, &n("n2"), g2.token).await.expect("resign");
}

async fn current_is_truthful(h: &Harness) {
    let ns = unique_ns("cur");
    let (b1, b2) = (h.backend().await, h.backend().await);
    assert_eq!(b2.current(&ns).await.expect("current"), None);
    let g = acquire(&*b1, &ns, "n1", h.lease).await.expect("grant");
    for b in [&b1, &b2] {
        let LeaderInfo {
            node_id,
            token,
            expires_in,
        } = b.current(&ns).await.expect("current").expect("a holder");
        assert_eq!((node_id, token), (n("n1"), g.token));
        if let Some(left) = expires_in {
            assert!(left <= g.lease, "expires in {left:?} > lease {:?}", g.lease);
        }
    }
    assert!(b1.resign(&ns, &n("n1"), g.token).await.expect("resign"));
    assert_eq!(b2.current(&ns).await.expect("current"), None);
}

// ---------------------------------------------------------------- election-level properties

/// `acquire_leadership` waits while another node leads and wins promptly after it resigns.
async fn handover_after_resign(h: &Harness) -> Duration {
    let ns = unique_ns("hand");
    let shared = h.election_backend().await;
    let e1 = h.election(&ns, "n1", &shared).await;
    let e2 = h.election(&ns, "n2", &shared).await;
    let l1 = e1.acquire_leadership().await.expect("n1 leads");
    let waiter = tokio::spawn(async move {
        let l = e2.acquire_leadership().await.expect("n2 leads");
        (Instant::now(), l, e2)
    });
    // Let n2 start waiting (it must not win while n1 leads and renews).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "n2 won while n1 held a valid lease");
    assert!(l1.is_valid());
    let resigned = Instant::now();
    l1.resign().await.expect("resign");
    assert!(!l1.is_valid(), "resigned handle still valid");
    let (won, l2, _e2) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("n2 did not take over within 5 s")
        .expect("waiter task");
    let latency = won.duration_since(resigned);
    assert!(l2.fencing_token() > l1.fencing_token());
    assert!(
        latency < Duration::from_millis(300),
        "{}: hand-over took {latency:?}",
        h.name()
    );
    let cur = e1.current().await.expect("current").expect("holder");
    assert_eq!((cur.node_id, cur.token), (n("n2"), l2.fencing_token()));
    l2.resign().await.expect("resign");
    latency
}

/// A backend wrapper that can make renew calls fail or hang, to test the handle's deadlines.
struct Faulty {
    inner: Arc<dyn Backend>,
    fail_renew: AtomicBool,
    hang_renew: AtomicBool,
}

#[async_trait]
impl Backend for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    async fn try_acquire(&self, ns: &str, node: &NodeId, lease: Duration) -> Result<Option<Grant>> {
        self.inner.try_acquire(ns, node, lease).await
    }
    async fn renew(
        &self,
        ns: &str,
        node: &NodeId,
        t: FencingToken,
        lease: Duration,
    ) -> Result<Duration> {
        if self.hang_renew.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.fail_renew.load(Ordering::SeqCst) {
            return Err(lifeboat_coord::Error::Timeout {
                backend: "faulty",
                op: "renew",
                after: Duration::ZERO,
            });
        }
        self.inner.renew(ns, node, t, lease).await
    }
    async fn resign(&self, ns: &str, node: &NodeId, t: FencingToken) -> Result<bool> {
        self.inner.resign(ns, node, t).await
    }
    async fn current(&self, ns: &str) -> Result<Option<LeaderInfo>> {
        self.inner.current(ns).await
    }
    async fn wait_for_change(&self, ns: &str, timeout: Duration) -> Result<()> {
        self.inner.wait_for_change(ns, timeout).await
    }
}

/// Renewals happen, and the handle reports `Lost` when the store rejects a renewal, when
/// renewals keep failing, and at the local deadline while a renew call hangs.
async fn leadership_loses_on_time(h: &Harness) {
    let inner = match h.election_backend().await {
        Some(b) => b,
        None => h.backend().await,
    };
    let faulty = Arc::new(Faulty {
        inner,
        fail_renew: AtomicBool::new(false),
        hang_renew: AtomicBool::new(false),
    });
    let backend: Arc<dyn Backend> = faulty.clone();
    let cfg = |ns: &str| h.config(ns, "n1", Some(backend.clone()));
    let timing = cfg("x");
    let (lease, margin, renew_deadline) = (
        timing.get_lease_duration(),
        timing.get_safety_margin(),
        timing.get_renew_deadline(),
    );
    let slack = Duration::from_millis(150);

    // 1. Renewals arrive, then the store rejects one (the term was released behind our back).
    let ns = unique_ns("rej");
    let e = LeaderElection::new_without_env(cfg(&ns))
        .await
        .expect("election");
    let mut events = e.subscribe().await;
    let l = e.acquire_leadership().await.expect("lead");
    assert!(
        matches!(events.recv().await, Ok(LeaderEvent::Acquired { fencing_token, .. }) if fencing_token == l.fencing_token())
    );
    assert!(
        matches!(events.recv().await, Ok(LeaderEvent::Renewed { fencing_token }) if fencing_token == l.fencing_token())
    );
    // guard() runs a side effect only with enough lease left, and hands it the token.
    let token = l
        .guard(Duration::ZERO, |t| async move { t })
        .await
        .expect("valid");
    assert_eq!(token, l.fencing_token());
    let e2 = l
        .guard(lease, |_| async {})
        .await
        .expect_err("guard ran with less than min_remaining left");
    assert!(e2.is_not_leader());
    assert!(faulty
        .inner
        .resign(&ns, &n("n1"), l.fencing_token())
        .await
        .expect("operator release"));
    let reason = tokio::time::timeout(lease, l.lost())
        .await
        .expect("lost within a lease");
    assert_eq!(reason, LostReason::Rejected);
    assert!(!l.is_valid());
    loop {
        match events.recv().await.expect("event") {
            LeaderEvent::Lost {
                fencing_token,
                reason,
            } => {
                assert_eq!(
                    (fencing_token, reason),
                    (l.fencing_token(), LostReason::Rejected)
                );
                break;
            }
            LeaderEvent::Renewed { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(e);

    // 2. Renewals fail (store unreachable): lost after renew_deadline, before the deadline.
    let ns = unique_ns("fail");
    let e = LeaderElection::new_without_env(cfg(&ns))
        .await
        .expect("election");
    let l = e.acquire_leadership().await.expect("lead");
    let acquired = Instant::now();
    faulty.fail_renew.store(true, Ordering::SeqCst);
    let reason = l.lost().await;
    let after = acquired.elapsed();
    faulty.fail_renew.store(false, Ordering::SeqCst);
    assert_eq!(reason, LostReason::RenewDeadline);
    assert!(after <= lease - margin + slack, "lost only after {after:?}");
    assert!(
        after + slack >= renew_deadline,
        "gave up early, after {after:?}"
    );
    drop(e);

    // 3. A renew call hangs: lost at the local deadline (send + lease − margin), not later.
    // op_timeout = renew_deadline lets the hung call run into the local deadline, which must
    // preempt it.
    let ns = unique_ns("hang");
    let e = LeaderElection::new_without_env(cfg(&ns).op_timeout(renew_deadline))
        .await
        .expect("election");
    let l = e.acquire_leadership().await.expect("lead");
    let acquired = Instant::now();
    faulty.hang_renew.store(true, Ordering::SeqCst);
    let reason = l.lost().await;
    let after = acquired.elapsed();
    faulty.hang_renew.store(false, Ordering::SeqCst);
    assert_eq!(reason, LostReason::LocalDeadline);
    assert!(!l.is_valid());
    assert!(
        after <= lease - margin + slack,
        "still valid {after:?} after acquiring"
    );
    assert!(
        after + slack >= lease - margin,
        "lost early, after {after:?}"
    );
    eprintln!(
        "{}: hung renew → lost after {after:?} ({reason:?})",
        h.name()
    );
    drop(e);
}

/// start() campaigns in the background; is_leader / subscribe / observe agree.
async fn background_campaign(h: &Harness) {
    let ns = unique_ns("bg");
    let shared = h.election_backend().await;
    let e1 = h.election(&ns, "n1", &shared).await;
    let e2 = h.election(&ns, "n2", &shared).await;
    let mut ev1 = e1.subscribe().await;
    e1.start().await;
    let l1 = e1
        .acquire_leadership()
        .await
        .expect("background campaign wins");
    assert!(e1.is_leader().await);
    assert!(
        matches!(ev1.recv().await, Ok(LeaderEvent::Acquired { fencing_token, .. }) if fencing_token == l1.fencing_token())
    );
    e2.start().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!e2.is_leader().await, "two leaders");
    let mut observed = Box::pin(e2.observe());
    use futures::StreamExt;
    let first = observed
        .next()
        .await
        .expect("observe yields")
        .expect("current");
    assert_eq!(first.map(|i| i.token), Some(l1.fencing_token()));
    e1.stop().await.expect("stop");
    let l2 = tokio::time::timeout(Duration::from_secs(5), e2.acquire_leadership())
        .await
        .expect("n2 takes over after stop")
        .expect("lead");
    assert!(l2.fencing_token() > l1.fencing_token());
    let next = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match observed.next().await.expect("stream").expect("current") {
                Some(i) if i.node_id == n("n2") => return i,
                _ => continue,
            }
        }
    })
    .await
    .expect("observe saw n2");
    assert_eq!(next.token, l2.fencing_token());
    e2.stop().await.expect("stop");
}

/// Runs one step with a time bound, so a hang fails with the step's name instead of
/// stalling the test binary.
async fn step<T>(h: &Harness, name: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), f).await {
        Ok(v) => v,
        Err(_) => panic!("{}: step {name} did not finish within 30 s", h.name()),
    }
}

async fn run_suite(h: Harness) {
    let t = Instant::now();
    step(&h, "exclusive_grant", exclusive_grant(&h)).await;
    step(&h, "tokens_strictly_increase", tokens_strictly_increase(&h)).await;
    step(&h, "renew_is_compare_and_set", renew_is_compare_and_set(&h)).await;
    step(
        &h,
        "stale_resign_keeps_new_holder",
        stale_resign_keeps_new_holder(&h),
    )
    .await;
    step(
        &h,
        "expiry_lets_another_node_in",
        expiry_lets_another_node_in(&h),
    )
    .await;
    step(&h, "current_is_truthful", current_is_truthful(&h)).await;
    let mut latencies = Vec::new();
    for _ in 0..5 {
        latencies.push(step(&h, "handover_after_resign", handover_after_resign(&h)).await);
    }
    latencies.sort();
    eprintln!(
        "{}: resign → other campaigner holds: min {:?}, median {:?}, max {:?}",
        h.name(),
        latencies[0],
        latencies[2],
        latencies[4]
    );
    step(&h, "leadership_loses_on_time", leadership_loses_on_time(&h)).await;
    step(&h, "background_campaign", background_campaign(&h)).await;
    eprintln!(
        "{}: conformance suite passed in {:?}",
        h.name(),
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conforms() {
    let clock = ManualClock::new();
    let store = MemoryStore::new(Arc::new(clock.clone()));
    run_suite(Harness {
        kind: Kind::Memory { store, clock },
        lease: Duration::from_secs(10),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_conforms() {
    run_suite(Harness {
        kind: Kind::Embedded {
            dir: tempfile::tempdir().expect("tempdir"),
        },
        lease: Duration::from_secs(10),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_conforms() {
    let Some(url) = env_service("LIFEBOAT_TEST_PG", "LIFEBOAT_REQUIRE_PG") else {
        return;
    };
    run_suite(Harness {
        kind: Kind::Postgres { url },
        lease: Duration::from_millis(500),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_conforms() {
    let Some(endpoint) = env_service("LIFEBOAT_TEST_ETCD", "LIFEBOAT_REQUIRE_ETCD") else {
        return;
    };
    run_suite(Harness {
        kind: Kind::Etcd { endpoint },
        lease: Duration::from_secs(2),
    })
    .await;
}

/// A store that cannot be reached is a retryable error, never a "not leader" answer.
#[tokio::test]
async fn unreachable_stores_are_retryable_errors() {
    let timing = |c: LeaderConfig| {
        c.namespace("unreachable")
            .node_id("n1")
            .lease_duration(Duration::from_secs(2))
            .renew_interval(Duration::from_millis(400))
            .renew_deadline(Duration::from_millis(1200))
            .safety_margin(Duration::from_millis(500))
            .op_timeout(Duration::from_millis(300))
    };
    for config in [
        timing(LeaderConfig::postgres(
            "postgres://postgres@127.0.0.1:1/lifeboat",
        )),
        timing(LeaderConfig::etcd(["http://127.0.0.1:1"])),
    ] {
        let what = format!("{:?}", config);
        let err = match LeaderElection::new_without_env(config).await {
            Err(e) => e,
            // etcd connects lazily: the first call fails instead.
            Ok(e) => e
                .try_acquire()
                .await
                .expect_err("acquired from a dead store"),
        };
        assert!(err.is_retryable(), "{what}: {err}");
        assert!(!err.is_not_leader(), "{what}: {err}");
    }
}

/// The PostgreSQL backend re-establishes its connection after the server drops it, and the
/// term survives (renewals resume before the deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_term_survives_a_dropped_connection() {
    let Some(url) = env_service("LIFEBOAT_TEST_PG", "LIFEBOAT_REQUIRE_PG") else {
        return;
    };
    let app = unique_ns("app").replace('-', "_");
    let sep = if url.contains('?') { '&' } else { '?' };
    let h = Harness {
        kind: Kind::Postgres {
            url: format!("{url}{sep}application_name={app}"),
        },
        lease: Duration::from_millis(500),
    };
    let ns = unique_ns("reconnect");
    let e = h.election(&ns, "n1", &None).await;
    let l = e.acquire_leadership().await.expect("lead");
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(killed >= 1, "no connection named {app} to terminate");
    // Only events from after the kill count.
    let mut events = e.subscribe().await;
    // Wait for two renewals after the kill: the first may fail, the next reconnects.
    let mut renewed = 0;
    while renewed < 2 {
        match tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
            Ok(Ok(LeaderEvent::Renewed { .. })) => renewed += 1,
            Ok(Ok(LeaderEvent::Acquired { .. })) => {}
            Ok(Ok(other)) => panic!("unexpected {other:?}"),
            other => panic!("no renewal after the connection was dropped: {other:?}"),
        }
    }
    assert!(l.is_valid());
    l.resign().await.expect("resign");
}

/// A lease table written by a newer schema version is refused with a clear error, not used.
#[tokio::test]
async fn postgres_refuses_a_newer_schema() {
    let Some(url) = env_service("LIFEBOAT_TEST_PG", "LIFEBOAT_REQUIRE_PG") else {
        return;
    };
    let schema = unique_ns("schema").replace('-', "_");
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    // First use creates version 1 in the private schema.
    PostgresBackend::connect(&scoped, Duration::from_secs(2))
        .await
        .expect("fresh schema");
    admin
        .batch_execute(&format!(
            "UPDATE {schema}.lifeboat_coord_schema SET version = 99"
        ))
        .await
        .expect("bump version");
    let err = PostgresBackend::connect(&scoped, Duration::from_secs(2))
        .await
        .expect_err("newer schema accepted");
    assert!(
        matches!(err, lifeboat_coord::Error::Corrupt { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("version Some(99)"), "{err}");
    assert!(!err.is_retryable());
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop schema");
}
