//! The `lifeboat-coord-node` process: one election participant with JSON events on stdout.
//!
//! Events (each with `node`, `t_unix_ms`, `t_unix_us`): `started`, `acquired {token}`,
//! `renewed {token}`, `lost {token, reason}`, `promoted {token, hook_ms, exit_code}`,
//! `write_accepted {token, seq}`, `write_rejected {token, seen}`, `write_error`,
//! `observed {holder, token}` (with `--observe`), `op_samples {op, us: [...]}`,
//! `store_unreachable {store, op, attempt, error}`, `store_reachable {store,
//! failed_attempts}`, `stopping`, `resigned {took_us}`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use lifeboat_coord::{
    Backend, EmbeddedBackend, EtcdBackend, FencingToken, LeaderConfig, LeaderElection, LeaderEvent,
    LostReason, PostgresBackend,
};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::emit::Emitter;
use crate::error::Result;
use crate::fence::{Resource, WriteOutcome};
use crate::reach::{Reachability, ReportingBackend};
use crate::spec::{BackendSpec, FenceSpec};
use crate::timed::{drain, Samples, TimedBackend};

/// Command-line flags; each is also read from `LIFEBOAT_NODE_<FLAG>` (upper case, `-` → `_`,
/// e.g. `LIFEBOAT_NODE_OP_TIMEOUT=400ms`, `LIFEBOAT_NODE_OBSERVE=true`); a flag wins over
/// its variable.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "lifeboat-coord-node",
    about = "One leader-election participant; prints one JSON line per event on stdout",
    after_help = "Every flag can also be set through LIFEBOAT_NODE_<FLAG> (shown as [env: ...]); \
                  a flag given on the command line wins.\n\nAn unreachable store is retried \
                  forever; every failed attempt prints a `store_unreachable` event (with \
                  `store`, `op`, `attempt`, `error`) and a line on stderr naming the store, and \
                  the first answer afterwards prints `store_reachable`."
)]
pub struct NodeArgs {
    /// Coordination store: embedded:<dir>, postgres:<url> or etcd:<endpoint>[,<endpoint>...].
    #[arg(long, env = "LIFEBOAT_NODE_BACKEND")]
    pub backend: BackendSpec,
    /// Election namespace: nodes in one namespace compete.
    #[arg(long, env = "LIFEBOAT_NODE_NAMESPACE", default_value = "lifeboat")]
    pub namespace: String,
    /// This node's id (letters, digits, '-', '_', '.').
    #[arg(long, env = "LIFEBOAT_NODE_ID")]
    pub node_id: String,
    /// Lease duration (default: the library's, 10s).
    #[arg(long, env = "LIFEBOAT_NODE_LEASE", value_parser = humantime::parse_duration)]
    pub lease: Option<Duration>,
    /// Renew interval (default 2s).
    #[arg(long, env = "LIFEBOAT_NODE_RENEW", value_parser = humantime::parse_duration)]
    pub renew: Option<Duration>,
    /// Give up after renewals failed this long (default 7s).
    #[arg(long, env = "LIFEBOAT_NODE_RENEW_DEADLINE", value_parser = humantime::parse_duration)]
    pub renew_deadline: Option<Duration>,
    /// Local deadline = renew send time + lease − this margin (default 1.5s).
    #[arg(long, env = "LIFEBOAT_NODE_MARGIN", value_parser = humantime::parse_duration)]
    pub margin: Option<Duration>,
    /// Upper bound for one store call (default 1s).
    #[arg(long, env = "LIFEBOAT_NODE_OP_TIMEOUT", value_parser = humantime::parse_duration)]
    pub op_timeout: Option<Duration>,
    /// Campaign poll / retry back-off (default 500ms).
    #[arg(long, env = "LIFEBOAT_NODE_RETRY", value_parser = humantime::parse_duration)]
    pub retry: Option<Duration>,
    /// Fenced resource to write to while leading: file:<path> or postgres:<url>.
    #[arg(long, env = "LIFEBOAT_NODE_FENCE")]
    pub fence: Option<FenceSpec>,
    /// How often the leader writes to the fenced resource.
    #[arg(long, env = "LIFEBOAT_NODE_WRITE_INTERVAL", value_parser = humantime::parse_duration, default_value = "200ms")]
    pub write_interval: Duration,
    /// Test mode: keep writing with the last term's token even after the term is locally
    /// over (as a process paused between its validity check and its write would), until the
    /// fence refuses it. Shows that the fence, not the lease, protects the resource.
    #[arg(long, env = "LIFEBOAT_NODE_ZOMBIE_WRITES")]
    pub zombie_writes: bool,
    /// Shell command run (sh -c) after each acquisition; `promoted` is printed when it
    /// exits. Gets LIFEBOAT_LEADER_TOKEN and LIFEBOAT_LEADER_NODE.
    #[arg(long, env = "LIFEBOAT_NODE_PROMOTE_HOOK")]
    pub promote_hook: Option<String>,
    /// Print `observed` whenever the store's holder changes (any node).
    #[arg(long, env = "LIFEBOAT_NODE_OBSERVE")]
    pub observe: bool,
    /// How often to print the lease-operation latency samples collected so far.
    #[arg(long, env = "LIFEBOAT_NODE_OP_STATS_INTERVAL", value_parser = humantime::parse_duration, default_value = "5s")]
    pub op_stats_interval: Duration,
}

