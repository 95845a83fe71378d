//! `lifeboat journal …`: inspect, verify and recover a PITR journal, from its local
//! directories or from its archive after the local copy is gone.
//!
//! Everything here is read-only on the journal: no writer lock is taken, so it is safe to run
//! next to the service that owns the journal (a record being appended at that moment is simply
//! not seen yet). `recover` decodes operations with the catalog state machine
//! ([`lifeboat_journal::catalog`]); services with their own state machine call
//! `lifeboat_journal::pitr::recover_from_dirs::<S>` instead.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use lifeboat_journal::archive::{Archive, ArchiveKey};
use lifeboat_journal::catalog::{Catalog, CatalogOp};
use lifeboat_journal::pitr::backup::list_backups;
use lifeboat_journal::pitr::{decode_op, recover_with, RecoveryOptions, RecoveryTarget};
use lifeboat_journal::reader::journal_segments;
use lifeboat_journal::{iter_from, verify, Error as JournalError, Lsn, RawLsn};
use serde::Serialize;

use crate::common::{print_json, runtime, GlobalArgs};
use crate::exit;

/// Arguments of `journal`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: SourceArgs,
    #[command(subcommand)]
    command: Sub,
}

/// Where the journal is: local directories, or an archive location.
#[derive(clap::Args)]
struct SourceArgs {
    /// The journal's WAL directory.
    #[arg(long, env = "PITR_WAL_DIR", global = true)]
    wal_dir: Option<PathBuf>,
    /// The journal's base-backup directory.
    #[arg(long, env = "PITR_BACKUP_DIR", global = true)]
    backup_dir: Option<PathBuf>,
    /// Read from this archive (a local path or s3://bucket/prefix) instead of the local
    /// directories: segments and backups are downloaded and verified into a temporary
    /// directory first.
    /// Takes precedence over --wal-dir/--backup-dir, except that `stats` uses --wal-dir to
    /// report how far the archive trails the local journal.
    #[arg(long, env = "PITR_ARCHIVE", global = true)]
    archive: Option<String>,
    /// Key file of an encrypted archive (64 hex characters or 32 raw bytes).
    #[arg(long, env = "PITR_ARCHIVE_KEY_FILE", global = true)]
    archive_key_file: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// LSN range, segments, bytes, terms, backups, and archive state.
    Stats,
    /// Check every record's CRC and the hash chain, and every base backup's checksum.
    Verify {
        /// First LSN to verify (default: the oldest record present).
        #[arg(long, default_value_t = 1)]
        from_lsn: RawLsn,
    },
    /// List base backups, oldest first.
    Backups,
    /// Recover the (catalog) state to a point in time and write it as JSON.
    Recover {
        /// Recover every record stamped at or before this time (RFC 3339, e.g.
        /// 2026-11-22T05:00:00Z, or Unix nanoseconds).
        #[arg(long, group = "target")]
        to_time: Option<String>,
        /// Recover every record up to and including this LSN.
        #[arg(long, group = "target")]
        to_lsn: Option<u64>,
        /// Recover every durable record.
        #[arg(long, group = "target")]
        latest: bool,
        /// Write the recovered state here (JSON); `-` for standard output.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print records from an LSN on (payloads decoded as catalog operations when they are).
    Dump {
        /// First LSN to print.
        #[arg(long, default_value_t = 1)]
        from_lsn: RawLsn,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
}

/// Local directories to read, possibly restored from an archive into a temporary directory.
struct Source {
    wal_dir: PathBuf,
    backup_dir: PathBuf,
    archive: Option<Archive>,
    _restored: Option<tempfile::TempDir>,
}

/// Runs `journal`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let rt = runtime()?;
    let archive = match &a.source.archive {
        None => None,
        Some(loc) => {
            let key = match &a.source.archive_key_file {
                Some(p) => Some(
                    ArchiveKey::from_file(p)
                        .with_context(|| format!("read archive key file {}", p.display()))?,
                ),
                None => None,
            };
            // Never `Archive::open`: that creates an archive where none exists.
            Some(
                rt.block_on(Archive::open_existing(loc, key))
                    .with_context(|| format!("open journal archive {loc} (--archive)"))?,
            )
        }
    };
    if let (Sub::Stats, Some(archive)) = (&a.command, &archive) {
        return archive_stats(g, &rt, archive, a.source.wal_dir.as_deref());
    }
    let src = match archive {
        Some(archive) => {
            let tmp = tempfile::tempdir().context("create a temporary directory")?;
            let (wal_dir, backup_dir) = (tmp.path().join("wal"), tmp.path().join("backups"));
            let r = rt
                .block_on(archive.restore_into(&wal_dir, &backup_dir))
                .context("download and verify the archive")?;
            if r.segments == 0 {
                bail!(
                    "journal archive {} holds no journal segments: nothing to read",
                    archive.location()
                );
            }
            if !g.json {
                eprintln!(
                    "restored {} segments (LSN {}..={}) and {} backups from {}",
                    r.segments,
                    r.first_lsn,
                    r.last_lsn,
                    r.backups,
                    archive.location()
                );
            }
            Source {
                wal_dir,
                backup_dir,
                archive: Some(archive),
                _restored: Some(tmp),
            }
        }
        None => {
            let Some(wal_dir) = a.source.wal_dir.clone() else {
                bail!("say where the journal is: --wal-dir DIR (or PITR_WAL_DIR) and --backup-dir DIR, or --archive LOCATION");
            };
            require_journal(&wal_dir)?;
            let backup_dir = a
                .source
                .backup_dir
                .clone()
                .unwrap_or_else(|| wal_dir.with_file_name("backups"));
            Source {
                wal_dir,
                backup_dir,
                archive: None,
                _restored: None,
            }
        }
    };
    match a.command {
        Sub::Stats => local_stats(g, &src),
        Sub::Verify { from_lsn } => verify_cmd(g, &src, from_lsn),
        Sub::Backups => backups_cmd(g, &src),
        Sub::Recover {
            to_time,
            to_lsn,
            latest,
            out,
        } => {
            let target = match (to_time, to_lsn, latest) {
                (Some(t), None, false) => RecoveryTarget::Timestamp(parse_time(&t)?),
                (None, Some(n), false) => RecoveryTarget::Lsn(Lsn(n)),
                (None, None, true) => RecoveryTarget::Latest,
                _ => bail!("say where to recover to: --to-time T, --to-lsn N or --latest"),
            };
            recover_cmd(g, &rt, &src, target, &out)
        }
        Sub::Dump { from_lsn, limit } => dump_cmd(g, &src, from_lsn, limit),
    }
}

/// Refuses a `--wal-dir` that holds no journal (the library error names the directory and
/// what was expected; this adds where the path came from).
fn require_journal(wal_dir: &Path) -> Result<()> {
    journal_segments(wal_dir)
        .map(drop)
        .context("pass the journal's WAL directory with --wal-dir (or PITR_WAL_DIR)")
}

/// Accepts RFC 3339 or Unix nanoseconds.
fn parse_time(s: &str) -> Result<SystemTime> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(UNIX_EPOCH + Duration::from_nanos(n));
    }
    let t: jiff::Timestamp = s.parse().with_context(|| {
        format!("--to-time {s:?}: expected RFC 3339 (2026-11-22T05:00:00Z) or Unix nanoseconds")
    })?;
    Ok(SystemTime::from(t))
}

