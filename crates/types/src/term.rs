//! Leadership terms and node ids: one vocabulary for the journal's term, coordination's
//! fencing token and the failover manager.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A leadership term's fencing token: strictly increasing per namespace, across holders,
/// restarts and the backend's own persistence. Resources reject writes carrying a lower one.
///
/// The journal stamps every record with the writer's term, which is this same number.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

/// The journal's name for a fencing token: the term a record was written under.
pub type Term = FencingToken;

impl FencingToken {
    /// The raw number, for storing in a resource's fence column or object key.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for FencingToken {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

/// The id a node (campaigner, failover member, service instance) is known by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    /// Wraps a string; configuration validation checks it is usable.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        Self(s)
    }
}
