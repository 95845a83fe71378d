//! `lifeboat backup`: paths, stdin, or a command's output into a new snapshot.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use lifeboat_repo::backup::{self, StdinSource};
use lifeboat_repo::BackupOptions;
use lifeboat_types::human_bytes;

use crate::common::{open, print_json, GlobalArgs};
use crate::exit;
use crate::progress::Bar;

/// Arguments of `backup`.
#[derive(clap::Args)]
pub struct Args {
    /// Files and directories to back up.
    paths: Vec<PathBuf>,
    /// Skip paths matching this glob (matched against the full path and the file name).
    #[arg(short, long = "exclude")]
    excludes: Vec<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Parent snapshot for change detection (default: latest with same host and paths).
    #[arg(long)]
    parent: Option<String>,
    /// Re-read every file, ignoring the parent snapshot.
    #[arg(long)]
    force: bool,
    /// Back up standard input as one file.
    #[arg(long, conflicts_with = "paths")]
    stdin: bool,
    /// File name for --stdin / --stdin-from-command.
    #[arg(long, default_value = "stdin")]
    stdin_filename: String,
    /// Back up the standard output of a command (e.g. `-- pg_dump mydb`); a failing command writes no snapshot.
    #[arg(long, conflicts_with_all = ["paths", "stdin"])]
    stdin_from_command: bool,
    /// The command for --stdin-from-command.
    #[arg(last = true)]
    command: Vec<String>,
    /// Record this snapshot time instead of now (RFC 3339, e.g. 2026-01-31T23:00:00Z).
    #[arg(long)]
    time: Option<jiff::Timestamp>,
    /// Worker threads per pipeline stage (default: cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs `backup`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let s = open(g)?;
    let lock = g.lock_shared(&s.repo, "backup")?;
    let mut opts = BackupOptions::new(a.paths);
    opts.excludes = a.excludes;
    opts.tags = a.tags;
    opts.host = a.host;
    opts.force_full = a.force;
    opts.time = a.time;
    if let Some(t) = a.threads {
        opts.threads = t;
    }
    if let Some(p) = &a.parent {
        opts.parent = Some(s.repo.find_snapshot(p)?.0);
    }
    if a.stdin_from_command {
        if a.command.is_empty() {
            bail!("--stdin-from-command needs a command after `--`, e.g. `-- pg_dump mydb`");
        }
        opts.stdin = Some((a.stdin_filename, StdinSource::Command(a.command)));
    } else if a.stdin {
        opts.stdin = Some((a.stdin_filename, StdinSource::Stdin));
    } else if !a.command.is_empty() {
        bail!("a command after `--` needs --stdin-from-command");
    }
    opts.cancel = g.cancel_on_signal(s.repo.runtime())?;

    let bar = Bar::new(g.show_progress(), g.quiet || g.json, "backup");
    let result = backup::run(&s.repo, &lock, &opts, &bar);
    bar.finish();
    let r = result.map_err(|e| match e {
        lifeboat_repo::Error::Cancelled => anyhow::Error::new(e).context(
            "interrupted: no snapshot was written; the packs already uploaded are indexed, so the next backup reuses them",
        ),
        e => e.into(),
    })?;
    let sum = &r.snapshot.summary;
    if g.json {
        print_json(&serde_json::json!({
            "snapshot": r.id.to_hex(),
            "parent": r.snapshot.parent.map(|p| p.to_hex()),
            "summary": sum,
            "warnings": r.warnings,
        }))?;
    } else if !g.quiet {
        println!(
            "files: {} new, {} changed, {} unchanged; dirs: {} new, {} changed, {} unchanged",
            sum.files_new,
            sum.files_changed,
            sum.files_unchanged,
            sum.dirs_new,
            sum.dirs_changed,
            sum.dirs_unchanged
        );
        println!(
            "processed {} (read {}), added {} ({} stored) in {:.2}s",
            human_bytes(sum.total_bytes),
            human_bytes(sum.bytes_read),
            human_bytes(sum.bytes_added),
            human_bytes(sum.bytes_stored),
            sum.duration_secs
        );
        println!("snapshot {} saved", r.id.short());
    }
    if sum.errors > 0 {
        if !g.quiet {
            eprintln!(
                "warning: {} source entries could not be read; the snapshot is incomplete",
                sum.errors
            );
        }
        return Ok(ExitCode::from(exit::PARTIAL));
    }
    Ok(ExitCode::SUCCESS)
}
