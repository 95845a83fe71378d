//! Real processes. Embedded: a holder in a child process is SIGKILLed and another process
//! takes over within a second (the kernel drops the dead holder's flock); tokens keep
//! increasing across restarts; a damaged token file is an error, not a reset. PostgreSQL: a
//! holder is SIGSTOPped past its lease, another process takes over, and when the old holder
//! resumes it knows at once that it lost, and its fenced write with the old token is rejected.
//!
//! Children are this test binary re-executed with `LIFEBOAT_COORD_CHILD_DIR` or
//! `LIFEBOAT_COORD_CHILD_PG` set (they run only `child_holder` / `pg_child_holder`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_coord::{
    EmbeddedBackend, Error, FencingToken, LeaderConfig, LeaderElection, PostgresFence,
};

const CHILD_ENV: &str = "LIFEBOAT_COORD_CHILD_DIR";
/// `<url> <namespace> <table>` for the PostgreSQL child.
const PG_CHILD_ENV: &str = "LIFEBOAT_COORD_CHILD_PG";
const NS: &str = "kill-test";

fn config(dir: &std::path::Path, node: &str) -> LeaderConfig {
    LeaderConfig::embedded(dir)
        .namespace(NS)
        .node_id(node)
        .lease_duration(Duration::from_secs(10))
        .renew_interval(Duration::from_secs(2))
        .retry_interval(Duration::from_millis(50))
}

/// In the child: lead, report the token on stdout, then hold until killed.
#[tokio::test]
async fn child_holder() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only meaningful as the child of `sigkilled_holder_is_replaced_fast`
    };
    let e = LeaderElection::new_without_env(config(dir.as_ref(), "child"))
        .await
        .expect("child election");
    let l = e.acquire_leadership().await.expect("child leads");
    println!("ACQUIRED {}", l.fencing_token());
    // Hold until killed; exit on our own if the parent died without killing us.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Reads child output until a line containing `tag `, returning what follows it.
fn expect_line(lines: &mut Lines, tag: &str) -> String {
    let tag = format!("{tag} ");
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("child exited before printing {tag}"))
            .expect("read child stdout");
        // libtest may print "test child_holder ... " on the same line first.
        if let Some((_, rest)) = line.split_once(&tag) {
            return rest.trim().to_owned();
        }
    }
}

fn spawn_test_child(test: &str, env: &str, value: &str) -> (std::process::Child, Lines) {
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, value)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    (child, BufReader::new(stdout).lines())
}

