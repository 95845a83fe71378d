//! One clock abstraction for every crate: wall time for records humans read, monotonic and boot
//! time for deadlines. Real code uses [`SystemClock`]; tests inject a [`ManualClock`].

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// A time source.
///
/// `boot()` is the one deadlines use (leases, lock self-fencing): it is monotonic and keeps
/// counting while the process is stopped or the machine sleeps, so a holder frozen past its
/// deadline sees the deadline passed as soon as it runs again.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Time since boot including suspend (`CLOCK_BOOTTIME`). Never goes backwards.
    fn boot(&self) -> Duration;
    /// Time since an arbitrary origin, not counting suspend (`CLOCK_MONOTONIC`).
    fn monotonic(&self) -> Duration;
    /// Wall-clock time: for timestamps people read, never for deadlines (it jumps).
    fn wall(&self) -> SystemTime;
}

/// The operating system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn boot(&self) -> Duration {
        boot_time()
    }

    fn monotonic(&self) -> Duration {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// `CLOCK_BOOTTIME` without a clock object: time since boot including suspend.
pub fn boot_time() -> Duration {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(t) => Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32),
        Err(_) => {
            static START: OnceLock<Instant> = OnceLock::new();
            START.get_or_init(Instant::now).elapsed()
        }
    }
}

/// A clock that only moves when told to, so expiry in tests is decided deterministically.
/// Boot and monotonic time are the same; wall time is the Unix epoch plus that.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now: Arc<Mutex<Duration>>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.now.lock().expect("clock mutex poisoned") += by;
    }

    /// Sets the clock to `to` if that is later than now (monotonic: never moves back).
    pub fn set(&self, to: Duration) {
        let mut now = self.now.lock().expect("clock mutex poisoned");
        if to > *now {
            *now = to;
        }
    }

    fn read(&self) -> Duration {
        *self.now.lock().expect("clock mutex poisoned")
    }
}

impl Clock for ManualClock {
    fn boot(&self) -> Duration {
        self.read()
    }

    fn monotonic(&self) -> Duration {
        self.read()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + self.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let c = ManualClock::new();
        c.advance(Duration::from_secs(5));
        c.set(Duration::from_secs(2));
        assert_eq!(c.boot(), Duration::from_secs(5));
        assert_eq!(c.wall(), SystemTime::UNIX_EPOCH + Duration::from_secs(5));
    }

    #[test]
    fn system_boot_clock_is_monotonic() {
        let a = SystemClock.boot();
        let b = SystemClock.boot();
        assert!(b >= a);
    }
}
