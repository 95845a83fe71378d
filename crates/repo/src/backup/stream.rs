//! Backing up a stream (stdin or a command's stdout) as a single file.

use std::io;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

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
            "--stdin-filename {name:?} must be a plain file name"
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
            .unwrap_or(Error::Interrupted),
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
            let mut child = Command::new(prog)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| Error::CommandFailed {
                    command: shown.clone(),
                    status: format!("cannot start: {e}"),
                })?;
            let out = child.stdout.take().expect("stdout is piped");
            let r = shared.chunk_stream(&mut chunker, out, blobs);
            if r.is_err() {
                let _ = child.kill();
            }
            let status = child
                .wait()
                .map_err(|e| Error::io("cannot wait for", prog, e))?;
            let r = r.map_err(|e| map_err(e, prog))?;
            if !status.success() {
                // Ctrl-C on a terminal reaches the command too; report the interrupt, not its death.
                if shared
                    .interrupt
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::SeqCst))
                {
                    return Err(Error::Interrupted);
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
