//! The `Backend` trait every coordination store implements, and the values it returns.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use lifeboat_types::{FencingToken, NodeId};

pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

/// A successful acquisition: a new term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The new term's token, larger than every token granted before in this namespace.
    pub token: FencingToken,
    /// The lease the store actually granted (etcd rounds up to whole seconds). The holder
    /// computes its local deadline from this, never from a store timestamp.
    pub lease: Duration,
}

/// Who holds the lease, as the store sees it right now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaderInfo {
    /// The holder's node id.
    pub node_id: NodeId,
    /// The holder's token.
    pub token: FencingToken,
    /// Time left until the store expires the lease, measured by the store's clock; `None`
    /// for the embedded backend, where the lease lasts as long as the holder process.
    pub expires_in: Option<Duration>,
}

/// A coordination store: grants, renews and releases one lease per namespace.
///
/// # Contract
///
/// * **Expiry is decided by the store's clock only.** No method compares wall clocks of
///   different hosts.
/// * [`Backend::try_acquire`] grants only when nobody holds an unexpired lease — including
///   the caller itself — and every grant carries a token strictly larger than every token
///   granted before in the namespace, across restarts of clients and of the store.
/// * [`Backend::renew`] and [`Backend::resign`] are compare-and-set on (node, token): they
///   never extend, shorten or release another term.
/// * Errors: store unreachable or failing → [`crate::Error::Unavailable`] (retryable);
///   renew of a term that is gone → [`crate::Error::NotLeader`].
/// * Cancellation: dropping a future mid-call leaves the store consistent; an acquire whose
///   answer was lost becomes a lease nobody renews, which expires (embedded: the lock is
///   released at once). A cancelled grant may burn a token; tokens stay increasing.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Short backend name for errors and logs.
    fn name(&self) -> &'static str;

    /// Whether a term granted through this instance can be kept alive by another client that
    /// renews `(node, token)`: a failover manager hands the term it took for a promoted node
    /// to that node's agent this way. True for stores that keep leases server-side; the
    /// embedded backend's term is this instance's file lock, which no other process can renew.
    fn transferable_terms(&self) -> bool {
        true
    }

    /// One non-blocking attempt to start a new term for `node`; `None` when someone holds
    /// an unexpired lease.
    async fn try_acquire(
        &self,
        namespace: &str,
        node: &NodeId,
        lease: Duration,
    ) -> Result<Option<Grant>>;

    /// Extends `node`'s term `token` by `lease` from now (store clock). Fails with
    /// [`crate::Error::NotLeader`] if that term has expired, was released or superseded.
    /// Returns the lease actually granted.
    async fn renew(
        &self,
        namespace: &str,
        node: &NodeId,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Duration>;

    /// Releases term `token` of `node` so another campaigner can start at once. Returns
    /// `false` (and changes nothing) if that term is no longer current.
    async fn resign(&self, namespace: &str, node: &NodeId, token: FencingToken) -> Result<bool>;

    /// The current unexpired holder, if any.
    async fn current(&self, namespace: &str) -> Result<Option<LeaderInfo>>;

    /// Waits until the holder may have changed (a release, an expiry, a grant) or `timeout`
    /// passes. Spurious wake-ups are allowed; callers re-check with `try_acquire`/`current`.
    async fn wait_for_change(&self, namespace: &str, timeout: Duration) -> Result<()>;
}
