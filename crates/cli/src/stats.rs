//! `lifeboat stats`: sizes per snapshot and for the whole repository.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use lifeboat_repo::stats;
use lifeboat_types::human_bytes;

use crate::common::{open, print_json, GlobalArgs};

/// Arguments of `stats`.
#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to list: id (prefix) or "latest"; default all. The repository totals always
    /// cover every snapshot.
    snapshots: Vec<String>,
}

/// Runs `stats`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let s = open(g)?;
    // Resolve first: a typo fails before the walk over every tree.
    let wanted = a
        .snapshots
        .iter()
        .map(|r| Ok(s.repo.find_snapshot(r)?.0))
        .collect::<Result<BTreeSet<_>>>()?;
    let mut st = stats::run(&s.repo)?;
    if !wanted.is_empty() {
        st.snapshots.retain(|x| wanted.contains(&x.id));
    }
    if g.json {
        print_json(&st)?;
        return Ok(ExitCode::SUCCESS);
    }
    for w in &st.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "{:<10} {:<20} {:>9} {:>7} {:>12} {:>10} {:>12} {:>12} {:>7}",
        "id", "time (UTC)", "files", "dirs", "restore size", "data blobs", "raw", "stored", "trees"
    );
    for x in &st.snapshots {
        println!(
            "{:<10} {:<20} {:>9} {:>7} {:>12} {:>10} {:>12} {:>12} {:>7}",
            x.id.short(),
            x.time.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            x.files,
            x.dirs,
            human_bytes(x.restore_size),
            x.data_blobs,
            human_bytes(x.raw_bytes),
            human_bytes(x.stored_bytes),
            x.trees
        );
    }
    let r = &st.repository;
    let ratio = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!();
    println!("repository:");
    println!("  snapshots:          {}", r.snapshots);
    println!(
        "  packs:              {} ({}), {} not indexed ({})",
        r.packs,
        human_bytes(r.pack_bytes),
        r.unindexed_packs,
        human_bytes(r.unindexed_pack_bytes)
    );
    println!(
        "  indexed blobs:      {} data, {} tree; {} raw, {} stored, {} in duplicate copies",
        r.data_blobs,
        r.tree_blobs,
        human_bytes(r.raw_bytes),
        human_bytes(r.stored_bytes),
        human_bytes(r.duplicate_bytes)
    );
    println!(
        "  referenced:         {} data blobs ({} raw, {} stored), {} trees",
        r.referenced_data_blobs,
        human_bytes(r.referenced_raw_bytes),
        human_bytes(r.referenced_stored_bytes),
        r.referenced_tree_blobs
    );
    println!("  garbage:            {}", human_bytes(r.garbage_bytes));
    println!("  total restore size: {}", human_bytes(r.restore_size));
    println!("  dedup ratio:        {}", ratio(r.dedup_ratio));
    println!("  compression ratio:  {}", ratio(r.compression_ratio));
    Ok(ExitCode::SUCCESS)
}
