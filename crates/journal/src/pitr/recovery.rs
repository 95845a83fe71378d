//! Point-in-time recovery: newest usable base backup at or before the target, then replay of
//! the WAL from the backup's LSN up to the target. Read-only: takes no writer lock, so it also
//! serves the CLI and recovery from a restored archive.

use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use lifeboat_types::{CancelToken, Lsn};

use crate::error::{Error, Result};
use crate::pitr::backup::{self, time_from_nanos, BaseBackup};
use crate::pitr::state::{decode_op, StateMachine};
use crate::reader;
use crate::record::{Hash, RecordError};

/// Records replayed between two looks at the cancel token (a relaxed atomic load each).
pub const CANCEL_CHECK_EVERY: u64 = 1024;

/// Where recovery stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Every durable record.
    Latest,
    /// Every record up to and including this LSN (an error if the log ends before it).
    Lsn(Lsn),
    /// Every record stamped at or before this time (an error if it is after the last record).
    Timestamp(SystemTime),
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Latest => f.write_str("latest"),
            RecoveryTarget::Lsn(n) => write!(f, "LSN {n}"),
            RecoveryTarget::Timestamp(t) => write!(f, "time {} ns after the Unix epoch", nanos(*t)),
        }
    }
}

/// How a recovery runs: which checks it makes and how a caller stops it early.
#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    /// Check the first replayed record against the backup's chain anchor (`verify_wal`).
    pub verify_anchor: bool,
    /// Checked every [`CANCEL_CHECK_EVERY`] records: once cancelled, recovery stops with
    /// [`Error::Cancelled`] and returns no state.
    pub cancel: CancelToken,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        RecoveryOptions {
            verify_anchor: true,
            cancel: CancelToken::new(),
        }
    }
}

impl RecoveryOptions {
    /// The defaults, stopped by `cancel`.
    pub fn cancellable(cancel: &CancelToken) -> Self {
        RecoveryOptions {
            cancel: cancel.clone(),
            ..RecoveryOptions::default()
        }
    }
}

/// A recovered state and where in the log it stands.
#[derive(Debug)]
pub struct Recovery<S> {
    /// The state after the last applied record.
    pub state: S,
    /// LSN of the last record reflected in `state` (0: the initial state).
    pub lsn: Lsn,
    /// Timestamp of that record (`None` for the initial state).
    pub timestamp: Option<SystemTime>,
    /// Same, in unix nanoseconds (0 for the initial state), for exact comparisons.
    pub timestamp_nanos: i64,
    /// Hash of record `lsn` (zeros for the initial state): the chain anchor to continue from.
    pub hash: Hash,
    /// Base backup recovery started from (`None`: replayed from LSN 1).
    pub base_backup_id: Option<String>,
    /// Records replayed on top of the backup.
    pub wal_entries_replayed: u64,
    /// Backups that were candidates but damaged, with why (recovery fell back past them).
    pub skipped_backups: Vec<String>,
}

fn nanos(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
        Err(_) => -1,
    }
}

/// Recovers `S` from a WAL directory and a backup directory without opening a writer.
pub fn recover_from_dirs<S: StateMachine>(
    wal_dir: &Path,
    backup_dir: &Path,
    target: RecoveryTarget,
) -> Result<Recovery<S>> {
    recover_with::<S>(wal_dir, backup_dir, target, &RecoveryOptions::default())
}

/// [`recover_from_dirs`] with options: the chain-anchor check switchable (`verify_wal` in the
/// config) and a cancel token.
pub fn recover_with<S: StateMachine>(
    wal_dir: &Path,
    backup_dir: &Path,
    target: RecoveryTarget,
    opts: &RecoveryOptions,
) -> Result<Recovery<S>> {
    recover_limited(wal_dir, backup_dir, target, opts, Lsn(u64::MAX))
}

