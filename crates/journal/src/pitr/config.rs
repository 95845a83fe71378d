//! `PitrConfig`: where the WAL and base backups live, how often backups are taken and what is
//! retained; built with a validating builder, defaults overridable from environment variables.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Smallest accepted WAL segment size: a segment must hold its header and a few records.
pub const MIN_SEGMENT_SIZE: u64 = 4 * 1024;
/// Largest accepted WAL segment size: segments are read whole during recovery.
pub const MAX_SEGMENT_SIZE: u64 = 1024 * 1024 * 1024;

/// Environment variable for [`PitrConfig::wal_directory`].
pub const ENV_WAL_DIR: &str = "PITR_WAL_DIR";
/// Environment variable for [`PitrConfig::backup_directory`].
pub const ENV_BACKUP_DIR: &str = "PITR_BACKUP_DIR";
/// Environment variable for [`PitrConfig::base_backup_interval`], in seconds.
pub const ENV_BACKUP_INTERVAL_SECS: &str = "PITR_BACKUP_INTERVAL_SECS";
/// Environment variable for [`PitrConfig::wal_retention`], in seconds.
pub const ENV_WAL_RETENTION_SECS: &str = "PITR_WAL_RETENTION_SECS";
/// Environment variable for [`PitrConfig::archive`] (also read by `lifeboat journal`).
pub const ENV_ARCHIVE: &str = "PITR_ARCHIVE";
/// Environment variable for [`PitrConfig::archive_key_file`] (also read by `lifeboat journal`).
pub const ENV_ARCHIVE_KEY_FILE: &str = "PITR_ARCHIVE_KEY_FILE";
/// Environment variable for [`PitrConfig::archive_timeout`], in seconds (0 disables).
pub const ENV_ARCHIVE_TIMEOUT_SECS: &str = "PITR_ARCHIVE_TIMEOUT_SECS";
/// Environment variable for [`PitrConfig::archive_interval`], in seconds.
pub const ENV_ARCHIVE_INTERVAL_SECS: &str = "PITR_ARCHIVE_INTERVAL_SECS";

/// Validated PITR settings (build with [`PitrConfig::builder`] or [`PitrConfig::from_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PitrConfig {
    /// Directory of WAL segments.
    pub wal_directory: PathBuf,
    /// Directory of base-backup files.
    pub backup_directory: PathBuf,
    /// Archive location (`s3://…` or a local path) that closed segments and backups are
    /// shipped to; stored here, wired by the archive layer.
    pub archive: Option<String>,
    /// Key file for the archive's encryption, if any.
    pub archive_key_file: Option<PathBuf>,
    /// How often the background task ships closed segments and new backups to the archive
    /// (also right after every base backup). Bounds the archive lag of closed segments.
    pub archive_interval: Duration,
    /// With an archive: close the active segment once it has held records this long, so the
    /// archive never trails by much more than this plus `archive_interval` even when traffic
    /// is too low to fill segments (PostgreSQL's `archive_timeout`). `None` disables.
    pub archive_timeout: Option<Duration>,
    /// How often the background task takes a base backup; `None` disables the task.
    pub base_backup_interval: Option<Duration>,
    /// Closed segments older than this may be deleted (subject to the backups' needs).
    pub wal_retention: Duration,
    /// WAL segment size in bytes.
    pub wal_segment_size: u64,
    /// Base backups kept (oldest deleted first).
    pub backup_retention_count: usize,
    /// Compress base backups with zstd.
    pub compress_backups: bool,
    /// Verify the WAL's hash chain when a recovery starts replaying (cheap: from the backup's
    /// anchor on); switching it off only skips the anchor comparison.
    pub verify_wal: bool,
    /// Preallocate segments (on by default; tests of tiny filesystems may switch it off).
    pub preallocate: bool,
}

/// Builder for [`PitrConfig`]; `build` validates.
#[derive(Debug, Clone)]
pub struct PitrConfigBuilder {
    cfg: PitrConfig,
}

impl Default for PitrConfigBuilder {
    fn default() -> Self {
        PitrConfigBuilder {
            cfg: PitrConfig {
                wal_directory: PathBuf::from("./pitr/wal"),
                backup_directory: PathBuf::from("./pitr/backups"),
                archive: None,
                archive_key_file: None,
                archive_interval: crate::archiving::DEFAULT_ARCHIVE_INTERVAL,
                archive_timeout: Some(crate::archiving::DEFAULT_ARCHIVE_TIMEOUT),
                base_backup_interval: Some(Duration::from_secs(3600)),
                wal_retention: Duration::from_secs(7 * 86400),
                wal_segment_size: 16 * 1024 * 1024,
                backup_retention_count: 24,
                compress_backups: true,
                verify_wal: true,
                preallocate: true,
            },
        }
    }
}

impl PitrConfig {
    /// A builder with the defaults (`./pitr/wal`, `./pitr/backups`, hourly backups, 7-day WAL
    /// retention, 16 MiB segments, 24 backups, compression and verification on).
    pub fn builder() -> PitrConfigBuilder {
        PitrConfigBuilder::default()
    }

    /// The defaults overridden by `PITR_WAL_DIR`, `PITR_BACKUP_DIR`,
    /// `PITR_BACKUP_INTERVAL_SECS` and `PITR_WAL_RETENTION_SECS`, validated.
    pub fn from_env() -> Result<PitrConfig> {
        PitrConfig::builder().env_overrides()?.build()
    }
}

