//! The etcd backend: a lease with keep-alive, put-if-absent on the leader key, and the key's
//! create revision as the fencing token.
//!
//! Key: `/lifeboat/<namespace>/leader`, value = node id, attached to a lease of
//! `ceil(lease_duration)` seconds. Acquire = grant a lease, then a txn `IF
//! create_revision(key) == 0 THEN put(key, node, lease)`; the put's revision is the key's
//! create revision, which etcd's single revision counter makes strictly increasing across
//! grants (and across etcd restarts). Renew = one lease keep-alive plus a check that the key
//! still has our create revision. Resign = txn `IF create_revision(key) == token THEN
//! delete(key)` then revoke the lease. Waiting campaigners watch the key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};

use crate::backend::{Backend, Grant, LeaderInfo};
use crate::error::{Error, Result};
use lifeboat_types::{FencingToken, NodeId};

const BACKEND: &str = "etcd";
/// etcd's minimum lease TTL.
const MIN_TTL_SECS: i64 = 2;

/// Leader election through etcd (works with etcd 3.4 and later).
pub struct EtcdBackend {
    client: Client,
    /// Lease ids of the terms this process holds, by (namespace, token).
    leases: Mutex<HashMap<(String, u64), i64>>,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend").finish_non_exhaustive()
    }
}

/// The leader key of a namespace.
pub fn leader_key(namespace: &str) -> String {
    format!("/lifeboat/{namespace}/leader")
}

/// etcd answers a keep-alive for an expired or revoked lease with "lease not found".
fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().contains("lease not found"),
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("lease not found"),
        _ => false,
    }
}

fn etcd_err(op: &'static str) -> impl FnOnce(etcd_client::Error) -> Error {
    move |e| Error::unavailable(BACKEND, op, e)
}

