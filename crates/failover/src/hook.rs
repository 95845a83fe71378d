//! Hook commands (demote, STONITH, promote): `sh -c` with a timeout, told the token in env.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use lifeboat_types::{FencingToken, NodeId};
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};

/// Most stderr kept for an error message.
const STDERR_TAIL_BYTES: usize = 2048;

/// A shell command run for a node, killed if it outlives its timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// Passed to `sh -c`.
    pub command: String,
    /// The command is killed and counted as failed after this long.
    pub timeout: Duration,
}

impl Hook {
    /// A hook running `command` with `sh -c`, bounded by `timeout`.
    pub fn new(command: impl Into<String>, timeout: Duration) -> Self {
        Self {
            command: command.into(),
            timeout,
        }
    }
}

/// What a hook is told about the failover it is part of.
#[derive(Clone, Debug)]
pub(crate) struct HookEnv {
    pub node: NodeId,
    pub token: FencingToken,
    pub old_primary: Option<NodeId>,
    pub old_token: Option<FencingToken>,
    pub new_primary: NodeId,
    pub namespace: String,
}

impl HookEnv {
    fn vars(&self) -> BTreeMap<&'static str, String> {
        let mut v = BTreeMap::new();
        v.insert("LIFEBOAT_NODE_ID", self.node.to_string());
        v.insert("LIFEBOAT_FENCING_TOKEN", self.token.to_string());
        v.insert("LIFEBOAT_NEW_PRIMARY", self.new_primary.to_string());
        v.insert("LIFEBOAT_PRIMARY_NAMESPACE", self.namespace.clone());
        if let Some(o) = &self.old_primary {
            v.insert("LIFEBOAT_OLD_PRIMARY", o.to_string());
        }
        if let Some(t) = self.old_token {
            v.insert("LIFEBOAT_OLD_FENCING_TOKEN", t.to_string());
        }
        v
    }
}

/// Runs `hook`; Ok only for exit status 0 within the timeout. The child is killed when the
/// timeout passes or the future is dropped.
pub(crate) async fn run(hook: &Hook, name: &'static str, env: &HookEnv) -> Result<()> {
    let fail = |reason: String| Error::Hook {
        hook: name,
        node: env.node.clone(),
        reason,
    };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&hook.command)
        .envs(env.vars())
        .env("LIFEBOAT_HOOK", name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("could not start `sh -c {:?}`: {e}", hook.command)))?;
    let mut stderr = child.stderr.take();
    let wait = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            // Read to EOF with a cap so a chatty hook cannot fill memory.
            let _ = s.take(1 << 20).read_to_end(&mut buf).await;
        }
        (child.wait().await, buf)
    };
    match tokio::time::timeout(hook.timeout, wait).await {
        Err(_) => Err(fail(format!("timed out after {:?} (killed)", hook.timeout))),
        Ok((Err(e), _)) => Err(fail(format!("waiting for it failed: {e}"))),
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), buf)) => {
            let tail = &buf[buf.len().saturating_sub(STDERR_TAIL_BYTES)..];
            Err(fail(format!(
                "{status}; stderr: {}",
                String::from_utf8_lossy(tail).trim()
            )))
        }
    }
}
