//! Backing up a stream (stdin or a command's stdout) as a single file.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;
use jiff::Timestamp;

use super::shared::{NewBlob, ReadError, Shared};
use super::walker::{Child, Walker};
use super::StdinSource;
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::tree::{Name, Node, NodeKind};

/// Backs up a stream (stdin or a command's stdout) as a single file at the snapshot root.
pub(super) fn backup_stream(
    shared: &Shared<'_>,
    walker: &mut Walker<'_, '_>,
    name: &str,
    src: &StdinSource,
    params: crate::chunker::ChunkerParams,
    chunker_key: &[u8; 32],
    blobs: &Sender<NewBlob>,
) -> Result<Vec<Child>> {
    if name.is_empty() || name.contains('/') {
        return Err(Error::InvalidInput(format!(
            "stream file name {name:?} must be a plain file name (no slash, not empty)"
        )));
    }
    let mut chunker = Chunker::new(params, chunker_key);
    let map_err = |e: ReadError, what: &str| match e {
        ReadError::Io(e) => Error::io("cannot read", what, e),
        ReadError::Aborted => shared
            .error
            .lock()
            .expect("lock")
            .take()
            .unwrap_or(Error::Cancelled),
    };
    let (ids, size) = match src {
        StdinSource::Stdin => shared
            .chunk_stream(&mut chunker, io::stdin().lock(), blobs)
            .map_err(|e| map_err(e, "stdin"))?,
        StdinSource::Command(argv) => {
            let (prog, args) = argv
                .split_first()
                .ok_or_else(|| Error::InvalidInput("no command given".into()))?;
            let shown = argv.join(" ");
            let mut cmd = Command::new(prog);
            cmd.args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .process_group(0);
            die_with_parent(&mut cmd);
            let mut child = cmd.spawn().map_err(|e| Error::CommandFailed {
                command: shown.clone(),
                status: format!("cannot start: {e}"),
            })?;
            let out = child.stdout.take().expect("stdout is piped");
            // The command leads its own process group, so a cancel (or a failure elsewhere in
            // the pipeline) kills all of it: a quiet `sh -c 'pg_dump | zstd'` cannot keep the
            // read blocked. The group id stays valid until the leader is reaped, below, after
            // the watcher has ended.
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            let kill_group = || {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            };
            let stopping = || {
                shared.cancel.wait_timeout(WATCH_INTERVAL) || shared.abort.load(Ordering::SeqCst)
            };
            let done = AtomicBool::new(false);
            let r = std::thread::scope(|s| {
                s.spawn(|| {
                    while !done.load(Ordering::SeqCst) {
                        if stopping() {
                            kill_group();
                            return;
                        }
                    }
                });
                // Set even if reading panics, so the watcher and this scope end.
                let _done = SetOnDrop(&done);
                shared.chunk_stream(&mut chunker, out, blobs)
            });
            if r.is_err() {
                kill_group();
            }
            // Reap it, but not past a cancel: a command that closed its output and lingers
            // is killed.
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status,
                    Ok(None) if stopping() => {
                        kill_group();
                        break child
                            .wait()
                            .map_err(|e| Error::io("cannot wait for", prog, e))?;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Error::io("cannot wait for", prog, e)),
                }
            };
            let r = r.map_err(|e| map_err(e, prog))?;
            if !status.success() {
                // A cancel killed it: report the cancel, not its death.
                if shared.cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                shared.fail(Error::CommandFailed {
                    command: shown.clone(),
                    status: status.to_string(),
                });
                return Err(Error::CommandFailed {
                    command: shown,
                    status: status.to_string(),
                });
            }
            r
        }
    };
    let now = Timestamp::now().as_nanosecond() as i64;
    walker.summary.files_new += 1;
    walker.summary.total_bytes += size;
    Ok(vec![Child::Ready(Node {
        name: Name::from(name),
        kind: NodeKind::File,
        mode: 0o600,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        mtime_ns: now,
        ctime_ns: now,
        inode: 0,
        dev: 0,
        nlink: 1,
        size,
        content: ids,
        subtree: None,
        target: None,
    })])
}

/// How often a stream's watcher looks at the pipeline's abort flag (a cancel wakes it at once).
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// Sets a flag when dropped (also while unwinding).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Makes the command receive SIGKILL when the thread that started it dies, so a SIGKILLed
/// `lifeboat` never leaves a dump running (and writing somewhere) without a reader.
///
/// The death signal is tied to the forking *thread*: the caller starts the command on the
/// thread that then reads its output until it exits, so that thread outlives the child.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: `pre_exec` runs the closure in the forked child before `exec`. The closure only
    // makes two async-signal-safe system calls (prctl(PR_SET_PDEATHSIG), getppid) and builds
    // an `io::Error` from a raw errno, which does not allocate; it touches no locks or shared
    // state of the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            // The parent may have died between fork and prctl: then nobody reads our output.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
