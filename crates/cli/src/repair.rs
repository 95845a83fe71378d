//! `lifeboat repair`: rebuild metadata from what is stored.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use lifeboat_repo::repair;

use crate::common::{open, print_json, GlobalArgs};

/// Arguments of `repair`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Rebuild the index from pack trailers (after a damaged or lost index).
    Index,
}

/// Runs `repair`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let s = open(g)?;
    let lock = g.lock_exclusive(&s.repo, "repair index")?;
    match a.what {
        What::Index => {
            let r = repair::repair_index(&s.repo, &lock)?;
            if g.json {
                print_json(&r)?;
            } else {
                for p in &r.packs_unreadable {
                    eprintln!("warning: {p}");
                }
                if !g.quiet {
                    println!(
                        "read {} packs, indexed {} blobs, wrote {} index files, removed {} old ones",
                        r.packs_read, r.blobs_indexed, r.index_files_written, r.index_files_removed
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
