//! `forget` as an engine: choose snapshots by id or by a retention policy, then delete their
//! `snapshots/<id>` objects under a lock. Data stays in the packs until a prune.
//!
//! The policy itself is the pure [`crate::retention`] engine; this module adds the repository
//! around it (listing, damaged snapshots, concurrent deletes, lock fence, cancellation).

use futures::stream::{self, StreamExt};
use jiff::tz::TimeZone;
use lifeboat_types::{CancelToken, SnapshotId};

use crate::error::{stop_if_cancelled, Error, Result};
use crate::lock::WriteLock;
use crate::repository::Repository;
use crate::retention::{self, Candidate, GroupBy, Plan, Policy};
use crate::snapshot::{snapshot_key, Snapshot};

/// Deletes in flight at once: snapshot objects are tiny, the latency is the store's.
const DELETE_CONCURRENCY: usize = 16;
/// Deletions between two checks of the lock's lease.
const FENCE_EVERY: usize = 64;

/// A retention plan over a repository's readable snapshots.
#[derive(Debug)]
pub struct PolicyPlan {
    /// Keep/remove per snapshot, group by group, with reasons.
    pub plan: Plan,
    /// Snapshots that could not be read: never removed by a policy (only by id).
    pub unreadable: Vec<(SnapshotId, Error)>,
}

impl PolicyPlan {
    /// The snapshots the policy removes.
    pub fn doomed(&self) -> Vec<SnapshotId> {
        self.plan.removed().map(|d| d.id).collect()
    }
}

/// Applies `policy` to the readable snapshots `select` accepts; changes nothing.
pub fn plan_policy(
    repo: &Repository,
    policy: &Policy,
    group_by: GroupBy,
    tz: &TimeZone,
    select: &dyn Fn(&Snapshot) -> bool,
) -> Result<PolicyPlan> {
    let mut candidates = Vec::new();
    let mut unreadable = Vec::new();
    for (id, r) in repo.list_snapshots_checked()? {
        match r {
            Ok(sn) if select(&sn) => candidates.push(Candidate::new(id, &sn)),
            Ok(_) => {}
            Err(e) => unreadable.push((id, e)),
        }
    }
    let plan = retention::apply(&candidates, policy, group_by, tz)?;
    Ok(PolicyPlan { plan, unreadable })
}

/// A full id, unique prefix or `latest` among listed snapshots; damaged ones resolve too (with
/// what is wrong), since removing them by id is how a user gets rid of them.
pub fn resolve<'a>(
    listed: &'a [(SnapshotId, Result<Snapshot>)],
    reference: &str,
) -> Result<(SnapshotId, Option<&'a Error>)> {
    let not_found = || Error::SnapshotNotFound {
        reference: reference.into(),
    };
    if reference.trim().is_empty() {
        return Err(Error::EmptySnapshotReference);
    }
    if reference == "latest" {
        // Readable snapshots come first, oldest to newest.
        return listed
            .iter()
            .rfind(|(_, r)| r.is_ok())
            .map(|(id, _)| (*id, None))
            .ok_or_else(not_found);
    }
    let lower = reference.to_ascii_lowercase();
    let mut matches = listed
        .iter()
        .filter(|(id, _)| id.to_hex().starts_with(&lower));
    match (matches.next(), matches.next()) {
        (Some((id, r)), None) => Ok((*id, r.as_ref().err())),
        (None, _) => Err(not_found()),
        (Some(_), Some(_)) => Err(Error::AmbiguousSnapshot {
            reference: reference.into(),
        }),
    }
}

/// Snapshots that could not be deleted, and why.
pub type Failures = Vec<(SnapshotId, Error)>;

/// What a removal did: both lists in the order the ids were given.
#[derive(Debug, Default)]
pub struct Removal {
    /// Snapshot objects deleted.
    pub removed: Vec<SnapshotId>,
    /// Snapshots that could not be deleted, and why.
    pub failed: Failures,
}

/// Deletes the snapshot objects concurrently under `lock`, calling `on_each` as each
/// completes. Stops (with [`Error::Cancelled`]) between batches when `cancel` is set; what was
/// removed by then stays removed (each deletion is complete on its own).
pub fn remove_snapshots(
    repo: &Repository,
    lock: &dyn WriteLock,
    ids: &[SnapshotId],
    cancel: &CancelToken,
    on_each: &mut dyn FnMut(&SnapshotId, Option<&Error>),
) -> Result<Removal> {
    let store = repo.store();
    let mut out = Removal::default();
    for batch in ids.chunks(FENCE_EVERY) {
        stop_if_cancelled(cancel)?;
        lock.fence(repo)?;
        repo.block_on(
            stream::iter(batch.iter().copied())
                .map(|id| async move {
                    let r = store.delete(&snapshot_key(&id)).await;
                    (id, r.map_err(Error::from))
                })
                .buffer_unordered(DELETE_CONCURRENCY)
                .for_each(|(id, r)| {
                    match r {
                        Ok(()) => {
                            on_each(&id, None);
                            out.removed.push(id);
                        }
                        Err(e) => {
                            on_each(&id, Some(&e));
                            out.failed.push((id, e));
                        }
                    }
                    futures::future::ready(())
                }),
        );
    }
    // Completion order is arbitrary; report in a stable one.
    let order = |id: &SnapshotId| ids.iter().position(|x| x == id);
    out.removed.sort_by_key(order);
    out.failed.sort_by_key(|(id, _)| order(id));
    Ok(out)
}
