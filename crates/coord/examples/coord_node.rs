//! A tiny election participant for multi-process tests and benchmarks.
//!
//! Joins an election on any backend and prints one JSON object per line on stdout:
//! `{"event":"started"|"acquired"|"renewed"|"lost"|"write"|"error", "node":..,
//! "token":.., "t_ms":<unix ms>, ...}`. With `--fence-pg URL --write-every-ms N` it performs
//! a fenced write (an INSERT guarded by `PostgresFence` in one transaction) every N ms and
//! prints whether it was accepted; `--zombie-writes` keeps writing with the last token after
//! leadership is lost, to show the fence rejecting it.
//!
//! ```console
//! $ cargo run -p lifeboat-coord --example coord_node -- --backend embedded --dir /tmp/e \
//!       --namespace demo --node-id n1 --lease-ms 2000 --renew-ms 400
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use lifeboat_coord::{
    Error, FencingToken, LeaderConfig, LeaderElection, LeaderEvent, Leadership, PostgresFence,
};
use serde_json::json;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendKind {
    Memory,
    Embedded,
    Postgres,
    Etcd,
}

#[derive(Parser, Debug)]
#[command(about = "Join a lifeboat-coord election and print JSON lines")]
struct Args {
    /// Coordination backend.
    #[arg(long, env = "COORD_BACKEND", value_enum)]
    backend: BackendKind,
    /// Directory for the embedded backend.
    #[arg(long, env = "COORD_DIR")]
    dir: Option<std::path::PathBuf>,
    /// PostgreSQL URL for the postgres backend.
    #[arg(long, env = "COORD_PG_URL")]
    url: Option<String>,
    /// etcd endpoints (comma-separated) for the etcd backend.
    #[arg(long, env = "COORD_ETCD_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    #[arg(long, env = "COORD_NAMESPACE", default_value = "coord-node")]
    namespace: String,
    #[arg(long, env = "COORD_NODE_ID")]
    node_id: String,
    #[arg(long, default_value_t = 10_000)]
    lease_ms: u64,
    #[arg(long, default_value_t = 2_000)]
    renew_ms: u64,
    /// Defaults to 70 % of the lease.
    #[arg(long)]
    renew_deadline_ms: Option<u64>,
    /// Defaults to 15 % of the lease.
    #[arg(long)]
    margin_ms: Option<u64>,
    /// Defaults to min(1000, renew deadline).
    #[arg(long)]
    op_timeout_ms: Option<u64>,
    #[arg(long, default_value_t = 100)]
    retry_ms: u64,
    /// PostgreSQL URL of the fenced resource (table `lifeboat_coord_demo_writes`).
    #[arg(long, env = "COORD_FENCE_PG")]
    fence_pg: Option<String>,
    /// Fence name (one per resource); defaults to the namespace.
    #[arg(long)]
    fence_name: Option<String>,
    /// Perform a fenced write this often while leader.
    #[arg(long)]
    write_every_ms: Option<u64>,
    /// Keep writing with the last token after losing leadership.
    #[arg(long)]
    zombie_writes: bool,
    /// Resign this long after acquiring (then campaign again).
    #[arg(long)]
    resign_after_ms: Option<u64>,
    /// Exit after this long.
    #[arg(long)]
    run_for_ms: Option<u64>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn emit(mut value: serde_json::Value) {
    value["t_ms"] = json!(now_ms() as u64);
    println!("{value}");
}

fn config(args: &Args) -> anyhow::Result<LeaderConfig> {
    let base = match args.backend {
        BackendKind::Memory => LeaderConfig::memory(),
        BackendKind::Embedded => {
            LeaderConfig::embedded(args.dir.clone().context("--dir is required for embedded")?)
        }
        BackendKind::Postgres => {
            LeaderConfig::postgres(args.url.clone().context("--url is required for postgres")?)
        }
        BackendKind::Etcd => {
            if args.endpoints.is_empty() {
                bail!("--endpoints is required for etcd");
            }
            LeaderConfig::etcd(args.endpoints.clone())
        }
    };
    let ms = Duration::from_millis;
    let deadline = args.renew_deadline_ms.unwrap_or(args.lease_ms * 7 / 10);
    Ok(base
        .namespace(args.namespace.clone())
        .node_id(args.node_id.clone())
        .lease_duration(ms(args.lease_ms))
        .renew_interval(ms(args.renew_ms))
        .renew_deadline(ms(deadline))
        .safety_margin(ms(args.margin_ms.unwrap_or(args.lease_ms * 15 / 100)))
        .op_timeout(ms(args.op_timeout_ms.unwrap_or(deadline.min(1000))))
        .retry_interval(ms(args.retry_ms)))
}

struct Writer {
    client: tokio_postgres::Client,
    fence: PostgresFence,
}

impl Writer {
    async fn connect(url: &str, name: String) -> anyhow::Result<Self> {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .context("connect to the fenced PostgreSQL resource")?;
        tokio::spawn(conn);
        PostgresFence::create_schema(&client).await?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS lifeboat_coord_demo_writes (
                     fence text NOT NULL, node text NOT NULL, token bigint NOT NULL,
                     at timestamptz NOT NULL DEFAULT clock_timestamp())",
            )
            .await
            .context("create lifeboat_coord_demo_writes")?;
        Ok(Self {
            client,
            fence: PostgresFence::new(name),
        })
    }

