//! Spawns `lifeboat-coord-node` processes and collects their JSON events in one log, so a
//! test or the benchmark can wait for "any node acquired a token above 7" and compare the
//! times different processes reported.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// One event line of one node.
#[derive(Clone, Debug)]
pub struct Event {
    /// The node that printed it.
    pub node: String,
    /// `acquired`, `lost`, `write_accepted`, …
    pub kind: String,
    /// The node's wall clock when it printed the event, µs since the epoch.
    pub t_us: u64,
    /// The `token` field, if any.
    pub token: Option<u64>,
    /// The whole line.
    pub json: Value,
}

impl Event {
    fn parse(line: &str) -> Option<Self> {
        let json: Value = serde_json::from_str(line).ok()?;
        Some(Self {
            node: json.get("node")?.as_str()?.to_owned(),
            kind: json.get("event")?.as_str()?.to_owned(),
            t_us: json.get("t_unix_us")?.as_u64()?,
            token: json.get("token").and_then(Value::as_u64),
            json,
        })
    }

    /// Is this `kind` from `node`?
    pub fn is(&self, kind: &str, node: &str) -> bool {
        self.kind == kind && self.node == node
    }
}

/// Events of all nodes in arrival order; waiters are woken on every new event.
#[derive(Default)]
pub struct EventLog {
    events: Mutex<Vec<Event>>,
    added: Condvar,
}

impl EventLog {
    /// A new, empty, shareable log.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn push(&self, e: Event) {
        self.events.lock().expect("event log poisoned").push(e);
        self.added.notify_all();
    }

    /// Number of events so far: pass it as `from` to wait only for later events.
    pub fn mark(&self) -> usize {
        self.events.lock().expect("event log poisoned").len()
    }

    /// A copy of every event so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().expect("event log poisoned").clone()
    }

    /// Waits up to `timeout` for an event at index ≥ `from` matching `pred`.
    pub fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        let mut events = self.events.lock().expect("event log poisoned");
        let mut next = from;
        loop {
            if let Some(e) = events[next.min(events.len())..].iter().find(|e| pred(e)) {
                return Some(e.clone());
            }
            next = events.len();
            let left = deadline.checked_duration_since(Instant::now())?;
            events = self
                .added
                .wait_timeout(events, left)
                .expect("event log poisoned")
                .0;
        }
    }
}

/// A running node process; SIGKILLed and reaped when dropped.
pub struct NodeProcess {
    /// The node id it was started with.
    pub id: String,
    child: Child,
    reaped: bool,
    reader: Option<JoinHandle<()>>,
    stderr_path: PathBuf,
}

impl NodeProcess {
    /// Starts `bin --node-id <id> <args…>`, feeding its events into `log`; its stderr goes to
    /// `stderr_dir/<id>.<pid>.stderr`.
    pub fn spawn(
        bin: &Path,
        id: &str,
        args: &[String],
        log: Arc<EventLog>,
        stderr_dir: &Path,
    ) -> std::io::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("--node-id").arg(id).args(args);
        Self::spawn_command(cmd, id, log, stderr_dir)
    }

    /// Starts `cmd` as node `id` (its flags or environment must say so), feeding its events
    /// into `log`; its stderr goes to `stderr_dir/<id>.<pid>.stderr`.
    pub fn spawn_command(
        mut cmd: Command,
        id: &str,
        log: Arc<EventLog>,
        stderr_dir: &Path,
    ) -> std::io::Result<Self> {
        let stderr_path = stderr_dir.join(format!("{id}.{}.stderr", crate::emit::unix_us()));
        let stderr = std::fs::File::create(&stderr_path)?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(e) = Event::parse(&line) {
                    log.push(e);
                }
            }
        });
        Ok(Self {
            id: id.to_owned(),
            child,
            reaped: false,
            reader: Some(reader),
            stderr_path,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig`, unless the child has already been reaped (so never to a recycled pid).
    pub fn signal(&mut self, sig: Signal) -> std::io::Result<()> {
        if self.reaped || self.child.try_wait()?.is_some() {
            self.reaped = true;
            return Ok(());
        }
        kill(Pid::from_raw(self.child.id() as i32), sig).map_err(std::io::Error::from)
    }

    /// Waits up to `timeout` for the process to exit; `Some(status)` if it did.
    pub fn wait_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::io::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                self.reaped = true;
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Its standard error so far (for failure messages).
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.signal(Signal::SIGKILL);
            let _ = self.child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Percentile `p` (0–100, nearest rank) of `values`; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}
