//! `FailoverConfig`: timing, thresholds, policy, nodes and anti-flapping limits, with env
//! overrides whose parse errors name the variable.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::node::NodeSpec;
use crate::quorum::Observer;

/// Env override of [`FailoverConfigBuilder::health_check_interval`], in (fractional) seconds.
pub const ENV_HEALTH_CHECK_INTERVAL_SECS: &str = "FAILOVER_HEALTH_CHECK_INTERVAL_SECS";
/// Env override of [`FailoverConfigBuilder::unhealthy_threshold`].
pub const ENV_UNHEALTHY_THRESHOLD: &str = "FAILOVER_UNHEALTHY_THRESHOLD";
/// Env override of [`FailoverConfigBuilder::policy`]: `immediate`, `graceful[:secs]`, `manual`.
pub const ENV_POLICY: &str = "FAILOVER_POLICY";

/// Grace period used by `FAILOVER_POLICY=graceful` without `:secs`.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);

/// What the manager does once the primary is confirmed down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum FailoverPolicy {
    /// Fence and promote the best candidate at once.
    Immediate,
    /// Ask the old primary to demote and let the candidate catch up (zero loss when it
    /// answers); if it does not answer within `grace_period`, take the fenced path.
    Graceful {
        /// How long the controlled hand-over may take before the fenced path is used.
        grace_period: Duration,
    },
    /// Detect, rank and alert; promote only on [`crate::FailoverManager::trigger`].
    Manual,
}

impl FailoverPolicy {
    /// Parses the `FAILOVER_POLICY` syntax: `immediate`, `graceful`, `graceful:<secs>`, `manual`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "immediate" => return Ok(Self::Immediate),
            "manual" => return Ok(Self::Manual),
            "graceful" => {
                return Ok(Self::Graceful {
                    grace_period: DEFAULT_GRACE_PERIOD,
                })
            }
            _ => {}
        }
        if let Some(secs) = lower.strip_prefix("graceful:") {
            let grace_period = parse_secs(secs)?;
            return Ok(Self::Graceful { grace_period });
        }
        Err("expected `immediate`, `graceful`, `graceful:<seconds>` or `manual`".into())
    }
}

fn parse_secs(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {s:?}"))?;
    if !v.is_finite() || v <= 0.0 || v > 86_400.0 {
        return Err("expected seconds in (0, 86400]".into());
    }
    Ok(Duration::from_secs_f64(v))
}

/// The validated configuration of a [`crate::FailoverManager`]. Build it with
/// [`FailoverConfig::builder`].
#[derive(Clone, Debug)]
pub struct FailoverConfig {
    pub(crate) health_check_interval: Duration,
    pub(crate) health_check_timeout: Duration,
    pub(crate) unhealthy_threshold: u32,
    pub(crate) healthy_threshold: u32,
    pub(crate) policy: FailoverPolicy,
    pub(crate) nodes: Vec<NodeSpec>,
    pub(crate) observers: Vec<Arc<dyn Observer>>,
    pub(crate) primary_namespace: Option<String>,
    pub(crate) initial_primary: Option<lifeboat_types::NodeId>,
    pub(crate) use_lease_signal: bool,
    pub(crate) primary_lease: Duration,
    pub(crate) safety_margin: Duration,
    pub(crate) max_lag: u64,
    pub(crate) startup_grace: Duration,
    pub(crate) min_failover_interval: Duration,
    pub(crate) max_auto_failovers: u32,
    pub(crate) failover_window: Duration,
    pub(crate) state_path: Option<PathBuf>,
}

impl FailoverConfig {
    /// A builder with the defaults of DESIGN.md §4 (interval 1 s, suspect after 3, clear
    /// after 2, Graceful 5 s, lease 10 s + margin 1.5 s, startup grace 10 s, one automatic
    /// failover per hour at most, 10 min apart).
    pub fn builder() -> FailoverConfigBuilder {
        FailoverConfigBuilder {
            config: FailoverConfig {
                health_check_interval: Duration::from_secs(1),
                health_check_timeout: Duration::from_secs(1),
                unhealthy_threshold: 3,
                healthy_threshold: 2,
                policy: FailoverPolicy::Graceful {
                    grace_period: DEFAULT_GRACE_PERIOD,
                },
                nodes: Vec::new(),
                observers: Vec::new(),
                primary_namespace: None,
                initial_primary: None,
                use_lease_signal: true,
                primary_lease: Duration::from_secs(10),
                safety_margin: Duration::from_millis(1500),
                max_lag: 1024 * 1024,
                startup_grace: Duration::from_secs(10),
                min_failover_interval: Duration::from_secs(600),
                max_auto_failovers: 1,
                failover_window: Duration::from_secs(3600),
                state_path: None,
            },
        }
    }

