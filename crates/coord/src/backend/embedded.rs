//! The embedded backend: an OS file lock per namespace plus an fsync'd token counter.
//!
//! Files in the directory, per namespace `ns`:
//!
//! * `ns.lock` — empty; the holder process keeps an exclusive `flock` on it for as long as
//!   it leads. The kernel drops the lock the moment the process dies, so a dead holder is
//!   detected at once (no TTL to wait out). Only for processes on one host: not on NFS.
//! * `ns.token` — `lifeboat-coord-token v1 <n> <crc32c>`: the last token granted. Read,
//!   incremented and made durable (temp + fsync + rename + fsync(dir)) *while holding the
//!   lock* and before the grant is returned, so tokens increase across restarts and crashes.
//! * `ns.holder` — JSON `{node_id, pid, token}` of the holder, for `current()`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Grant, LeaderInfo};
use crate::error::{Error, Result};
use lifeboat_types::{FencingToken, NodeId};

const BACKEND: &str = "embedded";
const TOKEN_MAGIC: &str = "lifeboat-coord-token v1";
/// How often a waiting campaigner re-tries the lock: bounds hand-over latency after a
/// release or a holder's death.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The holder record in `<ns>.holder`.
#[derive(Debug, Serialize, Deserialize)]
struct HolderRecord {
    node_id: NodeId,
    pid: u32,
    token: u64,
}

struct Held {
    _lock: Flock<File>,
    node: NodeId,
    token: FencingToken,
}

/// Leader election among processes of one host, through files in one directory.
///
/// Each instance has its own lock file descriptors, so two instances (even in one process)
/// compete like two processes would.
pub struct EmbeddedBackend {
    dir: PathBuf,
    held: Arc<Mutex<HashMap<String, Held>>>,
}

impl std::fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBackend")
            .field("dir", &self.dir)
            .finish()
    }
}

