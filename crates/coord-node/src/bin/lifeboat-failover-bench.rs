//! `lifeboat-failover-bench`: the kill-the-leader benchmark for one coordination store.
//!
//! Runs three `lifeboat-coord-node` processes with the library's default timing (lease
//! 10 s), SIGKILLs the leader `--kills` times (restarting the victim each time) and SIGTERMs
//! it `--resigns` times, and writes `<label>.json` (raw samples) and `<label>.md` (one
//! table row) to `--out`. Measured:
//!
//! * detection: kill → first survivor event showing the old term gone (`observed` with
//!   another holder / none, or `acquired`);
//! * new leader: kill → a survivor `acquired` a higher token, and → its promote hook exited;
//! * graceful hand-over: SIGTERM sent → a survivor `acquired`;
//! * lease-operation latency: `op_samples` the nodes measured around their store calls.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use lifeboat_coord_node::emit::unix_us;
use lifeboat_coord_node::harness::{percentile, Event, EventLog, NodeProcess};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "Kill-the-leader benchmark for one coordination store")]
struct Args {
    /// Label for the output files and the table (embedded, postgres, etcd).
    #[arg(long)]
    label: String,
    /// The store, as lifeboat-coord-node's --backend.
    #[arg(long)]
    backend: String,
    /// How many times to SIGKILL the leader.
    #[arg(long, default_value_t = 30)]
    kills: usize,
    /// How many times to SIGTERM (resign) the leader.
    #[arg(long, default_value_t = 10)]
    resigns: usize,
    /// Promote hook every node runs after acquiring.
    #[arg(long, default_value = "true")]
    hook: String,
    /// Also print `observed` events (store-side holder changes) for the detection time.
    #[arg(long)]
    observe: bool,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// The node binary (default: next to this one).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Longest wait for any one step.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "90s")]
    step_timeout: Duration,
}

struct Bench {
    args: Args,
    bin: PathBuf,
    node_args: Vec<String>,
    log: Arc<EventLog>,
    nodes: Vec<NodeProcess>,
}

impl Bench {
    fn spawn(&mut self, id: &str) -> Result<()> {
        let mark = self.log.mark();
        let node = NodeProcess::spawn(
            &self.bin,
            id,
            &self.node_args,
            self.log.clone(),
            &self.args.out,
        )
        .with_context(|| format!("starting {}", self.bin.display()))?;
        self.nodes.retain(|n| n.id != id);
        self.nodes.push(node);
        self.wait(mark, &format!("{id} to start"), |e| e.is("started", id))?;
        Ok(())
    }

    fn wait(&self, from: usize, what: &str, pred: impl FnMut(&Event) -> bool) -> Result<Event> {
        match self.log.wait_for(from, self.args.step_timeout, pred) {
            Some(e) => Ok(e),
            None => bail!("{}: timed out waiting for {what}", self.args.label),
        }
    }

    fn node(&mut self, id: &str) -> &mut NodeProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("node exists")
    }

    /// The current leader's `acquired` event once its promote hook has finished.
    fn promoted_leader(&self, from: usize) -> Result<Event> {
        let top = |log: &EventLog| {
            log.snapshot()
                .into_iter()
                .filter(|e| e.kind == "acquired")
                .max_by_key(|e| e.token)
        };
        let acquired = match top(&self.log) {
            Some(e) => e,
            None => self.wait(from, "a leader", |e| e.kind == "acquired")?,
        };
        let token = acquired.token;
        self.wait(0, "the leader's promote hook", |e| {
            e.kind == "promoted" && e.token == token
        })?;
        // A newer term may have started meanwhile; take the newest.
        Ok(top(&self.log).unwrap_or(acquired))
    }
}

fn ms(from_us: u64, to_us: u64) -> f64 {
    (to_us as f64 - from_us as f64) / 1000.0
}

