//! Candidate selection: filter out nodes that must not be promoted, then rank the rest by
//! lowest lag, highest priority, node id.

use lifeboat_types::NodeId;

/// What the manager knows about one possible new primary.
#[derive(Clone, Debug)]
pub struct CandidateInfo {
    /// The node.
    pub node: NodeId,
    /// 0 = never promote; higher wins among equal lag.
    pub priority: u32,
    /// The detector's verdict.
    pub healthy: bool,
    /// Lag in bytes, or why it is unknown.
    pub lag: Result<u64, String>,
    /// Set for nodes excluded for another reason (e.g. a demoted old primary awaiting
    /// operator re-admission: no automatic fail-back).
    pub excluded: Option<String>,
}

/// An eligible candidate, best first in [`rank`]'s output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Ranked {
    /// The node.
    pub node: NodeId,
    /// Its lag in bytes.
    pub lag_bytes: u64,
    /// Its priority.
    pub priority: u32,
}

/// A node filtered out, and why (reported in suppression events).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    /// The node.
    pub node: NodeId,
    /// Why it is not eligible.
    pub reason: String,
}

/// Filters and ranks: (eligible best-first, rejected with reasons).
pub fn rank(candidates: &[CandidateInfo], max_lag: u64) -> (Vec<Ranked>, Vec<Rejected>) {
    let mut ok = Vec::new();
    let mut rejected = Vec::new();
    for c in candidates {
        let reject = |reason: String| Rejected {
            node: c.node.clone(),
            reason,
        };
        if let Some(why) = &c.excluded {
            rejected.push(reject(why.clone()));
        } else if c.priority == 0 {
            rejected.push(reject("priority 0 (never promote)".into()));
        } else if !c.healthy {
            rejected.push(reject("not healthy".into()));
        } else {
            match &c.lag {
                Err(e) => rejected.push(reject(format!("lag unknown: {e}"))),
                Ok(lag) if *lag > max_lag => {
                    rejected.push(reject(format!("lag {lag} bytes above max_lag {max_lag}")))
                }
                Ok(lag) => ok.push(Ranked {
                    node: c.node.clone(),
                    lag_bytes: *lag,
                    priority: c.priority,
                }),
            }
        }
    }
    ok.sort_by(|a, b| {
        a.lag_bytes
            .cmp(&b.lag_bytes)
            .then(b.priority.cmp(&a.priority))
            .then(a.node.cmp(&b.node))
    });
    (ok, rejected)
}
