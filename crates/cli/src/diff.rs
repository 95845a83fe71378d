//! `lifeboat diff`: what changed between two snapshots, streamed as it is found.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use lifeboat_repo::diff::{self, DiffSummary};
use lifeboat_types::human_bytes;

use crate::common::{open, GlobalArgs};

/// Arguments of `diff`.
#[derive(clap::Args)]
pub struct Args {
    /// The earlier snapshot: id (prefix) or "latest".
    first: String,
    /// The later snapshot: id (prefix) or "latest".
    second: String,
    /// Print only the summary, not each changed path.
    #[arg(long)]
    summary_only: bool,
}

/// Runs `diff`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let s = open(g)?;
    let (id1, snap1) = s.repo.find_snapshot(&a.first)?;
    let (id2, snap2) = s.repo.find_snapshot(&a.second)?;
    let loaded = s.repo.load_index()?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    if g.json {
        // Streamed by hand so a diff of millions of paths never sits in memory.
        writeln!(out, "{{")?;
        writeln!(out, "  \"first\": \"{}\",", id1.to_hex())?;
        writeln!(out, "  \"second\": \"{}\",", id2.to_hex())?;
        if !a.summary_only {
            write!(out, "  \"changes\": [")?;
        }
        let mut n = 0u64;
        let sum = diff::diff(
            &s.repo,
            &loaded.index,
            &snap1.tree,
            &snap2.tree,
            |c| -> Result<()> {
                if !a.summary_only {
                    let item = serde_json::json!({
                        "path": c.path.display().to_string(),
                        "change": c.kind,
                    });
                    let sep = if n == 0 { "" } else { "," };
                    write!(out, "{sep}\n    {item}")?;
                    n += 1;
                }
                Ok(())
            },
        )?;
        if !a.summary_only {
            writeln!(out, "{}],", if n == 0 { "" } else { "\n  " })?;
        }
        let summary = serde_json::to_string_pretty(&sum)?.replace('\n', "\n  ");
        writeln!(out, "  \"summary\": {summary}")?;
        writeln!(out, "}}")?;
        return Ok(ExitCode::SUCCESS);
    }
    if g.chatty() {
        writeln!(
            out,
            "comparing snapshot {} to {}:\n",
            id1.short(),
            id2.short()
        )?;
    }
    let sum = diff::diff(
        &s.repo,
        &loaded.index,
        &snap1.tree,
        &snap2.tree,
        |c| -> Result<()> {
            if !a.summary_only {
                writeln!(out, "{}    {}", c.kind.symbol(), c.path.display())?;
            }
            Ok(())
        },
    )?;
    if !a.summary_only && !sum.is_empty() {
        writeln!(out)?;
    }
    print_summary(&mut out, &sum, &id1.short(), &id2.short())?;
    Ok(ExitCode::SUCCESS)
}

/// The block after the change list, in the spirit of `restic diff`.
fn print_summary(out: &mut impl Write, s: &DiffSummary, first: &str, second: &str) -> Result<()> {
    let plural = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    writeln!(
        out,
        "Files:        {} new, {} removed, {} changed, {} metadata only",
        s.files_added, s.files_removed, s.files_changed, s.files_metadata
    )?;
    writeln!(
        out,
        "Dirs:         {} new, {} removed, {} metadata only",
        s.dirs_added, s.dirs_removed, s.dirs_metadata
    )?;
    writeln!(
        out,
        "Symlinks:     {} new, {} removed, {} changed, {} metadata only",
        s.symlinks_added, s.symlinks_removed, s.symlinks_changed, s.symlinks_metadata
    )?;
    writeln!(out, "Type changed: {}", s.type_changed)?;
    writeln!(
        out,
        "Added:        {} in new files; {} ({}) only in {second}",
        human_bytes(s.bytes_added),
        plural(s.data_blobs_added, "data blob"),
        human_bytes(s.data_bytes_added)
    )?;
    writeln!(
        out,
        "Removed:      {} in removed files; {} ({}) only in {first}",
        human_bytes(s.bytes_removed),
        plural(s.data_blobs_removed, "data blob"),
        human_bytes(s.data_bytes_removed)
    )?;
    Ok(())
}
