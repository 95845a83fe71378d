//! Running a command and signalling it at a chosen moment.
//!
//! The child is polled with `try_wait` (which never reaps a child that is still running), so a
//! signal is only ever sent to our own child while it is alive or a zombie, never to a recycled
//! pid.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// When to deliver the signal.
pub enum Trigger {
    /// This long after the child was spawned.
    After(Duration),
    /// As soon as this path exists.
    PathExists(PathBuf),
    /// As soon as this returns true (polled about every millisecond).
    When(Box<dyn FnMut() -> bool>),
    /// Never: just run to completion.
    Never,
}

/// How the child ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status (check [`std::os::unix::process::ExitStatusExt::signal`] for kills).
    pub status: ExitStatus,
    /// True if the signal was sent (the child may still have exited on its own just before).
    pub signalled: bool,
    /// Time from spawn to the signal (or to exit, if never signalled).
    pub signalled_after: Duration,
    /// Time from spawn to exit.
    pub elapsed: Duration,
    /// Captured standard output.
    pub stdout: Vec<u8>,
    /// Captured standard error.
    pub stderr: Vec<u8>,
}

impl Outcome {
    /// The exit code, `None` if the child died of a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The signal that terminated the child, if any.
    pub fn killed_by(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.status.signal()
    }

    /// Standard error as (lossy) text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Spawns `cmd` (a `Command` or `&mut Command`; stdin null, stdout/stderr captured) and sends `signal` when `trigger` fires,
/// unless the child has already exited. Waits for the child and returns how it ended.
pub fn run_with_signal(
    mut cmd: impl std::borrow::BorrowMut<Command>,
    signal: Signal,
    trigger: Trigger,
) -> std::io::Result<Outcome> {
    let cmd = cmd.borrow_mut();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child: Child = cmd.spawn()?;
    let out = drain(child.stdout.take().expect("piped"));
    let err = drain(child.stderr.take().expect("piped"));
    let pid = Pid::from_raw(child.id() as i32);
    let mut trigger = trigger;
    let mut signalled = false;
    let mut signalled_after = Duration::ZERO;
    let poll = Duration::from_millis(1);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        let fire = match &mut trigger {
            Trigger::After(d) => {
                let now = started.elapsed();
                if now >= *d {
                    true
                } else {
                    std::thread::sleep((*d - now).min(poll));
                    false
                }
            }
            Trigger::PathExists(p) => p.exists(),
            Trigger::When(f) => f(),
            Trigger::Never => false,
        };
        if fire {
            // The child has not been reaped (try_wait said it is running), so the pid is ours.
            signalled_after = started.elapsed();
            kill(pid, signal).map_err(std::io::Error::from)?;
            signalled = true;
            break;
        }
        if !matches!(trigger, Trigger::After(_)) {
            std::thread::sleep(poll);
        }
    }
    let status = child.wait()?;
    let elapsed = started.elapsed();
    if !signalled {
        signalled_after = elapsed;
    }
    Ok(Outcome {
        status,
        signalled,
        signalled_after,
        elapsed,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_after_delay() {
        let o = run_with_signal(
            Command::new("sleep").arg("10"),
            Signal::SIGKILL,
            Trigger::After(Duration::from_millis(50)),
        )
        .unwrap();
        assert!(o.signalled);
        assert_eq!(o.killed_by(), Some(libc_sigkill()));
        assert!(o.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn does_not_signal_finished_child() {
        let o = run_with_signal(
            &mut Command::new("true"),
            Signal::SIGKILL,
            Trigger::After(Duration::from_secs(30)),
        )
        .unwrap();
        assert!(!o.signalled);
        assert_eq!(o.code(), Some(0));
    }

    #[test]
    fn kills_when_path_appears() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("flag");
        let o = run_with_signal(
            Command::new("sh")
                .arg("-c")
                .arg(format!("echo hi; touch {}; exec sleep 10", p.display())),
            // SIGKILL, not SIGINT: a shell still waiting for `touch` defers SIGINT and then
            // execs `sleep` anyway, which made this test flaky.
            Signal::SIGKILL,
            Trigger::PathExists(p),
        )
        .unwrap();
        assert!(o.signalled);
        assert_eq!(o.stdout, b"hi\n");
        assert!(o.elapsed < Duration::from_secs(5));
    }

    fn libc_sigkill() -> i32 {
        Signal::SIGKILL as i32
    }
}
