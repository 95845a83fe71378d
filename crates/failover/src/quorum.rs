//! Observer quorum: with N observers, ⌊N/2⌋+1 must see the primary down, so a minority
//! (one observer's partitioned network) never triggers a failover.

use async_trait::async_trait;
use lifeboat_types::NodeId;

use crate::error::BoxError;

/// Another vantage point's opinion of a node (a remote agent, a check from another zone).
#[async_trait]
pub trait Observer: Send + Sync + std::fmt::Debug + 'static {
    /// The observer's name, for suppression reasons.
    fn id(&self) -> String;

    /// `Ok(true)` = this observer sees `node` down, `Ok(false)` = up. An error or a timeout
    /// is "no vote" (it never counts towards down).
    async fn sees_down(&self, node: &NodeId) -> Result<bool, BoxError>;
}

/// Votes needed out of `n` observers: ⌊n/2⌋+1.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn majority() {
        assert_eq!(super::quorum(1), 1);
        assert_eq!(super::quorum(2), 2);
        assert_eq!(super::quorum(3), 2);
        assert_eq!(super::quorum(4), 3);
        assert_eq!(super::quorum(5), 3);
    }
}
