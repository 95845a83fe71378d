//! `lifeboat ls`: list a snapshot's files.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use lifeboat_repo::restore;
use lifeboat_repo::tree::NodeKind;

use crate::common::{open, print_json, GlobalArgs};

/// Arguments of `ls`.
#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (prefix) or "latest".
    snapshot: String,
    /// Only paths below this one.
    #[arg(default_value = "/")]
    path: String,
    /// Show mode, size and mtime.
    #[arg(short, long)]
    long: bool,
}

/// Runs `ls`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let s = open(g)?;
    let (_, snap) = s.repo.find_snapshot(&a.snapshot)?;
    let entries = restore::list(&s.repo, &snap, &a.path)?;
    if g.json {
        let v: Vec<_> = entries
            .iter()
            .map(|(p, n)| {
                serde_json::json!({
                    "path": p, "type": n.kind, "mode": n.mode, "size": n.size,
                    "uid": n.uid, "gid": n.gid, "mtime_ns": n.mtime_ns,
                    "target": n.target.as_ref().map(|t| t.display()),
                })
            })
            .collect();
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for (p, n) in &entries {
        if a.long {
            let t = match n.kind {
                NodeKind::Dir => 'd',
                NodeKind::Symlink => 'l',
                NodeKind::File => '-',
            };
            let time = jiff::Timestamp::from_nanosecond(n.mtime_ns as i128)
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            writeln!(
                out,
                "{t}{:04o} {:>6} {:>6} {:>12} {time} {p}",
                n.mode, n.uid, n.gid, n.size
            )?;
        } else {
            writeln!(out, "{p}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