    /// The configured policy (before any budget downgrade).
    pub fn policy(&self) -> FailoverPolicy {
        self.policy
    }

    /// The health check interval.
    pub fn health_check_interval(&self) -> Duration {
        self.health_check_interval
    }

    /// Consecutive failures before a node is suspect.
    pub fn unhealthy_threshold(&self) -> u32 {
        self.unhealthy_threshold
    }

    /// Applies `FAILOVER_*` overrides from the process environment.
    pub fn apply_env(self) -> Result<Self> {
        self.apply_env_from(|k| std::env::var(k).ok())
    }

    /// Applies `FAILOVER_*` overrides from `lookup` (tests pass a map).
    pub fn apply_env_from(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        if let Some(v) = lookup(ENV_HEALTH_CHECK_INTERVAL_SECS) {
            self.health_check_interval = parse_secs(&v).map_err(|reason| Error::EnvVar {
                var: ENV_HEALTH_CHECK_INTERVAL_SECS,
                value: v.clone(),
                reason,
            })?;
        }
        if let Some(v) = lookup(ENV_UNHEALTHY_THRESHOLD) {
            self.unhealthy_threshold = match v.trim().parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    return Err(Error::EnvVar {
                        var: ENV_UNHEALTHY_THRESHOLD,
                        value: v,
                        reason: "expected a whole number from 1 to 1000".into(),
                    })
                }
            };
        }
        if let Some(v) = lookup(ENV_POLICY) {
            self.policy = FailoverPolicy::parse(&v).map_err(|reason| Error::EnvVar {
                var: ENV_POLICY,
                value: v.clone(),
                reason,
            })?;
        }
        Ok(self)
    }

    /// Checks the settings fit together; the error names the setting and the fix.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.health_check_interval.is_zero() {
            return bad("health_check_interval must be > 0".into());
        }
        if self.health_check_timeout.is_zero() {
            return bad("health_check_timeout must be > 0".into());
        }
        if self.unhealthy_threshold == 0 || self.healthy_threshold == 0 {
            return bad("unhealthy_threshold and healthy_threshold must be >= 1".into());
        }
        if let FailoverPolicy::Graceful { grace_period } = self.policy {
            if grace_period.is_zero() {
                return bad("the Graceful grace_period must be > 0 (or use Immediate)".into());
            }
        }
        if self.primary_lease.is_zero() {
            return bad("primary_lease must be > 0".into());
        }
        if self.failover_window.is_zero() {
            return bad("failover_window must be > 0".into());
        }
        // Both become keys (and, for the embedded backend, file names) in the store.
        if let Some(ns) = &self.primary_namespace {
            store_name("primary_namespace", ns, lifeboat_coord::NAMESPACE_MAX_LEN)?;
        }
        for n in &self.nodes {
            store_name("node id", n.id.as_str(), lifeboat_coord::NODE_ID_MAX_LEN)?;
        }
        let mut ids: Vec<_> = self.nodes.iter().map(|n| &n.id).collect();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return bad(format!("node {} is configured twice", w[0]));
        }
        if let Some(p) = &self.initial_primary {
            if !self.nodes.iter().any(|n| &n.id == p) {
                return bad(format!(
                    "initial_primary {p} is not one of the configured nodes"
                ));
            }
        }
        Ok(())
    }
}

/// The coordination store's naming rule (as `lifeboat-coord` validates its own names).
fn store_name(what: &str, v: &str, max: usize) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= max
        && !v.starts_with('.')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} {v:?} must be 1-{max} ASCII letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

/// Builder of [`FailoverConfig`]; every setter has a documented default.
#[derive(Clone, Debug)]
pub struct FailoverConfigBuilder {
    config: FailoverConfig,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.config.$name = v;
            self
        }
    };
}

