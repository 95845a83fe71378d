//! `lifeboat init`: create a repository.

use std::process::ExitCode;

use anyhow::Result;
use lifeboat_repo::{InitOptions, Repository};

use crate::common::{print_json, runtime, GlobalArgs};

/// Arguments of `init`.
#[derive(clap::Args)]
pub struct Args {
    /// zstd compression level for new data (1-19).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    compression: i32,
}

/// Runs `init`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let rt = runtime()?;
    let store = g.store()?;
    let secret = g.secret()?;
    if secret.is_empty() {
        anyhow::bail!("refusing to create a repository with an empty password");
    }
    let opts = InitOptions {
        compression_level: Some(a.compression),
        ..Default::default()
    };
    let repo = Repository::init(store, rt.handle().clone(), &secret, opts)?;
    if g.json {
        print_json(&serde_json::json!({
            "repository": g.location()?,
            "id": repo.config().id,
            "version": repo.config().version,
            "key_id": repo.key_id().to_hex(),
        }))?;
    } else if !g.quiet {
        println!(
            "created repository {} at {}",
            &repo.config().id[..8],
            g.location()?
        );
        println!("keep the password safe: without it the data cannot be recovered");
    }
    Ok(ExitCode::SUCCESS)
}
