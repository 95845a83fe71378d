//! Real coordination stores for the failover tests: embedded (a directory), PostgreSQL and
//! etcd (from `LIFEBOAT_TEST_PG` / `LIFEBOAT_TEST_ETCD`; skipped when unset, a failure with
//! `LIFEBOAT_REQUIRE_PG=1` / `LIFEBOAT_REQUIRE_ETCD=1`). Namespaces are unique per test, so
//! tests sharing a server never see each other's terms.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lifeboat_coord::{
    Backend, EmbeddedBackend, EtcdBackend, LeaderConfig, LeaderElection, PostgresBackend,
};

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Postgres,
    Etcd,
}

/// An opened store: a backend handle shared by one manager (its election and the primary
/// role), and namespaces unique to this test.
pub struct Store {
    pub kind: Kind,
    pub backend: Arc<dyn Backend>,
    pub managers_ns: String,
    pub primary_ns: String,
    _dir: tempfile::TempDir,
}

/// Upper bound of one store call in these tests.
pub const OP_TIMEOUT: Duration = Duration::from_secs(1);

fn service(var: &str, require: &str) -> Option<String> {
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

impl Store {
    /// Opens `kind`, or `None` (test skipped) when its server is not configured.
    pub async fn open(kind: Kind, tag: &str) -> Option<Store> {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = match kind {
            Kind::Embedded => Arc::new(EmbeddedBackend::open(&dir.path().join("coord")).unwrap()),
            Kind::Postgres => {
                let url = service("LIFEBOAT_TEST_PG", "LIFEBOAT_REQUIRE_PG")?;
                Arc::new(PostgresBackend::connect(&url, OP_TIMEOUT).await.unwrap())
            }
            Kind::Etcd => {
                let ep = service("LIFEBOAT_TEST_ETCD", "LIFEBOAT_REQUIRE_ETCD")?;
                Arc::new(EtcdBackend::connect(&[ep], OP_TIMEOUT).await.unwrap())
            }
        };
        let unique = format!(
            "f-{tag}-{}-{:x}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        Some(Store {
            kind,
            backend,
            managers_ns: format!("{unique}-m"),
            primary_ns: format!("{unique}-p"),
            _dir: dir,
        })
    }

    /// The managers' election for `node` over this store (lease 4 s: etcd's minimum is 2 s).
    pub async fn election(&self, node: &str) -> LeaderElection {
        let cfg = LeaderConfig::with_backend(self.backend.clone())
            .namespace(self.managers_ns.clone())
            .node_id(node)
            .lease_duration(Duration::from_secs(4))
            .renew_interval(Duration::from_secs(1))
            .renew_deadline(Duration::from_millis(2500))
            .safety_margin(Duration::from_millis(500))
            .op_timeout(OP_TIMEOUT)
            .retry_interval(Duration::from_millis(50));
        LeaderElection::new_without_env(cfg).await.unwrap()
    }
}
