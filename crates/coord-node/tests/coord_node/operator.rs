//! What an operator sees of a `lifeboat-coord-node` process: a store it cannot reach is
//! reported on every attempt (JSON event + stderr naming the store) and its return is noticed,
//! and every flag can be given through its `LIFEBOAT_NODE_*` environment variable.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use lifeboat_coord_node::harness::{Event, EventLog, NodeProcess};
use lifeboat_testkit::{FaultProxy, ProxyMode};

const WAIT: Duration = Duration::from_secs(20);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lifeboat-coord-node"))
}

fn wait(log: &EventLog, from: usize, what: &str, pred: impl FnMut(&Event) -> bool) -> Event {
    log.wait_for(from, WAIT, pred).unwrap_or_else(|| {
        panic!(
            "timed out waiting for {what}; events: {:#?}",
            log.snapshot()
                .iter()
                .map(|e| e.json.to_string())
                .collect::<Vec<_>>()
        )
    })
}

fn unreachable_attempt(e: &Event, store: &str, attempt: u64) -> bool {
    e.kind == "store_unreachable"
        && e.json["store"] == store
        && e.json["attempt"].as_u64() == Some(attempt)
}

#[test]
fn an_etcd_refusing_connections_is_reported_on_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = format!("etcd:http://127.0.0.1:{port}");
    let log = EventLog::new();
    let args: Vec<String> = [
        "--backend",
        &store,
        "--op-timeout",
        "300ms",
        "--retry",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let node = NodeProcess::spawn(&bin(), "n1", &args, log.clone(), dir.path()).unwrap();
    let first = wait(&log, 0, "the first failed attempt", |e| {
        unreachable_attempt(e, &store, 1)
    });
    assert!(
        first.json["error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{}",
        first.json
    );
    wait(&log, 0, "the second failed attempt", |e| {
        unreachable_attempt(e, &store, 2)
    });
    let stderr = node.stderr_text();
    assert!(
        stderr.contains(&format!("cannot reach the coordination store {store}"))
            && stderr.contains("attempt 2"),
        "stderr: {stderr}"
    );
    assert!(!log.snapshot().iter().any(|e| e.kind == "acquired"));
}

fn etcd() -> Option<String> {
    match std::env::var("LIFEBOAT_TEST_ETCD") {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("LIFEBOAT_REQUIRE_ETCD").as_deref() == Ok("1") => {
            panic!("LIFEBOAT_REQUIRE_ETCD=1 but LIFEBOAT_TEST_ETCD is not set")
        }
        _ => {
            eprintln!("skipping: set LIFEBOAT_TEST_ETCD to run this test");
            None
        }
    }
}

#[test]
fn a_black_holed_etcd_is_reported_until_it_answers_again() {
    let Some(endpoint) = etcd() else { return };
    let authority = endpoint.split("://").nth(1).unwrap().trim_end_matches('/');
    let upstream: SocketAddr = authority.to_socket_addrs().unwrap().next().unwrap();
    let proxy = FaultProxy::start(upstream).unwrap();
    proxy.set_mode(ProxyMode::Blackhole);
    let store = format!("etcd:http://{}", proxy.addr());
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::new();
    let ns = format!("operator-{}", std::process::id());
    let args: Vec<String> = [
        "--backend",
        &store,
        "--namespace",
        &ns,
        "--lease",
        "2s",
        "--renew",
        "500ms",
        "--renew-deadline",
        "1200ms",
        "--margin",
        "300ms",
        "--op-timeout",
        "300ms",
        "--retry",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let node = NodeProcess::spawn(&bin(), "n1", &args, log.clone(), dir.path()).unwrap();
    wait(&log, 0, "two failed attempts", |e| {
        unreachable_attempt(e, &store, 2)
    });
    assert!(!log.snapshot().iter().any(|e| e.kind == "acquired"));
    let mark = log.mark();
    proxy.set_mode(ProxyMode::Pass);
    let back = wait(&log, mark, "the store's return", |e| {
        e.kind == "store_reachable"
    });
    assert!(
        back.json["failed_attempts"].as_u64().unwrap() >= 2,
        "{}",
        back.json
    );
    wait(&log, mark, "a term", |e| e.is("acquired", "n1"));
    assert!(
        node.stderr_text().contains("answers again"),
        "{}",
        node.stderr_text()
    );
}

#[test]
fn every_flag_can_be_set_through_its_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let coord = dir.path().join("coord");
    let fence = dir.path().join("fence");
    let hook_out = dir.path().join("promoted-token");
    let log = EventLog::new();
    let mut cmd = Command::new(bin());
    cmd.env(
        "LIFEBOAT_NODE_BACKEND",
        format!("embedded:{}", coord.display()),
    )
    .env("LIFEBOAT_NODE_ID", "env-node")
    .env("LIFEBOAT_NODE_NAMESPACE", "from-env")
    .env("LIFEBOAT_NODE_LEASE", "3s")
    .env("LIFEBOAT_NODE_RENEW", "500ms")
    .env("LIFEBOAT_NODE_RENEW_DEADLINE", "2s")
    .env("LIFEBOAT_NODE_MARGIN", "400ms")
    .env("LIFEBOAT_NODE_OP_TIMEOUT", "300ms")
    .env("LIFEBOAT_NODE_RETRY", "100ms")
    .env("LIFEBOAT_NODE_FENCE", format!("file:{}", fence.display()))
    .env("LIFEBOAT_NODE_WRITE_INTERVAL", "50ms")
    .env("LIFEBOAT_NODE_ZOMBIE_WRITES", "false")
    .env(
        "LIFEBOAT_NODE_PROMOTE_HOOK",
        format!("echo $LIFEBOAT_LEADER_TOKEN > '{}'", hook_out.display()),
    )
    .env("LIFEBOAT_NODE_OBSERVE", "true")
    .env("LIFEBOAT_NODE_OP_STATS_INTERVAL", "200ms");
    let _node = NodeProcess::spawn_command(cmd, "env-node", log.clone(), dir.path()).unwrap();
    let started = wait(&log, 0, "started", |e| e.is("started", "env-node"));
    assert_eq!(started.json["lease_ms"], 3000, "{}", started.json);
    assert_eq!(started.json["renew_ms"], 500, "{}", started.json);
    assert_eq!(started.json["margin_ms"], 400, "{}", started.json);
    let acquired = wait(&log, 0, "a term", |e| e.is("acquired", "env-node"));
    wait(&log, 0, "the promote hook", |e| {
        e.is("promoted", "env-node")
    });
    assert_eq!(
        std::fs::read_to_string(&hook_out).unwrap().trim(),
        acquired.token.unwrap().to_string()
    );
    wait(&log, 0, "a fenced write", |e| {
        e.is("write_accepted", "env-node")
    });
    wait(&log, 0, "observe", |e| e.is("observed", "env-node"));
    wait(&log, 0, "op stats", |e| e.is("op_samples", "env-node"));
    assert!(
        coord.join("from-env.lock").exists(),
        "namespace from the environment"
    );
}