impl FailoverConfigBuilder {
    setter!(
        /// How often every node is checked (default 1 s).
        health_check_interval: Duration
    );
    setter!(
        /// Bound of one check; a hanging check counts as a failure at this time (default 1 s).
        health_check_timeout: Duration
    );
    setter!(
        /// Consecutive failures before a node is suspect (default 3).
        unhealthy_threshold: u32
    );
    setter!(
        /// Consecutive successes before a suspect node is clear again (default 2).
        healthy_threshold: u32
    );
    setter!(
        /// What to do when the primary is confirmed down (default Graceful, 5 s).
        policy: FailoverPolicy
    );
    setter!(
        /// The lease of the primary-role term granted to a promoted node (default 10 s).
        primary_lease: Duration
    );
    setter!(
        /// Added to `primary_lease` when waiting out an unfenced old primary (default 1.5 s).
        safety_margin: Duration
    );
    setter!(
        /// Candidates lagging more than this many bytes are never auto-promoted (default 1 MiB).
        max_lag: u64
    );
    setter!(
        /// No automatic failover this soon after the manager starts leading (default 10 s).
        startup_grace: Duration
    );
    setter!(
        /// Minimum time between two automatic failovers (default 10 min).
        min_failover_interval: Duration
    );
    setter!(
        /// Automatic failovers allowed per `failover_window` before falling back to Manual
        /// (default 1).
        max_auto_failovers: u32
    );
    setter!(
        /// The window `max_auto_failovers` counts in (default 1 h).
        failover_window: Duration
    );
    setter!(
        /// Whether the primary's lease in the store is used as the second "down" signal
        /// (default true; turn off only when no agent renews it).
        use_lease_signal: bool
    );

    /// Adds a managed node (primary or standby).
    pub fn node(mut self, node: NodeSpec) -> Self {
        self.config.nodes.push(node);
        self
    }

    /// Adds an observer; with N observers, ⌊N/2⌋+1 must report the primary down.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.config.observers.push(observer);
        self
    }

    /// The coordination namespace of the managed primary's role (default: the managers'
    /// election namespace + `-primary`).
    pub fn primary_namespace(mut self, ns: impl Into<String>) -> Self {
        self.config.primary_namespace = Some(ns.into());
        self
    }

    /// The primary to assume before the store names one.
    pub fn initial_primary(mut self, node: impl Into<lifeboat_types::NodeId>) -> Self {
        self.config.initial_primary = Some(node.into());
        self
    }

    /// Where the decision state is persisted (hold, in-progress failover, budget); without
    /// it a restarted manager cannot resume a failover.
    pub fn state_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.state_path = Some(path.into());
        self
    }

    /// Applies `FAILOVER_*` env overrides and validates.
    pub fn build(self) -> Result<FailoverConfig> {
        let config = self.config.apply_env()?;
        config.validate()?;
        Ok(config)
    }

    /// Validates without reading the environment (tests, embedded use).
    pub fn build_without_env(self) -> Result<FailoverConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_syntax() {
        assert_eq!(FailoverPolicy::parse("manual"), Ok(FailoverPolicy::Manual));
        assert_eq!(
            FailoverPolicy::parse("Graceful:2.5"),
            Ok(FailoverPolicy::Graceful {
                grace_period: Duration::from_millis(2500)
            })
        );
        assert!(FailoverPolicy::parse("graceful:-1").is_err());
        assert!(FailoverPolicy::parse("yolo").is_err());
    }

    #[test]
    fn names_and_duplicates_are_checked() {
        use crate::node::NodeSpec;
        let e = FailoverConfig::builder()
            .primary_namespace("a/b")
            .build_without_env()
            .unwrap_err();
        assert!(e.to_string().contains("primary_namespace"), "{e}");
        let e = FailoverConfig::builder()
            .node(NodeSpec::new("pg-a"))
            .node(NodeSpec::new("pg-a"))
            .build_without_env()
            .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = FailoverConfig::builder()
            .node(NodeSpec::new("pg-a"))
            .initial_primary("pg-z")
            .build_without_env()
            .unwrap_err();
        assert!(e.to_string().contains("pg-z"), "{e}");
    }

    #[test]
    fn env_errors_name_the_variable() {
        let cfg = FailoverConfig::builder().build_without_env().unwrap();
        let e = cfg
            .clone()
            .apply_env_from(|k| (k == ENV_UNHEALTHY_THRESHOLD).then(|| "zero".into()))
            .unwrap_err();
        assert!(e.to_string().contains(ENV_UNHEALTHY_THRESHOLD), "{e}");
        let e = cfg
            .clone()
            .apply_env_from(|k| (k == ENV_POLICY).then(|| "sometimes".into()))
            .unwrap_err();
        assert!(e.to_string().contains(ENV_POLICY), "{e}");
        let ok = cfg
            .apply_env_from(|k| match k {
                ENV_HEALTH_CHECK_INTERVAL_SECS => Some("0.25".into()),
                ENV_POLICY => Some("immediate".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(ok.health_check_interval, Duration::from_millis(250));
        assert_eq!(ok.policy, FailoverPolicy::Immediate);
    }
}
