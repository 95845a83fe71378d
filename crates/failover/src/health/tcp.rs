//! TCP health check: a completed connect is healthy.

use async_trait::async_trait;

use super::HealthChecker;
use crate::error::BoxError;

/// Connects to `host:port`; healthy when the connection is accepted.
#[derive(Clone, Debug)]
pub struct TcpHealthChecker {
    addr: String,
}

impl TcpHealthChecker {
    /// A checker for `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }
}

#[async_trait]
impl HealthChecker for TcpHealthChecker {
    fn describe(&self) -> String {
        format!("tcp {}", self.addr)
    }

    async fn check(&self) -> Result<(), BoxError> {
        tokio::net::TcpStream::connect(&self.addr).await?;
        Ok(())
    }
}
