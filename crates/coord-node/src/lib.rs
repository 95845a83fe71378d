//! One leader-election participant as a real process, and the harness that drives several.
//!
//! * [`spec`]: the `--backend` / `--fence` command-line forms (`embedded:<dir>`,
//!   `postgres:<url>`, `etcd:<endpoints>`; `file:<path>`, `postgres:<url>`).
//! * [`node`]: the `lifeboat-coord-node` process: campaigns, renews, runs a promote hook,
//!   writes to a fenced resource and prints one JSON line per event ([`emit`]).
//! * [`fence`]: the fenced resources it writes to (a file under `flock`, a PostgreSQL table
//!   guarded by `PostgresFence`).
//! * [`timed`]: a [`lifeboat_coord::Backend`] wrapper that measures lease operations.
//! * [`reach`]: reports an unreachable store (event + stderr on every failed attempt).
//! * [`harness`]: spawns node processes and collects their events (tests, benchmark).

pub mod emit;
pub mod error;
pub mod fence;
pub mod harness;
pub mod node;
pub mod reach;
pub mod spec;
pub mod timed;

pub use error::{NodeError, Result};
