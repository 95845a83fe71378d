//! Health checkers: the `HealthChecker` trait, timestamped observations, and the built-in
//! HTTP, TCP, command and PostgreSQL checks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::BoxError;

mod command;
mod http;
mod postgres;
mod tcp;

pub use command::CommandHealthChecker;
pub use http::HttpHealthChecker;
pub use postgres::PostgresHealthChecker;
pub use tcp::TcpHealthChecker;

/// One way of asking "is this node serving?". Implement it for custom checks.
///
/// Contract: return `Ok(())` only when the node is healthy. The caller bounds each call by
/// the configured timeout, so an implementation may simply await its I/O; a check that
/// does not answer in time counts as a failure.
#[async_trait]
pub trait HealthChecker: Send + Sync + 'static {
    /// A short description for events and logs (`http://10.0.0.5:8008/health`).
    fn describe(&self) -> String;

    /// Runs one check.
    async fn check(&self) -> Result<(), BoxError>;
}

/// The outcome of one check, stamped with when it started and how long it took.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Observation {
    /// Wall-clock start of the check (for humans and audit; decisions use counts).
    pub at: SystemTime,
    /// How long it took (the timeout, for a hanging check).
    pub took: Duration,
    /// Whether the node answered healthy in time.
    pub healthy: bool,
    /// Why it failed (`None` when healthy).
    pub detail: Option<String>,
}

/// Runs `checker` bounded by `timeout`; a hang or an error is an unhealthy observation.
pub async fn check_bounded(checker: &Arc<dyn HealthChecker>, timeout: Duration) -> Observation {
    let at = SystemTime::now();
    let start = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(timeout, checker.check()).await;
    let took = start.elapsed();
    let (healthy, detail) = match outcome {
        Ok(Ok(())) => (true, None),
        Ok(Err(e)) => (
            false,
            Some(format!("{}: {}", checker.describe(), error_chain(&*e))),
        ),
        Err(_) => (
            false,
            Some(format!(
                "{}: no answer within {timeout:?}",
                checker.describe()
            )),
        ),
    };
    Observation {
        at,
        took,
        healthy,
        detail,
    }
}

/// `e: cause: cause…` — client libraries put the useful part (connection refused, DNS) in
/// the source chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        next = s.source();
    }
    out
}