fn stats(values: &[f64]) -> Value {
    json!({
        "n": values.len(),
        "p50": percentile(values, 50.0),
        "p99": percentile(values, 99.0),
        "max": percentile(values, 100.0),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let bin = match &args.node_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent directory of the benchmark binary")?
            .join("lifeboat-coord-node"),
    };
    let namespace = format!("bench-{}-{}", args.label, unix_us());
    let mut node_args = vec![
        "--backend".to_owned(),
        args.backend.clone(),
        "--namespace".to_owned(),
        namespace,
        "--promote-hook".to_owned(),
        args.hook.clone(),
        // Often, so a SIGKILLed node loses at most a second of latency samples.
        "--op-stats-interval".to_owned(),
        "1s".to_owned(),
    ];
    if args.observe {
        node_args.push("--observe".to_owned());
    }
    let mut b = Bench {
        args,
        bin,
        node_args,
        log: EventLog::new(),
        nodes: Vec::new(),
    };
    let label = b.args.label.clone();
    for id in ["n1", "n2", "n3"] {
        b.spawn(id)?;
    }
    let started = b.log.snapshot();
    let lease_ms = started
        .iter()
        .find(|e| e.kind == "started")
        .and_then(|e| e.json["lease_ms"].as_u64())
        .unwrap_or(0);
    let renew_ms = started
        .iter()
        .find(|e| e.kind == "started")
        .and_then(|e| e.json["renew_ms"].as_u64())
        .unwrap_or(2000)
        .max(1);

    let mut kills = Vec::new();
    for i in 0..b.args.kills {
        let leader = b.promoted_leader(0)?;
        let old = leader.token;
        // Let the term renew once and report the renew's latency (a node killed right
        // after promotion would never renew), then spread the kill over the renew cycle
        // (deterministically).
        let renewed = b.wait(0, "the leader's first renewal", |e| {
            e.is("renewed", &leader.node) && e.token == old
        })?;
        b.wait(0, "the leader's renew latency sample", |e| {
            e.is("op_samples", &leader.node) && e.json["op"] == "renew" && e.t_us > renewed.t_us
        })?;
        let offset = (i as u64 * 733) % renew_ms;
        std::thread::sleep(Duration::from_millis(offset));
        let mark = b.log.mark();
        let killed_at = unix_us();
        b.node(&leader.node).signal(Signal::SIGKILL)?;
        b.node(&leader.node).wait_timeout(Duration::from_secs(10))?;
        let victim = leader.node.clone();
        let acquired = b.wait(mark, "a new leader", |e| {
            e.kind == "acquired" && e.node != victim && e.token > old
        })?;
        let new_token = acquired.token;
        let promoted = b.wait(mark, "the new leader's hook", |e| {
            e.kind == "promoted" && e.token == new_token
        })?;
        let detected = b.wait(mark, "detection", |e| {
            e.node != victim
                && (e.kind == "acquired"
                    || (e.kind == "observed" && (e.token != old || e.json["holder"].is_null())))
        })?;
        let rec = json!({
            "i": i,
            "victim": victim,
            "old_token": old,
            "new_leader": acquired.node,
            "new_token": new_token,
            "offset_ms": offset,
            "detect_ms": ms(killed_at, detected.t_us),
            "detected_by": detected.kind,
            "acquire_ms": ms(killed_at, acquired.t_us),
            "promoted_ms": ms(killed_at, promoted.t_us),
        });
        eprintln!("{label} kill {i}: {rec}");
        kills.push(rec);
        b.spawn(&victim)?;
    }

    let mut resigns = Vec::new();
    for j in 0..b.args.resigns {
        let leader = b.promoted_leader(0)?;
        let old = leader.token;
        std::thread::sleep(Duration::from_millis(200 + (j as u64 * 97) % 500));
        let mark = b.log.mark();
        let sent = unix_us();
        b.node(&leader.node).signal(Signal::SIGTERM)?;
        let victim = leader.node.clone();
        let acquired = b.wait(mark, "the hand-over", |e| {
            e.kind == "acquired" && e.node != victim && e.token > old
        })?;
        let resigned = b.wait(mark, "resigned", |e| e.is("resigned", &victim))?;
        let rec = json!({
            "j": j,
            "from": victim,
            "to": acquired.node,
            "handover_ms": ms(sent, acquired.t_us),
            "resign_call_ms": resigned.json["took_us"].as_f64().map(|us| us / 1000.0),
        });
        eprintln!("{label} resign {j}: {rec}");
        resigns.push(rec);
        if b.node(&victim)
            .wait_timeout(Duration::from_secs(20))?
            .is_none()
        {
            bail!("{label}: {victim} did not exit after SIGTERM");
        }
        b.spawn(&victim)?;
    }

    // Stop everyone gracefully so they print their last latency samples.
    for n in b.nodes.iter_mut() {
        n.signal(Signal::SIGTERM)?;
    }
    for n in b.nodes.iter_mut() {
        n.wait_timeout(Duration::from_secs(20))?;
    }
    let mut ops: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for e in b.log.snapshot().iter().filter(|e| e.kind == "op_samples") {
        let op = e.json["op"].as_str().unwrap_or("?").to_owned();
        let us = e.json["us"].as_array().cloned().unwrap_or_default();
        ops.entry(op)
            .or_default()
            .extend(us.iter().filter_map(Value::as_f64).map(|u| u / 1000.0));
    }

    let col = |k: &str| -> Vec<f64> { kills.iter().filter_map(|r| r[k].as_f64()).collect() };
    let detect = col("detect_ms");
    let acquire = col("acquire_ms");
    let promoted = col("promoted_ms");
    let handover: Vec<f64> = resigns
        .iter()
        .filter_map(|r| r["handover_ms"].as_f64())
        .collect();
    let op_stats: serde_json::Map<String, Value> =
        ops.iter().map(|(k, v)| (k.clone(), stats(v))).collect();
    let summary = json!({
        "label": label,
        "backend": b.args.backend.split(':').next(),
        "lease_ms": lease_ms,
        "renew_ms": renew_ms,
        "detect_ms": stats(&detect),
        "acquire_ms": stats(&acquire),
        "promoted_ms": stats(&promoted),
        "handover_ms": stats(&handover),
        "ops_ms": op_stats,
        "kills": kills,
        "resigns": resigns,
    });
    std::fs::write(
        b.args.out.join(format!("{label}.json")),
        serde_json::to_string_pretty(&summary)?,
    )?;

    let p = |v: &[f64], q: f64| {
        percentile(v, q)
            .map(|x| format!("{x:.0}"))
            .unwrap_or("–".into())
    };
    let p1 = |v: &[f64], q: f64| {
        percentile(v, q)
            .map(|x| format!("{x:.1}"))
            .unwrap_or("–".into())
    };
    let op = |name: &str| {
        ops.get(name)
            .map(|v| format!("{} / {} (n={})", p1(v, 50.0), p1(v, 99.0), v.len()))
            .unwrap_or("–".into())
    };
    let row = format!(
        "| {label} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {} | {} | {} |\n",
        kills.len(),
        p(&detect, 50.0),
        p(&detect, 99.0),
        p(&acquire, 50.0),
        p(&acquire, 99.0),
        p(&promoted, 50.0),
        p(&promoted, 99.0),
        p1(&handover, 50.0),
        p1(&handover, 99.0),
        op("try_acquire"),
        op("renew"),
        op("resign"),
    );
    std::fs::write(b.args.out.join(format!("{label}.md")), row)?;
    print!("{}", serde_json::to_string(&summary["detect_ms"])?);
    println!();
    Ok(())
}
