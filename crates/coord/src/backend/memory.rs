//! The in-memory backend: the reference model, with an injectable store clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::backend::{Backend, Grant, LeaderInfo};
use crate::error::{Error, Result};
use lifeboat_types::{Clock, SystemClock};
use lifeboat_types::{FencingToken, NodeId};

/// One namespace's lease in the model.
#[derive(Debug, Default)]
struct Slot {
    holder: Option<(NodeId, FencingToken, Duration)>,
    last_token: u64,
}

#[derive(Debug)]
struct Shared {
    clock: Arc<dyn Clock>,
    slots: Mutex<HashMap<String, Slot>>,
    changed: watch::Sender<u64>,
}

/// An in-process store of leases; clones share state. Expiry follows the injected clock.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

impl MemoryStore {
    /// A store whose expiry follows `clock` (a [`crate::ManualClock`] in tests).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            shared: Arc::new(Shared {
                clock,
                slots: Mutex::new(HashMap::new()),
                changed: watch::channel(0).0,
            }),
        }
    }

    /// The process-wide store used by [`crate::LeaderConfig::memory`], on the system clock.
    pub fn global() -> Self {
        static GLOBAL: OnceLock<MemoryStore> = OnceLock::new();
        GLOBAL
            .get_or_init(|| MemoryStore::new(Arc::new(SystemClock)))
            .clone()
    }

    /// The store's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.shared.clock.clone()
    }

    /// Wakes waiters after the clock was moved, so expiries are noticed at once.
    pub fn notify_clock_moved(&self) {
        self.shared.changed.send_modify(|g| *g += 1);
    }

    fn with_slot<T>(&self, namespace: &str, f: impl FnOnce(&mut Slot, Duration) -> T) -> T {
        let now = self.shared.clock.boot();
        let mut slots = self
            .shared
            .slots
            .lock()
            .expect("memory store mutex poisoned");
        let slot = slots.entry(namespace.to_owned()).or_default();
        if matches!(&slot.holder, Some((_, _, expires)) if *expires <= now) {
            slot.holder = None;
        }
        f(slot, now)
    }

    fn changed(&self) {
        self.shared.changed.send_modify(|g| *g += 1);
    }
}

#[async_trait]
impl Backend for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn try_acquire(
        &self,
        namespace: &str,
        node: &NodeId,
        lease: Duration,
    ) -> Result<Option<Grant>> {
        let grant = self.with_slot(namespace, |slot, now| {
            if slot.holder.is_some() {
                return None;
            }
            slot.last_token += 1;
            let token = FencingToken(slot.last_token);
            slot.holder = Some((node.clone(), token, now + lease));
            Some(Grant { token, lease })
        });
        if grant.is_some() {
            self.changed();
        }
        Ok(grant)
    }

    async fn renew(
        &self,
        namespace: &str,
        node: &NodeId,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Duration> {
        self.with_slot(namespace, |slot, now| match &mut slot.holder {
            Some((n, t, expires)) if n == node && *t == token => {
                *expires = now + lease;
                Ok(lease)
            }
            _ => Err(Error::NotLeader {
                node: node.clone(),
                token,
            }),
        })
    }

    async fn resign(&self, namespace: &str, node: &NodeId, token: FencingToken) -> Result<bool> {
        let released = self.with_slot(namespace, |slot, _| match &slot.holder {
            Some((n, t, _)) if n == node && *t == token => {
                slot.holder = None;
                true
            }
            _ => false,
        });
        if released {
            self.changed();
        }
        Ok(released)
    }

    async fn current(&self, namespace: &str) -> Result<Option<LeaderInfo>> {
        Ok(self.with_slot(namespace, |slot, now| {
            slot.holder.as_ref().map(|(n, t, expires)| LeaderInfo {
                node_id: n.clone(),
                token: *t,
                expires_in: Some(expires.saturating_sub(now)),
            })
        }))
    }

    async fn wait_for_change(&self, namespace: &str, timeout: Duration) -> Result<()> {
        let mut rx = self.shared.changed.subscribe();
        // If the current lease expires before the timeout (store clock == real time for the
        // system clock), wake up at its expiry rather than at the timeout.
        let wait = match self.current(namespace).await? {
            Some(LeaderInfo {
                expires_in: Some(left),
                ..
            }) => timeout.min(left + Duration::from_millis(1)),
            _ => timeout,
        };
        let _ = tokio::time::timeout(wait, rx.changed()).await;
        Ok(())
    }
}
