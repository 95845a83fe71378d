//! Command health check: exit status 0 is healthy.

use std::process::Stdio;

use async_trait::async_trait;

use super::HealthChecker;
use crate::error::BoxError;

/// Runs `sh -c <command>`; exit 0 = healthy. Killed when the check times out.
#[derive(Clone, Debug)]
pub struct CommandHealthChecker {
    command: String,
}

impl CommandHealthChecker {
    /// A checker running `command` with `sh -c`.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
        }
    }
}

#[async_trait]
impl HealthChecker for CommandHealthChecker {
    fn describe(&self) -> String {
        format!("command `{}`", self.command)
    }

    async fn check(&self) -> Result<(), BoxError> {
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("exited with {status}").into())
        }
    }
}
