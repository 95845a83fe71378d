//! The PostgreSQL backend: a lease table whose expiry is decided by the server's clock.
//!
//! Schema (version 1, created idempotently):
//!
//! ```sql
//! CREATE TABLE lifeboat_coord_schema (version int NOT NULL);
//! CREATE SEQUENCE lifeboat_coord_token_seq;           -- tokens: never reused, even if rows go
//! CREATE TABLE lifeboat_coord_lease (
//!     namespace   text PRIMARY KEY,
//!     holder      text,                  -- NULL when released
//!     token       bigint NOT NULL,       -- the current/last term's token
//!     acquired_at timestamptz NOT NULL,
//!     renewed_at  timestamptz NOT NULL,
//!     expires_at  timestamptz NOT NULL   -- server clock_timestamp() + lease
//! );
//! ```
//!
//! Acquire is one `INSERT … ON CONFLICT DO UPDATE … WHERE holder IS NULL OR expires_at <=
//! clock_timestamp()`; renew and resign are `UPDATE`s with `WHERE holder = $node AND token =
//! $token` (renew also `AND expires_at > clock_timestamp()`). Not advisory locks: those
//! vanish silently with the session and are not replicated. Grants and releases
//! `pg_notify('lifeboat_coord', namespace)` so waiting campaigners `LISTEN` and react at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{watch, Mutex};
use tokio_postgres::{AsyncMessage, Client, NoTls, Transaction};

use crate::backend::{Backend, Grant, LeaderInfo};
use crate::error::{Error, Result};
use crate::fence::Fence;
use lifeboat_types::{FencingToken, NodeId};

const BACKEND: &str = "postgres";
/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: i32 = 1;
const CHANNEL: &str = "lifeboat_coord";
/// Serialises concurrent schema creation by several processes (DDL only, not for leases).
const SCHEMA_LOCK_KEY: i64 = 0x6c69_6665_626f_6174;

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS lifeboat_coord_schema (version int NOT NULL);
CREATE SEQUENCE IF NOT EXISTS lifeboat_coord_token_seq;
CREATE TABLE IF NOT EXISTS lifeboat_coord_lease (
    namespace   text PRIMARY KEY,
    holder      text,
    token       bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS lifeboat_coord_fence (
    name  text PRIMARY KEY,
    token bigint NOT NULL
);
";

const ACQUIRE_SQL: &str = "
WITH g AS (
    INSERT INTO lifeboat_coord_lease AS l
        (namespace, holder, token, acquired_at, renewed_at, expires_at)
    VALUES ($1, $2, nextval('lifeboat_coord_token_seq'), clock_timestamp(), clock_timestamp(),
            clock_timestamp() + $3::bigint * interval '1 millisecond')
    ON CONFLICT (namespace) DO UPDATE
       SET holder = EXCLUDED.holder,
           token = GREATEST(EXCLUDED.token, l.token + 1),
           acquired_at = EXCLUDED.acquired_at,
           renewed_at = EXCLUDED.renewed_at,
           expires_at = EXCLUDED.expires_at
     WHERE l.holder IS NULL OR l.expires_at <= clock_timestamp()
    RETURNING token
)
SELECT token, pg_notify('lifeboat_coord', $1)::text FROM g";

const RENEW_SQL: &str = "
UPDATE lifeboat_coord_lease
   SET renewed_at = clock_timestamp(),
       expires_at = clock_timestamp() + $4::bigint * interval '1 millisecond'
 WHERE namespace = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()";

const RESIGN_SQL: &str = "
WITH r AS (
    UPDATE lifeboat_coord_lease SET holder = NULL, expires_at = clock_timestamp()
     WHERE namespace = $1 AND holder = $2 AND token = $3
    RETURNING namespace
)
SELECT pg_notify('lifeboat_coord', namespace)::text FROM r";

const CURRENT_SQL: &str = "
SELECT holder, token,
       GREATEST(0, (EXTRACT(EPOCH FROM (expires_at - clock_timestamp())) * 1000)::bigint)
  FROM lifeboat_coord_lease
 WHERE namespace = $1 AND holder IS NOT NULL AND expires_at > clock_timestamp()";

struct Conn {
    client: Arc<Client>,
    _driver: tokio::task::JoinHandle<()>,
}

/// Leader election through a PostgreSQL lease table (see the module docs for the SQL).
///
/// One dedicated connection (not pooled) with TCP keepalives and `statement_timeout`; it is
/// re-established on the next call after it breaks, and connection failures surface as
/// retryable [`Error::Unavailable`].
pub struct PostgresBackend {
    config: tokio_postgres::Config,
    conn: Mutex<Option<Conn>>,
    changed: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("hosts", &self.config.get_hosts())
            .finish()
    }
}

