//! Cancellation for long-running engines: a cheap flag checked at safe points.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A cancellation request shared between the caller and a running engine.
///
/// Engines are synchronous and check [`CancelToken::is_cancelled`] at safe points (between
/// files, packs, snapshots, records): a cancelled run stops there and commits nothing
/// half-done. A thread that waits on something else (a quiet child process) can block in
/// [`CancelToken::wait_timeout`] instead, and wakes at once on cancel. Clones share one flag;
/// cancelling is irreversible.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl CancelToken {
    /// A token nobody has cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every holder of this token to stop at its next safe point.
    pub fn cancel(&self) {
        let _guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.wake.notify_all();
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::Relaxed)
    }

    /// Blocks until cancelled or `timeout` passes; true if cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (_guard, _) = self
            .inner
            .wake
            .wait_timeout_while(guard, timeout, |_| !self.inner.flag.load(Ordering::SeqCst))
            .unwrap_or_else(|e| e.into_inner());
        self.is_cancelled()
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
        assert!(!b.wait_timeout(Duration::from_millis(1)));
        a.cancel();
        assert!(b.is_cancelled());
    }

    #[test]
    fn a_waiter_wakes_on_cancel() {
        let t = CancelToken::new();
        let waiter = {
            let t = t.clone();
            std::thread::spawn(move || t.wait_timeout(Duration::from_secs(600)))
        };
        t.cancel();
        assert!(
            waiter.join().unwrap(),
            "woken by the cancel, not the timeout"
        );
    }
}
