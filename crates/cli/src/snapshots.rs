//! `lifeboat snapshots`: list snapshots.

use std::process::ExitCode;

use anyhow::Result;
use lifeboat_types::human_bytes;

use crate::common::{open, print_json, GlobalArgs};

/// Arguments of `snapshots`.
#[derive(clap::Args)]
pub struct Args {
    /// Only snapshots with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
}

/// Runs `snapshots`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let s = open(g)?;
    let (snaps, warnings) = s.repo.list_snapshots()?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let snaps: Vec<_> = snaps
        .into_iter()
        .filter(|(_, sn)| a.tag.as_ref().is_none_or(|t| sn.tags.contains(t)))
        .filter(|(_, sn)| a.host.as_ref().is_none_or(|h| &sn.host == h))
        .collect();
    if g.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|(id, sn)| {
                let mut j = serde_json::to_value(sn).expect("snapshots serialize");
                j["id"] = serde_json::Value::String(id.to_hex());
                j
            })
            .collect();
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10} {:<20} {:<16} {:<16} {:>10}  paths",
        "id", "time (UTC)", "host", "tags", "size"
    );
    for (id, sn) in &snaps {
        let time = sn.time.strftime("%Y-%m-%d %H:%M:%S").to_string();
        println!(
            "{:<10} {:<20} {:<16} {:<16} {:>10}  {}",
            id.short(),
            time,
            sn.host,
            sn.tags.join(","),
            human_bytes(sn.summary.total_bytes),
            sn.paths.join(" ")
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(ExitCode::SUCCESS)
}
