//! Keeps a PITR manager's archive current: ships what the archive lacks, tells the manager how
//! far the archive reaches (so local WAL retention never deletes an unarchived segment), and
//! mirrors local retention into the archive.
//!
//! Ordering per round: `sync` (data objects, then manifest) → `set_archived_upto` → archive
//! retention (manifest first, then objects). A round killed at any point leaves the archive
//! consistent and the next round completes the work (see `docs/journal-format.md`, "Archive").

use std::time::Duration;

use crate::archive::{Archive, ArchiveError, ArchiveLag, ArchiveResult, SyncReport};
use crate::pitr::backup::list_backups;
use crate::pitr::{PitrManager, StateMachine};
use crate::segment::list_segments;

/// Default time between archive rounds when the manager runs them in the background.
pub const DEFAULT_ARCHIVE_INTERVAL: Duration = Duration::from_secs(10);

/// What one archive round did.
#[derive(Debug, Clone, Default)]
pub struct ArchiveRound {
    /// The upload half.
    pub sync: SyncReport,
    /// Segments and backups removed from the archive because local retention dropped them.
    pub segments_deleted: u64,
    /// Backups removed from the archive.
    pub backups_deleted: u64,
    /// How far the archive trails the local journal after the round.
    pub lag: Option<ArchiveLag>,
}

/// Runs one archive round for `pitr`.
pub async fn archive_round<S: StateMachine>(
    pitr: &PitrManager<S>,
    archive: &Archive,
) -> ArchiveResult<ArchiveRound> {
    let cfg = pitr.config();
    let (wal_dir, backup_dir) = (cfg.wal_directory.clone(), cfg.backup_directory.clone());
    let sync = archive.sync(&wal_dir, &backup_dir).await?;
    let manifest = archive.manifest().await?;
    pitr.set_archived_upto(sync.archived_upto_lsn, manifest.segments.len() as u64);

    // Mirror local retention: the archive keeps what the local side still keeps (the oldest
    // local segment on, every local backup), so a total loss recovers exactly what a local
    // recovery could have, minus the unarchived tail.
    let first_local = {
        let dir = wal_dir.clone();
        tokio::task::spawn_blocking(move || list_segments(&dir))
            .await
            .map_err(|e| ArchiveError::Journal(crate::Error::Poisoned(e.to_string())))??
            .first()
            .map(|s| s.0)
    };
    let backups = {
        let dir = backup_dir.clone();
        tokio::task::spawn_blocking(move || list_backups(&dir))
            .await
            .map_err(|e| ArchiveError::Journal(crate::Error::Poisoned(e.to_string())))??
            .0
    };
    let keep_backups: Vec<String> = backups
        .iter()
        .filter_map(|b| b.path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut round = ArchiveRound {
        sync,
        ..ArchiveRound::default()
    };
    // Only prune when the local side has something to mirror: an empty local directory (e.g.
    // mid-restore) must never empty the archive.
    if let (Some(first), false) = (first_local, keep_backups.is_empty()) {
        let r = archive.apply_retention(first, &keep_backups).await?;
        round.segments_deleted = r.segments_deleted;
        round.backups_deleted = r.backups_deleted;
    }
    round.lag = Some(archive.lag(&wal_dir).await?);
    Ok(round)
}