fn rfc3339_nanos(nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{nanos} ns"))
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "?".into())
}

#[derive(Serialize)]
struct LocalStats {
    wal_dir: PathBuf,
    segments: u64,
    bytes: u64,
    first_lsn: RawLsn,
    last_lsn: RawLsn,
    entries: u64,
    last_record_time: Option<String>,
    highest_term_in_active_segment: u64,
    active_segment_entries: u64,
    backups: usize,
    newest_backup_lsn: Option<RawLsn>,
    archive: Option<ArchiveStats>,
}

#[derive(Serialize)]
struct ArchiveStats {
    location: String,
    encrypted: bool,
    manifest_seq: u64,
    segments: usize,
    first_lsn: Option<RawLsn>,
    archived_upto_lsn: RawLsn,
    backups: usize,
    bytes: u64,
    lag_entries: Option<u64>,
    lag_seconds: Option<f64>,
}

fn local_stats(g: &GlobalArgs, src: &Source) -> Result<ExitCode> {
    let segs = journal_segments(&src.wal_dir)?;
    let mut bytes = 0;
    for (_, p) in &segs {
        bytes += std::fs::metadata(p)
            .with_context(|| format!("stat {}", p.display()))?
            .len();
    }
    let first_lsn = segs.first().map_or(0, |s| s.0);
    let (mut last_lsn, mut last_time, mut term, mut active) =
        (first_lsn.saturating_sub(1), None, 0, 0);
    if let Some((active_first, _)) = segs.last() {
        for rec in iter_from(&src.wal_dir, *active_first)? {
            let rec = rec?;
            last_lsn = rec.lsn;
            last_time = Some(rec.timestamp_nanos);
            term = term.max(rec.term);
            active += 1;
        }
    }
    let (backups, _) = list_backups(&src.backup_dir).unwrap_or_default();
    let st = LocalStats {
        wal_dir: src.wal_dir.clone(),
        segments: segs.len() as u64,
        bytes,
        first_lsn,
        last_lsn,
        entries: if first_lsn == 0 {
            0
        } else {
            last_lsn + 1 - first_lsn
        },
        last_record_time: last_time.map(rfc3339_nanos),
        highest_term_in_active_segment: term,
        active_segment_entries: active,
        backups: backups.len(),
        newest_backup_lsn: backups.iter().map(|b| b.start_lsn.get()).max(),
        archive: None,
    };
    if g.json {
        print_json(&st)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("journal        {}", st.wal_dir.display());
    println!("segments       {} ({} bytes)", st.segments, st.bytes);
    println!(
        "LSNs           {}..={} ({} entries)",
        st.first_lsn, st.last_lsn, st.entries
    );
    println!(
        "last record    {}",
        st.last_record_time.as_deref().unwrap_or("-")
    );
    println!(
        "active segment {} entries, term {}",
        st.active_segment_entries, st.highest_term_in_active_segment
    );
    println!(
        "base backups   {} (newest at LSN {})",
        st.backups,
        st.newest_backup_lsn.map_or("-".into(), |l| l.to_string())
    );
    Ok(ExitCode::SUCCESS)
}

fn archive_stats(
    g: &GlobalArgs,
    rt: &tokio::runtime::Runtime,
    archive: &Archive,
    wal_dir: Option<&Path>,
) -> Result<ExitCode> {
    let m = rt
        .block_on(archive.manifest())
        .context("read the archive manifest")?;
    let lag = match wal_dir {
        Some(d) => {
            require_journal(d)?;
            Some(rt.block_on(archive.lag(d)).context("compute archive lag")?)
        }
        None => None,
    };
    let st = ArchiveStats {
        location: archive.location().to_string(),
        encrypted: archive.is_encrypted(),
        manifest_seq: m.seq,
        segments: m.segments.len(),
        first_lsn: m.archived_from_lsn(),
        archived_upto_lsn: m.archived_upto_lsn(),
        backups: m.backups.len(),
        bytes: m.segments.values().map(|s| s.size).sum::<u64>()
            + m.backups.values().map(|b| b.size).sum::<u64>(),
        lag_entries: lag.as_ref().map(|l| l.entries),
        lag_seconds: lag.as_ref().map(|l| l.seconds),
    };
    if g.json {
        print_json(&st)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "archive        {}{}",
        st.location,
        if st.encrypted { " (encrypted)" } else { "" }
    );
    println!("manifest       #{}", st.manifest_seq);
    println!(
        "segments       {} (LSN {}..={})",
        st.segments,
        st.first_lsn.map_or("-".into(), |l| l.to_string()),
        st.archived_upto_lsn
    );
    println!("base backups   {}", st.backups);
    println!("bytes          {}", st.bytes);
    if let (Some(e), Some(s)) = (st.lag_entries, st.lag_seconds) {
        println!("lag            {e} entries, {s:.1} s");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct VerifyOut {
    is_valid: bool,
    verified_entries: u64,
    errors: Vec<VerifyError>,
    backups_checked: usize,
    backup_errors: Vec<String>,
}

#[derive(Serialize)]
struct VerifyError {
    lsn: RawLsn,
    error: String,
}

fn verify_cmd(g: &GlobalArgs, src: &Source, from_lsn: RawLsn) -> Result<ExitCode> {
    let r = verify(&src.wal_dir, from_lsn)
        .with_context(|| format!("verify {}", src.wal_dir.display()))?;
    let (backups, mut backup_errors): (_, Vec<String>) = if src.backup_dir.exists() {
        let (b, errs) = list_backups(&src.backup_dir)
            .with_context(|| format!("list base backups in {}", src.backup_dir.display()))?;
        (b, errs.iter().map(|e| e.to_string()).collect())
    } else {
        (Vec::new(), Vec::new())
    };
    for b in &backups {
        if let Err(e) = lifeboat_journal::pitr::backup::load_backup(b) {
            backup_errors.push(format!("backup {} (LSN {}): {e}", b.id, b.start_lsn));
        }
    }
    let out = VerifyOut {
        is_valid: r.is_valid && backup_errors.is_empty(),
        verified_entries: r.verified_entries,
        errors: r
            .errors
            .iter()
            .map(|(lsn, error)| VerifyError {
                lsn: *lsn,
                error: error.clone(),
            })
            .collect(),
        backups_checked: backups.len(),
        backup_errors,
    };
    if g.json {
        print_json(&out)?;
    } else {
        for e in &out.errors {
            println!("LSN {}: {}", e.lsn, e.error);
        }
        for e in &out.backup_errors {
            println!("{e}");
        }
        println!(
            "{}: {} entries verified, {} base backups checked{}",
            if out.is_valid { "ok" } else { "DAMAGED" },
            out.verified_entries,
            out.backups_checked,
            if let Some(a) = &src.archive {
                format!(" (from archive {})", a.location())
            } else {
                String::new()
            }
        );
    }
    Ok(if out.is_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::DAMAGED)
    })
}

#[derive(Serialize)]
struct BackupOut {
    id: String,
    created_at: String,
    start_lsn: RawLsn,
    start_time: Option<String>,
    term: u64,
    size_bytes: u64,
    snapshot_bytes: u64,
    compressed: bool,
}

fn backups_cmd(g: &GlobalArgs, src: &Source) -> Result<ExitCode> {
    let (backups, errors) = list_backups(&src.backup_dir)
        .with_context(|| format!("list base backups in {}", src.backup_dir.display()))?;
    for e in &errors {
        eprintln!("warning: {e}");
    }
    let out: Vec<BackupOut> = backups
        .iter()
        .map(|b| BackupOut {
            id: b.id.clone(),
            created_at: rfc3339(b.created_at),
            start_lsn: b.start_lsn.get(),
            start_time: (b.start_timestamp_nanos != 0)
                .then(|| rfc3339_nanos(b.start_timestamp_nanos)),
            term: b.term.get(),
            size_bytes: b.size_bytes,
            snapshot_bytes: b.snapshot_len,
            compressed: b.compressed,
        })
        .collect();
    if g.json {
        print_json(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<18} {:<32} {:>12} {:>6} {:>12} {:>12}",
        "id", "created (UTC)", "start LSN", "term", "size", "snapshot"
    );
    for b in &out {
        println!(
            "{:<18} {:<32} {:>12} {:>6} {:>12} {:>12}",
            b.id, b.created_at, b.start_lsn, b.term, b.size_bytes, b.snapshot_bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct RecoverOut {
    lsn: RawLsn,
    timestamp: Option<String>,
    base_backup_id: Option<String>,
    wal_entries_replayed: u64,
    skipped_backups: Vec<String>,
    out: PathBuf,
}

fn recover_cmd(
    g: &GlobalArgs,
    rt: &tokio::runtime::Runtime,
    src: &Source,
    target: RecoveryTarget,
    out: &Path,
) -> Result<ExitCode> {
    let opts = RecoveryOptions::cancellable(&g.cancel_on_signal(rt.handle())?);
    let r = match recover_with::<Catalog>(&src.wal_dir, &src.backup_dir, target, &opts) {
        Ok(r) => r,
        Err(JournalError::Cancelled { .. }) => {
            eprintln!("error: recovery interrupted; nothing was written");
            return Ok(ExitCode::from(exit::INTERRUPTED));
        }
        Err(e) => return Err(explain_recovery_error(e, target)),
    };
    let json = serde_json::to_vec_pretty(&r.state)?;
    if out == Path::new("-") {
        use std::io::Write;
        let mut so = std::io::stdout().lock();
        so.write_all(&json)?;
        writeln!(so)?;
    } else {
        write_file_durably(out, &json)?;
    }
    let report = RecoverOut {
        lsn: r.lsn.get(),
        timestamp: r.timestamp.map(rfc3339),
        base_backup_id: r.base_backup_id.clone(),
        wal_entries_replayed: r.wal_entries_replayed,
        skipped_backups: r.skipped_backups.clone(),
        out: out.to_path_buf(),
    };
    for s in &r.skipped_backups {
        eprintln!("warning: skipped damaged backup: {s}");
    }
    if g.json && out != Path::new("-") {
        print_json(&report)?;
    } else {
        eprintln!(
            "recovered to LSN {} ({}) from {} + {} WAL entries",
            report.lsn,
            report.timestamp.as_deref().unwrap_or("initial state"),
            report
                .base_backup_id
                .as_deref()
                .map_or("the start of the log".to_string(), |b| format!(
                    "base backup {b}"
                )),
            report.wal_entries_replayed
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The library's typed recovery errors, with the flags that fix them.
fn explain_recovery_error(e: JournalError, target: RecoveryTarget) -> anyhow::Error {
    let shown = match target {
        RecoveryTarget::Timestamp(t) => format!("--to-time {}", rfc3339(t)),
        RecoveryTarget::Lsn(n) => format!("--to-lsn {n}"),
        RecoveryTarget::Latest => "--latest".into(),
    };
    let hint = match &e {
        JournalError::TargetAfterEnd { last_lsn, .. } => format!(
            "{shown} is after the end of the journal (last LSN {last_lsn}); nothing was \
             written: recover with --latest or an earlier target"
        ),
        JournalError::TargetBeforeStart { earliest_lsn, .. } => format!(
            "{shown} is before the oldest recoverable point (LSN {earliest_lsn}); nothing was \
             written: the segments before it are gone and no base backup is that old"
        ),
        _ => "recover the journal".into(),
    };
    anyhow::Error::new(e).context(hint)
}

/// Temp file + fsync + rename + fsync(dir): a recovered state is never half-written.
fn write_file_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("write {}", path.display()))?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(())
}

#[derive(Serialize)]
struct DumpRecord {
    lsn: RawLsn,
    time: String,
    term: u64,
    bytes: usize,
    hash: String,
    op: Option<CatalogOp>,
}

fn dump_cmd(
    g: &GlobalArgs,
    src: &Source,
    from_lsn: RawLsn,
    limit: Option<u64>,
) -> Result<ExitCode> {
    use std::io::Write;
    let mut so = std::io::stdout().lock();
    let records = iter_from(&src.wal_dir, from_lsn)
        .with_context(|| format!("read {} from LSN {from_lsn}", src.wal_dir.display()))?;
    for rec in records.take(limit.map_or(usize::MAX, |l| l.try_into().unwrap_or(usize::MAX))) {
        let rec = rec?;
        let d = DumpRecord {
            lsn: rec.lsn,
            time: rfc3339_nanos(rec.timestamp_nanos),
            term: rec.term,
            bytes: rec.payload.len(),
            hash: hex::encode(&rec.hash[..8]),
            op: decode_op::<CatalogOp>(&rec.payload, rec.lsn).ok(),
        };
        if g.json {
            serde_json::to_writer(&mut so, &d)?;
            writeln!(so)?;
        } else {
            let op =
                d.op.as_ref()
                    .map_or_else(|| format!("<{} bytes>", d.bytes), |o| format!("{o:?}"));
            writeln!(
                so,
                "{:>10} {} term {:<4} {} {op}",
                d.lsn, d.time, d.term, d.hash
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