impl NodeArgs {
    /// The election config these flags describe, over `backend`.
    pub fn leader_config(&self, backend: Arc<dyn Backend>) -> LeaderConfig {
        let mut c = LeaderConfig::with_backend(backend)
            .namespace(self.namespace.clone())
            .node_id(self.node_id.clone());
        if let Some(d) = self.lease {
            c = c.lease_duration(d);
        }
        if let Some(d) = self.renew {
            c = c.renew_interval(d);
        }
        if let Some(d) = self.renew_deadline {
            c = c.renew_deadline(d);
        }
        if let Some(d) = self.margin {
            c = c.safety_margin(d);
        }
        if let Some(d) = self.op_timeout {
            c = c.op_timeout(d);
        }
        if let Some(d) = self.retry {
            c = c.retry_interval(d);
        }
        c
    }
}

/// Connects to the store named by `spec`.
pub async fn open_backend(spec: &BackendSpec, op_timeout: Duration) -> Result<Arc<dyn Backend>> {
    Ok(match spec {
        BackendSpec::Embedded(dir) => Arc::new(EmbeddedBackend::open(&PathBuf::from(dir))?),
        BackendSpec::Postgres(url) => Arc::new(PostgresBackend::connect(url, op_timeout).await?),
        BackendSpec::Etcd(endpoints) => {
            Arc::new(EtcdBackend::connect(endpoints, op_timeout).await?)
        }
    })
}