impl EtcdBackend {
    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`); calls time out after
    /// `op_timeout` and HTTP/2 keep-alives detect a dead connection.
    pub async fn connect(endpoints: &[String], op_timeout: Duration) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_timeout(op_timeout)
            .with_connect_timeout(op_timeout)
            .with_keep_alive(Duration::from_secs(2), op_timeout)
            .with_keep_alive_while_idle(true)
            .with_tcp_keepalive(Duration::from_secs(5));
        let client =
            tokio::time::timeout(op_timeout * 3, Client::connect(endpoints, Some(options)))
                .await
                .map_err(|_| Error::Timeout {
                    backend: BACKEND,
                    op: "connect",
                    after: op_timeout * 3,
                })?
                .map_err(etcd_err("connect"))?;
        Ok(Self {
            client,
            leases: Mutex::new(HashMap::new()),
        })
    }

    fn lease_of(&self, namespace: &str, token: FencingToken) -> Option<i64> {
        self.leases
            .lock()
            .expect("etcd lease map poisoned")
            .get(&(namespace.to_owned(), token.0))
            .copied()
    }

    fn forget(&self, namespace: &str, token: FencingToken) -> Option<i64> {
        self.leases
            .lock()
            .expect("etcd lease map poisoned")
            .remove(&(namespace.to_owned(), token.0))
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn try_acquire(
        &self,
        namespace: &str,
        node: &NodeId,
        lease: Duration,
    ) -> Result<Option<Grant>> {
        let mut client = self.client.clone();
        let key = leader_key(namespace);
        let ttl = (lease.as_millis().div_ceil(1000) as i64).max(MIN_TTL_SECS);
        // A held key is the common case for a waiting campaigner: answer it with one read
        // instead of three raft writes (lease grant, txn, lease revoke). The txn below still
        // decides races; this read only skips attempts that cannot succeed.
        let held = client
            .get(key.clone(), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(etcd_err("leader read"))?;
        if held.count() > 0 {
            return Ok(None);
        }
        let granted = client
            .lease_grant(ttl, None)
            .await
            .map_err(etcd_err("lease grant"))?;
        let lease_id = granted.id();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                node.as_str(),
                Some(PutOptions::new().with_lease(lease_id)),
            )]);
        let resp = match client.txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                // Outcome unknown: the lease is unrenewed and expires on its own.
                let _ = client.lease_revoke(lease_id).await;
                return Err(etcd_err("acquire txn")(e));
            }
        };
        if !resp.succeeded() {
            let _ = client.lease_revoke(lease_id).await;
            return Ok(None);
        }
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        if revision <= 0 {
            return Err(Error::Corrupt {
                backend: BACKEND,
                message: "txn response without a revision".into(),
            });
        }
        let token = FencingToken(revision as u64);
        self.leases
            .lock()
            .expect("etcd lease map poisoned")
            .insert((namespace.to_owned(), token.0), lease_id);
        Ok(Some(Grant {
            token,
            lease: Duration::from_secs(granted.ttl().max(1) as u64),
        }))
    }

    async fn renew(
        &self,
        namespace: &str,
        node: &NodeId,
        token: FencingToken,
        _lease: Duration,
    ) -> Result<Duration> {
        let not_leader = || Error::NotLeader {
            node: node.clone(),
            token,
        };
        let Some(lease_id) = self.lease_of(namespace, token) else {
            return Err(not_leader());
        };
        let mut client = self.client.clone();
        // An expired lease is reported as an error ("lease not found"), not as TTL 0.
        let expired_or_unavailable = |e: etcd_client::Error| {
            if is_lease_not_found(&e) {
                self.forget(namespace, token);
                not_leader()
            } else {
                etcd_err("keep-alive")(e)
            }
        };
        let (mut keeper, mut stream) = client
            .lease_keep_alive(lease_id)
            .await
            .map_err(expired_or_unavailable)?;
        keeper.keep_alive().await.map_err(expired_or_unavailable)?;
        let resp = stream
            .message()
            .await
            .map_err(expired_or_unavailable)?
            .ok_or_else(|| Error::unavailable(BACKEND, "keep-alive", "stream closed"))?;
        if resp.ttl() <= 0 {
            self.forget(namespace, token);
            return Err(not_leader());
        }
        // The lease lives; check the key is still ours (not deleted by an operator).
        let got = client
            .get(leader_key(namespace), None)
            .await
            .map_err(etcd_err("get"))?;
        match got.kvs().first() {
            Some(kv) if kv.create_revision() as u64 == token.0 => {
                Ok(Duration::from_secs(resp.ttl() as u64))
            }
            _ => Err(not_leader()),
        }
    }

    async fn resign(&self, namespace: &str, _node: &NodeId, token: FencingToken) -> Result<bool> {
        let mut client = self.client.clone();
        let key = leader_key(namespace);
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                token.0 as i64,
            )])
            .and_then([TxnOp::delete(key, None)]);
        let resp = client.txn(txn).await.map_err(etcd_err("resign txn"))?;
        if let Some(lease_id) = self.forget(namespace, token) {
            // Our lease only carries our own key: revoking it cannot touch another term.
            let _ = client.lease_revoke(lease_id).await;
        }
        Ok(resp.succeeded())
    }

    async fn current(&self, namespace: &str) -> Result<Option<LeaderInfo>> {
        let mut client = self.client.clone();
        let got = client
            .get(leader_key(namespace), None)
            .await
            .map_err(etcd_err("get"))?;
        let Some(kv) = got.kvs().first() else {
            return Ok(None);
        };
        let node = kv.value_str().map_err(|_| Error::Corrupt {
            backend: BACKEND,
            message: format!("leader key of {namespace} holds a non-UTF-8 node id"),
        })?;
        let expires_in = if kv.lease() != 0 {
            let ttl = client
                .lease_time_to_live(kv.lease(), None)
                .await
                .map_err(etcd_err("lease time-to-live"))?
                .ttl();
            (ttl >= 0).then(|| Duration::from_secs(ttl as u64))
        } else {
            None
        };
        Ok(Some(LeaderInfo {
            node_id: NodeId::new(node),
            token: FencingToken(kv.create_revision() as u64),
            expires_in,
        }))
    }

    async fn wait_for_change(&self, namespace: &str, timeout: Duration) -> Result<()> {
        let mut client = self.client.clone();
        let key = leader_key(namespace);
        let got = client
            .get(key.clone(), None)
            .await
            .map_err(etcd_err("get"))?;
        let revision = got.header().map(|h| h.revision()).unwrap_or(0);
        // Watch from just after the state we saw: no change can slip in between.
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let wait = async {
            let mut stream = client
                .watch(key, Some(options))
                .await
                .map_err(etcd_err("watch"))?;
            while let Some(resp) = stream.message().await.map_err(etcd_err("watch"))? {
                if !resp.events().is_empty() || resp.canceled() {
                    break;
                }
            }
            Ok::<_, Error>(())
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}
