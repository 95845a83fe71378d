//! `lifeboat quickstart`: the whole loop on the embedded default (a local directory), end to end.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use lifeboat_repo::check::{self, ReadData};
use lifeboat_repo::progress::NoProgress;
use lifeboat_repo::{backup, restore, BackupOptions, InitOptions, Repository, RestoreOptions};
use lifeboat_store::{Store, StoreOptions};
use lifeboat_types::human_bytes;

use crate::common::{print_json, runtime, GlobalArgs};

/// Arguments of `quickstart`.
#[derive(clap::Args)]
pub struct Args {
    /// Working directory (default: a new directory under the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Size of the sample data in MiB.
    #[arg(long, default_value_t = 64)]
    size_mib: u64,
}

/// Runs `quickstart`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let dir = match a.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("lifeboat-quickstart-{}", std::process::id())),
    };
    if dir.exists() && fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} is not empty; pass --dir with an empty or new directory",
            dir.display()
        );
    }
    let (source, repo_dir, target) = (dir.join("source"), dir.join("repo"), dir.join("restore"));
    let say = |s: String| {
        if g.chatty() {
            println!("{s}");
        }
    };
    say(format!("lifeboat quickstart in {}", dir.display()));
    let t = Instant::now();
    make_sample(&source, a.size_mib).context("create sample data")?;
    say(format!(
        "1. made a sample tree of {} MiB at {}",
        a.size_mib,
        source.display()
    ));

    let rt = runtime()?;
    let store = Store::open(
        repo_dir.to_str().context("utf-8 path")?,
        &StoreOptions::default(),
    )?;
    let password =
        std::env::var("LIFEBOAT_PASSWORD").unwrap_or_else(|_| "quickstart-demo-password".into());
    let repo = Repository::init(
        store,
        rt.handle().clone(),
        password.as_bytes(),
        InitOptions::default(),
    )?;
    say(format!(
        "2. created an encrypted repository at {}",
        repo_dir.display()
    ));

    let lock = repo.lock_shared("quickstart", &Default::default())?;
    let first = backup::run(
        &repo,
        &lock,
        &BackupOptions::new(vec![source.clone()]),
        &NoProgress,
    )?;
    let s1 = &first.snapshot.summary;
    say(format!(
        "3. backed up {} in {:.2}s: stored {} (dedup + zstd), snapshot {}",
        human_bytes(s1.total_bytes),
        s1.duration_secs,
        human_bytes(s1.bytes_stored),
        first.id.short()
    ));

    fs::write(
        source.join("docs/notes-0.txt"),
        "changed after the first backup\n",
    )?;
    let second = backup::run(
        &repo,
        &lock,
        &BackupOptions::new(vec![source.clone()]),
        &NoProgress,
    )?;
    let s2 = &second.snapshot.summary;
    say(format!(
        "4. changed one file, backed up again in {:.2}s: {} changed, {} unchanged (not re-read), stored {}",
        s2.duration_secs,
        s2.files_changed,
        s2.files_unchanged,
        human_bytes(s2.bytes_stored)
    ));

    let mut ro = RestoreOptions::new(target.clone());
    ro.verify = true;
    let rs = restore::run(&repo, &second.snapshot, &ro, &NoProgress)?;
    if !rs.errors.is_empty() {
        bail!("restore reported problems: {:?}", rs.errors);
    }
    let restored_root = target.join(source.strip_prefix("/").expect("absolute"));
    let compared = compare_trees(&source, &restored_root)?;
    say(format!(
        "5. restored {} files in {:.2}s, re-hashed {} and compared {} entries byte-for-byte with the source: identical",
        rs.files_restored, rs.duration_secs, rs.files_verified, compared
    ));

    let report = check::run(&repo, ReadData::All, &NoProgress)?;
    if !report.is_ok() {
        bail!("check found problems: {:?}", report.findings);
    }
    say(format!(
        "6. check --read-data: {} packs, {} blobs decrypted and verified, no errors",
        report.packs_read, report.blobs_verified
    ));
    say(format!(
        "done in {:.1}s. Try: lifeboat -r {} snapshots",
        t.elapsed().as_secs_f64(),
        repo_dir.display()
    ));
    if g.json {
        print_json(&serde_json::json!({
            "dir": dir, "snapshots": [first.id.to_hex(), second.id.to_hex()],
            "first_backup": s1, "second_backup": s2, "restore": rs, "check_ok": report.is_ok(),
            "entries_compared": compared,
        }))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Text, compressible logs, random binary, a duplicate, a symlink, an empty dir.
fn make_sample(root: &Path, size_mib: u64) -> Result<()> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    fs::create_dir_all(root.join("docs"))?;
    fs::create_dir_all(root.join("logs/2026"))?;
    fs::create_dir_all(root.join("bin"))?;
    fs::create_dir_all(root.join("empty"))?;
    for i in 0..200 {
        let words: Vec<String> = (0..(50 + i * 7) % 400)
            .map(|w| format!("word{}", (w * 31 + i) % 97))
            .collect();
        fs::write(root.join(format!("docs/notes-{i}.txt")), words.join(" "))?;
    }
    let mut log = fs::File::create(root.join("logs/2026/app.log"))?;
    for i in 0..(size_mib * 1024 * 1024 / 3 / 60) {
        writeln!(
            log,
            "2026-11-22T10:{:02}:{:02}Z INFO request id={i} status=200 ms={}",
            i % 60,
            i % 59,
            i % 997
        )?;
    }
    let mut blob = vec![0u8; (size_mib * 1024 * 1024 / 3) as usize];
    rng.fill_bytes(&mut blob);
    fs::write(root.join("bin/model.bin"), &blob)?;
    fs::write(root.join("bin/model-copy.bin"), &blob)?;
    std::os::unix::fs::symlink("model.bin", root.join("bin/current"))?;
    Ok(())
}

/// Compares content, mode, mtime and symlink targets; returns entries compared.
fn compare_trees(a: &Path, b: &Path) -> Result<usize> {
    let (ma, mb) = (
        fs::symlink_metadata(a)?,
        fs::symlink_metadata(b).with_context(|| format!("{} missing", b.display()))?,
    );
    if ma.file_type() != mb.file_type() || ma.mode() != mb.mode() {
        bail!("{} differs in type or mode", b.display());
    }
    if !ma.is_dir() && ma.mtime() != mb.mtime() {
        bail!("{} differs in mtime", b.display());
    }
    if ma.is_symlink() {
        if fs::read_link(a)? != fs::read_link(b)? {
            bail!("{} differs in target", b.display());
        }
        return Ok(1);
    }
    if ma.is_file() {
        if fs::read(a)? != fs::read(b)? {
            bail!("{} differs in content", b.display());
        }
        return Ok(1);
    }
    let mut n = 1;
    let mut names: Vec<_> = fs::read_dir(a)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    if names.len() != fs::read_dir(b)?.count() {
        bail!("{} has a different number of entries", b.display());
    }
    for name in names {
        n += compare_trees(&a.join(&name), &b.join(&name))?;
    }
    Ok(n)
}