/// Parses `url` and sets timeouts and keepalives so a dead server is noticed within
/// seconds, not the OS default of two hours.
fn connection_config(url: &str, op_timeout: Duration) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        Error::Config(format!(
            "PostgreSQL URL is invalid ({e}); expected postgres://user@host:port/database"
        ))
    })?;
    let ms = op_timeout.as_millis().max(1);
    let options = match config.get_options() {
        Some(o) => format!("{o} -c statement_timeout={ms}"),
        None => format!("-c statement_timeout={ms}"),
    };
    config
        .options(options)
        .connect_timeout(op_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(3)
        .tcp_user_timeout(op_timeout.max(Duration::from_secs(2)) * 3);
    if config.get_application_name().is_none() {
        config.application_name("lifeboat-coord");
    }
    Ok(config)
}

fn pg_err(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| Error::unavailable(BACKEND, op, e)
}

/// Connects, spawns the driver that forwards NOTIFYs to `changed`, and LISTENs.
async fn open_connection(
    config: &tokio_postgres::Config,
    changed: Arc<watch::Sender<u64>>,
) -> Result<Conn> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(pg_err("connect"))?;
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => changed.send_modify(|g| *g += 1),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("postgres coordination connection ended: {e}");
                    break;
                }
            }
        }
        // Wake waiters so they notice the broken connection and reconnect.
        changed.send_modify(|g| *g += 1);
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(pg_err("listen"))?;
    Ok(Conn {
        client: Arc::new(client),
        _driver: driver,
    })
}

/// Creates the tables if missing and checks the schema version.
async fn ensure_schema(client: &Client) -> Result<()> {
    let sql = format!(
        "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY}); {SCHEMA_SQL}
         INSERT INTO lifeboat_coord_schema (version)
              SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM lifeboat_coord_schema);
         COMMIT;"
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(pg_err("create schema"))?;
    let row = client
        .query_one("SELECT max(version) FROM lifeboat_coord_schema", &[])
        .await
        .map_err(pg_err("read schema version"))?;
    let version: Option<i32> = row.get(0);
    match version {
        Some(SCHEMA_VERSION) => Ok(()),
        other => Err(Error::Corrupt {
            backend: BACKEND,
            message: format!(
                "lifeboat_coord_schema says version {other:?}, this build understands \
                 {SCHEMA_VERSION}; upgrade lifeboat or use another database"
            ),
        }),
    }
}

impl PostgresBackend {
    /// Connects to `url`, creates the schema if needed and LISTENs for hand-overs.
    /// `op_timeout` becomes the connection's `statement_timeout` and connect timeout.
    pub async fn connect(url: &str, op_timeout: Duration) -> Result<Self> {
        let config = connection_config(url, op_timeout)?;
        let changed = Arc::new(watch::channel(0).0);
        let conn = tokio::time::timeout(op_timeout * 3, open_connection(&config, changed.clone()))
            .await
            .map_err(|_| Error::Timeout {
                backend: BACKEND,
                op: "connect",
                after: op_timeout * 3,
            })??;
        ensure_schema(&conn.client).await?;
        Ok(Self {
            config,
            conn: Mutex::new(Some(conn)),
            changed,
        })
    }

    /// The connection, re-established if it broke.
    async fn client(&self) -> Result<Arc<Client>> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(c.client.clone());
        }
        *conn = None;
        let fresh = open_connection(&self.config, self.changed.clone()).await?;
        let client = fresh.client.clone();
        *conn = Some(fresh);
        Ok(client)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn token_param(token: FencingToken) -> i64 {
    i64::try_from(token.0).unwrap_or(i64::MAX)
}

#[async_trait]
impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn try_acquire(
        &self,
        namespace: &str,
        node: &NodeId,
        lease: Duration,
    ) -> Result<Option<Grant>> {
        let client = self.client().await?;
        let rows = client
            .query(ACQUIRE_SQL, &[&namespace, &node.as_str(), &millis(lease)])
            .await
            .map_err(pg_err("acquire"))?;
        Ok(rows.first().map(|row| {
            let token: i64 = row.get(0);
            Grant {
                token: FencingToken(token as u64),
                lease,
            }
        }))
    }

    async fn renew(
        &self,
        namespace: &str,
        node: &NodeId,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Duration> {
        let client = self.client().await?;
        let n = client
            .execute(
                RENEW_SQL,
                &[
                    &namespace,
                    &node.as_str(),
                    &token_param(token),
                    &millis(lease),
                ],
            )
            .await
            .map_err(pg_err("renew"))?;
        if n == 1 {
            Ok(lease)
        } else {
            Err(Error::NotLeader {
                node: node.clone(),
                token,
            })
        }
    }

    async fn resign(&self, namespace: &str, node: &NodeId, token: FencingToken) -> Result<bool> {
        let client = self.client().await?;
        let rows = client
            .query(
                RESIGN_SQL,
                &[&namespace, &node.as_str(), &token_param(token)],
            )
            .await
            .map_err(pg_err("resign"))?;
        Ok(!rows.is_empty())
    }

    async fn current(&self, namespace: &str) -> Result<Option<LeaderInfo>> {
        let client = self.client().await?;
        let row = client
            .query_opt(CURRENT_SQL, &[&namespace])
            .await
            .map_err(pg_err("current"))?;
        Ok(row.map(|row| {
            let holder: String = row.get(0);
            let token: i64 = row.get(1);
            let left: i64 = row.get(2);
            LeaderInfo {
                node_id: NodeId(holder),
                token: FencingToken(token as u64),
                expires_in: Some(Duration::from_millis(left.max(0) as u64)),
            }
        }))
    }

    async fn wait_for_change(&self, namespace: &str, timeout: Duration) -> Result<()> {
        let mut rx = self.changed.subscribe();
        // Wake at the current lease's expiry (server clock) if that comes first: expiry
        // sends no notification.
        let wait = match self.current(namespace).await? {
            Some(LeaderInfo {
                expires_in: Some(left),
                ..
            }) => timeout.min(left + Duration::from_millis(5)),
            _ => timeout,
        };
        let _ = tokio::time::timeout(wait, rx.changed()).await;
        Ok(())
    }
}

