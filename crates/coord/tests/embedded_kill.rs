//! Embedded backend with real processes: a holder in a child process is SIGKILLed and
//! another process takes over within a second (the kernel drops the dead holder's flock);
//! tokens keep increasing across restarts; a damaged token file is an error, not a reset.
//!
//! The child is this test binary re-executed with `LIFEBOAT_COORD_CHILD_DIR` set (it runs
//! only `child_holder`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_coord::{EmbeddedBackend, Error, FencingToken, LeaderConfig, LeaderElection};

const CHILD_ENV: &str = "LIFEBOAT_COORD_CHILD_DIR";
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
    std::future::pending::<()>().await;
}

fn spawn_child(dir: &std::path::Path) -> (std::process::Child, FencingToken) {
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--exact", "child_holder", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let token = loop {
        let line = lines
            .next()
            .expect("child exited before acquiring")
            .expect("read child stdout");
        // libtest may print "test child_holder ... " on the same line first.
        if let Some((_, t)) = line.split_once("ACQUIRED ") {
            break FencingToken(t.trim().parse().expect("token number"));
        }
    };
    (child, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_holder_is_replaced_fast() {
    if std::env::var(CHILD_ENV).is_ok() {
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
    if std::env::var(CHILD_ENV).is_ok() {
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
