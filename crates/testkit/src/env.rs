//! Test environment: tmpfs mounts for disk-full cases, and where the optional servers are.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// A tmpfs mounted for the lifetime of the guard; unmounted (lazily if busy) on drop.
pub struct TmpfsMount {
    /// The mount point.
    pub path: PathBuf,
}

impl TmpfsMount {
    /// Mounts a tmpfs with `options` (e.g. "size=4m" or "ro,size=1m") at `path`, or returns
    /// why it cannot (not root, no mount namespace privileges, ...).
    pub fn new(path: &Path, options: &str) -> Result<TmpfsMount, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("mkdir {path:?}: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs -o {options} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(TmpfsMount {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Locations to run a storage scenario against: `<tmp>/<label>-<name>`, plus a fresh prefix
/// `<LIFEBOAT_TEST_S3>/<label>-<name>-<pid>-<ns>` on the loopback S3 server when that variable
/// is set. Panics if `LIFEBOAT_REQUIRE_S3=1` and it is not (CI must not skip S3 silently).
pub fn test_locations(tmp: &Path, label: &str, name: &str) -> Vec<String> {
    let mut out = vec![tmp.join(format!("{label}-{name}")).display().to_string()];
    match std::env::var("LIFEBOAT_TEST_S3") {
        Ok(base) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            out.push(format!(
                "{}/{label}-{name}-{}-{nanos}",
                base.trim_end_matches('/'),
                std::process::id()
            ));
        }
        Err(_) => {
            assert!(
                std::env::var("LIFEBOAT_REQUIRE_S3").as_deref() != Ok("1"),
                "LIFEBOAT_REQUIRE_S3=1 but LIFEBOAT_TEST_S3 is not set"
            );
            eprintln!("S3 part skipped: set LIFEBOAT_TEST_S3 (see crates/store/S3_TEST_SERVER.md)");
        }
    }
    out
}