/// A fence row in PostgreSQL, checked and advanced in the same transaction as the guarded
/// write, so a stale writer's transaction fails as a whole.
///
/// ```sql
/// UPDATE lifeboat_coord_fence SET token = $t WHERE name = $n AND token <= $t
/// ```
/// (an upsert, so the first write creates the row). The row lock serialises writers until
/// commit: a newer term's write waits for an older one in flight, then wins.
#[derive(Debug, Clone)]
pub struct PostgresFence {
    name: String,
    client: Option<Arc<Client>>,
}

const FENCE_SQL: &str = "
INSERT INTO lifeboat_coord_fence AS f (name, token) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token WHERE f.token <= EXCLUDED.token
RETURNING token";

impl PostgresFence {
    /// A fence named `name` (one per guarded resource); use with [`Self::guarded`].
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            client: None,
        }
    }

    /// The fence's name (its row in `lifeboat_coord_fence`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the schema (shared with [`PostgresBackend`]) through `client`.
    pub async fn create_schema(client: &Client) -> Result<()> {
        ensure_schema(client).await
    }

    /// A fence with its own connection, for [`Fence::admit`] / [`Fence::highest`].
    pub async fn connect(url: &str, name: impl Into<String>) -> Result<Self> {
        let config = connection_config(url, Duration::from_secs(5))?;
        let (client, connection) = config.connect(NoTls).await.map_err(pg_err("connect"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        ensure_schema(&client).await?;
        Ok(Self {
            name: name.into(),
            client: Some(Arc::new(client)),
        })
    }

    /// Checks `token` against the fence inside `txn` and records it. On a stale token it
    /// returns [`Error::Fenced`]; the caller must then roll back (dropping `txn` does),
    /// which also discards the guarded write made in the same transaction.
    pub async fn guarded(&self, txn: &Transaction<'_>, token: FencingToken) -> Result<()> {
        let rows = txn
            .query(FENCE_SQL, &[&self.name, &token_param(token)])
            .await
            .map_err(pg_err("fence"))?;
        if !rows.is_empty() {
            return Ok(());
        }
        let seen: i64 = txn
            .query_one(
                "SELECT token FROM lifeboat_coord_fence WHERE name = $1",
                &[&self.name],
            )
            .await
            .map_err(pg_err("fence"))?
            .get(0);
        Err(Error::Fenced {
            seen: FencingToken(seen as u64),
            presented: token,
        })
    }

    fn own_client(&self) -> Result<&Arc<Client>> {
        self.client.as_ref().ok_or_else(|| {
            Error::Config(
                "PostgresFence::new has no connection; use PostgresFence::connect, or \
                 guarded() inside your own transaction"
                    .into(),
            )
        })
    }
}

#[async_trait]
impl Fence for PostgresFence {
    async fn admit(&self, token: FencingToken) -> Result<()> {
        let client = self.own_client()?;
        let rows = client
            .query(FENCE_SQL, &[&self.name, &token_param(token)])
            .await
            .map_err(pg_err("fence"))?;
        if !rows.is_empty() {
            return Ok(());
        }
        let seen = self.highest().await?.unwrap_or(FencingToken(0));
        Err(Error::Fenced {
            seen,
            presented: token,
        })
    }

    async fn highest(&self) -> Result<Option<FencingToken>> {
        let client = self.own_client()?;
        let row = client
            .query_opt(
                "SELECT token FROM lifeboat_coord_fence WHERE name = $1",
                &[&self.name],
            )
            .await
            .map_err(pg_err("fence"))?;
        Ok(row.map(|r| FencingToken(r.get::<_, i64>(0) as u64)))
    }
}
