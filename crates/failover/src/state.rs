//! The persisted decision state: operator hold, the in-progress failover (with its token and
//! steps) and the anti-flapping budget, in one small versioned JSON file written
//! temp + fsync + rename + fsync(dir). The hold and a failover decision are set under one
//! lock by compare-and-set, so of a concurrent hold and decision exactly one wins.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use lifeboat_types::{FencingToken, NodeId};
use serde::{Deserialize, Serialize};

use crate::config::FailoverPolicy;
use crate::error::{Error, Result};
use crate::event::Step;

/// The file format version this build writes and reads.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Largest state file accepted (it holds a handful of records).
const STATE_MAX_BYTES: u64 = 1 << 20;

/// Milliseconds since the Unix epoch (wall clock, for persisted timestamps only).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An operator's manual-intervention flag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Who set it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When (Unix ms).
    pub set_at_unix_ms: u64,
}

/// One timestamped step of a failover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step.
    pub step: Step,
    /// When it finished (Unix ms).
    pub at_unix_ms: u64,
    /// Details (hook error, token, waited time).
    pub detail: String,
}

/// A committed failover decision; kept until it completes or fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Increasing id.
    pub id: u64,
    /// The old primary, if known.
    pub from: Option<NodeId>,
    /// The old primary's token, if known.
    pub from_token: Option<FencingToken>,
    /// The candidate.
    pub to: NodeId,
    /// Started by the detector (counts against the budget) or by an operator.
    pub automatic: bool,
    /// The policy it runs under.
    pub policy: FailoverPolicy,
    /// Why it was started.
    pub reason: String,
    /// When it was committed (Unix ms).
    pub started_at_unix_ms: u64,
    /// Without confirmation the candidate is promoted no earlier than this (Unix ms):
    /// the old primary's last seen lease + lease + safety margin.
    pub promote_not_before_unix_ms: u64,
    /// The new primary-role token, once taken.
    pub token: Option<FencingToken>,
    /// Steps done so far.
    pub steps: Vec<StepRecord>,
}

impl Decision {
    /// Whether `step` was recorded.
    pub fn has(&self, step: &Step) -> bool {
        self.steps.iter().any(|s| &s.step == step)
    }
}

/// Everything persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// [`STATE_FORMAT_VERSION`].
    pub format_version: u32,
    /// Bumped by every write.
    pub generation: u64,
    /// The operator hold, if set.
    pub hold: Option<Hold>,
    /// The primary as last known.
    pub primary: Option<NodeId>,
    /// Its primary-role token.
    pub primary_token: Option<FencingToken>,
    /// Id of the next decision.
    pub next_decision_id: u64,
    /// The failover in progress, if any.
    pub in_progress: Option<Decision>,
    /// Unix ms of automatic failovers (pruned to the window).
    pub auto_failovers_unix_ms: Vec<u64>,
    /// True after the budget was used up: automatic failover is off until resumed.
    pub downgraded: bool,
    /// Demoted old primaries: never promoted again until an operator re-admits them.
    pub excluded: Vec<NodeId>,
    /// The last finished decision with its timestamped steps, for audit and `status`.
    #[serde(default)]
    pub last_decision: Option<FinishedDecision>,
}

/// A decision that completed or failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedDecision {
    /// The decision with all its steps.
    pub decision: Decision,
    /// True when the candidate was promoted.
    pub succeeded: bool,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// When it finished (Unix ms).
    pub finished_at_unix_ms: u64,
}

impl Default for PersistedState {
    fn default() -> Self {
        Self {
            format_version: STATE_FORMAT_VERSION,
            generation: 0,
            hold: None,
            primary: None,
            primary_token: None,
            next_decision_id: 1,
            in_progress: None,
            auto_failovers_unix_ms: Vec::new(),
            downgraded: false,
            excluded: Vec::new(),
            last_decision: None,
        }
    }
}

/// The result of setting a hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    /// The hold won: no failover is in progress and none starts while it is set.
    Held,
    /// A decision was committed first: that failover finishes; the hold applies to the next.
    AfterDecision {
        /// The running decision's id.
        id: u64,
        /// Its candidate.
        to: NodeId,
    },
}

/// The decision state, in memory and (if a path is set) on disk.
#[derive(Debug)]
pub struct DecisionStore {
    path: Option<PathBuf>,
    state: Mutex<PersistedState>,
}

