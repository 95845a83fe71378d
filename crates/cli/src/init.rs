//! `lifeboat init`: create a repository.

use std::process::ExitCode;

use anyhow::Result;
use lifeboat_repo::{InitOptions, Repository};

use crate::common::{print_json, runtime, GlobalArgs, OtherRepo};
use crate::kdf::KdfArgs;

/// Arguments of `init`.
#[derive(clap::Args)]
pub struct Args {
    /// zstd compression level for new data (1-19).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    compression: i32,
    /// Share chunker parameters and blob ids with the repository given by --from, so `copy`
    /// between the two sends only what is missing.
    #[arg(long, requires = "from")]
    copy_chunker_params: bool,
    /// The related repository for --copy-chunker-params.
    #[arg(
        long,
        env = "LIFEBOAT_FROM_REPOSITORY",
        requires = "copy_chunker_params"
    )]
    from: Option<String>,
    /// Password file of the --from repository (else LIFEBOAT_FROM_PASSWORD).
    #[arg(long, env = "LIFEBOAT_FROM_PASSWORD_FILE")]
    from_password_file: Option<std::path::PathBuf>,
    /// Key file of the --from repository.
    #[arg(long, env = "LIFEBOAT_FROM_KEY_FILE")]
    from_key_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    kdf: KdfArgs,
}

/// Runs `init`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let rt = runtime()?;
    let store = g.store()?;
    let secret = g.secret()?;
    if secret.is_empty() {
        anyhow::bail!("refusing to create a repository with an empty password");
    }
    if let Some(root) = store.local_root() {
        refuse_foreign_directory(root)?;
    }
    let mut opts = InitOptions {
        compression_level: Some(a.compression),
        kdf: a.kdf.params()?,
        ..Default::default()
    };
    if a.copy_chunker_params {
        let from = OtherRepo {
            location: a.from.clone().unwrap_or_default(),
            password_file: a.from_password_file.clone(),
            key_file: a.from_key_file.clone(),
            password_env: "LIFEBOAT_FROM_PASSWORD",
        };
        let source = g.open_other(&rt, &from, "source")?;
        opts.copy_chunker_from = Some(source.config().clone());
        opts.related_key = Some(source.key().clone());
    }
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

/// A directory holding anything but a repository is someone else's data: initialising into
/// it would mix the two (and a later `prune` or `rm -r` of the repository would take both).
/// An existing repository is left to [`Repository::init`], which says "already exists".
fn refuse_foreign_directory(root: &std::path::Path) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(root) else {
        // Missing (created by the first write) or not a directory (the write says so).
        return Ok(());
    };
    if entries.next().is_some() && !root.join("config").exists() {
        anyhow::bail!(
            "{} is not empty and is not a Lifeboat repository: init needs a new or empty \
             directory (choose another path, or empty this one first)",
            root.display()
        );
    }
    Ok(())
}
