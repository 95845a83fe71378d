//! Progress reporting hooks, so the CLI can draw bars without the engine knowing about terminals.

/// Receives progress from long operations; all methods are called from worker threads.
pub trait Progress: Sync {
    /// More work was discovered (bytes).
    fn add_total(&self, _bytes: u64) {}
    /// Work finished (bytes).
    fn advance(&self, _bytes: u64) {}
    /// A non-fatal problem (unreadable file, skipped special file).
    fn warn(&self, _message: &str) {}
}

/// Discards everything.
pub struct NoProgress;
impl Progress for NoProgress {}