impl EmbeddedBackend {
    /// Uses `dir` (created if missing) for the lock, token and holder files.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            held: Arc::default(),
        })
    }

    /// The last token granted in `namespace` (0 if none), read from the counter file.
    pub fn last_token(&self, namespace: &str) -> Result<u64> {
        read_token(&self.path(namespace, "token"))
    }

    fn path(&self, namespace: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{namespace}.{ext}"))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Self) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = Self {
            dir: self.dir.clone(),
            held: self.held.clone(),
        };
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| Error::unavailable(BACKEND, "file operation", e))?
    }

    fn try_lock(&self, namespace: &str) -> Result<Option<Flock<File>>> {
        let path = self.path(namespace, "lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(Error::io("lock", &path, e.into())),
        }
    }

    /// Takes the lock and durably bumps the counter. Returns the lock *without* recording
    /// it in `held`: the async caller records it, so if the caller is cancelled meanwhile
    /// (e.g. a timeout while fsync is slow) the lock is dropped — released — with the
    /// result instead of being held by nobody's term forever.
    fn acquire_sync(&self, namespace: &str, node: &NodeId) -> Result<Option<(Flock<File>, u64)>> {
        if self
            .held
            .lock()
            .expect("embedded mutex poisoned")
            .contains_key(namespace)
        {
            return Ok(None);
        }
        let Some(lock) = self.try_lock(namespace)? else {
            return Ok(None);
        };
        let token_path = self.path(namespace, "token");
        let token = read_token(&token_path)? + 1;
        write_durably(&self.dir, &token_path, token_line(token).as_bytes())?;
        let record = HolderRecord {
            node_id: node.clone(),
            pid: std::process::id(),
            token,
        };
        let json = serde_json::to_vec(&record).expect("holder record serialises");
        // The holder file is informational: rename for atomicity, no fsync needed.
        write_atomically(&self.path(namespace, "holder"), &json)?;
        Ok(Some((lock, token)))
    }

    fn current_sync(&self, namespace: &str) -> Result<Option<LeaderInfo>> {
        if let Some(h) = self
            .held
            .lock()
            .expect("embedded mutex poisoned")
            .get(namespace)
        {
            return Ok(Some(LeaderInfo {
                node_id: h.node.clone(),
                token: h.token,
                expires_in: None,
            }));
        }
        if let Some(probe) = self.try_lock(namespace)? {
            // Nobody holds it (a dead holder's lock is gone with the process).
            drop(probe);
            return Ok(None);
        }
        match read_holder(&self.path(namespace, "holder")) {
            Some(r) => Ok(Some(LeaderInfo {
                node_id: r.node_id,
                token: FencingToken(r.token),
                expires_in: None,
            })),
            // Locked, but the holder has not written its record yet: report the token.
            None => Ok(Some(LeaderInfo {
                node_id: NodeId::new("(acquiring)"),
                token: FencingToken(read_token(&self.path(namespace, "token"))?),
                expires_in: None,
            })),
        }
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn transferable_terms(&self) -> bool {
        // The term is our flock: it lasts exactly as long as this instance holds it.
        false
    }

    async fn try_acquire(
        &self,
        namespace: &str,
        node: &NodeId,
        lease: Duration,
    ) -> Result<Option<Grant>> {
        let (ns, n) = (namespace.to_owned(), node.clone());
        let Some((lock, token)) = self.blocking(move |me| me.acquire_sync(&ns, &n)).await? else {
            return Ok(None);
        };
        let token = FencingToken(token);
        self.held.lock().expect("embedded mutex poisoned").insert(
            namespace.to_owned(),
            Held {
                _lock: lock,
                node: node.clone(),
                token,
            },
        );
        Ok(Some(Grant { token, lease }))
    }

    async fn renew(
        &self,
        namespace: &str,
        node: &NodeId,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Duration> {
        let ours = self
            .held
            .lock()
            .expect("embedded mutex poisoned")
            .get(namespace)
            .is_some_and(|h| &h.node == node && h.token == token);
        // We hold the lock; also check nobody replaced the holder record (e.g. the
        // directory was wiped and someone else acquired through a fresh lock file).
        let record = read_holder(&self.path(namespace, "holder"));
        if ours && record.is_some_and(|r| &r.node_id == node && r.token == token.0) {
            Ok(lease)
        } else {
            Err(Error::NotLeader {
                node: node.clone(),
                token,
            })
        }
    }

    async fn resign(&self, namespace: &str, node: &NodeId, token: FencingToken) -> Result<bool> {
        let mut held = self.held.lock().expect("embedded mutex poisoned");
        match held.get(namespace) {
            Some(h) if &h.node == node && h.token == token => {
                // Remove the record before unlocking so nobody reads us as holder after.
                let _ = std::fs::remove_file(self.path(namespace, "holder"));
                held.remove(namespace);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn current(&self, namespace: &str) -> Result<Option<LeaderInfo>> {
        let ns = namespace.to_owned();
        self.blocking(move |me| me.current_sync(&ns)).await
    }

    async fn wait_for_change(&self, _namespace: &str, timeout: Duration) -> Result<()> {
        // The kernel gives no notification when a flock is released; a short poll keeps
        // hand-over (and takeover after a holder's death) around POLL_INTERVAL.
        tokio::time::sleep(timeout.min(POLL_INTERVAL)).await;
        Ok(())
    }
}

fn token_line(token: u64) -> String {
    let body = format!("{TOKEN_MAGIC} {token}");
    format!("{body} {:08x}\n", crc32c::crc32c(body.as_bytes()))
}

fn read_token(path: &Path) -> Result<u64> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("read token file", path, e)),
    };
    let corrupt = |why: &str| Error::Corrupt {
        backend: BACKEND,
        message: format!(
            "token file {} is unreadable ({why}); restore it or set it to a value above every \
             token ever issued (`{TOKEN_MAGIC} <n> <crc32c>`), never lower",
            path.display()
        ),
    };
    let line = text.trim_end();
    let (body, crc) = line
        .rsplit_once(' ')
        .ok_or_else(|| corrupt("no checksum"))?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| corrupt("bad checksum field"))?;
    if crc32c::crc32c(body.as_bytes()) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    body.strip_prefix(TOKEN_MAGIC)
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| corrupt("bad header or number"))
}

fn read_holder(path: &Path) -> Option<HolderRecord> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))
}

/// temp + fsync(file) + rename + fsync(dir): after a crash the file holds the old or the
/// new value, never a torn one, and once this returns the new value survives power loss.
fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    // fsync 1: the new counter's bytes are on disk before the name points to them.
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
    // fsync 2: the rename itself is durable, so a restart never sees the older counter.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}
