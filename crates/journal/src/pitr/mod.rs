//! Point-in-time recovery on top of the journal: a generic state machine whose operations are
//! logged durably, base backups stamped with their LSN, retention, and recovery to a
//! timestamp, an LSN or the latest record. See `docs/journal-format.md`.
//!
//! ```
//! use lifeboat_journal::catalog::{Catalog, CatalogOp};
//! use lifeboat_journal::{PitrConfig, PitrManager, RecoveryTarget};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let config = PitrConfig::builder()
//!     .wal_directory(dir.path().join("wal"))
//!     .backup_directory(dir.path().join("backups"))
//!     .build()?;
//! let pitr = PitrManager::<Catalog>::open(config).await?;
//! let lsn = pitr.log_change(CatalogOp::UserCreated { name: "ada".into() }).await?; // durable
//! let backup = pitr.create_base_backup().await?;
//! pitr.log_change(CatalogOp::UserDeleted { name: "ada".into() }).await?;
//! let r = pitr.recover(RecoveryTarget::Lsn(lsn)).await?;
//! assert!(r.state.users.contains("ada"));
//! assert_eq!(r.base_backup_id, Some(backup.id));
//! # Ok::<(), lifeboat_journal::Error>(())
//! # }).unwrap();
//! ```

pub mod backup;
pub mod config;
pub mod manager;
pub mod recovery;
pub mod state;

pub use backup::BaseBackup;
pub use config::{PitrConfig, PitrConfigBuilder};
pub use manager::{PitrManager, WalStats};
pub use recovery::{
    recover_from_dirs, recover_with, Recovery, RecoveryOptions, RecoveryTarget, CANCEL_CHECK_EVERY,
};
pub use state::{decode_op, encode_op, StateMachine};
