//! `backup --stdin-from-command` must not leave its command running when `lifeboat` dies:
//! the command gets PR_SET_PDEATHSIG(SIGKILL). A real `lifeboat` is SIGKILLed while its
//! command blocks, and the command must be gone soon after, with no snapshot written.
//!
//! This test process makes itself a child subreaper, so the orphaned command is re-parented
//! to it: the test can then reap it and see how it died (`waitpid`), instead of guessing from
//! `/proc` whether some other reaper has got to it yet.

use lifeboat_testkit::repo_cli as common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{lifeboat_cmd, tempdir, Repo};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Upper bound for every wait in this file; reached only when something is broken.
const TIMEOUT: Duration = Duration::from_secs(20);
/// Poll interval for the events waited on (a file appearing, a process changing state).
const POLL: Duration = Duration::from_millis(10);

/// A shell snippet that records its pid in `pidfile` atomically, then blocks forever with no
/// output (the backup reading it never finishes on its own).
fn blocking_command(pidfile: &Path) -> String {
    let tmp = format!("{}.tmp", pidfile.display());
    format!(
        "echo $$ > '{tmp}' && mv '{tmp}' '{}' && exec sleep 1000",
        pidfile.display()
    )
}

/// Waits until `pidfile` exists and returns the pid in it.
fn wait_for_pid(pidfile: &Path, parent: &mut Child) -> Pid {
    let start = Instant::now();
    loop {
        if let Ok(s) = fs::read_to_string(pidfile) {
            return Pid::from_raw(s.trim().parse().expect("pid in pid file"));
        }
        if let Some(status) = parent.try_wait().expect("try_wait") {
            panic!("the parent exited ({status}) before its command wrote {pidfile:?}");
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "no pid file after {TIMEOUT:?}: the command did not start"
        );
        std::thread::sleep(POLL);
    }
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat, or None if the process is gone.
fn stat_field(pid: Pid, n: usize) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(n - 3).map(str::to_owned)
}

/// How the command ended after its parent died: it is our child now (we are its subreaper),
/// so we reap it. `None` if it was still running at the timeout.
fn reap_within(pid: Pid, timeout: Duration) -> Option<WaitStatus> {
    let start = Instant::now();
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return Some(status),
            Err(e) => panic!(
                "cannot wait for {pid} ({e}); /proc state {:?}: it was not re-parented to \
                 this test (the subreaper)",
                stat_field(pid, 3)
            ),
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Kills `parent` with SIGKILL once its command has started; returns the command's pid after
/// checking that it really is the parent's child.
fn kill_parent_after_command_started(mut parent: Child, pidfile: &Path) -> Pid {
    let pid = wait_for_pid(pidfile, &mut parent);
    assert_eq!(
        stat_field(pid, 4).as_deref(),
        Some(parent.id().to_string().as_str()),
        "the pid file was not written by a child of the killed process"
    );
    parent.kill().expect("SIGKILL the parent");
    let status = parent.wait().expect("wait for the parent");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status}"
    );
    pid
}

/// Asserts that `pid` was killed (it is our child after its parent died) within the
/// timeout, and that it is gone from /proc once reaped. On failure the survivor is killed.
fn assert_dies(pid: Pid) {
    match reap_within(pid, TIMEOUT) {
        Some(WaitStatus::Signaled(_, Signal::SIGKILL, _)) => {}
        Some(other) => panic!("the command ended otherwise than by SIGKILL: {other:?}"),
        None => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            panic!("the command outlived the killed lifeboat by {TIMEOUT:?}");
        }
    }
    assert_eq!(
        stat_field(pid, 3),
        None,
        "{pid} still in /proc after reaping"
    );
}

#[test]
fn killed_backup_takes_its_stream_command_with_it() {
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let dir = tempdir();
    let repo = Repo::at(&dir.path().join("repo"));
    repo.init();

    // Control: a parent without PR_SET_PDEATHSIG (a plain shell) leaves the same command
    // running, re-parented to us: what the assertion below must tell apart.
    let pidfile = dir.path().join("control.pid");
    let control = Command::new("sh")
        .arg("-c")
        // `; :` keeps the outer shell from exec'ing the inner one: it stays the parent.
        .arg("sh -c \"$1\"; :")
        .arg("sh")
        .arg(blocking_command(&pidfile))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn control shell");
    let orphan = kill_parent_after_command_started(control, &pidfile);
    assert_eq!(
        waitpid(orphan, Some(WaitPidFlag::WNOHANG)).expect("orphan is our child"),
        WaitStatus::StillAlive,
        "without PR_SET_PDEATHSIG the command should have survived its parent"
    );
    kill(orphan, Signal::SIGKILL).expect("kill the control orphan");
    assert!(matches!(
        waitpid(orphan, None),
        Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _))
    ));

    // The real thing.
    let pidfile = dir.path().join("child.pid");
    let mut cmd = repo.cmd(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "x",
        "--",
        "sh",
        "-c",
        &blocking_command(&pidfile),
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let backup = cmd.spawn().expect("spawn lifeboat backup");
    let child = kill_parent_after_command_started(backup, &pidfile);
    assert_dies(child);

    assert!(
        repo.snapshots().is_empty(),
        "a killed backup wrote a snapshot"
    );
    // The repository still works for the next backup.
    let mut c = lifeboat_cmd(Some(&repo.password));
    c.args(["-r", &repo.location, "backup", "--stdin-from-command", "--"])
        .args(["sh", "-c", "echo done"]);
    let out = c.output().expect("run backup");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(repo.snapshots().len(), 1);
}
