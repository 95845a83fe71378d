//! Point-in-time recovery on top of the journal: a generic state machine whose operations are
//! logged durably, base backups stamped with their LSN, retention, and recovery to a
//! timestamp, an LSN or the latest record. See `docs/journal-format.md`.

pub mod backup;
pub mod config;
pub mod manager;
pub mod recovery;
pub mod state;

pub use backup::BaseBackup;
pub use config::{PitrConfig, PitrConfigBuilder};
pub use manager::{PitrManager, WalStats};
pub use recovery::{recover_from_dirs, recover_with, Recovery, RecoveryTarget};
pub use state::{decode_op, encode_op, StateMachine};
