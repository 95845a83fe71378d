//! `LeaderConfig`: which store to use, who we are, and the lease timing, with validation.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::memory::MemoryStore;
use crate::backend::Backend;
use crate::error::{Error, Result};
use lifeboat_types::NodeId;

/// Env var overriding [`LeaderConfig::lease_duration`] (whole seconds).
pub const ENV_LEASE_DURATION_SECS: &str = "LEADER_LEASE_DURATION_SECS";
/// Env var overriding [`LeaderConfig::renew_interval`] (whole seconds).
pub const ENV_RENEW_INTERVAL_SECS: &str = "LEADER_RENEW_INTERVAL_SECS";

/// Longest namespace accepted: it becomes a file name, an etcd key and a table key.
pub const NAMESPACE_MAX_LEN: usize = 128;
/// Longest node id accepted.
pub const NODE_ID_MAX_LEN: usize = 256;

/// Where the election's state lives.
#[derive(Clone)]
#[non_exhaustive]
pub enum BackendConfig {
    /// In-process memory: for tests and single-process use.
    Memory(MemoryStore),
    /// A directory on the local host: `flock` + fsync'd token counter.
    Embedded(PathBuf),
    /// A PostgreSQL connection string (`postgres://user@host:port/db`).
    Postgres(String),
    /// etcd endpoints (`http://127.0.0.1:2379`).
    Etcd(Vec<String>),
    /// A backend built by the caller (wrappers, fault injection).
    Custom(Arc<dyn Backend>),
}

impl fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory(_) => f.write_str("Memory"),
            Self::Embedded(dir) => write!(f, "Embedded({})", dir.display()),
            // The URL may carry a password: print only that it is PostgreSQL.
            Self::Postgres(_) => f.write_str("Postgres(..)"),
            Self::Etcd(endpoints) => write!(f, "Etcd({endpoints:?})"),
            Self::Custom(b) => write!(f, "Custom({})", b.name()),
        }
    }
}

/// Everything a [`crate::LeaderElection`] needs: store, namespace, node id and lease timing.
///
/// Timing rules (checked by [`LeaderConfig::validate`]): `lease_duration ≥ 4 ×
/// renew_interval` (several renew attempts fit in one lease) and `renew_deadline +
/// safety_margin < lease_duration` (the holder gives up while its lease is still valid in
/// the store). Defaults: lease 10 s, renew every 2 s, renew deadline 7 s, margin 1.5 s.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub(crate) backend: BackendConfig,
    pub(crate) namespace: String,
    pub(crate) node_id: NodeId,
    pub(crate) lease_duration: Duration,
    pub(crate) renew_interval: Duration,
    pub(crate) renew_deadline: Duration,
    pub(crate) safety_margin: Duration,
    pub(crate) op_timeout: Duration,
    pub(crate) retry_interval: Duration,
}

