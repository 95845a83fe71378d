//! Monotonic clocks: the boot clock for local deadlines and a manual clock for tests.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A monotonic time source, read as the time since an arbitrary fixed origin.
///
/// The election uses it for the holder's *local* deadline; the in-memory backend uses it as
/// the store's clock. Real code uses [`SystemClock`]; tests inject a [`ManualClock`].
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time since the clock's origin. Never goes backwards.
    fn now(&self) -> Duration;
}

/// `CLOCK_BOOTTIME`: monotonic and counts time suspended or stopped (SIGSTOP, laptop sleep),
/// so a holder frozen past its deadline sees the deadline passed as soon as it runs again.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        boot_clock()
    }
}

/// Time since boot including suspend; falls back to `Instant` off Linux.
pub(crate) fn boot_clock() -> Duration {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(t) => Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32),
        Err(_) => {
            static START: OnceLock<Instant> = OnceLock::new();
            START.get_or_init(Instant::now).elapsed()
        }
    }
}

/// A clock that only moves when told to: the in-memory store's clock in tests, so expiry is
/// decided deterministically.
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
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.lock().expect("clock mutex poisoned")
    }
}
