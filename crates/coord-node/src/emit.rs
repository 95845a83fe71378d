//! One JSON line per event on stdout, flushed at once, stamped with wall-clock time.
//!
//! Wall time (not monotonic) because a test compares events of different processes on one
//! host: one process's `lost` against another's `acquired`.

use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::{NodeError, Result};

/// Microseconds since the Unix epoch, now.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Writes event lines for one node; lines from concurrent tasks never interleave.
pub struct Emitter {
    node: String,
    out: Mutex<std::io::Stdout>,
}

impl Emitter {
    /// An emitter that tags every line with `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            out: Mutex::new(std::io::stdout()),
        }
    }

    /// Prints `{"event":kind,"node":…,"t_unix_ms":…,"t_unix_us":…, …fields}` and flushes.
    pub fn emit(&self, kind: &str, fields: Value) -> Result<()> {
        let mut line = Map::new();
        line.insert("event".into(), kind.into());
        line.insert("node".into(), self.node.clone().into());
        let us = unix_us();
        line.insert("t_unix_ms".into(), (us / 1000).into());
        line.insert("t_unix_us".into(), us.into());
        if let Value::Object(extra) = fields {
            line.extend(extra);
        }
        let text = Value::Object(line).to_string();
        let mut out = self.out.lock().expect("stdout mutex poisoned");
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(NodeError::Stdout)
    }

    /// Like [`Self::emit`], but a closed stdout only ends up in the log (background tasks).
    pub fn emit_or_log(&self, kind: &str, fields: Value) {
        if let Err(e) = self.emit(kind, fields) {
            tracing::warn!("{e}");
        }
    }
}
