//! Backing up a stream (stdin or a command's stdout) as a single file.

use std::io;
use std::process::{Command, Stdio};

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
            cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped());
            die_with_parent(&mut cmd);
            let mut child = cmd.spawn().map_err(|e| Error::CommandFailed {
                command: shown.clone(),
                status: format!("cannot start: {e}"),
            })?;
            let out = child.stdout.take().expect("stdout is piped");
            // A quiet command would block the read past a cancel: kill it when cancelled.
            let done = std::sync::atomic::AtomicBool::new(false);
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let r = std::thread::scope(|s| {
                s.spawn(|| {
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        if shared
                            .cancel
                            .wait_timeout(std::time::Duration::from_millis(50))
                        {
                            // Not yet reaped (we wait below, after this thread ends): the pid
                            // is still the child's.
                            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                            return;
                        }
                    }
                });
                let r = shared.chunk_stream(&mut chunker, out, blobs);
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                r
            });
            if r.is_err() {
                let _ = child.kill();
            }
            let status = child
                .wait()
                .map_err(|e| Error::io("cannot wait for", prog, e))?;
            let r = r.map_err(|e| map_err(e, prog))?;
            if !status.success() {
                // Ctrl-C on a terminal reaches the command too; report the interrupt, not its death.
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

/// Makes the command receive SIGKILL when the thread that started it dies, so a SIGKILLed
/// `lifeboat` never leaves a dump running (and writing somewhere) without a reader.
///
/// The death signal is tied to the forking *thread*: the caller starts the command on the
/// thread that then reads its output until it exits, so that thread outlives the child.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
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
