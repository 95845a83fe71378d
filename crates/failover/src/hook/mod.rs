//! Hook commands (demote, STONITH, promote): `sh -c` with a timeout, told the token in env,
//! killed with everything they started when they time out or the manager goes away.

mod child;

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

/// Runs `hook`; Ok only for exit status 0 within the timeout. The hook and every process
/// it started are killed when the timeout passes, when the future is dropped, and when the
/// manager process dies (see [`child`]).
pub(crate) async fn run(hook: &Hook, name: &'static str, env: &HookEnv) -> Result<()> {
    let fail = |reason: String| Error::Hook {
        hook: name,
        node: env.node.clone(),
        reason,
    };
    let mut cmd = child::command(&hook.command);
    cmd.envs(env.vars())
        .env("LIFEBOAT_HOOK", name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = child::spawn(cmd)
        .await
        .map_err(|e| fail(format!("could not start `sh -c {:?}`: {e}", hook.command)))?;
    // Declared after `child`, so dropped first: the group dies before the handle is gone.
    let _group = child::GroupGuard(child.id());
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Whether `pid` is a live (not zombie) process.
    fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z"),
            Err(_) => false,
        }
    }

    fn env() -> HookEnv {
        HookEnv {
            node: NodeId::new("pg-a"),
            token: FencingToken(7),
            old_primary: None,
            old_token: None,
            new_primary: NodeId::new("pg-b"),
            namespace: "ns".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_out_hook_is_killed_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let late = dir.path().join("late");
        // The hook's shell and a grandchild both record their pid, then outlive the timeout.
        let hook = Hook::new(
            format!(
                "echo $$ >> '{p}'; sh -c 'echo $$ >> \"{p}\"; sleep 3; touch \"{l}\"'",
                p = pids.display(),
                l = late.display()
            ),
            Duration::from_millis(500),
        );
        let e = run(&hook, "demote", &env()).await.unwrap_err().to_string();
        assert!(e.contains("timed out"), "{e}");
        let pids: Vec<u32> = std::fs::read_to_string(&pids)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(pids.len(), 2, "{pids:?}");
        let deadline = Instant::now() + Duration::from_secs(2);
        while pids.iter().any(|p| alive(*p)) {
            assert!(Instant::now() < deadline, "still running: {pids:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!late.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exit_status_stderr_and_environment_pass_through_the_supervisor() {
        let hook = Hook::new(
            "[ \"$LIFEBOAT_FENCING_TOKEN\" = 7 ] && echo \"no route to $LIFEBOAT_NODE_ID\" >&2; exit 7",
            Duration::from_secs(10),
        );
        let e = run(&hook, "stonith", &env()).await.unwrap_err().to_string();
        assert!(e.contains("exit status: 7"), "{e}");
        assert!(e.contains("no route to pg-a"), "{e}");
        run(
            &Hook::new("true", Duration::from_secs(10)),
            "promote",
            &env(),
        )
        .await
        .unwrap();
    }
}
