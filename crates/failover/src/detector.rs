//! Hysteresis: a node is suspect after N consecutive failures and clear after M successes,
//! so health that flaps below the threshold never moves it.

/// What one observation changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// No change of verdict.
    None,
    /// The node just became suspect.
    BecameSuspect,
    /// The node just cleared.
    Cleared,
}

/// Per-node consecutive-count detector (sans I/O: feed it observations).
#[derive(Clone, Debug)]
pub struct Detector {
    unhealthy_threshold: u32,
    healthy_threshold: u32,
    failures: u32,
    successes: u32,
    suspect: bool,
    /// Whether the node has ever been seen healthy enough to clear.
    seen_healthy: bool,
}

impl Detector {
    /// A detector that starts "unknown" (not suspect, not yet proven healthy).
    pub fn new(unhealthy_threshold: u32, healthy_threshold: u32) -> Self {
        Self {
            unhealthy_threshold: unhealthy_threshold.max(1),
            healthy_threshold: healthy_threshold.max(1),
            failures: 0,
            successes: 0,
            suspect: false,
            seen_healthy: false,
        }
    }

    /// Feeds one observation.
    pub fn observe(&mut self, healthy: bool) -> Transition {
        if healthy {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.healthy_threshold {
                self.seen_healthy = true;
                if self.suspect {
                    self.suspect = false;
                    return Transition::Cleared;
                }
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.unhealthy_threshold && !self.suspect {
                self.suspect = true;
                return Transition::BecameSuspect;
            }
        }
        Transition::None
    }

    /// True once `unhealthy_threshold` consecutive failures were seen (until cleared).
    pub fn is_suspect(&self) -> bool {
        self.suspect
    }

    /// True when the node may serve: cleared by `healthy_threshold` successes and not suspect.
    pub fn is_healthy(&self) -> bool {
        self.seen_healthy && !self.suspect
    }

    /// Current run of consecutive failures.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flapping_below_threshold_never_suspects() {
        let mut d = Detector::new(3, 2);
        for _ in 0..100 {
            assert_eq!(d.observe(false), Transition::None);
            assert_eq!(d.observe(false), Transition::None);
            d.observe(true);
        }
        assert!(!d.is_suspect());
    }

    #[test]
    fn suspect_then_clear_needs_consecutive_successes() {
        let mut d = Detector::new(3, 2);
        d.observe(true);
        d.observe(true);
        assert!(d.is_healthy());
        d.observe(false);
        d.observe(false);
        assert_eq!(d.observe(false), Transition::BecameSuspect);
        assert_eq!(d.observe(false), Transition::None);
        assert_eq!(d.observe(true), Transition::None);
        assert_eq!(d.observe(false), Transition::None);
        assert!(
            d.is_suspect(),
            "one success between failures does not clear"
        );
        d.observe(true);
        assert_eq!(d.observe(true), Transition::Cleared);
        assert!(d.is_healthy());
    }
}
