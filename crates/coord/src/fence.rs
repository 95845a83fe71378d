//! Resource-side fencing: reject a write whose token is older than one already seen.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::{Error, Result};
use lifeboat_types::FencingToken;

/// A resource's record of the highest fencing token it has accepted.
///
/// # Contract
///
/// [`Fence::admit`] atomically compares `token` with the highest token seen: lower →
/// [`Error::Fenced`] and nothing changes; equal or higher → recorded and accepted. Equal is
/// accepted because one term performs many writes. A fence only protects a write when the
/// check and the write are one atomic step — see [`MemoryFence::write`] and
/// `PostgresFence::guarded`; calling `admit` and then writing separately leaves a window.
#[async_trait]
pub trait Fence: Send + Sync {
    /// Accepts `token` if it is not older than the highest seen, and records it.
    async fn admit(&self, token: FencingToken) -> Result<()>;

    /// The highest token accepted so far (`None` if none).
    async fn highest(&self) -> Result<Option<FencingToken>>;
}

/// An in-memory resource guarded by a fence: the check and the write happen under one lock.
#[derive(Debug, Default)]
pub struct MemoryFence<T> {
    state: Mutex<(Option<FencingToken>, T)>,
}

impl<T> MemoryFence<T> {
    /// A fence around `value` that has seen no token yet.
    pub fn new(value: T) -> Self {
        Self {
            state: Mutex::new((None, value)),
        }
    }

    /// Applies `f` to the value if `token` is not stale; otherwise returns
    /// [`Error::Fenced`] without calling `f`.
    pub fn write<R>(&self, token: FencingToken, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let mut state = self.state.lock().expect("fence mutex poisoned");
        check(state.0, token)?;
        state.0 = Some(token);
        Ok(f(&mut state.1))
    }

    /// Reads the value.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.state.lock().expect("fence mutex poisoned").1)
    }

    /// The highest token accepted so far.
    pub fn highest_seen(&self) -> Option<FencingToken> {
        self.state.lock().expect("fence mutex poisoned").0
    }
}

#[async_trait]
impl<T: Send> Fence for MemoryFence<T> {
    async fn admit(&self, token: FencingToken) -> Result<()> {
        self.write(token, |_| ())
    }

    async fn highest(&self) -> Result<Option<FencingToken>> {
        Ok(self.highest_seen())
    }
}

fn check(seen: Option<FencingToken>, presented: FencingToken) -> Result<()> {
    match seen {
        Some(seen) if presented < seen => Err(Error::Fenced { seen, presented }),
        _ => Ok(()),
    }
}
