//! `lifeboat check`: verify structure and, optionally, data.

use std::process::ExitCode;

use anyhow::{bail, Result};
use lifeboat_repo::check::{self, ReadData, Severity};
use lifeboat_types::human_bytes;

use crate::common::{open, print_json, GlobalArgs};
use crate::exit;
use crate::progress::Bar;

/// Arguments of `check`.
#[derive(clap::Args)]
pub struct Args {
    /// Download, decrypt and re-hash every blob.
    #[arg(long)]
    read_data: bool,
    /// Like --read-data for this share of packs, least recently verified first, e.g. "10%":
    /// run it regularly and the whole repository is covered every 100/N runs.
    #[arg(long, conflicts_with = "read_data")]
    read_data_subset: Option<String>,
}

fn parse_percent(s: &str) -> Result<f64> {
    let n: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| anyhow::anyhow!("--read-data-subset wants a percentage like 10%"))?;
    if !(0.0..=100.0).contains(&n) || n == 0.0 {
        bail!("--read-data-subset must be in (0, 100]%");
    }
    Ok(n)
}

/// Runs `check`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let s = open(g)?;
    let _lock = g.read_lock(&s.repo, "check")?;
    let mode = match (&a.read_data_subset, a.read_data) {
        (Some(p), _) => ReadData::SubsetPercent(parse_percent(p)?),
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    let bar = Bar::new(
        g.show_progress() && mode != ReadData::None,
        g.quiet || g.json,
        "check",
    );
    let cancel = g.cancel_on_signal(s.repo.runtime())?;
    let record = _lock
        .as_ref()
        .map(|l| l as &dyn lifeboat_repo::lock::WriteLock);
    let result = check::run_with(&s.repo, mode, record, &cancel, &bar);
    bar.finish();
    let report = result?;
    if g.json {
        print_json(&report)?;
    } else {
        for f in &report.findings {
            let sev = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let snaps = if f.snapshots.is_empty() {
                String::new()
            } else {
                format!(" [affects snapshots {}]", f.snapshots.join(", "))
            };
            eprintln!("{sev}: {}: {}{snaps}", f.object, f.message);
        }
        if !g.quiet {
            println!(
                "checked {} snapshots, {} index files, {} packs, {} trees",
                report.snapshots, report.index_files, report.packs, report.trees
            );
            if mode != ReadData::None {
                println!(
                    "read {} packs ({}), verified {} blobs",
                    report.packs_read,
                    human_bytes(report.bytes_read),
                    report.blobs_verified
                );
            }
            let verified = match report.oldest_verified {
                Some(t) => format!(
                    "oldest verification {}",
                    t.strftime("%Y-%m-%d %H:%M:%S UTC")
                ),
                None => "no pack verified yet".into(),
            };
            println!(
                "data verification: {} packs ({}) never read back; {verified}",
                report.packs_never_verified,
                human_bytes(report.bytes_never_verified)
            );
            for n in &report.notes {
                eprintln!("warning: {n}");
            }
            println!(
                "{}",
                if report.is_ok() {
                    "no errors were found"
                } else {
                    "the repository is damaged"
                }
            );
        }
    }
    Ok(ExitCode::from(if report.is_ok() {
        exit::OK
    } else {
        exit::DAMAGED
    }))
}