impl LeaderConfig {
    /// A config for `backend` with the default timing, namespace `default` and a node id
    /// made of host name and pid.
    pub fn new(backend: BackendConfig) -> Self {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "node".to_owned());
        Self {
            backend,
            namespace: "default".to_owned(),
            node_id: NodeId(format!("{host}-{}", std::process::id())),
            lease_duration: Duration::from_secs(10),
            renew_interval: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(7),
            safety_margin: Duration::from_millis(1500),
            op_timeout: Duration::from_secs(1),
            retry_interval: Duration::from_millis(500),
        }
    }

    /// The process-wide in-memory store: elections in one process contend with each other.
    pub fn memory() -> Self {
        Self::new(BackendConfig::Memory(MemoryStore::global()))
    }

    /// A specific in-memory store (e.g. one driven by a [`crate::ManualClock`]).
    pub fn memory_store(store: MemoryStore) -> Self {
        Self::new(BackendConfig::Memory(store))
    }

    /// The single-host default: lock and token files in `dir` (created if missing).
    pub fn embedded(dir: impl Into<PathBuf>) -> Self {
        Self::new(BackendConfig::Embedded(dir.into()))
    }

    /// A PostgreSQL lease table reached through `url`.
    pub fn postgres(url: impl Into<String>) -> Self {
        Self::new(BackendConfig::Postgres(url.into()))
    }

    /// An etcd cluster reached through `endpoints`.
    pub fn etcd<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self::new(BackendConfig::Etcd(
            endpoints.into_iter().map(Into::into).collect(),
        ))
    }

    /// A caller-built backend (wrappers, fault injection, another store).
    pub fn with_backend(backend: Arc<dyn Backend>) -> Self {
        Self::new(BackendConfig::Custom(backend))
    }

    /// The election's name: candidates in one namespace compete; tokens increase per namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// This candidate's id as recorded in the store.
    pub fn node_id(mut self, node_id: impl Into<NodeId>) -> Self {
        self.node_id = node_id.into();
        self
    }

    /// How long a grant or renewal lasts in the store (the store's clock decides).
    pub fn lease_duration(mut self, d: Duration) -> Self {
        self.lease_duration = d;
        self
    }

    /// How often the holder renews.
    pub fn renew_interval(mut self, d: Duration) -> Self {
        self.renew_interval = d;
        self
    }

    /// After this long without a successful renew the holder gives up early, leaving
    /// `lease − renew_deadline` for the application to wind down.
    pub fn renew_deadline(mut self, d: Duration) -> Self {
        self.renew_deadline = d;
        self
    }

    /// Subtracted from the lease for the local deadline: covers clock-rate drift between the
    /// holder and the store plus scheduling delay.
    pub fn safety_margin(mut self, d: Duration) -> Self {
        self.safety_margin = d;
        self
    }

    /// Upper bound for one store call (also capped by the remaining lease).
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d;
        self
    }

    /// How long a campaigner waits between attempts when the store gives no change
    /// notification, and the back-off after a retryable error.
    pub fn retry_interval(mut self, d: Duration) -> Self {
        self.retry_interval = d;
        self
    }

    /// The namespace.
    pub fn get_namespace(&self) -> &str {
        &self.namespace
    }

    /// The node id.
    pub fn get_node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The lease duration.
    pub fn get_lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// The renew interval.
    pub fn get_renew_interval(&self) -> Duration {
        self.renew_interval
    }

    /// The renew deadline.
    pub fn get_renew_deadline(&self) -> Duration {
        self.renew_deadline
    }

    /// The safety margin.
    pub fn get_safety_margin(&self) -> Duration {
        self.safety_margin
    }

    /// The per-call timeout.
    pub fn get_op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Applies `LEADER_LEASE_DURATION_SECS` / `LEADER_RENEW_INTERVAL_SECS` from the process
    /// environment. When only the lease changes, the renew deadline and margin are rescaled
    /// with it (70 % and 15 %) unless they were already valid.
    pub fn apply_env(self) -> Result<Self> {
        self.apply_env_from(|name| std::env::var(name).ok())
    }

    /// [`Self::apply_env`] with a custom lookup (tests, config files).
    pub fn apply_env_from(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let secs = |var: &'static str| -> Result<Option<Duration>> {
            let Some(value) = lookup(var) else {
                return Ok(None);
            };
            let n: u64 = value.trim().parse().map_err(|_| Error::EnvVar {
                var,
                value: value.clone(),
                reason: "expected a whole number of seconds, e.g. 10".into(),
            })?;
            if n == 0 {
                return Err(Error::EnvVar {
                    var,
                    value,
                    reason: "must be at least 1 second".into(),
                });
            }
            Ok(Some(Duration::from_secs(n)))
        };
        if let Some(lease) = secs(ENV_LEASE_DURATION_SECS)? {
            self.lease_duration = lease;
            if self.renew_deadline + self.safety_margin >= lease {
                self.renew_deadline = lease.mul_f64(0.7);
                self.safety_margin = lease.mul_f64(0.15);
            }
        }
        if let Some(renew) = secs(ENV_RENEW_INTERVAL_SECS)? {
            self.renew_interval = renew;
        }
        Ok(self)
    }

    /// Checks the config; the error names the setting and the rule it breaks.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        validate_name("namespace", &self.namespace, NAMESPACE_MAX_LEN)?;
        validate_name("node id", self.node_id.as_str(), NODE_ID_MAX_LEN)?;
        if self.renew_interval.is_zero() {
            return bad("renew_interval must be greater than zero".into());
        }
        if self.lease_duration < self.renew_interval * 4 {
            return bad(format!(
                "lease_duration ({:?}) must be at least 4 × renew_interval ({:?}) so that \
                 several renew attempts fit in one lease; lengthen the lease or renew more often",
                self.lease_duration, self.renew_interval
            ));
        }
        if self.renew_deadline < self.renew_interval {
            return bad(format!(
                "renew_deadline ({:?}) must be at least renew_interval ({:?})",
                self.renew_deadline, self.renew_interval
            ));
        }
        if self.renew_deadline + self.safety_margin >= self.lease_duration {
            return bad(format!(
                "renew_deadline ({:?}) + safety_margin ({:?}) must be less than lease_duration \
                 ({:?}): the holder must give up while the store still considers its lease valid",
                self.renew_deadline, self.safety_margin, self.lease_duration
            ));
        }
        if self.safety_margin.is_zero() {
            return bad("safety_margin must be greater than zero (it absorbs clock drift)".into());
        }
        if self.op_timeout.is_zero() || self.op_timeout > self.renew_deadline {
            return bad(format!(
                "op_timeout ({:?}) must be greater than zero and at most renew_deadline ({:?})",
                self.op_timeout, self.renew_deadline
            ));
        }
        if self.retry_interval.is_zero() {
            return bad("retry_interval must be greater than zero".into());
        }
        match &self.backend {
            BackendConfig::Etcd(endpoints) if endpoints.is_empty() => {
                bad("etcd backend needs at least one endpoint".into())
            }
            BackendConfig::Etcd(_) if self.lease_duration < Duration::from_secs(2) => bad(format!(
                "etcd leases are whole seconds with a 2 s minimum; lease_duration {:?} is too short",
                self.lease_duration
            )),
            BackendConfig::Postgres(url) if url.trim().is_empty() => {
                bad("postgres backend needs a connection URL".into())
            }
            _ => Ok(()),
        }
    }
}