fn spawn_child(dir: &std::path::Path) -> (std::process::Child, FencingToken) {
    let (child, mut lines) = spawn_test_child(
        "processes::child_holder",
        CHILD_ENV,
        dir.to_str().expect("utf-8 path"),
    );
    let token = expect_line(&mut lines, "ACQUIRED");
    (child, FencingToken(token.parse().expect("token number")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_holder_is_replaced_fast() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(PG_CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let spawn = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || spawn_child(&dir)
    });
    let (mut child, child_token) = tokio::time::timeout(Duration::from_secs(30), spawn)
        .await
        .expect("child did not report leadership within 30 s")
        .expect("spawn task");

    let parent = LeaderElection::new_without_env(config(dir.path(), "parent"))
        .await
        .expect("parent election");
    assert!(
        parent.try_acquire().await.expect("try").is_none(),
        "child holds the lock"
    );
    let cur = parent
        .current()
        .await
        .expect("current")
        .expect("child is holder");
    assert_eq!((cur.node_id.as_str(), cur.token), ("child", child_token));

    let waiter = {
        let parent = parent.clone();
        tokio::spawn(async move {
            let l = parent.acquire_leadership().await.expect("parent leads");
            (Instant::now(), l)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "parent led while the child held the lock"
    );

    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL child");
    let (won, l) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("no takeover within 5 s")
        .expect("waiter");
    let takeover = won.duration_since(killed);
    child.wait().expect("reap child");
    eprintln!("embedded: SIGKILL of the holder → new leader after {takeover:?}");
    assert!(
        takeover <= Duration::from_secs(1),
        "takeover took {takeover:?}"
    );
    assert!(l.fencing_token() > child_token);
    let cur = parent.current().await.expect("current").expect("holder");
    assert_eq!(
        (cur.node_id.as_str(), cur.token),
        ("parent", l.fencing_token())
    );

    // Restart: a new election (new process state) continues above every earlier token.
    let last = l.fencing_token();
    drop(l);
    parent.stop().await.expect("stop");
    drop(parent);
    let restarted = LeaderElection::new_without_env(config(dir.path(), "restarted"))
        .await
        .expect("election after restart");
    let l = restarted
        .acquire_leadership()
        .await
        .expect("lead after restart");
    assert!(
        l.fencing_token() > last,
        "{} after {last}",
        l.fencing_token()
    );
    let backend = EmbeddedBackend::open(dir.path()).expect("open");
    assert_eq!(backend.last_token(NS).expect("read"), l.fencing_token().0);
}

#[tokio::test]
async fn damaged_token_file_is_an_error_not_a_reset() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(PG_CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let e = LeaderElection::new_without_env(config(dir.path(), "n1"))
        .await
        .expect("election");
    let l = e.acquire_leadership().await.expect("lead");
    l.resign().await.expect("resign");
    let path = dir.path().join(format!("{NS}.token"));
    let mut text = std::fs::read_to_string(&path).expect("token file");
    text = text.replacen(&l.fencing_token().0.to_string(), "0", 1); // CRC no longer matches
    std::fs::write(&path, text).expect("damage");
    let err = e
        .try_acquire()
        .await
        .expect_err("acquired over a damaged counter");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("never lower"), "{err}");
}

fn pg_config(url: &str, ns: &str, node: &str) -> LeaderConfig {
    LeaderConfig::postgres(url)
        .namespace(ns)
        .node_id(node)
        .lease_duration(Duration::from_millis(1000))
        .renew_interval(Duration::from_millis(200))
        .renew_deadline(Duration::from_millis(600))
        .safety_margin(Duration::from_millis(200))
        .op_timeout(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(50))
}

async fn fenced_insert(url: &str, table: &str, ns: &str, who: &str, token: FencingToken) -> bool {
    let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let txn = client.transaction().await.expect("begin");
    txn.execute(
        &format!("INSERT INTO {table} (writer, token) VALUES ($1, $2)"),
        &[&who, &(token.0 as i64)],
    )
    .await
    .expect("insert");
    match PostgresFence::new(ns).guarded(&txn, token).await {
        Ok(()) => {
            txn.commit().await.expect("commit");
            true
        }
        Err(Error::Fenced { .. }) => false, // dropping txn rolls the insert back
        Err(e) => panic!("fenced write failed: {e}"),
    }
}

/// In the PostgreSQL child: lead, report, and once resumed after a stop report the loss and
/// try a (zombie) fenced write with the old token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_child_holder() {
    let Ok(spec) = std::env::var(PG_CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split(' ');
    let (url, ns, table) = (
        parts.next().expect("url"),
        parts.next().expect("namespace"),
        parts.next().expect("table"),
    );
    let e = LeaderElection::new_without_env(pg_config(url, ns, "child"))
        .await
        .expect("child election");
    let l = e.acquire_leadership().await.expect("child leads");
    assert!(fenced_insert(url, table, ns, "child-before", l.fencing_token()).await);
    println!("ACQUIRED {}", l.fencing_token());
    let reason = l.lost().await;
    println!("LOST {reason:?} valid={}", l.is_valid());
    let accepted = fenced_insert(url, table, ns, "child-zombie", l.fencing_token()).await;
    println!("WRITE {}", if accepted { "accepted" } else { "rejected" });
    // Hold until killed; exit on our own if the parent died without killing us.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_pg_holder_is_fenced_after_takeover() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(PG_CHILD_ENV).is_ok() {
        return;
    }
    let url = match std::env::var("LIFEBOAT_TEST_PG") {
        Ok(v) if !v.is_empty() => v,
        _ if std::env::var("LIFEBOAT_REQUIRE_PG").as_deref() == Ok("1") => {
            panic!("LIFEBOAT_REQUIRE_PG=1 but LIFEBOAT_TEST_PG is not set")
        }
        _ => {
            eprintln!("skipping: set LIFEBOAT_TEST_PG to run the SIGSTOP test");
            return;
        }
    };
    let tag = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_nanos()
    );
    let (ns, table) = (format!("stop_{tag}"), format!("stopped_writes_{tag}"));
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (writer text NOT NULL, token bigint NOT NULL)"
        ))
        .await
        .expect("create table");
    PostgresFence::create_schema(&admin).await.expect("schema");

    let spec = format!("{url} {ns} {table}");
    let spawned = tokio::task::spawn_blocking(move || {
        let (child, mut lines) =
            spawn_test_child("processes::pg_child_holder", PG_CHILD_ENV, &spec);
        let token: u64 = expect_line(&mut lines, "ACQUIRED").parse().expect("token");
        (child, lines, FencingToken(token))
    });
    let (mut child, mut lines, child_token) =
        tokio::time::timeout(Duration::from_secs(30), spawned)
            .await
            .expect("child did not lead within 30 s")
            .expect("spawn task");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);

    let parent = LeaderElection::new_without_env(pg_config(&url, &ns, "parent"))
        .await
        .expect("parent election");
    let stopped = std::time::Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let l = tokio::time::timeout(Duration::from_secs(5), parent.acquire_leadership())
        .await
        .expect("no takeover within 5 s of SIGSTOP")
        .expect("parent leads");
    let takeover = stopped.elapsed();
    assert!(l.fencing_token() > child_token);
    assert!(fenced_insert(&url, &table, &ns, "parent", l.fencing_token()).await);
    eprintln!("postgres: SIGSTOP of the holder (lease 1 s) → new leader after {takeover:?}");

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    let report = tokio::task::spawn_blocking(move || {
        let lost = expect_line(&mut lines, "LOST");
        let write = expect_line(&mut lines, "WRITE");
        (lost, write)
    });
    let (lost, write) = tokio::time::timeout(Duration::from_secs(10), report)
        .await
        .expect("resumed child did not report")
        .expect("reader");
    let _ = child.kill();
    child.wait().expect("reap child");
    assert_eq!(lost, "LocalDeadline valid=false", "resumed holder's view");
    assert_eq!(write, "rejected", "zombie write with the old token");
    let rows: Vec<String> = admin
        .query(&format!("SELECT writer FROM {table} ORDER BY writer"), &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, ["child-before", "parent"]);
    l.resign().await.expect("resign");
    admin
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop");
}

