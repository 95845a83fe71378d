//! `lifeboat key`: list, add, remove and change passwords / key files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::common::{open, print_json, GlobalArgs};
use crate::kdf::KdfArgs;

/// Arguments of `key`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Args)]
struct NewSecret {
    /// File holding the new password (first line).
    #[arg(long)]
    new_password_file: Option<PathBuf>,
    /// File whose raw bytes become a new key.
    #[arg(long, conflicts_with = "new_password_file")]
    new_key_file: Option<PathBuf>,
    /// Label for the new slot.
    #[arg(long, default_value = "")]
    label: String,
    #[command(flatten)]
    kdf: KdfArgs,
}

impl NewSecret {
    fn read(&self) -> Result<Vec<u8>> {
        if let Some(f) = &self.new_key_file {
            let bytes = std::fs::read(f).with_context(|| format!("read {}", f.display()))?;
            if bytes.is_empty() {
                bail!("the new key file {} is empty", f.display());
            }
            return Ok(bytes);
        }
        if let Some(f) = &self.new_password_file {
            let s = std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
            let pw = s.lines().next().unwrap_or("");
            if pw.is_empty() {
                bail!("the new password in {} is empty", f.display());
            }
            return Ok(pw.as_bytes().to_vec());
        }
        if let Ok(p) = std::env::var("LIFEBOAT_NEW_PASSWORD") {
            if p.is_empty() {
                bail!("LIFEBOAT_NEW_PASSWORD is empty");
            }
            return Ok(p.into_bytes());
        }
        bail!(
            "give the new secret with --new-password-file, --new-key-file or LIFEBOAT_NEW_PASSWORD"
        )
    }
}

#[derive(Subcommand)]
enum Action {
    /// List key slots.
    List,
    /// Add a password or key file.
    Add(NewSecret),
    /// Remove a key slot by id (prefix).
    Remove {
        /// Slot id or unique prefix.
        id: String,
    },
    /// Replace the password this session used with a new one.
    Passwd(NewSecret),
}

/// Runs `key`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let mut s = open(g)?;
    let repo = &mut s.repo;
    match a.action {
        Action::List => {
            let keys = repo.list_keys()?;
            if g.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, slot)| match slot {
                        Ok(k) => serde_json::json!({
                            "id": id.to_hex(), "current": *id == repo.key_id(), "created": k.created,
                            "host": k.host, "username": k.username, "label": k.label, "kdf": k.kdf, "params": k.params,
                        }),
                        Err(e) => serde_json::json!({ "id": id.to_hex(), "error": e }),
                    })
                    .collect();
                print_json(&v)?;
            } else {
                println!(
                    "  {:<10} {:<22} {:<16} {:<10} label",
                    "id", "created", "host", "user"
                );
                for (id, slot) in &keys {
                    let cur = if *id == repo.key_id() { "*" } else { " " };
                    match slot {
                        Ok(k) => println!(
                            "{cur} {:<10} {:<22} {:<16} {:<10} {}",
                            id.short(),
                            k.created.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                            k.host,
                            k.username,
                            k.label
                        ),
                        Err(e) => println!("{cur} {:<10} damaged: {e}", id.short()),
                    }
                }
            }
        }
        Action::Add(n) => {
            let id = repo.add_key(&n.read()?, &n.label, n.kdf.params()?)?;
            report(g, "added", &id.to_hex())?;
        }
        Action::Remove { id } => {
            let id = repo.resolve_key(&id)?;
            repo.remove_key(&id)?;
            report(g, "removed", &id.to_hex())?;
        }
        Action::Passwd(n) => {
            let id = repo.change_password(&n.read()?, &n.label, n.kdf.params()?)?;
            report(g, "changed password; new key slot", &id.to_hex())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report(g: &GlobalArgs, what: &str, id: &str) -> Result<()> {
    if g.json {
        print_json(&serde_json::json!({ "result": what, "id": id }))
    } else {
        if !g.quiet {
            println!("{what} {}", &id[..8]);
        }
        Ok(())
    }
}
