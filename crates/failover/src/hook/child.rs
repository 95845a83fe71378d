//! Hook processes that die with the manager: each runs in its own process group under a tiny
//! `sh` supervisor that has a parent-death signal, and the whole group is killed when the run
//! ends (exit, timeout, or the future dropped).
//!
//! Why each piece is needed:
//!
//! * **Parent-death signal** (`PR_SET_PDEATHSIG`): a SIGKILLed manager runs no destructor,
//!   so only the kernel can tell its hook. The signal goes to the direct child only, and is
//!   tied to the *thread* that forked it — so every hook is spawned from one dedicated thread
//!   that lives as long as the process (a tokio worker or blocking thread may exit earlier and
//!   would kill a running hook with it).
//! * **Supervisor** (`SUPERVISOR`): the direct child is `sh -c 'trap … TERM; sh -c "$1" &
//!   wait $!'`. Its parent-death signal is SIGTERM, which it traps to SIGKILL its whole
//!   process group — so the hook's own children (`ssh`, `pg_ctl`, a subshell) die too, not
//!   just the first `sh`.
//! * **Own process group** (`process_group(0)`): that group is exactly the hook and its
//!   descendants (unless one detaches with `setsid`), so the manager kills all of them on
//!   timeout or drop with one `killpg`, and the trap's `kill 0` cannot reach the manager.

use std::io;
use std::sync::mpsc;
use std::sync::OnceLock;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// Runs `$1` in the background and waits for it; on SIGTERM (the parent-death signal) it
/// SIGKILLs its own process group — itself, the hook and everything the hook started.
/// The trap is set before the hook starts, so there is no window in which the hook runs
/// unsupervised. `wait`'s status (the hook's exit status, 128 + n for a signal) is the
/// supervisor's.
const SUPERVISOR: &str = r#"trap 'kill -s KILL 0' TERM; sh -c "$1" & wait $!"#;

/// A hook command as the supervisor runs it: `sh -c SUPERVISOR lifeboat-hook <command>`.
pub(crate) fn command(hook_command: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(SUPERVISOR)
        .arg("lifeboat-hook")
        .arg(hook_command)
        .process_group(0)
        .kill_on_drop(true);
    set_parent_death_signal(&mut cmd);
    cmd
}

#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut tokio::process::Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: `pre_exec` is unsafe because the closure runs in the forked child before
    // `exec`, where only async-signal-safe operations are allowed (another thread of the
    // parent may have held the allocator's or any other lock at the fork). The closure only
    // makes two system calls, `prctl(PR_SET_PDEATHSIG)` and `getppid`, through nix wrappers
    // that do not allocate or lock (they call libc and read `errno`), compares two integers,
    // and builds an `io::Error` from a raw OS error code (no allocation). `parent` is a
    // `Pid` (an integer) copied into the closure before the fork; nothing shared with the
    // parent is touched.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(io::Error::from)?;
            // The manager may have died between fork and prctl: then no signal will ever
            // come (we were already re-parented), so refuse to run the hook at all.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(
                    nix::errno::Errno::ESRCH as i32,
                ));
            }
            Ok(())
        });
    }
}

/// A spawn request for the spawner thread.
struct Request {
    cmd: tokio::process::Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<tokio::process::Child>>,
}

/// The long-lived thread every hook is forked from (see the module docs: the parent-death
/// signal follows the forking thread). Never exits: its sender lives in a static.
fn spawner() -> &'static mpsc::Sender<Request> {
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("lifeboat-hook-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    // The child is registered with the caller's runtime (its reaper).
                    let _enter = req.runtime.enter();
                    let spawned = req.cmd.spawn();
                    if let Err(Ok(child)) = req.reply.send(spawned) {
                        // The caller gave up waiting: nobody will supervise this hook.
                        if let Some(pid) = child.id() {
                            kill_group(pid);
                        }
                    }
                }
            })
            .expect("cannot start the hook spawner thread");
        tx
    })
}

/// Spawns `cmd` (built by [`command`]) from the spawner thread.
pub(crate) async fn spawn(cmd: tokio::process::Command) -> io::Result<tokio::process::Child> {
    let (reply, rx) = oneshot::channel();
    let req = Request {
        cmd,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    spawner()
        .send(req)
        .map_err(|_| io::Error::other("the hook spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the hook spawner thread dropped the request"))?
}

/// SIGKILLs process group `pgid` (the hook's), ignoring a group that is already empty.
pub(crate) fn kill_group(pgid: u32) {
    match killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!("killing hook process group {pgid}: {e}"),
    }
}

/// Kills the hook's process group when dropped: after it exits (leftover background
/// processes), when it times out, or when the run is cancelled.
pub(crate) struct GroupGuard(pub Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // The group id stays reserved while any member lives; once the group is empty the
        // kill is a no-op (ESRCH). Dropped right after the supervisor is reaped, the id
        // cannot have been handed to a new group in between in practice (pids are
        // allocated cyclically over pid_max).
        if let Some(pgid) = self.0.take() {
            kill_group(pgid);
        }
    }
}
