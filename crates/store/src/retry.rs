//! Retry loop with capped exponential backoff and jitter, applied to transient errors only.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::Result;

/// How hard to retry transient failures before surfacing [`crate::Error::Transient`].
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Total tries including the first; 0 and 1 both mean "no retries".
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for each further retry.
    pub initial_backoff: Duration,
    /// Upper bound on any single delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries, for tests and for callers that retry themselves.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Delay before retry number `retry` (1-based): half fixed, half random ("equal jitter").
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(31);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let half = base / 2;
        let jitter_nanos = rand::thread_rng().gen_range(0..=half.as_nanos() as u64);
        half + Duration::from_nanos(jitter_nanos)
    }

    /// Run `attempt` until it succeeds, fails non-retryably, or attempts run out.
    ///
    /// The closure receives the 1-based attempt number so idempotency-sensitive operations can
    /// tell a first try from a retry.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let max = self.max_attempts.max(1);
        let mut n = 1;
        loop {
            match attempt(n).await {
                Err(err) if err.is_retryable() && n < max => {
                    let delay = self.backoff(n);
                    tracing::debug!(op, key, attempt = n, ?delay, error = %err, "retrying");
                    tokio::time::sleep(delay).await;
                    n += 1;
                }
                Err(err) => {
                    if n > 1 {
                        tracing::warn!(op, key, attempts = n, error = %err, "giving up");
                    }
                    return Err(err);
                }
                Ok(v) => return Ok(v),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient(key: &str) -> Error {
        Error::Transient {
            op: "test",
            key: key.into(),
            source: "flaky".into(),
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for retry in 1..40 {
            let d = p.backoff(retry);
            assert!(d <= p.max_backoff, "retry {retry}: {d:?}");
        }
        let first = p.backoff(1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let fifth = p.backoff(5);
        assert!(fifth >= Duration::from_millis(800), "{fifth:?}");
    }

    #[tokio::test]
    async fn retries_transient_until_success() {
        let calls = AtomicU32::new(0);
        let out = fast()
            .run("test", "k", |_| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(transient("k")),
                    _ => Ok(7),
                }
            })
            .await;
        assert_eq!(out.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = fast()
            .run("test", "k", |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(transient("k"))
            })
            .await;
        assert!(matches!(out, Err(Error::Transient { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn does_not_retry_permanent_errors() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = fast()
            .run("test", "k", |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::NotFound { key: "k".into() })
            })
            .await;
        assert!(matches!(out, Err(Error::NotFound { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