/// Opens the store, retrying (and reporting each failed attempt) while it cannot be reached;
/// a definite error (bad URL, bad credentials, corrupt store) ends the process.
async fn open_until_reachable(
    spec: &BackendSpec,
    op_timeout: Duration,
    retry: Duration,
    reach: &Reachability,
) -> Result<Arc<dyn Backend>> {
    loop {
        match open_backend(spec, op_timeout).await {
            Ok(b) => {
                reach.answered();
                return Ok(b);
            }
            Err(crate::NodeError::Coord(e)) if e.is_retryable() => {
                reach.failed("connect", &e.to_string());
                tokio::time::sleep(retry).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn print_samples(emitter: &Emitter, samples: Samples) {
    for (op, us) in samples {
        emitter.emit_or_log("op_samples", json!({ "op": op, "us": us }));
    }
}

/// Runs the node until SIGTERM/SIGINT (then resigns and returns) or a fatal error.
pub async fn run(args: NodeArgs) -> Result<()> {
    let emitter = Arc::new(Emitter::new(args.node_id.clone()));
    // Validate the timing before connecting, so a bad flag fails fast with its rule.
    let probe = args.leader_config(Arc::new(lifeboat_coord::MemoryStore::global()));
    let probe = probe.apply_env()?;
    probe.validate()?;
    let reach = Reachability::new(
        args.backend.describe(),
        args.node_id.clone(),
        emitter.clone(),
    );
    // The library's default retry interval when --retry is not given.
    let retry = args.retry.unwrap_or(Duration::from_millis(500));
    let raw = open_until_reachable(&args.backend, probe.get_op_timeout(), retry, &reach).await?;
    let timed = TimedBackend::new(raw);
    let samples = timed.samples();
    let backend: Arc<dyn Backend> = Arc::new(ReportingBackend::new(
        Arc::new(timed),
        reach,
        probe.get_op_timeout(),
    ));
    let election = LeaderElection::new(args.leader_config(backend.clone())).await?;
    let mut events = election.subscribe().await;
    let mut terms_sigterm = signal(SignalKind::terminate()).map_err(crate::NodeError::Signal)?;
    let mut terms_sigint = signal(SignalKind::interrupt()).map_err(crate::NodeError::Signal)?;
    let cfg = election.config();
    emitter.emit(
        "started",
        json!({
            "pid": std::process::id(),
            "lease_ms": cfg.get_lease_duration().as_millis() as u64,
            "renew_ms": cfg.get_renew_interval().as_millis() as u64,
            "margin_ms": cfg.get_safety_margin().as_millis() as u64,
        }),
    )?;
    // The token of the most recent term this node was granted (zombie writes use it).
    let (last_term, last_term_rx) = watch::channel(None::<FencingToken>);
    election.start().await;

    if let Some(spec) = &args.fence {
        let resource = Resource::open(spec, &args.namespace).await?;
        tokio::spawn(write_loop(
            resource,
            election.clone(),
            last_term_rx,
            emitter.clone(),
            args.clone(),
        ));
    }
    if args.observe {
        let observer = election.observe();
        let emitter = emitter.clone();
        tokio::spawn(async move {
            futures::pin_mut!(observer);
            while let Some(item) = observer.next().await {
                match item {
                    Ok(Some(info)) => emitter.emit_or_log(
                        "observed",
                        json!({ "holder": info.node_id.as_str(), "token": info.token.get() }),
                    ),
                    Ok(None) => {
                        emitter.emit_or_log("observed", json!({ "holder": null, "token": null }))
                    }
                    Err(e) => emitter.emit_or_log("store_error", json!({ "error": e.to_string() })),
                }
            }
        });
    }
    {
        let samples = samples.clone();
        let emitter = emitter.clone();
        let every = args.op_stats_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                print_samples(&emitter, drain(&samples));
            }
        });
    }

    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(LeaderEvent::Acquired { fencing_token, .. }) => {
                    emitter.emit("acquired", json!({ "token": fencing_token.get() }))?;
                    last_term.send_replace(Some(fencing_token));
                    tokio::spawn(promote(args.promote_hook.clone(), args.node_id.clone(),
                        fencing_token, emitter.clone()));
                }
                Ok(LeaderEvent::Renewed { fencing_token }) => {
                    emitter.emit("renewed", json!({ "token": fencing_token.get() }))?;
                }
                Ok(LeaderEvent::Lost { fencing_token, reason }) => {
                    emitter.emit("lost", json!({ "token": fencing_token.get(), "reason": reason }))?;
                    if reason != LostReason::Resigned {
                        tokio::spawn(release(backend.clone(), args.clone(), fencing_token,
                            election.config().get_op_timeout()));
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    emitter.emit("events_lagged", json!({ "missed": n }))?;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = terms_sigterm.recv() => break,
            _ = terms_sigint.recv() => break,
        }
    }
    let token = election.leadership().map(|l| l.token().get());
    emitter.emit("stopping", json!({ "token": token }))?;
    let t = Instant::now();
    let resigned = election.stop().await;
    emitter.emit(
        "resigned",
        json!({
            "token": token,
            "took_us": t.elapsed().as_micros() as u64,
            "error": resigned.err().map(|e| e.to_string()),
        }),
    )?;
    print_samples(&emitter, drain(&samples));
    Ok(())
}

/// Releases a lost term in the store (compare-and-set on its token, so a newer term is never
/// touched). Work-around: lifeboat-coord's renew loop returns without releasing when the term
/// was marked lost by `Leadership::lost()` rather than by the loop itself; with the embedded
/// backend the flock then stays held by a live process and nobody can ever lead again.
async fn release(backend: Arc<dyn Backend>, args: NodeArgs, token: FencingToken, budget: Duration) {
    let node = lifeboat_coord::NodeId::new(args.node_id.clone());
    let call = backend.resign(&args.namespace, &node, token);
    if let Ok(Err(e)) = tokio::time::timeout(budget, call).await {
        tracing::warn!("releasing lost term {token}: {e}");
    }
}

/// Runs the promote hook for term `token`, then prints `promoted`.
async fn promote(hook: Option<String>, node: String, token: FencingToken, emitter: Arc<Emitter>) {
    let t = Instant::now();
    let code = match &hook {
        None => Some(0),
        Some(cmd) => match tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("LIFEBOAT_LEADER_TOKEN", token.get().to_string())
            .env("LIFEBOAT_LEADER_NODE", &node)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .await
        {
            Ok(s) => s.code(),
            Err(e) => {
                emitter.emit_or_log(
                    "promote_failed",
                    json!({ "token": token.get(), "error": format!("cannot run hook: {e}") }),
                );
                return;
            }
        },
    };
    let kind = if code == Some(0) {
        "promoted"
    } else {
        "promote_failed"
    };
    emitter.emit_or_log(
        kind,
        json!({ "token": token.get(), "hook_ms": t.elapsed().as_secs_f64() * 1000.0, "exit_code": code }),
    );
}

/// Writes to the fenced resource every `write_interval` while leading (or, with
/// `--zombie-writes`, with the last term's token until the fence refuses it).
async fn write_loop(
    mut resource: Resource,
    election: LeaderElection,
    last_term: watch::Receiver<Option<FencingToken>>,
    emitter: Arc<Emitter>,
    args: NodeArgs,
) {
    let mut seq = 0u64;
    let mut refused: Option<FencingToken> = None;
    loop {
        tokio::time::sleep(args.write_interval).await;
        let token = if args.zombie_writes {
            (*last_term.borrow()).filter(|t| refused.is_none_or(|r| *t > r))
        } else {
            election.leadership().map(|l| l.token())
        };
        let Some(token) = token else { continue };
        seq += 1;
        match resource.write(token, &args.node_id, seq).await {
            Ok(WriteOutcome::Accepted) => emitter.emit_or_log(
                "write_accepted",
                json!({ "token": token.get(), "seq": seq }),
            ),
            Ok(WriteOutcome::Rejected { seen }) => {
                refused = Some(token);
                emitter.emit_or_log(
                    "write_rejected",
                    json!({ "token": token.get(), "seen": seen, "seq": seq }),
                )
            }
            Err(e) => emitter.emit_or_log(
                "write_error",
                json!({ "token": token.get(), "error": e.to_string() }),
            ),
        }
    }
}
