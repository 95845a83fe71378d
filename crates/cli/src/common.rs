//! What every command shares: repository location, password, output mode.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use lifeboat_repo::lock::{ExclusiveLock, LockOptions, SharedLock};
use lifeboat_repo::Repository;
use lifeboat_store::{Store, StoreOptions};
use lifeboat_types::CancelToken;
use tokio::runtime::Runtime;

/// Options accepted by every command.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Repository location: a path, file:///path, or s3://bucket/prefix (endpoint in
    /// --s3-endpoint).
    #[arg(short = 'r', long = "repo", env = "LIFEBOAT_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Read the password from this file (first line).
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Use this file's raw bytes as the key (instead of a password).
    #[arg(long, env = "LIFEBOAT_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or informational output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// S3 endpoint URL (else AWS_ENDPOINT_URL).
    #[arg(long, env = "LIFEBOAT_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 region (else AWS_REGION).
    #[arg(long, global = true)]
    pub s3_region: Option<String>,
    /// Keep retrying this long (e.g. "10m") while another process holds a conflicting lock.
    #[arg(long, env = "LIFEBOAT_RETRY_LOCK", global = true, value_parser = humantime::parse_duration, default_value = "0s")]
    pub retry_lock: Duration,
    /// Expiry of this process's lock: refreshed every sixth of it, and breakable by others
    /// once not refreshed for this long (by the store's clock).
    #[arg(long, env = "LIFEBOAT_LOCK_EXPIRY", global = true, value_parser = humantime::parse_duration, default_value = "15m")]
    pub lock_expiry: Duration,
    /// restore and check take no lock (and check records nothing): for read-only repositories.
    #[arg(long, global = true)]
    pub no_lock: bool,
}

impl GlobalArgs {
    /// The repository location or a clear error.
    pub fn location(&self) -> Result<&str> {
        match &self.repo {
            Some(r) => Ok(r),
            None => bail!("no repository given: use --repo or set LIFEBOAT_REPOSITORY"),
        }
    }

    /// Opens the store at the repository location.
    pub fn store(&self) -> Result<Store> {
        let location = self.location()?;
        let opts = StoreOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            ..Default::default()
        };
        Store::open(location, &opts).with_context(|| format!("open repository location {location}"))
    }

    /// The secret: key file bytes, password file, or LIFEBOAT_PASSWORD.
    pub fn secret(&self) -> Result<Vec<u8>> {
        secret_from(
            self.key_file.as_deref(),
            self.password_file.as_deref(),
            "LIFEBOAT_PASSWORD",
            "set LIFEBOAT_PASSWORD or LIFEBOAT_PASSWORD_FILE, or pass --password-file / --key-file",
        )
    }

    /// Opens a second repository (copy target, init source) with its own secret.
    pub fn open_other(&self, rt: &Runtime, other: &OtherRepo, role: &str) -> Result<Repository> {
        let opts = StoreOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            ..Default::default()
        };
        let store = Store::open(&other.location, &opts)
            .with_context(|| format!("open {role} repository location {}", other.location))?;
        let secret = secret_from(
            other.key_file.as_deref(),
            other.password_file.as_deref(),
            other.password_env,
            &format!(
                "set {} or pass a password or key file for the {role} repository",
                other.password_env
            ),
        )?;
        Repository::open(store, rt.handle().clone(), &secret)
            .with_context(|| format!("open {role} repository {}", other.location))
    }

    fn lock_options(&self) -> LockOptions {
        LockOptions {
            expiry: self.lock_expiry,
            retry_for: self.retry_lock,
        }
    }

    /// Takes a shared repository lock with the global lock options.
    pub fn lock_shared(&self, repo: &Repository, operation: &str) -> Result<SharedLock> {
        Ok(repo.lock_shared(operation, &self.lock_options())?)
    }

    /// Takes an exclusive repository lock with the global lock options.
    pub fn lock_exclusive(&self, repo: &Repository, operation: &str) -> Result<ExclusiveLock> {
        Ok(repo.lock_exclusive(operation, &self.lock_options())?)
    }

    /// A shared lock for a read-only command, unless `--no-lock` was given.
    pub fn read_lock(&self, repo: &Repository, operation: &str) -> Result<Option<SharedLock>> {
        if self.no_lock {
            return Ok(None);
        }
        self.lock_shared(repo, operation).map(Some)
    }

    /// A cancellation token set by the first SIGINT or SIGTERM. Handlers are registered
    /// before this returns, so an early signal is never lost.
    pub fn cancel_on_signal(&self, rt: &tokio::runtime::Handle) -> Result<CancelToken> {
        let cancel = CancelToken::new();
        let (mut int, mut term) = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })?;
        let flag = cancel.clone();
        rt.spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            flag.cancel();
            // A second signal means "now": every write path is crash-safe, so exiting at once
            // leaves a consistent repository (an uploaded pack may stay unindexed).
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("second interrupt: exiting without waiting for a safe point");
            std::process::exit(130);
        });
        Ok(cancel)
    }

    /// Human output allowed?
    pub fn chatty(&self) -> bool {
        !self.quiet && !self.json
    }

    /// Progress bars only on a terminal.
    pub fn show_progress(&self) -> bool {
        self.chatty() && std::io::stderr().is_terminal()
    }
}

/// Where and how to open a second repository.
pub struct OtherRepo {
    /// Its location.
    pub location: String,
    /// Its password file.
    pub password_file: Option<PathBuf>,
    /// Its key file.
    pub key_file: Option<PathBuf>,
    /// Environment variable holding its password.
    pub password_env: &'static str,
}

/// A secret from a key file, a password file (first line) or an environment variable.
fn secret_from(
    key_file: Option<&std::path::Path>,
    password_file: Option<&std::path::Path>,
    env: &str,
    hint: &str,
) -> Result<Vec<u8>> {
    // An empty secret is never a real one (usually an unset `$VAR`): say so instead of
    // trying it and reporting "wrong password".
    if let Some(k) = key_file {
        let bytes = std::fs::read(k).with_context(|| format!("read key file {}", k.display()))?;
        if bytes.is_empty() {
            bail!("no password given: the key file {} is empty", k.display());
        }
        return Ok(bytes);
    }
    if let Some(f) = password_file {
        let s = std::fs::read_to_string(f)
            .with_context(|| format!("read password file {}", f.display()))?;
        let first = s.lines().next().unwrap_or("");
        if first.is_empty() {
            bail!(
                "no password given: the first line of the password file {} is empty",
                f.display()
            );
        }
        return Ok(first.as_bytes().to_vec());
    }
    match std::env::var_os(env) {
        Some(p) if p.is_empty() => bail!("no password given: {env} is set but empty; {hint}"),
        Some(p) => Ok(p.into_encoded_bytes()),
        None => bail!("no password given: {hint}"),
    }
}

/// A runtime plus an opened repository.
pub struct Session {
    /// Kept alive for the repository's store calls.
    pub _rt: Runtime,
    /// The repository.
    pub repo: Repository,
}

/// Builds the runtime the store's async calls run on.
pub fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start async runtime")
}

/// Opens the repository named by the global options.
pub fn open(g: &GlobalArgs) -> Result<Session> {
    let rt = runtime()?;
    let store = g.store()?;
    let secret = g.secret()?;
    let repo = Repository::open(store, rt.handle().clone(), &secret)?;
    Ok(Session { _rt: rt, repo })
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Sets up logging to stderr.
pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
        .unwrap_or_else(|_| level.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
