//! Cancellation for long-running engines: a cheap flag checked at safe points.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A cancellation request shared between the caller and a running engine.
///
/// Engines are synchronous and check [`CancelToken::is_cancelled`] at safe points (between
/// files, packs, snapshots, records): a cancelled run stops there and commits nothing
/// half-done. Clones share one flag; cancelling is irreversible.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
}

impl CancelToken {
    /// A token nobody has cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token sharing an existing flag (e.g. one a signal handler sets).
    pub fn from_flag(flag: Arc<AtomicBool>) -> Self {
        Self { flag }
    }

    /// Asks every holder of this token to stop at its next safe point.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The shared flag, for code that polls an `AtomicBool`.
    pub fn flag(&self) -> &Arc<AtomicBool> {
        &self.flag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag() {
        let a = CancelToken::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        a.cancel();
        assert!(b.is_cancelled());
    }
}
