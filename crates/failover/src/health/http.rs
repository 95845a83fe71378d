//! HTTP health check: any 2xx answer is healthy.

use std::time::Duration;

use async_trait::async_trait;

use super::HealthChecker;
use crate::error::BoxError;

/// GETs a URL; 2xx = healthy, anything else (or no answer) = unhealthy.
#[derive(Clone, Debug)]
pub struct HttpHealthChecker {
    url: String,
    client: reqwest::Client,
}

impl HttpHealthChecker {
    /// A checker for `url` (e.g. `http://10.0.0.5:8008/health`). The client's own timeout
    /// is generous; the manager bounds each check by `health_check_timeout`.
    pub fn new(url: impl Into<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            url: url.into(),
            client,
        }
    }
}

#[async_trait]
impl HealthChecker for HttpHealthChecker {
    fn describe(&self) -> String {
        format!("GET {}", self.url)
    }

    async fn check(&self) -> Result<(), BoxError> {
        let resp = self.client.get(&self.url).send().await?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}").into())
        }
    }
}