/// Recovery that ignores records after `limit` (a live writer's records not yet durable).
pub(crate) fn recover_limited<S: StateMachine>(
    wal_dir: &Path,
    backup_dir: &Path,
    target: RecoveryTarget,
    opts: &RecoveryOptions,
    limit: Lsn,
) -> Result<Recovery<S>> {
    // Before anything else: an empty or foreign directory must not recover to "LSN 0".
    reader::journal_segments(wal_dir)?;
    let cancelled = |lsn: u64, replayed: u64| Error::Cancelled {
        lsn: Lsn(lsn),
        replayed,
    };
    let target_ts = match target {
        RecoveryTarget::Timestamp(t) => Some(nanos(t)),
        _ => None,
    };
    let (backups, damaged) = backup::list_backups(backup_dir)?;
    let mut skipped: Vec<String> = damaged.iter().map(|e| e.to_string()).collect();
    let fits = |b: &BaseBackup| match target {
        RecoveryTarget::Latest => true,
        RecoveryTarget::Lsn(n) => b.start_lsn <= n,
        RecoveryTarget::Timestamp(_) => b.start_timestamp_nanos <= target_ts.unwrap_or(0),
    };
    let mut base: Option<(S, &BaseBackup)> = None;
    for b in backups.iter().rev().filter(|b| fits(b)) {
        if opts.cancel.is_cancelled() {
            return Err(cancelled(0, 0));
        }
        let restored = backup::load_backup(b).and_then(|bytes| {
            S::restore(&bytes).map_err(|reason| Error::BadBackup {
                path: b.path.clone(),
                reason: format!("snapshot does not decode: {reason}"),
            })
        });
        match restored {
            Ok(s) => {
                base = Some((s, b));
                break;
            }
            Err(e) => {
                tracing::warn!("skipping base backup: {e}");
                skipped.push(e.to_string());
            }
        }
    }
    let (mut state, mut lsn, mut ts, mut hash, base_id) = match base {
        Some((s, b)) => (
            s,
            b.start_lsn.get(),
            b.start_timestamp_nanos,
            b.start_hash,
            Some(b.id.clone()),
        ),
        None => (S::default(), 0, 0, [0; 32], None),
    };
    let base_lsn = lsn;
    let mut replayed = 0u64;
    let last_wanted = match target {
        RecoveryTarget::Lsn(n) => n.min(limit).get(),
        _ => limit.get(),
    };
    // Whether a record after a timestamp target was seen: without one, the log may end
    // before the target.
    let mut passed_target = false;
    let mut records = reader::iter_from(wal_dir, lsn + 1)?;
    // Checked before pulling the next record: damage after the target must not fail recovery.
    while lsn < last_wanted {
        if replayed.is_multiple_of(CANCEL_CHECK_EVERY) && opts.cancel.is_cancelled() {
            return Err(cancelled(lsn, replayed));
        }
        let Some(rec) = records.next() else { break };
        let rec = rec?;
        if rec.lsn != lsn + 1 {
            // No backup is old enough and the WAL's start was removed: the target precedes
            // what can be rebuilt, if some (younger) backup shows where that starts.
            let earliest = backups
                .iter()
                .filter(|b| !fits(b))
                .map(|b| b.start_lsn)
                .min();
            if let (None, 0, Some(earliest_lsn)) = (&base_id, lsn, earliest) {
                return Err(Error::TargetBeforeStart {
                    target,
                    earliest_lsn,
                });
            }
            return Err(Error::WalGap {
                needed: Lsn(lsn + 1),
                available: format!("records from LSN {} on", rec.lsn),
            });
        }
        match target {
            RecoveryTarget::Lsn(n) if rec.lsn > n.get() => break,
            RecoveryTarget::Timestamp(_) if Some(rec.timestamp_nanos) > target_ts => {
                passed_target = true;
                break;
            }
            _ => {}
        }
        if opts.verify_anchor && lsn == base_lsn && rec.prev_hash != hash {
            return Err(Error::Corrupt {
                lsn: rec.lsn.into(),
                path: wal_dir.to_path_buf(),
                reason: RecordError::ChainMismatch {
                    expected: hex::encode(hash),
                    found: hex::encode(rec.prev_hash),
                },
            });
        }
        let op: S::Op = decode_op(&rec.payload, rec.lsn)?;
        state.apply(&op);
        lsn = rec.lsn;
        ts = rec.timestamp_nanos;
        hash = rec.hash;
        replayed += 1;
    }
    let after_end = match target {
        RecoveryTarget::Lsn(n) => lsn < n.get(),
        // The last record is stamped exactly at the target: nothing after it is asked for.
        RecoveryTarget::Timestamp(_) => !passed_target && target_ts > Some(ts),
        RecoveryTarget::Latest => false,
    };
    if after_end {
        return Err(Error::TargetAfterEnd {
            target,
            last_lsn: Lsn(lsn),
        });
    }
    Ok(Recovery {
        state,
        lsn: Lsn(lsn),
        timestamp: (lsn > 0).then(|| time_from_nanos(ts)),
        timestamp_nanos: ts,
        hash,
        base_backup_id: base_id,
        wal_entries_replayed: replayed,
        skipped_backups: skipped,
    })
}