    /// One guarded write: INSERT + fence check in one transaction.
    async fn write(&mut self, node: &str, token: FencingToken) -> Result<(), Error> {
        let map = |e: tokio_postgres::Error| Error::Unavailable {
            backend: "postgres",
            op: "fenced write",
            source: Box::new(e),
        };
        let txn = self.client.transaction().await.map_err(map)?;
        txn.execute(
            "INSERT INTO lifeboat_coord_demo_writes (fence, node, token) VALUES ($1, $2, $3)",
            &[&self.fence.name(), &node, &(token.0 as i64)],
        )
        .await
        .map_err(map)?;
        self.fence.guarded(&txn, token).await?; // on Err, dropping txn rolls the insert back
        txn.commit().await.map_err(map)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let node = args.node_id.clone();
    let election = LeaderElection::new(config(&args)?)
        .await
        .context("join the election")?;
    let mut writer = match &args.fence_pg {
        Some(url) => Some(
            Writer::connect(
                url,
                args.fence_name.clone().unwrap_or(args.namespace.clone()),
            )
            .await?,
        ),
        None => None,
    };
    let mut events = election.subscribe().await;
    election.start().await;
    emit(json!({"event": "started", "node": node, "pid": std::process::id()}));

    let deadline = args
        .run_for_ms
        .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let write_every = Duration::from_millis(args.write_every_ms.unwrap_or(u64::MAX / 4));
    let mut write_tick = tokio::time::interval(write_every);
    write_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Leadership> = None;
    let mut resign_at: Option<tokio::time::Instant> = None;
    loop {
        let stop = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let resign = async {
            match resign_at {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop => break,
            _ = resign => {
                resign_at = None;
                if let Err(e) = election.resign().await {
                    emit(json!({"event": "error", "node": node, "op": "resign", "error": e.to_string()}));
                }
            }
            ev = events.recv() => match ev {
                Ok(LeaderEvent::Acquired { fencing_token, .. }) => {
                    emit(json!({"event": "acquired", "node": node, "token": fencing_token.0}));
                    last = election.leadership();
                    resign_at = args.resign_after_ms
                        .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
                }
                Ok(LeaderEvent::Renewed { fencing_token }) => {
                    emit(json!({"event": "renewed", "node": node, "token": fencing_token.0}));
                }
                Ok(LeaderEvent::Lost { fencing_token, reason }) => {
                    emit(json!({"event": "lost", "node": node, "token": fencing_token.0,
                                "reason": reason}));
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    emit(json!({"event": "error", "node": node, "error": format!("missed {n} events")}));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = write_tick.tick(), if writer.is_some() && args.write_every_ms.is_some() => {
                let Some(l) = &last else { continue };
                if !l.is_valid() && !args.zombie_writes {
                    continue;
                }
                let token = l.fencing_token();
                let w = writer.as_mut().expect("checked above");
                match w.write(&node, token).await {
                    Ok(()) => emit(json!({"event": "write", "node": node, "token": token.0,
                                          "accepted": true, "valid": l.is_valid()})),
                    Err(Error::Fenced { seen, .. }) => emit(json!({"event": "write", "node": node,
                        "token": token.0, "accepted": false, "seen": seen.0, "valid": l.is_valid()})),
                    Err(e) => emit(json!({"event": "error", "node": node, "op": "write",
                                          "error": e.to_string()})),
                }
            }
        }
    }
    election.stop().await.ok();
    Ok(())
}
