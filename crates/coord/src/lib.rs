//! Leader election with fencing tokens over pluggable coordination stores.
//!
//! # Overview
//!
//! * [`LeaderElection`] campaigns for one namespace on behalf of one node and hands out
//!   [`Leadership`] handles; [`LeaderConfig`] says which store and what lease timing.
//! * [`Leadership`] is one term: it renews in the background and becomes invalid at its
//!   *local monotonic* deadline (renew send time + lease − safety margin) even if a renew
//!   call hangs. Its [`FencingToken`] strictly increases per namespace.
//! * [`Fence`] is the resource side: a write carrying a token older than one already seen is
//!   rejected atomically with the write ([`MemoryFence`], `PostgresFence`).
//! * [`Backend`] is the store: [`MemoryStore`] (reference model with an injectable clock),
//!   [`EmbeddedBackend`] (file lock + fsync'd counter, one host), `PostgresBackend` (lease
//!   table, server clock) and `EtcdBackend` (lease + create revision), the last two behind
//!   the `postgres` and `etcd` features (on by default).
//!
//! Leases are for liveness, tokens are for safety: only the store's clock decides expiry,
//! and every side effect on shared state must carry the token. See `docs/coordination.md`.
//!
//! ```no_run
//! # async fn f() -> Result<(), lifeboat_coord::Error> {
//! use std::time::Duration;
//! use lifeboat_coord::{LeaderConfig, LeaderElection, MemoryFence};
//!
//! let config = LeaderConfig::memory().namespace("my-cluster").node_id("node-1")
//!     .lease_duration(Duration::from_secs(10)).renew_interval(Duration::from_secs(2));
//! let election = LeaderElection::new(config).await?;
//! let mut events = election.subscribe().await;
//! election.start().await;
//! let guard = election.acquire_leadership().await?;
//! let resource = MemoryFence::new(Vec::new());
//! resource.write(guard.fencing_token(), |log| log.push("written by the leader"))?;
//! # Ok(()) }
//! ```

pub mod backend;
mod config;
mod election;
mod error;
mod event;
mod fence;
mod leadership;

pub use backend::embedded::EmbeddedBackend;
#[cfg(feature = "etcd")]
pub use backend::etcd::EtcdBackend;
pub use backend::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use backend::postgres::{PostgresBackend, PostgresFence};
pub use backend::{Backend, Grant, LeaderInfo};
pub use config::{
    BackendConfig, LeaderConfig, ENV_LEASE_DURATION_SECS, ENV_RENEW_INTERVAL_SECS,
    NAMESPACE_MAX_LEN, NODE_ID_MAX_LEN,
};
pub use election::{LeaderElection, EVENT_CHANNEL_CAPACITY};
pub use error::{BoxError, Error, Result};
pub use event::{LeaderEvent, LostReason};
pub use fence::{Fence, MemoryFence};
pub use leadership::Leadership;
pub use lifeboat_types::{Clock, ManualClock, SystemClock};
pub use lifeboat_types::{FencingToken, NodeId};
