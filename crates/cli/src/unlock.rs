//! `lifeboat unlock`: show repository locks and remove stale ones.

use std::process::ExitCode;

use anyhow::Result;
use lifeboat_repo::lock::{self, FoundLock};

use crate::common::{open, print_json, GlobalArgs};

/// Arguments of `unlock`.
#[derive(clap::Args)]
pub struct Args {
    /// Remove every lock, live ones too (only when you know their holders are dead).
    #[arg(long)]
    all: bool,
    /// Only list the locks and whether each is stale.
    #[arg(long, conflicts_with = "all")]
    dry_run: bool,
}

fn to_json(f: &FoundLock, removed: bool) -> serde_json::Value {
    serde_json::json!({
        "object": f.object,
        "holder": f.info,
        "age_secs": f.age.as_secs_f64(),
        "stale": f.stale,
        "removed": removed,
    })
}

/// Runs `unlock`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let s = open(g)?;
    let (found, removed) = if a.dry_run {
        (lock::list_locks(&s.repo)?, Vec::new())
    } else {
        let u = lock::unlock(&s.repo, a.all)?;
        (u.found, u.removed)
    };
    if g.json {
        let v: Vec<_> = found
            .iter()
            .map(|f| to_json(f, removed.contains(&f.object)))
            .collect();
        print_json(&serde_json::json!({ "locks": v, "removed": removed.len() }))?;
        return Ok(ExitCode::SUCCESS);
    }
    for f in &found {
        let status = match (&f.stale, removed.contains(&f.object)) {
            (_, true) => "removed".to_owned(),
            (Some(why), false) => format!("stale: {why}"),
            (None, false) => "live".to_owned(),
        };
        println!("{}: {} [{status}]", f.object, f.describe());
    }
    if !g.quiet {
        println!("{} locks, {} removed", found.len(), removed.len());
    }
    Ok(ExitCode::SUCCESS)
}