fn env_secs(var: &str) -> Result<Option<Duration>> {
    match std::env::var(var) {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(|s| Some(Duration::from_secs(s)))
            .map_err(|e| {
                Error::Config(format!(
                    "{var}={v:?} is not a whole number of seconds ({e})"
                ))
            }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(Error::Config(format!("{var}: {e}"))),
    }
}

fn env_path(var: &str) -> Result<Option<PathBuf>> {
    match std::env::var_os(var) {
        Some(v) if v.is_empty() => Err(Error::Config(format!("{var} is set but empty"))),
        Some(v) => Ok(Some(PathBuf::from(v))),
        None => Ok(None),
    }
}

impl PitrConfigBuilder {
    /// Applies the `PITR_*` environment variables over the current values; a value that does
    /// not parse is an error naming the variable.
    pub fn env_overrides(mut self) -> Result<Self> {
        if let Some(p) = env_path(ENV_WAL_DIR)? {
            self.cfg.wal_directory = p;
        }
        if let Some(p) = env_path(ENV_BACKUP_DIR)? {
            self.cfg.backup_directory = p;
        }
        if let Some(d) = env_secs(ENV_BACKUP_INTERVAL_SECS)? {
            self.cfg.base_backup_interval = Some(d);
        }
        if let Some(d) = env_secs(ENV_WAL_RETENTION_SECS)? {
            self.cfg.wal_retention = d;
        }
        if let Some(p) = env_path(ENV_ARCHIVE)? {
            self.cfg.archive = Some(p.to_string_lossy().into_owned());
        }
        if let Some(p) = env_path(ENV_ARCHIVE_KEY_FILE)? {
            self.cfg.archive_key_file = Some(p);
        }
        if let Some(d) = env_secs(ENV_ARCHIVE_TIMEOUT_SECS)? {
            self.cfg.archive_timeout = (!d.is_zero()).then_some(d);
        }
        if let Some(d) = env_secs(ENV_ARCHIVE_INTERVAL_SECS)? {
            self.cfg.archive_interval = d;
        }
        Ok(self)
    }

    /// Sets the WAL directory.
    pub fn wal_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cfg.wal_directory = dir.into();
        self
    }

    /// Sets the base-backup directory.
    pub fn backup_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cfg.backup_directory = dir.into();
        self
    }

    /// Sets the archive location (`s3://bucket/prefix` or a local path).
    pub fn archive(mut self, location: impl Into<String>) -> Self {
        self.cfg.archive = Some(location.into());
        self
    }

    /// Sets how often closed segments and new backups are shipped to the archive.
    pub fn archive_interval(mut self, every: Duration) -> Self {
        self.cfg.archive_interval = every;
        self
    }

    /// Sets (or with `None` disables) the archive timeout: the longest a record waits in the
    /// active segment before the segment is closed for archiving.
    pub fn archive_timeout(mut self, after: Option<Duration>) -> Self {
        self.cfg.archive_timeout = after;
        self
    }

    /// Sets the archive's key file.
    pub fn archive_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cfg.archive_key_file = Some(path.into());
        self
    }

    /// Sets how often a base backup is taken in the background (must be > 0).
    pub fn base_backup_interval(mut self, every: Duration) -> Self {
        self.cfg.base_backup_interval = Some(every);
        self
    }

    /// Disables the background backup task (backups only on `create_base_backup`).
    pub fn no_background_backups(mut self) -> Self {
        self.cfg.base_backup_interval = None;
        self
    }

    /// Sets the minimum age of closed segments before they may be deleted.
    pub fn wal_retention(mut self, age: Duration) -> Self {
        self.cfg.wal_retention = age;
        self
    }

    /// Sets the WAL segment size in bytes (4 KiB ..= 1 GiB).
    pub fn wal_segment_size(mut self, bytes: u64) -> Self {
        self.cfg.wal_segment_size = bytes;
        self
    }

    /// Sets how many base backups are kept (≥ 1).
    pub fn backup_retention_count(mut self, n: usize) -> Self {
        self.cfg.backup_retention_count = n;
        self
    }

    /// Turns zstd compression of base backups on or off.
    pub fn compress_backups(mut self, on: bool) -> Self {
        self.cfg.compress_backups = on;
        self
    }

    /// Turns the chain-anchor check during recovery on or off.
    pub fn verify_wal(mut self, on: bool) -> Self {
        self.cfg.verify_wal = on;
        self
    }

    /// Turns segment preallocation on or off.
    pub fn preallocate(mut self, on: bool) -> Self {
        self.cfg.preallocate = on;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<PitrConfig> {
        let c = self.cfg;
        let bad = |m: String| Err(Error::Config(m));
        if c.wal_directory.as_os_str().is_empty() {
            return bad("wal_directory is empty".into());
        }
        if c.backup_directory.as_os_str().is_empty() {
            return bad("backup_directory is empty".into());
        }
        if c.wal_directory == c.backup_directory {
            return bad(format!(
                "wal_directory and backup_directory are both {}: use two directories",
                c.wal_directory.display()
            ));
        }
        if c.base_backup_interval == Some(Duration::ZERO) {
            return bad("base_backup_interval is zero: use a positive interval (or no_background_backups())".into());
        }
        if c.backup_retention_count == 0 {
            return bad(
                "backup_retention_count is 0: at least one base backup must be kept".into(),
            );
        }
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&c.wal_segment_size) {
            return bad(format!(
                "wal_segment_size {} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE} bytes",
                c.wal_segment_size
            ));
        }
        if c.archive_timeout == Some(Duration::ZERO) {
            return bad(
                "archive_timeout is zero: use a positive duration, or None to disable".into(),
            );
        }
        if c.archive.is_some() && c.archive_interval.is_zero() {
            return bad("archive_interval is zero: use a positive interval".into());
        }
        if c.archive_key_file.is_some() && c.archive.is_none() {
            return bad(
                "archive_key_file is set but no archive location: set archive(...) too".into(),
            );
        }
        if c.archive.as_deref() == Some("") {
            return bad("archive location is empty".into());
        }
        Ok(c)
    }
}
