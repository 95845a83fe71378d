//! `lifeboat prune`: delete data no snapshot references and repack wasteful packs.

use std::process::ExitCode;

use anyhow::Result;
use lifeboat_repo::prune::{self, PruneOptions, PruneReport};
use lifeboat_types::human_bytes;

use crate::common::{open, print_json, GlobalArgs};
use crate::progress::Bar;

/// Arguments of `prune`.
#[derive(clap::Args)]
pub struct Args {
    /// Unused space to tolerate, e.g. "5%": packs more wasteful than this are repacked, most
    /// wasteful first, until at most this share of the repository is unused ("0%": all waste).
    #[arg(long, default_value = "5%", value_parser = parse_share)]
    max_unused: f64,
    /// Only report what would be deleted and repacked.
    #[arg(long)]
    dry_run: bool,
}

/// Parses "5%", "5" or "0.5%" into a fraction (a clap value parser: bad input exits 2).
pub fn parse_share(s: &str) -> std::result::Result<f64, String> {
    let n: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("wants a percentage like 5%, got {s:?}"))?;
    if !(0.0..=100.0).contains(&n) {
        return Err(format!("must be between 0% and 100%, got {s:?}"));
    }
    Ok(n / 100.0)
}

/// Runs `prune`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let s = open(g)?;
    let opts = PruneOptions {
        max_unused: a.max_unused,
        dry_run: a.dry_run,
        cancel: g.cancel_on_signal(s.repo.runtime())?,
    };
    run_with(g, &s.repo, &opts, true)?;
    Ok(ExitCode::SUCCESS)
}

/// Prunes an opened repository (also used by `forget --prune`).
pub fn run_with(
    g: &GlobalArgs,
    repo: &lifeboat_repo::Repository,
    opts: &PruneOptions,
    print: bool,
) -> Result<PruneReport> {
    let bar = Bar::new(g.show_progress(), g.quiet || g.json, "repack");
    let r = if opts.dry_run {
        // A dry run only reads: a shared lock lets backups go on meanwhile.
        let lock = g.lock_shared(repo, "prune")?;
        let result = prune::dry_run(repo, opts, &bar);
        bar.finish();
        let r = result?;
        lock.release()?;
        r
    } else {
        let lock = g.lock_exclusive(repo, "prune")?;
        let result = prune::run(repo, &lock, opts, &bar);
        bar.finish();
        let r = result?;
        lock.release()?;
        r
    };
    if g.json && print {
        print_json(&r)?;
    } else if !g.quiet && !g.json {
        print_report(&r);
    }
    Ok(r)
}

fn print_report(r: &PruneReport) {
    let would = if r.dry_run { "would " } else { "" };
    println!(
        "{} snapshots, {} of {} indexed blobs in use ({} duplicate copies)",
        r.snapshots, r.blobs_used, r.blobs_indexed, r.blobs_duplicate
    );
    println!(
        "{} packs ({}): {} kept, {} unused, {} to repack, {} unindexed",
        r.packs_total,
        human_bytes(r.bytes_total),
        r.packs_kept,
        r.packs_unused,
        r.packs_repacked,
        r.packs_unindexed
    );
    println!(
        "{would}delete {} and write {} in {} new packs: {would}free {}",
        human_bytes(r.bytes_deleted),
        human_bytes(r.bytes_written),
        r.packs_written,
        human_bytes(r.bytes_freed.max(0) as u64)
    );
    if r.bytes_unused_kept > 0 {
        println!(
            "{} unused bytes stay in packs below the repack threshold",
            human_bytes(r.bytes_unused_kept)
        );
    }
    if !r.dry_run && r.index_files_written == 0 && r.bytes_deleted == 0 {
        println!("nothing to prune");
    } else if !r.dry_run {
        println!(
            "replaced {} index files with {} in {:.1}s",
            r.index_files_removed, r.index_files_written, r.duration_secs
        );
    }
}