fn validate_name(what: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::Config(format!("{what} must not be empty")));
    }
    if value.len() > max {
        return Err(Error::Config(format!(
            "{what} {value:?} is longer than {max} bytes"
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(Error::Config(format!(
            "{what} {value:?} contains {c:?}; use only ASCII letters, digits, '-', '_' and '.' \
             (it becomes a file name and a store key)"
        )));
    }
    if value.starts_with('.') {
        return Err(Error::Config(format!(
            "{what} {value:?} must not start with '.'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> LeaderConfig {
        LeaderConfig::memory().namespace("ns").node_id("n1")
    }

    fn err(c: LeaderConfig) -> String {
        c.validate()
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn defaults_are_valid_and_as_documented() {
        let c = mem();
        c.validate().expect("defaults valid");
        assert_eq!(c.get_lease_duration(), Duration::from_secs(10));
        assert_eq!(c.get_renew_interval(), Duration::from_secs(2));
        assert_eq!(c.get_renew_deadline(), Duration::from_secs(7));
        assert_eq!(c.get_safety_margin(), Duration::from_millis(1500));
        // The default node id is usable as is.
        LeaderConfig::memory()
            .validate()
            .expect("default node id valid");
    }

    #[test]
    fn invalid_configs_say_what_to_fix() {
        let s = Duration::from_secs;
        let cases: Vec<(LeaderConfig, &str)> = vec![
            (mem().namespace(""), "namespace must not be empty"),
            (mem().node_id(""), "node id must not be empty"),
            (mem().namespace("a/b"), "contains '/'"),
            (mem().namespace(".hidden"), "must not start with '.'"),
            (mem().namespace("x".repeat(129)), "longer than 128"),
            (mem().renew_interval(s(3)), "at least 4 × renew_interval"),
            (
                mem().renew_interval(Duration::ZERO),
                "renew_interval must be greater",
            ),
            (
                mem().renew_deadline(s(9)),
                "must be less than lease_duration",
            ),
            (
                mem().safety_margin(Duration::ZERO),
                "safety_margin must be greater",
            ),
            (mem().op_timeout(s(8)), "op_timeout"),
            (
                mem().renew_deadline(s(1)),
                "renew_deadline (1s) must be at least renew_interval",
            ),
            (
                LeaderConfig::etcd(Vec::<String>::new())
                    .namespace("ns")
                    .node_id("n"),
                "at least one endpoint",
            ),
            (
                LeaderConfig::etcd(["http://x:2379"])
                    .namespace("ns")
                    .node_id("n")
                    .lease_duration(Duration::from_millis(1500))
                    .renew_interval(Duration::from_millis(300))
                    .renew_deadline(Duration::from_millis(900))
                    .safety_margin(Duration::from_millis(300))
                    .op_timeout(Duration::from_millis(300)),
                "2 s minimum",
            ),
            (
                LeaderConfig::postgres(" ").namespace("ns").node_id("n"),
                "connection URL",
            ),
        ];
        for (config, expected) in cases {
            let message = err(config);
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn env_vars_override_and_name_the_variable_on_error() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = mem()
            .apply_env_from(env(&[
                (ENV_LEASE_DURATION_SECS, "20"),
                (ENV_RENEW_INTERVAL_SECS, "4"),
            ]))
            .expect("valid overrides");
        assert_eq!(c.get_lease_duration(), Duration::from_secs(20));
        assert_eq!(c.get_renew_interval(), Duration::from_secs(4));
        c.validate().expect("still valid");

        // A shorter lease rescales deadline and margin so the result stays valid.
        let c = mem()
            .apply_env_from(env(&[
                (ENV_LEASE_DURATION_SECS, "4"),
                (ENV_RENEW_INTERVAL_SECS, "1"),
            ]))
            .expect("valid overrides");
        c.validate().expect("rescaled config valid");

        for (pairs, var) in [
            (
                &[(ENV_LEASE_DURATION_SECS, "ten")][..],
                ENV_LEASE_DURATION_SECS,
            ),
            (
                &[(ENV_RENEW_INTERVAL_SECS, "-1")][..],
                ENV_RENEW_INTERVAL_SECS,
            ),
            (
                &[(ENV_RENEW_INTERVAL_SECS, "0")][..],
                ENV_RENEW_INTERVAL_SECS,
            ),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = pairs;
            let e = mem()
                .apply_env_from(env(pairs))
                .expect_err("bad value accepted");
            assert!(matches!(e, Error::EnvVar { var: v, .. } if v == var), "{e}");
            assert!(e.to_string().contains(var), "{e}");
        }
        // An override that breaks the rules is caught by validate(), naming the rule.
        let c = mem()
            .apply_env_from(env(&[(ENV_RENEW_INTERVAL_SECS, "5")]))
            .expect("parses");
        assert!(err(c).contains("4 × renew_interval"));
    }
}
