//! A manager SIGKILLed while its promote hook runs takes the hook with it: the hook's shell
//! and the process the hook started are gone, and nothing more is written after the kill.
//!
//! The manager is a real process: this test binary re-executes itself running only
//! `manager_process` (ignored otherwise), which drives a `FailoverManager` on the embedded
//! store until it is killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_coord::{EmbeddedBackend, LeaderConfig, LeaderElection};
use lifeboat_failover::{
    CommandHealthChecker, FailoverConfig, FailoverManager, FailoverPolicy, Hook, NodeSpec,
};

/// Set (to the test's directory) when this binary runs as the manager process.
const DIR_VAR: &str = "LIFEBOAT_TEST_MANAGER_DIR";

fn log(dir: &Path) -> PathBuf {
    dir.join("hooks.log")
}

/// The promote hook: its shell records itself, starts a child that records itself, and both
/// would write again seconds later if they survived.
fn promote_script(dir: &Path) -> PathBuf {
    let script = dir.join("promote.sh");
    let log = log(dir);
    let log = log.display();
    std::fs::write(
        &script,
        format!(
            "echo \"start $$ $LIFEBOAT_FENCING_TOKEN\" >> '{log}'\n\
             sh -c 'echo \"child $$\" >> \"$0\"; sleep 4; echo \"late $$\" >> \"$0\"' '{log}'\n\
             echo \"done $$\" >> '{log}'\n"
        ),
    )
    .unwrap();
    script
}

#[test]
#[ignore = "run by a_sigkilled_manager_takes_its_running_hook_with_it as the manager process"]
fn manager_process() {
    let dir = PathBuf::from(std::env::var(DIR_VAR).expect("run by the parent test"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let backend = Arc::new(EmbeddedBackend::open(&dir.join("coord")).unwrap());
        let election = LeaderElection::new_without_env(
            LeaderConfig::with_backend(backend)
                .namespace("managers")
                .node_id("manager-1")
                .lease_duration(Duration::from_secs(2))
                .renew_interval(Duration::from_millis(400))
                .renew_deadline(Duration::from_secs(1))
                .safety_margin(Duration::from_millis(200))
                .op_timeout(Duration::from_millis(400))
                .retry_interval(Duration::from_millis(20)),
        )
        .await
        .unwrap();
        let promote = format!("sh '{}'", promote_script(&dir).display());
        let config = FailoverConfig::builder()
            .health_check_interval(Duration::from_millis(20))
            .health_check_timeout(Duration::from_millis(500))
            .policy(FailoverPolicy::Immediate)
            .primary_namespace("primary")
            .primary_lease(Duration::from_millis(200))
            .safety_margin(Duration::from_millis(50))
            .startup_grace(Duration::ZERO)
            .initial_primary("pg-a")
            .state_path(dir.join("failover.json"))
            .node(NodeSpec::new("pg-a").health(Arc::new(CommandHealthChecker::new("false"))))
            .node(
                NodeSpec::new("pg-b")
                    .health(Arc::new(CommandHealthChecker::new("true")))
                    .promote_hook(Hook::new(promote, Duration::from_secs(60))),
            )
            .build_without_env()
            .unwrap();
        let _manager = FailoverManager::new(config, election).await;
        std::future::pending::<()>().await;
    });
}

/// `(state, process group)` of `pid`, or `None` once it is gone.
fn stat(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_owned();
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != "Z")
}

/// Live processes in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, pg)| pg == pgid && state != "Z"))
        .collect()
}

fn lines(dir: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(log(dir))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Waits up to `timeout` for `cond`, checking every few milliseconds (another process's
/// file and exit offer this test no event to wait on).
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The manager process, killed and reaped even when an assertion fails.
struct Manager(std::process::Child);

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_sigkilled_manager_takes_its_running_hook_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut manager = Manager(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "hook_death::manager_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(DIR_VAR, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let manager = &mut manager.0;
    let pid_of = |kind: &str| {
        lines(dir.path())
            .iter()
            .find(|l| l[0] == kind)
            .map(|l| l[1].parse::<u32>().unwrap())
    };
    let started = eventually(Duration::from_secs(30), || pid_of("child").is_some());
    assert!(
        started,
        "the promote hook never started: {:?}",
        lines(dir.path())
    );
    let (shell, child) = (pid_of("start").unwrap(), pid_of("child").unwrap());
    let (_, hook_group) = stat(shell).expect("the hook's shell runs");
    let manager_group = stat(manager.id()).unwrap().1;

    let killed_at = Instant::now();
    manager.kill().unwrap(); // SIGKILL: no destructor runs in the manager.
    manager.wait().unwrap();
    let written_at_kill = std::fs::read(log(dir.path())).unwrap();

    let gone = eventually(Duration::from_secs(3), || !alive(shell) && !alive(child));
    assert!(
        gone,
        "hook processes outlived the manager: shell {shell} alive {}, child {child} alive {}",
        alive(shell),
        alive(child),
    );
    eprintln!(
        "hook shell and child gone {:?} after the manager's SIGKILL",
        killed_at.elapsed()
    );
    assert_ne!(
        hook_group, manager_group,
        "the hook has its own process group"
    );
    assert!(
        eventually(Duration::from_secs(3), || group_members(hook_group)
            .is_empty()),
        "the hook's process group {hook_group} still has {:?}",
        group_members(hook_group)
    );
    // Every process of the hook is dead, so nothing can write from here on either.
    assert_eq!(
        std::fs::read(log(dir.path())).unwrap(),
        written_at_kill,
        "the hook wrote after the kill"
    );
    let kinds: Vec<_> = lines(dir.path())
        .into_iter()
        .map(|l| l[0].clone())
        .collect();
    assert_eq!(kinds, ["start", "child"]);
}
