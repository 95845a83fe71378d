//! Keeps a PITR manager's archive current: ships what the archive lacks, tells the manager how
//! far the archive reaches (so local WAL retention never deletes an unarchived segment), and
//! mirrors local retention into the archive.
//!
//! Ordering per round: `sync` (data objects, then manifest) → `set_archived_upto` → archive
//! retention (manifest first, then objects). A round killed at any point leaves the archive
//! consistent and the next round completes the work (see `docs/journal-format.md`, "Archive").

use std::path::Path;
use std::time::Duration;

use crate::archive::{Archive, ArchiveError, ArchiveLag, ArchiveResult, SyncReport};
use crate::pitr::backup::list_backups;
use crate::segment::list_segments;

/// Default time between archive rounds when the manager runs them in the background.
pub const DEFAULT_ARCHIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default archive timeout: a record waits at most about this long in the active segment
/// before the segment is closed and shipped.
pub const DEFAULT_ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// What one archive round did.
#[derive(Debug, Clone, Default)]
pub struct ArchiveRound {
    /// The upload half.
    pub sync: SyncReport,
    /// Segments and backups removed from the archive because local retention dropped them.
    pub segments_deleted: u64,
    /// Backups removed from the archive.
    pub backups_deleted: u64,
    /// Segments the archive lists after the round.
    pub archived_segments: u64,
    /// How far the archive trails the local journal after the round.
    pub lag: Option<ArchiveLag>,
}

/// Runs one archive round over a journal's directories (what the manager's background task
/// does every `archive_interval`; callable directly, e.g. before a planned shutdown).
pub async fn archive_round(
    archive: &Archive,
    wal_dir: &Path,
    backup_dir: &Path,
) -> ArchiveResult<ArchiveRound> {
    let sync = archive.sync(wal_dir, backup_dir).await?;
    let manifest = archive.manifest().await?;

    // Mirror local retention: the archive keeps what the local side still keeps (the oldest
    // local segment on, every local backup), so a total loss recovers exactly what a local
    // recovery could have, minus the unarchived tail.
    let (first_local, keep_backups) = {
        let (w, b) = (wal_dir.to_path_buf(), backup_dir.to_path_buf());
        tokio::task::spawn_blocking(move || -> crate::Result<_> {
            let first = list_segments(&w)?.first().map(|s| s.0);
            let names: Vec<String> = list_backups(&b)?
                .0
                .iter()
                .filter_map(|b| b.path.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            Ok((first, names))
        })
        .await
        .map_err(|e| {
            ArchiveError::Journal(crate::Error::TaskFailed {
                task: "archive listing",
                reason: e.to_string(),
            })
        })??
    };
    let mut round = ArchiveRound {
        archived_segments: manifest.segments.len() as u64,
        sync,
        ..ArchiveRound::default()
    };
    // Only prune when the local side has something to mirror: an empty local directory (e.g.
    // mid-restore) must never empty the archive.
    if let (Some(first), false) = (first_local, keep_backups.is_empty()) {
        let r = archive
            .apply_retention(crate::Lsn(first), &keep_backups)
            .await?;
        round.segments_deleted = r.segments_deleted;
        round.backups_deleted = r.backups_deleted;
        round.archived_segments = round.archived_segments.saturating_sub(r.segments_deleted);
    }
    round.lag = Some(archive.lag(wal_dir).await?);
    Ok(round)
}
