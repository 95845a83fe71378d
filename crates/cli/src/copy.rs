//! `lifeboat copy`: copy snapshots to another repository (cross-region), sending only what
//! the target lacks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use lifeboat_repo::copy;
use lifeboat_types::human_bytes;

use crate::common::{open, print_json, GlobalArgs, OtherRepo};
use crate::progress::Bar;

/// Arguments of `copy`.
#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to copy (default: all); ids, prefixes or "latest".
    snapshots: Vec<String>,
    /// Target repository location.
    #[arg(long, env = "LIFEBOAT_TO_REPOSITORY")]
    to: String,
    /// Target repository's password file.
    #[arg(long, env = "LIFEBOAT_TO_PASSWORD_FILE")]
    to_password_file: Option<PathBuf>,
    /// Target repository's key file.
    #[arg(long, env = "LIFEBOAT_TO_KEY_FILE")]
    to_key_file: Option<PathBuf>,
    /// Only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots with this tag.
    #[arg(long)]
    tag: Option<String>,
}

fn fmt_lag(secs: Option<f64>) -> String {
    match secs {
        None => "up to date".into(),
        Some(s) => format!(
            "{} behind",
            lifeboat_repo::lock::fmt_duration(std::time::Duration::from_secs_f64(s))
        ),
    }
}

/// Runs `copy`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let s = open(g)?;
    let target = OtherRepo {
        location: a.to.clone(),
        password_file: a.to_password_file.clone(),
        key_file: a.to_key_file.clone(),
        password_env: "LIFEBOAT_TO_PASSWORD",
    };
    let dst = g.open_other(&s._rt, &target, "target")?;
    let _src_lock = g.lock_shared(&s.repo, "copy (source)")?;
    let dst_lock = g.lock_shared(&dst, "copy")?;
    let (all, warnings) = s.repo.list_snapshots()?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let mut selected = if a.snapshots.is_empty() {
        all
    } else {
        let mut v = Vec::new();
        for r in &a.snapshots {
            v.push(s.repo.find_snapshot(r)?);
        }
        v.sort_by_key(|(id, sn)| (sn.time, *id));
        v.dedup_by_key(|(id, _)| *id);
        v
    };
    selected.retain(|(_, sn)| a.host.as_ref().is_none_or(|h| &sn.host == h));
    selected.retain(|(_, sn)| a.tag.as_ref().is_none_or(|t| sn.tags.contains(t)));
    let bar = Bar::new(g.show_progress(), g.quiet || g.json, "copy");
    let cancel = g.cancel_on_signal(s.repo.runtime())?;
    let result = copy::run(&s.repo, &dst, &dst_lock, &selected, &cancel, &bar);
    bar.finish();
    let r = result?;
    dst_lock.release()?;
    if g.json {
        print_json(&r)?;
    } else if !g.quiet {
        for (from, to) in &r.copied {
            println!("copied snapshot {} -> {}", from.short(), to.short());
        }
        println!(
            "{} snapshots copied, {} already present; sent {} blobs ({} in {} packs), {} blobs were already there",
            r.copied.len(),
            r.snapshots_present,
            r.blobs_copied,
            human_bytes(r.bytes_sent),
            r.packs_written,
            r.blobs_present
        );
        println!(
            "target lag: {} before, {} now",
            fmt_lag(r.lag_before_secs),
            fmt_lag(r.lag_after_secs)
        );
    }
    Ok(ExitCode::SUCCESS)
}
