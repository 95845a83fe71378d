//! HTTP health check: any 2xx answer is healthy.

use std::time::Duration;

use async_trait::async_trait;

use super::HealthChecker;
use crate::error::BoxError;

/// GETs a URL; 2xx = healthy, anything else (or no answer) = unhealthy.
#[derive(Clone, Debug)]
pub struct HttpHealthChecker {
    url: String,
    /// `Err` when the TLS backend could not be set up; every check then reports it.
    client: Result<reqwest::Client, String>,
}

impl HttpHealthChecker {
    /// A checker for `url` (e.g. `http://10.0.0.5:8008/health`). The client's own timeout
    /// is generous; the manager bounds each check by `health_check_timeout`.
    pub fn new(url: impl Into<String>) -> Self {
        // Redirects are not followed: a health endpoint that redirects is misconfigured.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"));
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
        let client = self.client.as_ref().map_err(|e| e.clone())?;
        let resp = client.get(&self.url).send().await?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}").into())
        }
    }
}
