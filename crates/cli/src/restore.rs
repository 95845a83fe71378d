//! `lifeboat restore`: a snapshot (or selected paths) into a directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use lifeboat_repo::restore::{self, Overwrite};
use lifeboat_repo::RestoreOptions;
use lifeboat_types::human_bytes;

use crate::common::{open, print_json, GlobalArgs};
use crate::exit;
use crate::progress::Bar;

/// Arguments of `restore`.
#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (prefix) or "latest".
    snapshot: String,
    /// Directory to restore into; snapshot paths are recreated below it.
    #[arg(short, long)]
    target: PathBuf,
    /// Restore only paths matching this glob (full snapshot path, or file name); repeatable.
    #[arg(short, long = "include")]
    include: Vec<String>,
    /// Re-read every restored file and compare it with the snapshot.
    #[arg(long)]
    verify: bool,
    /// Rewrite files even when size and mtime already match.
    #[arg(long)]
    overwrite_always: bool,
    /// Parallel readers.
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `restore`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let s = open(g)?;
    let _lock = g.read_lock(&s.repo, "restore")?;
    let (id, snap) = s.repo.find_snapshot(&a.snapshot)?;
    let mut opts = RestoreOptions::new(a.target.clone());
    opts.include = a.include;
    opts.verify = a.verify;
    if a.overwrite_always {
        opts.overwrite = Overwrite::Always;
    }
    if let Some(t) = a.threads {
        opts.threads = t;
    }
    let bar = Bar::new(g.show_progress(), g.quiet || g.json, "restore");
    let result = restore::run(&s.repo, &snap, &opts, &bar);
    bar.finish();
    let sum = result?;
    if g.json {
        print_json(
            &serde_json::json!({ "snapshot": id.to_hex(), "target": a.target, "summary": sum }),
        )?;
    } else if !g.quiet {
        println!(
            "restored snapshot {} to {}: {} files ({} written), {} unchanged, {} dirs, {} symlinks, {} hard links in {:.2}s",
            id.short(),
            a.target.display(),
            sum.files_restored,
            human_bytes(sum.bytes_written),
            sum.files_unchanged,
            sum.dirs,
            sum.symlinks,
            sum.hardlinks,
            sum.duration_secs
        );
        if a.verify {
            println!("verified {} files", sum.files_verified);
        }
    }
    if sum.errors.is_empty() && sum.not_restored.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for e in &sum.errors {
        eprintln!("error: {e}");
    }
    // Every path, not a sample: the user has to know exactly what is missing.
    for p in &sum.not_restored {
        eprintln!("not restored: {p}");
    }
    if sum.restored_nothing() {
        eprintln!(
            "nothing was restored: all {} selected paths failed",
            sum.not_restored.len()
        );
        return Ok(ExitCode::from(exit::FATAL));
    }
    if sum.not_restored.is_empty() {
        eprintln!(
            "{} problems: all paths were restored, but not all of them exactly",
            sum.errors.len()
        );
    } else {
        eprintln!(
            "{} problems: {} paths were not restored",
            sum.errors.len(),
            sum.not_restored.len()
        );
    }
    Ok(ExitCode::from(exit::PARTIAL))
}
