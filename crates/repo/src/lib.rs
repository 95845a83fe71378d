//! Lifeboat's backup repository: an encrypted, deduplicated, content-addressed store of
//! snapshots on any [`lifeboat_store::Store`].
//!
//! Write order makes every state after a crash consistent: packs, then the index naming them,
//! then the snapshot naming the trees. Nothing is ever overwritten; every write takes a lock
//! guard (`lock_shared` for adders, `lock_exclusive` for prune and repair) and passes its fence.
//! The byte format is specified in `docs/repository-format.md`; services use [`service`].
//!
//! ```no_run
//! # fn main() -> lifeboat_repo::Result<()> {
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! let store = lifeboat_store::Store::open("/tmp/repo", &Default::default())?;
//! let repo = lifeboat_repo::Repository::init(store, rt.handle().clone(), b"pw", Default::default())?;
//! let lock = repo.lock_shared("backup", &Default::default())?;
//! let opts = lifeboat_repo::BackupOptions::new(vec!["/etc".into()]);
//! let done = lifeboat_repo::backup::run(&repo, &lock, &opts, &lifeboat_repo::progress::NoProgress)?;
//! lock.release()?;
//! println!("snapshot {}", done.id);
//! # Ok(()) }
//! ```

pub mod backup;
pub mod check;
pub mod chunker;
pub mod compress;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod diff;
pub mod error;
pub mod forget;
pub mod index;
pub mod keys;
pub mod lock;
pub mod pack;
pub mod progress;
pub mod prune;
pub mod reach;
pub mod repair;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod service;
pub mod snapshot;
pub mod stats;
#[cfg(test)]
mod test_support;
pub mod tree;
pub mod verified;
mod walk;

pub use backup::BackupOptions;
pub use error::{Error, Result};
pub use repository::{InitOptions, Repository};
pub use restore::RestoreOptions;
pub use walk::absolute as absolute_path;

/// This machine's host name (for snapshots and key slots).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The current user's name.
pub fn user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}