/// Regression: an acquire whose caller gave up (a timeout while fsync was slow) must not
/// leave the lock held by nobody's term — that hung a campaign forever under IO load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_embedded_acquire_does_not_leak_the_lock() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(PG_CHILD_ENV).is_ok() {
        return;
    }
    use lifeboat_coord::{Backend, NodeId};
    let dir = tempfile::tempdir().expect("tempdir");
    let b1 = EmbeddedBackend::open(dir.path()).expect("open");
    let b2 = EmbeddedBackend::open(dir.path()).expect("open");
    let (node, lease) = (NodeId::new("n1"), Duration::from_secs(10));
    for _ in 0..20 {
        // Usually polled once (the blocking work starts), then dropped. The timer has
        // millisecond resolution, so the call sometimes completes instead: that is a real
        // grant, which we release like any caller would.
        if let Ok(Ok(Some(g))) =
            tokio::time::timeout(Duration::ZERO, b1.try_acquire(NS, &node, lease)).await
        {
            assert!(b1.resign(NS, &node, g.token).await.expect("resign"));
        }
    }
    let start = std::time::Instant::now();
    let grant = loop {
        if let Some(g) = b1.try_acquire(NS, &node, lease).await.expect("try") {
            break g;
        }
        // The cancelled calls finish in the background (each fsyncs, which can be slow under
        // IO load); once they have, the lock must be free again.
        if start.elapsed() > Duration::from_secs(5) {
            let cur = b1.current(NS).await;
            let cur2 = b2.current(NS).await;
            panic!("a cancelled acquire left the lock held: b1 sees {cur:?}, b2 sees {cur2:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(b2
        .try_acquire(NS, &NodeId::new("n2"), lease)
        .await
        .expect("try")
        .is_none());
    assert!(b1.resign(NS, &node, grant.token).await.expect("resign"));
    let g2 = b2
        .try_acquire(NS, &NodeId::new("n2"), lease)
        .await
        .expect("try")
        .expect("free after resign");
    assert!(g2.token > grant.token);
}