impl DecisionStore {
    /// Loads `path` (a missing file is a fresh state) or keeps the state in memory only.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let state = match path {
            Some(p) => load(p)?,
            None => PersistedState::default(),
        };
        Ok(Self {
            path: path.map(Path::to_path_buf),
            state: Mutex::new(state),
        })
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> PersistedState {
        self.state.lock().expect("state mutex poisoned").clone()
    }

    /// Applies `f` atomically: under the lock, to a copy, which is persisted and then
    /// installed only if `f` succeeds and the write is durable.
    pub fn update<T>(&self, f: impl FnOnce(&mut PersistedState) -> Result<T>) -> Result<T> {
        let mut guard = self.state.lock().expect("state mutex poisoned");
        let mut next = guard.clone();
        let out = f(&mut next)?;
        next.generation += 1;
        if let Some(p) = &self.path {
            // A small synchronous write under the lock: the file is a few KiB and written
            // only on decisions, so blocking a runtime thread for its fsyncs is acceptable.
            store(p, &next)?;
        }
        *guard = next;
        Ok(out)
    }

    /// Sets the operator hold. Compare-and-set with [`Self::try_commit`]: whichever takes
    /// the lock first wins.
    pub fn set_hold(&self, by: &str, reason: &str) -> Result<HoldOutcome> {
        self.update(|s| {
            s.hold = Some(Hold {
                by: by.to_owned(),
                reason: reason.to_owned(),
                set_at_unix_ms: unix_ms(SystemTime::now()),
            });
            Ok(match &s.in_progress {
                Some(d) => HoldOutcome::AfterDecision {
                    id: d.id,
                    to: d.to.clone(),
                },
                None => HoldOutcome::Held,
            })
        })
    }

    /// Clears the hold; returns whether one was set.
    pub fn release_hold(&self) -> Result<bool> {
        self.update(|s| Ok(s.hold.take().is_some()))
    }

    /// Commits `decision` (its id is assigned here) unless a hold is set (`Error::Held`,
    /// unless `override_hold`) or another failover is in progress (`Error::InProgress`).
    pub fn try_commit(&self, mut decision: Decision, override_hold: bool) -> Result<Decision> {
        self.update(|s| {
            if let Some(h) = &s.hold {
                if !override_hold {
                    return Err(Error::Held {
                        by: h.by.clone(),
                        reason: h.reason.clone(),
                    });
                }
            }
            if let Some(d) = &s.in_progress {
                return Err(Error::InProgress {
                    id: d.id,
                    to: d.to.clone(),
                    token: d.token.unwrap_or(FencingToken(0)),
                });
            }
            decision.id = s.next_decision_id;
            s.next_decision_id += 1;
            if decision.automatic {
                s.auto_failovers_unix_ms.push(decision.started_at_unix_ms);
            }
            s.in_progress = Some(decision.clone());
            Ok(decision)
        })
    }
}

fn state_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::State {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn load(path: &Path) -> Result<PersistedState> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PersistedState::default()),
        Err(e) => return Err(state_err(path, format!("cannot stat it: {e}"))),
    };
    if meta.len() > STATE_MAX_BYTES {
        return Err(state_err(
            path,
            format!(
                "{} bytes is larger than the {STATE_MAX_BYTES}-byte limit; it is not a failover state file",
                meta.len()
            ),
        ));
    }
    let bytes = fs::read(path).map_err(|e| state_err(path, format!("cannot read it: {e}")))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        state_err(
            path,
            format!("not valid JSON ({e}); restore it from backup or move it away to start fresh (an in-progress failover would be forgotten)"),
        )
    })?;
    let version = value.get("format_version").and_then(|v| v.as_u64());
    if version != Some(u64::from(STATE_FORMAT_VERSION)) {
        return Err(state_err(
            path,
            format!("format_version {version:?} is not {STATE_FORMAT_VERSION}; it was written by another version of lifeboat"),
        ));
    }
    serde_json::from_value(value).map_err(|e| state_err(path, format!("unexpected content: {e}")))
}

fn store(path: &Path, state: &PersistedState) -> Result<()> {
    let err = |what: &str, e: std::io::Error| state_err(path, format!("{what}: {e}"));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| err("cannot create the temp file", e))?;
        f.write_all(&bytes)
            .map_err(|e| err("cannot write the temp file", e))?;
        // fsync 1: the new content is durable before the name points at it.
        f.sync_all()
            .map_err(|e| err("cannot fsync the temp file", e))?;
    }
    fs::rename(&tmp, path).map_err(|e| err("cannot rename the temp file over it", e))?;
    // fsync 2: the rename itself is durable.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err("cannot fsync its directory", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("failover.json");
        let s = DecisionStore::open(Some(&p)).unwrap();
        s.set_hold("ops", "maintenance").unwrap();
        let again = DecisionStore::open(Some(&p)).unwrap();
        assert_eq!(again.snapshot().hold.unwrap().by, "ops");
        fs::write(&p, b"{ not json").unwrap();
        let e = DecisionStore::open(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        fs::write(&p, br#"{"format_version": 99}"#).unwrap();
        let e = DecisionStore::open(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("format_version"), "{e}");
    }
}
