//! `lifeboat copy` end to end: real processes, real repositories (local, and S3 through the
//! loopback server), assertions on what lands in the target and on what restores from it.
//!
//! * local → local with different passwords: every field of every snapshot carried over
//!   (`original` set, `parent` mapped), packs re-sealed (none byte-identical to the source's),
//!   every copy restores byte for byte, `check --read-data` is clean, a second copy sends
//!   nothing, a later copy sends only the new data; lag before/after;
//! * refusals that write nothing: a target that does not share blob ids, a wrong or missing
//!   target password, `init --copy-chunker-params` from a source it cannot open; a damaged
//!   source blob fails authentication and no snapshot is copied;
//! * related repositories dedup both ways (the target's own backups, copying back);
//! * selection by id, `--tag` and `--host`;
//! * local → S3 and S3 → local;
//! * SIGKILL of a copy at random moments: the target always checks clean, the next copy
//!   finishes, and it resumes (sends exactly what the killed copies did not get indexed),
//!   also from the index checkpoints within one large snapshot;
//! * locks: copy holds shared locks on both repositories; two concurrent copies into one
//!   target duplicate snapshots (an ignored test documents the bug).
//!
//! The kill test prints its seed; `LIFEBOAT_COPY_SEED=<u64>` replays another. Kills are
//! synchronised on events in the target (the k-th new pack, index or snapshot object) or fall
//! at a random delay (any moment is a valid moment to kill).

use lifeboat_testkit::repo_cli as common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{num, run_cmd, Repo};
use lifeboat_testkit::{
    assert_trees_equal, flip_middle_byte, generate_tree, restored_path, run_with_signal, Signal,
    TreeSpec, Trigger,
};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;

const SOURCE_PASSWORD: &str = "source: correct horse battery staple";
const TARGET_PASSWORD: &str = "target: Tr0ub4dor&3";

// ---- repositories --------------------------------------------------------------------

/// A source repository handle (source password).
fn source_at(location: impl Into<String>) -> Repo {
    Repo {
        location: location.into(),
        password: SOURCE_PASSWORD.into(),
    }
}

/// A target repository handle (target password).
fn target_at(location: impl Into<String>) -> Repo {
    Repo {
        location: location.into(),
        password: TARGET_PASSWORD.into(),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// How the second repository's secret is handed over.
#[derive(Clone, Copy)]
enum Secret<'a> {
    /// `LIFEBOAT_FROM_PASSWORD` / `LIFEBOAT_TO_PASSWORD`.
    Env,
    /// `--from-password-file` / `--to-password-file` with a file in this directory.
    File(&'a Path),
}

/// Writes `password` (plus a newline, which must not become part of it) to a new file.
fn password_file(dir: &Path, password: &str) -> PathBuf {
    let p = dir.join(format!("pw-{}", rand::random::<u32>()));
    fs::write(&p, format!("{password}\n")).expect("write password file");
    p
}

/// `init --copy-chunker-params --from SOURCE` at `target`, asserting success.
fn init_related(target: &Repo, source: &Repo, secret: Secret<'_>) {
    let mut c = target.cmd(&[
        "--json",
        "init",
        "--copy-chunker-params",
        "--from",
        &source.location,
    ]);
    c.args(common::TEST_KDF);
    match secret {
        Secret::Env => {
            c.env("LIFEBOAT_FROM_PASSWORD", &source.password);
        }
        Secret::File(dir) => {
            c.arg("--from-password-file")
                .arg(password_file(dir, &source.password));
        }
    }
    let r = run_cmd(c);
    r.success();
    assert_eq!(r.json()["repository"], target.location.as_str());
}

/// `lifeboat -r SOURCE --json copy --to TARGET EXTRA…` (target password in
/// `LIFEBOAT_TO_PASSWORD`), not yet run.
fn copy_cmd(source: &Repo, target: &Repo, extra: &[&str]) -> Command {
    let mut c = source.cmd(&["--json", "copy", "--to", &target.location]);
    c.args(extra);
    c.env("LIFEBOAT_TO_PASSWORD", &target.password);
    c
}

/// Runs a copy to completion, asserting success; the JSON report.
#[track_caller]
fn copy(source: &Repo, target: &Repo, extra: &[&str]) -> Value {
    let r = run_cmd(copy_cmd(source, target, extra));
    r.success();
    let j = r.json();
    check_report_shape(&j);
    j
}

/// The report's internal consistency: ids are full hex, counts add up.
#[track_caller]
fn check_report_shape(r: &Value) {
    let copied = copied_pairs(r);
    for (a, b) in &copied {
        assert_eq!(a.len(), 64, "{r:#}");
        assert_eq!(b.len(), 64, "{r:#}");
        assert_ne!(a, b, "a copy got its source's id: {r:#}");
    }
    assert_eq!(
        num(r, "snapshots_selected"),
        num(r, "snapshots_present") + copied.len() as u64,
        "selected = present + copied: {r:#}"
    );
    if num(r, "bytes_sent") == 0 {
        assert_eq!(num(r, "packs_written"), 0, "{r:#}");
    }
}

/// `copied` of a copy report as (source id, target id) pairs.
fn copied_pairs(r: &Value) -> Vec<(String, String)> {
    r["copied"]
        .as_array()
        .unwrap_or_else(|| panic!("no copied list in {r:#}"))
        .iter()
        .map(|p| {
            (
                p[0].as_str().expect("source id").to_owned(),
                p[1].as_str().expect("target id").to_owned(),
            )
        })
        .collect()
}

fn lag(r: &Value, field: &str) -> Option<f64> {
    match &r[field] {
        Value::Null => None,
        v => Some(
            v.as_f64()
                .unwrap_or_else(|| panic!("{field} is neither null nor a number: {r:#}")),
        ),
    }
}

fn id_of(snap: &Value) -> String {
    snap["id"].as_str().expect("snapshot id").to_owned()
}

/// Snapshots of `target` keyed by their `original` (every one must have it).
fn by_original(target: &Repo) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for s in target.snapshots() {
        let orig = s["original"]
            .as_str()
            .unwrap_or_else(|| panic!("copied snapshot without `original`: {s:#}"))
            .to_owned();
        assert!(
            out.insert(orig.clone(), s).is_none(),
            "two copies of {orig}"
        );
    }
    out
}

/// Asserts that `target` holds exactly one faithful copy of each snapshot in `source_snaps`
/// (and nothing else): same time, host, user, paths, tags, tree and summary, `original` set
/// to the source id, and `parent` pointing at the copy of the source's parent. A copy made
/// before its source's parent was copied has no parent: with `strict_parents` false that is
/// accepted too (never a parent that is not the copy of the source's parent). Returns source
/// id → target id.
#[track_caller]
fn assert_faithful_copies(
    target: &Repo,
    source_snaps: &[Value],
    strict_parents: bool,
) -> BTreeMap<String, String> {
    let copies = by_original(target);
    let want: BTreeSet<String> = source_snaps.iter().map(id_of).collect();
    let have: BTreeSet<String> = copies.keys().cloned().collect();
    assert_eq!(
        have, want,
        "the target's snapshots are not copies of exactly these"
    );
    let map: BTreeMap<String, String> = copies.iter().map(|(o, s)| (o.clone(), id_of(s))).collect();
    for s in source_snaps {
        let c = &copies[&id_of(s)];
        assert_ne!(id_of(c), id_of(s), "copies get their own ids");
        let strip = |v: &Value| {
            let mut v = v.clone();
            let o = v.as_object_mut().expect("snapshot object");
            for k in ["id", "original", "parent"] {
                o.remove(k);
            }
            v
        };
        assert_eq!(strip(c), strip(s), "copy differs from its source snapshot");
        let want_parent = s["parent"].as_str().and_then(|p| map.get(p));
        if !strict_parents && c["parent"].is_null() {
            continue;
        }
        assert_eq!(
            c["parent"].as_str(),
            want_parent.map(String::as_str),
            "parent of the copy of {} should be the copy of the source's parent {}",
            id_of(s),
            s["parent"]
        );
    }
    map
}

/// Every file of a local repository except locks: `kind/name → size`.
fn repo_files(dir: &Path) -> BTreeMap<String, u64> {
    common::files_below(dir, true)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("locks/"))
        .collect()
}

/// `check [--read-data]` on `repo` exits 0 and reports no finding at all.
#[track_caller]
fn assert_clean(repo: &Repo, read_data: bool, context: &str) -> Value {
    let mut a = vec!["--json", "check"];
    if read_data {
        a.push("--read-data");
    }
    let r = repo.run(&a);
    r.expect_code(0);
    let j = r.json();
    assert_eq!(
        j["findings"].as_array().map(Vec::len),
        Some(0),
        "{context}: check finds {j:#}"
    );
    j
}

// ---- source trees --------------------------------------------------------------------

/// A source directory that changes between backups, and what it looked like at each one.
struct History {
    /// The live source directory.
    src: PathBuf,
    /// Where frozen copies go.
    frozen_dir: PathBuf,
    rng: StdRng,
    step: usize,
    /// Snapshot id → frozen copy of `src` at that backup.
    frozen: BTreeMap<String, PathBuf>,
}

impl History {
    /// A generated tree (`files` small files, one `large` multi-chunk file).
    fn new(dir: &Path, seed: u64, files: usize, large: usize) -> History {
        let src = dir.join("src");
        generate_tree(
            &src,
            seed,
            &TreeSpec {
                files,
                max_file_size: 48 * 1024,
                dirs: 6,
                max_depth: 3,
                duplicates: 4,
                large_files: 1,
                large_file_size: large,
            },
        );
        History {
            src,
            frozen_dir: dir.join("frozen"),
            rng: StdRng::seed_from_u64(seed ^ 0xc0b1),
            step: 0,
            frozen: BTreeMap::new(),
        }
    }

    /// Adds a file of `new_bytes` random bytes, rewrites one small file, deletes another.
    fn change(&mut self, new_bytes: usize) {
        self.step += 1;
        let mut data = vec![0u8; new_bytes];
        self.rng.fill_bytes(&mut data);
        common::write(
            &self.src.join(format!("new/step{:02}.bin", self.step)),
            &data,
        );
        let mut files: Vec<PathBuf> = common::files_below(&self.src, true)
            .into_keys()
            .filter(|k| k.ends_with(".txt") || k.ends_with(".dat"))
            .map(|k| self.src.join(k))
            .collect();
        files.sort();
        if files.len() >= 2 {
            let i = self.rng.gen_range(0..files.len());
            let p = files.swap_remove(i);
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                let mut text = format!("rewritten in step {}\n", self.step).into_bytes();
                text.extend(common::random_bytes(self.step as u64, 5000));
                fs::write(&p, text).expect("rewrite");
            }
            let j = self.rng.gen_range(0..files.len());
            let _ = fs::remove_file(&files[j]);
        }
    }

    /// `backup` into `repo` with `extra` options, then freezes the source under the new id.
    fn backup(&mut self, repo: &Repo, extra: &[&str]) -> String {
        let mut a: Vec<&str> = extra.to_vec();
        a.push(path_str(&self.src));
        let b = repo.backup(&a);
        let id = b["snapshot"].as_str().expect("snapshot id").to_owned();
        let dst = self.frozen_dir.join(&id[..16]);
        common::freeze(&self.src, &dst);
        self.frozen.insert(id.clone(), dst);
        id
    }

    /// Restores `target_id` from `repo` and compares it with the source as it was when
    /// `source_id` was taken.
    #[track_caller]
    fn assert_restores(&self, repo: &Repo, target_id: &str, source_id: &str, scratch: &Path) {
        let dir = scratch.join(format!("restore-{}", &target_id[..12]));
        let _ = fs::remove_dir_all(&dir);
        let r = repo.run(&[
            "--json",
            "--no-lock",
            "restore",
            target_id,
            "--target",
            path_str(&dir),
            "--verify",
        ]);
        r.expect_code(0);
        assert_trees_equal(&self.frozen[source_id], &restored_path(&dir, &self.src));
        fs::remove_dir_all(&dir).expect("remove restore");
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .expect("gethostname")
        .into_string()
        .expect("utf-8 host name")
}

// ---- 1. local → local ----------------------------------------------------------------

#[test]
fn local_copy_is_faithful_idempotent_and_incremental() {
    let tmp = common::tempdir();
    let source = source_at(path_str(&tmp.path().join("source")));
    source.init();
    let mut h = History::new(tmp.path(), 0x1c0b1, 60, 2 << 20);
    let mut ids = vec![h.backup(&source, &[])];
    h.change(400_000);
    ids.push(h.backup(&source, &["--tag", "second"]));
    h.change(300_000);
    ids.push(h.backup(&source, &[]));
    let src_snaps = source.snapshots();
    assert_eq!(src_snaps.iter().map(id_of).collect::<Vec<_>>(), ids);
    let src_files = repo_files(&tmp.path().join("source"));

    let target_dir = tmp.path().join("target");
    let target = target_at(path_str(&target_dir));
    init_related(&target, &source, Secret::File(tmp.path()));
    // The target's own password opens it; the source's does not.
    source_at(&target.location)
        .run(&["snapshots"])
        .expect_code(11);

    // Copy everything, with the target password from a file.
    let r = run_cmd({
        let mut c = source.cmd(&["--json", "copy", "--to", &target.location]);
        c.arg("--to-password-file")
            .arg(password_file(tmp.path(), TARGET_PASSWORD));
        c
    });
    r.success();
    let first = r.json();
    check_report_shape(&first);
    let copied = copied_pairs(&first);
    assert_eq!(
        copied.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
        ids,
        "copied oldest first: {first:#}"
    );
    assert_eq!(num(&first, "snapshots_selected"), 3);
    assert_eq!(num(&first, "blobs_present"), 0, "empty target: {first:#}");
    assert!(num(&first, "blobs_copied") > 0);
    assert!(num(&first, "packs_written") >= 2, "{first:#}");
    let lag_before = lag(&first, "lag_before_secs").expect("a lagging target has a lag");
    assert!(
        (0.0..3600.0).contains(&lag_before),
        "lag {lag_before} s: {first:#}"
    );
    assert_eq!(lag(&first, "lag_after_secs"), None, "{first:#}");
    // What was sent is what now sits in data/ (nothing else wrote there).
    let target_packs = common::files_below(&target_dir.join("data"), true);
    assert_eq!(
        num(&first, "packs_written") as usize,
        target_packs.len(),
        "{first:#}"
    );
    assert_eq!(
        num(&first, "bytes_sent"),
        target_packs.values().sum::<u64>(),
        "bytes_sent is the size of the packs written"
    );
    // Re-sealed with the target key: no pack is byte-identical to a source pack.
    let src_packs = common::files_below(&tmp.path().join("source/data"), true);
    let shared: Vec<_> = target_packs
        .keys()
        .filter(|k| src_packs.contains_key(*k))
        .collect();
    assert!(shared.is_empty(), "packs copied verbatim: {shared:?}");

    let map = assert_faithful_copies(&target, &src_snaps, true);
    for (sid, tid) in &copied {
        assert_eq!(&map[sid], tid, "report and target disagree");
    }
    let t_snaps = target.snapshots();
    assert_eq!(
        t_snaps
            .iter()
            .map(|s| s["original"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        ids,
        "the copies keep the source's order (by time)"
    );
    assert_eq!(t_snaps[1]["tags"], serde_json::json!(["second"]));
    for sid in &ids {
        h.assert_restores(&target, &map[sid], sid, tmp.path());
    }
    assert_clean(&target, true, "after the first copy");
    assert_eq!(
        repo_files(&tmp.path().join("source")),
        src_files,
        "copy changed the source"
    );

    // Again: nothing to do, nothing sent, nothing written.
    let before = repo_files(&target_dir);
    let second = copy(&source, &target, &[]);
    assert_eq!(num(&second, "bytes_sent"), 0, "{second:#}");
    assert_eq!(num(&second, "blobs_copied"), 0, "{second:#}");
    assert_eq!(num(&second, "snapshots_present"), 3, "{second:#}");
    assert!(copied_pairs(&second).is_empty(), "{second:#}");
    assert_eq!(lag(&second, "lag_before_secs"), None, "{second:#}");
    assert_eq!(lag(&second, "lag_after_secs"), None, "{second:#}");
    assert_eq!(repo_files(&target_dir), before, "an idempotent copy wrote");

    // A fourth backup: only its new data travels.
    let new_bytes = 250_000;
    h.change(new_bytes);
    let fourth = h.backup(&source, &[]);
    let third = copy(&source, &target, &[]);
    assert_eq!(
        copied_pairs(&third)
            .into_iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        vec![fourth.clone()],
        "{third:#}"
    );
    assert_eq!(num(&third, "snapshots_present"), 3, "{third:#}");
    let sent = num(&third, "bytes_sent");
    assert!(
        sent >= new_bytes as u64,
        "the new random file alone is {new_bytes} B, sent {sent}: {third:#}"
    );
    assert!(
        sent * 4 < num(&first, "bytes_sent"),
        "an incremental copy sent {sent} B of {} in total: {third:#}",
        num(&first, "bytes_sent")
    );
    assert!(num(&third, "blobs_present") > 0, "{third:#}");
    let lag_before = lag(&third, "lag_before_secs").expect("the target lagged");
    assert!((0.0..3600.0).contains(&lag_before), "{third:#}");
    assert_eq!(lag(&third, "lag_after_secs"), None, "{third:#}");
    let all = source.snapshots();
    let map = assert_faithful_copies(&target, &all, true);
    h.assert_restores(&target, &map[&fourth], &fourth, tmp.path());
    assert_clean(&target, true, "after the incremental copy");
}

// ---- 2. unrelated target -------------------------------------------------------------

/// Copy from `source` into `target` fails with exit 1, names `--copy-chunker-params`, and
/// leaves the target's directory exactly as it was (locks released too).
#[track_caller]
fn assert_refused_unrelated(source: &Repo, target: &Repo, target_dir: &Path) {
    let before = common::files_below(target_dir, true);
    let r = run_cmd(copy_cmd(source, target, &[]));
    r.expect_code(1);
    let err = r.stderr();
    assert!(
        err.contains("--copy-chunker-params"),
        "the refusal does not say how to fix it: {err}"
    );
    assert!(
        err.contains("does not share blob ids"),
        "the refusal does not say what is wrong: {err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "one error line: {err}"
    );
    assert!(r.stdout().trim().is_empty(), "no report: {}", r.stdout());
    for sub in ["data", "index", "snapshots"] {
        let found = common::files_below(&target_dir.join(sub), true);
        assert!(found.is_empty(), "refused copy wrote {sub}/: {found:?}");
    }
    assert_eq!(
        common::files_below(target_dir, true),
        before,
        "refused copy changed the target (or left a lock)"
    );
}

#[test]
fn copy_into_an_unrelated_repository_is_refused_and_writes_nothing() {
    let tmp = common::tempdir();
    let source = source_at(path_str(&tmp.path().join("source")));
    source.init();
    let mut h = History::new(tmp.path(), 0x2, 20, 600_000);
    h.backup(&source, &[]);

    // A plain `init`, even with the same password.
    let plain_dir = tmp.path().join("plain");
    let plain = source_at(path_str(&plain_dir));
    plain.init();
    assert_refused_unrelated(&source, &plain, &plain_dir);

    // Related to another repository is unrelated to this one.
    let other = source_at(path_str(&tmp.path().join("other")));
    other.init();
    let cousin_dir = tmp.path().join("cousin");
    let cousin = target_at(path_str(&cousin_dir));
    init_related(&cousin, &other, Secret::Env);
    assert_refused_unrelated(&source, &cousin, &cousin_dir);

    // Nor does the source keep a lock behind.
    let locks = common::files_below(&tmp.path().join("source/locks"), true);
    assert!(locks.is_empty(), "source locks left: {locks:?}");
}

#[test]
fn copy_with_a_wrong_target_password_exits_11_and_writes_nothing() {
    let tmp = common::tempdir();
    let source = source_at(path_str(&tmp.path().join("source")));
    source.init();
    let mut h = History::new(tmp.path(), 0x3, 10, 100_000);
    h.backup(&source, &[]);
    let target_dir = tmp.path().join("target");
    let target = target_at(path_str(&target_dir));
    init_related(&target, &source, Secret::Env);
    let before = common::files_below(&target_dir, true);
    let wrong = Repo {
        location: target.location.clone(),
        password: "not the target password".into(),
    };
    run_cmd(copy_cmd(&source, &wrong, &[])).expect_code(11);
    // No target password at all: an error naming the variable to set.
    let mut c = source.cmd(&["copy", "--to", &target.location]);
    c.env_remove("LIFEBOAT_TO_PASSWORD");
    let r = run_cmd(c);
    r.expect_code(1);
    assert!(
        r.stderr().contains("LIFEBOAT_TO_PASSWORD"),
        "{}",
        r.stderr()
    );
    assert_eq!(common::files_below(&target_dir, true), before);
}

// ---- related repositories ------------------------------------------------------------

#[test]
fn init_from_an_unopenable_source_creates_nothing() {
    let tmp = common::tempdir();
    let source = source_at(path_str(&tmp.path().join("source")));
    source.init();
    let target_dir = tmp.path().join("target");
    let target = target_at(path_str(&target_dir));
    let wrong = Repo {
        location: source.location.clone(),
        password: "not the source password".into(),
    };
    let r = run_cmd({
        let mut c = target.cmd(&["init", "--copy-chunker-params", "--from", &source.location]);
        c.env("LIFEBOAT_FROM_PASSWORD", &wrong.password);
        c
    });
    r.expect_code(11);
    assert!(!target_dir.exists(), "a failed init created {target_dir:?}");
    let r = run_cmd(target.cmd(&["init", "--copy-chunker-params", "--from", &source.location]));
    r.expect_code(1);
    assert!(
        r.stderr().contains("LIFEBOAT_FROM_PASSWORD"),
        "{}",
        r.stderr()
    );
    assert!(!target_dir.exists());
    let missing = tmp.path().join("missing");
    let r = run_cmd({
        let mut c = target.cmd(&[
            "init",
            "--copy-chunker-params",
            "--from",
            path_str(&missing),
        ]);
        c.env("LIFEBOAT_FROM_PASSWORD", SOURCE_PASSWORD);
        c
    });
    r.expect_code(10);
    assert!(!target_dir.exists());
    // --copy-chunker-params needs --from: a usage error.
    target
        .run(&["init", "--copy-chunker-params"])
        .expect_code(2);
    assert!(!target_dir.exists());
}

#[test]
fn related_repositories_dedup_both_ways() {
    let tmp = common::tempdir();
    let source = source_at(path_str(&tmp.path().join("source")));
    source.init();
    let mut h = History::new(tmp.path(), 0x7e1, 30, 1 << 20);
    let first = h.backup(&source, &[]);
    let target = target_at(path_str(&tmp.path().join("target")));
    init_related(&target, &source, Secret::Env);
    let r = copy(&source, &target, &[]);
    assert_eq!(copied_pairs(&r).len(), 1);

    // The target's own backup of the same data, every file re-read, adds no data blobs:
    // same chunker, same blob ids. (Trees of the source's ancestors may be new: their
    // mtimes moved since.)
    let own = target.backup(&["--force", path_str(&h.src)]);
    let sum = &own["summary"];
    assert!(num(sum, "bytes_read") > 1 << 20, "{own:#}");
    assert_eq!(num(sum, "data_blobs_added"), 0, "{own:#}");
    let new_trees = num(sum, "tree_blobs_added");

    // Copying back finds the copied snapshot already present (same tree, time, host and
    // paths) and sends only what the source lacks: the target's own snapshot's new trees.
    let back = copy(&target, &source, &[]);
    assert_eq!(num(&back, "snapshots_present"), 1, "{back:#}");
    let pairs = copied_pairs(&back);
    assert_eq!(pairs.len(), 1, "{back:#}");
    assert_eq!(pairs[0].0, own["snapshot"].as_str().unwrap(), "{back:#}");
    assert_eq!(num(&back, "blobs_copied"), new_trees, "{back:#}");
    assert!(num(&back, "bytes_sent") < 64 * 1024, "{back:#}");
    assert!(num(&back, "blobs_present") > 0, "{back:#}");
    let s = source.snapshots();
    assert_eq!(s.len(), 2);
    assert_eq!(id_of(&s[0]), first);
    assert_eq!(s[1]["original"], own["snapshot"]);
    h.assert_restores(&source, &id_of(&s[1]), &first, tmp.path());
    assert_clean(&source, true, "after copying back");
}

// ---- authentication with the source key ----------------------------------------------

#[test]
fn copy_refuses_a_damaged_source_blob_and_writes_no_snapshot() {
    let tmp = common::tempdir();
    let source_dir = tmp.path().join("source");
    let source = source_at(path_str(&source_dir));
    source.init();
    let mut h = History::new(tmp.path(), 0x4, 10, 3 << 20);
    let id = h.backup(&source, &[]);
    let target_dir = tmp.path().join("target");
    let target = target_at(path_str(&target_dir));
    init_related(&target, &source, Secret::Env);
    // The biggest pack holds the large file's data blobs; damage one in the middle.
    let packs = common::files_below(&source_dir.join("data"), false);
    let (victim, _) = packs.iter().max_by_key(|(_, s)| **s).expect("a pack");
    flip_middle_byte(&source_dir.join("data").join(victim)).expect("flip");
    let r = run_cmd(copy_cmd(&source, &target, &[]));
    r.expect_code(1);
    let pack_id = victim.rsplit('/').next().expect("pack id");
    assert!(
        r.stderr().contains(pack_id) && r.stderr().contains("authentication"),
        "the error does not name the damaged pack {pack_id}: {}",
        r.stderr()
    );
    assert!(
        common::files_below(&target_dir.join("snapshots"), true).is_empty(),
        "a snapshot of damaged data was copied ({id})"
    );
    // Packs sent before the damaged blob are indexed (a rerun reuses them), so a check of the
    // target finds no error; the failed copy released its locks on both sides.
    assert!(common::files_below(&target_dir.join("locks"), true).is_empty());
    assert!(common::files_below(&source_dir.join("locks"), true).is_empty());
    let c = target.run(&["--json", "check"]);
    c.expect_code(0);
}

// ---- 3. selection --------------------------------------------------------------------

#[test]
fn copy_selects_by_id_tag_and_host() {
    let tmp = common::tempdir();
    let source = source_at(path_str(&tmp.path().join("source")));
    source.init();
    let mut h = History::new(tmp.path(), 0x5e1, 20, 300_000);
    let a = h.backup(&source, &["--host", "alpha", "--tag", "daily"]);
    h.change(50_000);
    let b = h.backup(&source, &["--host", "beta", "--tag", "weekly"]);
    h.change(50_000);
    let c = h.backup(&source, &["--host", "alpha", "--tag", "weekly"]);
    h.change(50_000);
    let d = h.backup(
        &source,
        &["--host", "beta", "--tag", "daily", "--tag", "keep"],
    );
    h.change(50_000);
    let e = h.backup(&source, &["--host", "gamma"]);
    let all = source.snapshots();
    let snap = |id: &str| all.iter().find(|s| id_of(s) == id).unwrap().clone();

    let target = target_at(path_str(&tmp.path().join("target")));
    init_related(&target, &source, Secret::Env);
    let originals = || by_original(&target).into_keys().collect::<BTreeSet<_>>();
    let set = |ids: &[&String]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    // One snapshot by unique prefix.
    let r = copy(&source, &target, &[&c[..10]]);
    assert_eq!(copied_pairs(&r).len(), 1, "{r:#}");
    assert_eq!(num(&r, "snapshots_selected"), 1, "{r:#}");
    assert_eq!(originals(), set(&[&c]));
    // Its parent (a, the previous backup of host alpha) was not copied: the copy has no
    // parent rather than a dangling one.
    assert_eq!(snap(&c)["parent"].as_str(), Some(a.as_str()));
    assert_faithful_copies(&target, &[snap(&c)], true);

    // By tag: a and d; c (weekly) is not selected.
    let r = copy(&source, &target, &["--tag", "daily"]);
    assert_eq!(num(&r, "snapshots_selected"), 2, "{r:#}");
    assert_eq!(num(&r, "snapshots_present"), 0, "{r:#}");
    assert_eq!(originals(), set(&[&a, &c, &d]));

    // By host: b and d; d is there already.
    let r = copy(&source, &target, &["--host", "beta"]);
    assert_eq!(num(&r, "snapshots_selected"), 2, "{r:#}");
    assert_eq!(num(&r, "snapshots_present"), 1, "{r:#}");
    assert_eq!(
        copied_pairs(&r)
            .into_iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        vec![b.clone()]
    );
    assert_eq!(originals(), set(&[&a, &b, &c, &d]));

    // Both filters, nothing matching: nothing selected, nothing written.
    let r = copy(&source, &target, &["--host", "gamma", "--tag", "daily"]);
    assert_eq!(num(&r, "snapshots_selected"), 0, "{r:#}");
    assert_eq!(num(&r, "bytes_sent"), 0, "{r:#}");
    assert_eq!(lag(&r, "lag_before_secs"), None);
    assert_eq!(originals().len(), 4);

    // Ids and filters combine: `latest` is e (gamma), filtered out by --host alpha.
    let r = copy(&source, &target, &["latest", &a, "--host", "alpha"]);
    assert_eq!(num(&r, "snapshots_selected"), 1, "{r:#}");
    assert_eq!(num(&r, "snapshots_present"), 1, "{r:#}");
    assert_eq!(originals().len(), 4);

    // An unknown id fails before anything is copied.
    let r = run_cmd(copy_cmd(&source, &target, &["deadbeef"]));
    r.expect_code(1);
    assert!(r.stderr().contains("deadbeef"), "{}", r.stderr());
    assert_eq!(originals().len(), 4);

    // The rest.
    let r = copy(&source, &target, &[]);
    assert_eq!(
        copied_pairs(&r)
            .into_iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        vec![e.clone()]
    );
    // c and d were copied before their parents (a and b): their copies have no parent.
    let map = assert_faithful_copies(&target, &all, false);
    let copies = by_original(&target);
    assert_eq!(copies[&c]["parent"], Value::Null, "c was copied before a");
    assert_eq!(copies[&d]["parent"], Value::Null, "d was copied before b");
    assert_eq!(
        copies[&a]["parent"],
        Value::Null,
        "a has no parent in the source"
    );
    for id in [&a, &b, &c, &d, &e] {
        h.assert_restores(&target, &map[id], id, tmp.path());
    }
    assert_eq!(target.snapshots()[0]["host"], "alpha");
    assert_ne!(host_name(), "alpha");
    assert_clean(&target, false, "after selective copies");
}

// ---- 4. local ↔ S3 -------------------------------------------------------------------

/// A fresh location below `LIFEBOAT_TEST_S3` for one repository, or `None` to skip (as the
/// e2e S3 test does: a missing server fails only with `LIFEBOAT_REQUIRE_S3=1`).
fn s3_location(name: &str) -> Option<String> {
    let Ok(base) = std::env::var("LIFEBOAT_TEST_S3") else {
        if std::env::var("LIFEBOAT_REQUIRE_S3").is_ok_and(|v| v == "1") {
            panic!("LIFEBOAT_REQUIRE_S3=1 but LIFEBOAT_TEST_S3 is not set");
        }
        eprintln!(
            "skipping S3 copy test: set LIFEBOAT_TEST_S3 (see crates/store/S3_TEST_SERVER.md)"
        );
        return None;
    };
    let unique = format!(
        "copy-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    Some(format!("{}/{unique}", base.trim_end_matches('/')))
}

/// Two backups into a new `source`; copy into `target` before it exists (exit 10, nothing
/// created); copy all into `target` (initialised related to the source), restores from it
/// byte for byte, read-data check, idempotent re-copy, then an incremental one.
fn copy_round_trip(tmp: &Path, source: &Repo, target: &Repo) {
    source.init();
    let mut h = History::new(tmp, 0x53, 30, 1 << 20);
    let first = h.backup(source, &[]);
    h.change(200_000);
    let second = h.backup(source, &[]);
    let r = run_cmd(copy_cmd(source, target, &[]));
    r.expect_code(10);
    assert!(r.stderr().contains("init"), "{}", r.stderr());
    target.run(&["snapshots"]).expect_code(10);
    init_related(target, source, Secret::Env);
    let r = copy(source, target, &[]);
    assert_eq!(
        copied_pairs(&r)
            .into_iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        vec![first.clone(), second.clone()],
        "{r:#}"
    );
    assert!(num(&r, "bytes_sent") > 1 << 20, "{r:#}");
    let map = assert_faithful_copies(target, &source.snapshots(), true);
    for id in [&first, &second] {
        h.assert_restores(target, &map[id], id, tmp);
    }
    let c = assert_clean(target, true, "S3 copy target");
    assert_eq!(num(&c, "snapshots"), 2);
    assert_eq!(num(&c, "packs_read"), num(&c, "packs"), "{c:#}");
    assert_eq!(num(&c, "packs"), num(&r, "packs_written"), "{c:#}");

    let again = copy(source, target, &[]);
    assert_eq!(num(&again, "bytes_sent"), 0, "{again:#}");
    assert_eq!(num(&again, "snapshots_present"), 2, "{again:#}");

    h.change(100_000);
    let third = h.backup(source, &[]);
    let inc = copy(source, target, &[]);
    assert!(num(&inc, "blobs_present") > 0, "{inc:#}");
    assert!(
        num(&inc, "bytes_sent") * 3 < num(&r, "bytes_sent"),
        "{inc:#}"
    );
    let map = assert_faithful_copies(target, &source.snapshots(), true);
    h.assert_restores(target, &map[&third], &third, tmp);
    // The wrong password is refused by the target whatever its backend.
    source_at(&target.location)
        .run(&["snapshots"])
        .expect_code(11);
}

#[test]
fn copy_local_to_s3() {
    let Some(location) = s3_location("to-s3") else {
        return;
    };
    let tmp = common::tempdir();
    let source = source_at(path_str(&tmp.path().join("source")));
    let target = target_at(location);
    copy_round_trip(tmp.path(), &source, &target);
}

#[test]
fn copy_s3_to_local() {
    let Some(location) = s3_location("from-s3") else {
        return;
    };
    let tmp = common::tempdir();
    let source = source_at(location);
    let target = target_at(path_str(&tmp.path().join("target")));
    copy_round_trip(tmp.path(), &source, &target);
}

// ---- 5. SIGKILL of copy --------------------------------------------------------------

/// Kills that must land (the copy died of SIGKILL).
const KILLS: usize = 16;
/// Give up if this many attempts did not produce enough kills.
const MAX_ATTEMPTS: usize = 80;
/// Snapshots in the kill test's source.
const KILL_SNAPSHOTS: usize = 5;

fn kill_seed() -> u64 {
    let s = std::env::var("LIFEBOAT_COPY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xc0b1_5eed);
    eprintln!("copy kill test: seed {s} (set LIFEBOAT_COPY_SEED to replay another)");
    s
}

/// What a local target holds, by kind; `data_bytes` includes staging files (a killed
/// upload's partial pack, `name#N`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct TargetState {
    packs: usize,
    indexes: usize,
    snapshots: usize,
    staging: usize,
    data_bytes: u64,
}

fn target_state(dir: &Path) -> TargetState {
    let data = common::files_below(&dir.join("data"), true);
    let staging = data.keys().filter(|k| k.contains('#')).count();
    TargetState {
        packs: data.len() - staging,
        indexes: common::files_below(&dir.join("index"), false).len(),
        snapshots: common::files_below(&dir.join("snapshots"), false).len(),
        staging,
        data_bytes: data.values().sum(),
    }
}

/// What a killed copy was doing, judged by what it left behind: `orphans` are the packs
/// `check` reports as in no index, before and after. With fewer than 16 packs per snapshot,
/// copy writes one index file per snapshot, just before the snapshot object.
fn copy_phase(before: TargetState, after: TargetState, orphans: (usize, usize)) -> &'static str {
    let new_indexes = after.indexes - before.indexes;
    let new_snapshots = after.snapshots - before.snapshots;
    if after.staging > before.staging {
        "mid-upload (staging file left)"
    } else if orphans.1 > orphans.0 {
        "packs uploaded, not yet indexed"
    } else if new_indexes > new_snapshots {
        "index written, no snapshot"
    } else if new_snapshots > 0 {
        "right after a snapshot"
    } else {
        "nothing stored"
    }
}

/// A kill moment for a copy into the local target `dir` that still lacks `left` of
/// `snapshots` snapshots: a random delay within the time a full copy took (any moment is
/// valid), or the k-th new pack, index or snapshot object of this copy.
fn copy_kill_trigger(
    rng: &mut StdRng,
    dir: &Path,
    full: Duration,
    packs: usize,
    (left, snapshots): (usize, usize),
) -> (Trigger, String) {
    let before = target_state(dir);
    let dir = dir.to_path_buf();
    let packs = (packs * left).div_ceil(snapshots).max(1);
    match rng.gen_range(0..8) {
        0..=2 => {
            let d = full.mul_f64(rng.gen_range(0.0..1.0));
            (Trigger::After(d), format!("after {d:?}"))
        }
        3 | 4 => {
            let k = rng.gen_range(1..=packs);
            (
                Trigger::When(Box::new(move || {
                    target_state(&dir).packs >= before.packs + k
                })),
                format!("at new pack #{k}"),
            )
        }
        5 | 6 => {
            let k = rng.gen_range(1..=left);
            (
                Trigger::When(Box::new(move || {
                    target_state(&dir).indexes >= before.indexes + k
                })),
                format!("at new index file #{k}"),
            )
        }
        _ => {
            let k = rng.gen_range(1..=left);
            (
                Trigger::When(Box::new(move || {
                    target_state(&dir).snapshots >= before.snapshots + k
                })),
                format!("at new snapshot #{k}"),
            )
        }
    }
}

/// After a kill: `check` exits 0 with nothing worse than unindexed-pack warnings, and the
/// target's snapshots are copies of the source's oldest ones (copy goes oldest first).
/// Returns how many there are and how many packs are in no index.
#[track_caller]
fn assert_consistent_prefix(target: &Repo, ids: &[String], context: &str) -> (usize, usize) {
    let r = target.run(&["--json", "check"]);
    assert_eq!(
        r.code(),
        Some(0),
        "{context}: check fails\n{}\n{}",
        r.stdout(),
        r.stderr()
    );
    let findings = r.json()["findings"].as_array().expect("findings").clone();
    for f in &findings {
        assert_eq!(f["severity"], "warning", "{context}: {f}");
        assert!(
            f["message"]
                .as_str()
                .is_some_and(|m| m.contains("not in any index")),
            "{context}: unexpected warning {f}"
        );
    }
    let originals: Vec<String> = target
        .snapshots()
        .iter()
        .map(|s| s["original"].as_str().expect("original").to_owned())
        .collect();
    assert_eq!(
        originals,
        ids[..originals.len()],
        "{context}: the target's snapshots are not the source's oldest ones"
    );
    (originals.len(), findings.len())
}

#[test]
fn sigkill_of_copy_at_random_moments_leaves_a_resumable_target() {
    let seed = kill_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = common::tempdir();
    let source = source_at(path_str(&tmp.path().join("source")));
    source.init();
    let mut h = History::new(tmp.path(), seed, 80, 2 << 20);
    let mut ids = vec![h.backup(&source, &[])];
    while ids.len() < KILL_SNAPSHOTS {
        h.change(2 << 20);
        ids.push(h.backup(&source, &[]));
    }
    let src_snaps = source.snapshots();

    // What each snapshot adds when copied on its own, oldest first, and one full copy.
    let reference = target_at(path_str(&tmp.path().join("reference")));
    init_related(&reference, &source, Secret::Env);
    let cost: Vec<u64> = ids
        .iter()
        .map(|id| {
            let r = copy(&source, &reference, &[id]);
            assert_eq!(copied_pairs(&r).len(), 1, "{r:#}");
            num(&r, "bytes_sent")
        })
        .collect();
    let whole = target_at(path_str(&tmp.path().join("whole")));
    init_related(&whole, &source, Secret::Env);
    let started = Instant::now();
    let full = copy(&source, &whole, &[]);
    let full_time = started.elapsed();
    let full_bytes = num(&full, "bytes_sent");
    assert_eq!(
        full_bytes,
        cost.iter().sum::<u64>(),
        "one copy of all snapshots sends what copying them one by one does: {full:#}"
    );
    let full_packs = num(&full, "packs_written") as usize;
    assert!(full_packs >= 2 * KILL_SNAPSHOTS, "{full:#}");
    // remaining[m]: what a copy sends once the first m snapshots' data is in the target.
    let remaining: Vec<u64> = (0..=KILL_SNAPSHOTS)
        .map(|m| cost[m..].iter().sum())
        .collect();
    eprintln!(
        "full copy: {full_bytes} B in {full_packs} packs, {full_time:?}; per snapshot {cost:?}"
    );

    let mut kills = 0;
    let mut attempts = 0;
    let mut finished_early = 0;
    let mut sent_total = 0u64;
    let mut resumed = 0;
    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    let mut round = 0;
    let mut last_target = None;
    while kills < KILLS {
        assert!(
            attempts < MAX_ATTEMPTS,
            "only {kills} kills in {attempts} attempts (seed {seed})"
        );
        round += 1;
        let dir = tmp.path().join(format!("target-{round:02}"));
        let target = target_at(path_str(&dir));
        init_related(&target, &source, Secret::Env);
        let planned = rng.gen_range(1..=3);
        let mut killed_here = 0;
        let mut orphans = 0;
        let mut present = 0;
        while killed_here < planned && present < KILL_SNAPSHOTS && attempts < MAX_ATTEMPTS {
            let before = target_state(&dir);
            let (trigger, what) = copy_kill_trigger(
                &mut rng,
                &dir,
                full_time,
                full_packs,
                (KILL_SNAPSHOTS - present, KILL_SNAPSHOTS),
            );
            let out = run_with_signal(copy_cmd(&source, &target, &[]), Signal::SIGKILL, trigger)
                .expect("run copy");
            attempts += 1;
            let after = target_state(&dir);
            sent_total += after.data_bytes.saturating_sub(before.data_bytes);
            let context = format!("seed {seed}, round {round}, attempt {attempts}, {what}");
            let (now_present, now_orphans) = assert_consistent_prefix(&target, &ids, &context);
            present = now_present;
            if out.killed_by() == Some(Signal::SIGKILL as i32) {
                kills += 1;
                killed_here += 1;
                *phases
                    .entry(copy_phase(before, after, (orphans, now_orphans)))
                    .or_default() += 1;
            } else {
                assert_eq!(
                    out.code(),
                    Some(0),
                    "{context}: copy failed: {}",
                    out.stderr_text()
                );
                finished_early += 1;
            }
            orphans = now_orphans;
            if !out.signalled {
                break;
            }
        }
        // Resume: the next copy finishes and sends exactly what is not in the target's index
        // yet: the snapshots not copied, less the one whose index (but not snapshot) a kill
        // may have left behind.
        let context = format!("seed {seed}, round {round} (resume)");
        let (present, _) = assert_consistent_prefix(&target, &ids, &context);
        let before = target_state(&dir);
        let r = copy(&source, &target, &[]);
        let sent = num(&r, "bytes_sent");
        sent_total += sent;
        assert_eq!(
            target_state(&dir).data_bytes - before.data_bytes,
            sent,
            "{context}: bytes_sent is not what landed in data/: {r:#}"
        );
        let allowed: Vec<u64> = remaining[present..(present + 2).min(KILL_SNAPSHOTS + 1)].to_vec();
        assert!(
            allowed.contains(&sent),
            "{context}: with {present} snapshots copied the resuming copy should send one of \
             {allowed:?} B, sent {sent}: {r:#}"
        );
        assert_eq!(
            copied_pairs(&r)
                .into_iter()
                .map(|p| p.0)
                .collect::<Vec<_>>(),
            ids[present..],
            "{context}: {r:#}"
        );
        if sent < full_bytes {
            resumed += 1;
        }
        // Every copy run's snapshot links to its parent's copy, across runs too.
        assert_faithful_copies(&target, &src_snaps, true);
        let r = target.run(&["--json", "check", "--read-data"]);
        r.expect_code(0);
        for f in r.json()["findings"].as_array().expect("findings") {
            assert_eq!(f["severity"], "warning", "{context}: {f}");
        }
        let map = by_original(&target);
        let newest = &ids[KILL_SNAPSHOTS - 1];
        h.assert_restores(&target, &id_of(&map[newest]), newest, tmp.path());
        last_target = Some(target);
    }
    // The last target: every snapshot restores byte for byte.
    let target = last_target.expect("at least one round");
    let map = assert_faithful_copies(&target, &src_snaps, true);
    for id in &ids {
        h.assert_restores(&target, &map[id], id, tmp.path());
    }
    eprintln!(
        "copy kill test: {kills} kills in {attempts} attempts over {round} rounds \
         ({finished_early} copies finished before their kill moment); {resumed} resuming \
         copies sent less than a full copy ({full_bytes} B); {sent_total} B sent in all \
         ({:.2} full copies for {round} complete targets)",
        sent_total as f64 / full_bytes as f64
    );
    for (phase, n) in &phases {
        eprintln!("  {n:3} × killed with {phase}");
    }
    assert!(kills >= KILLS);
    assert!(
        resumed >= 1,
        "no resuming copy ever sent less than a full copy (seed {seed})"
    );
}

// ---- checkpoints within one snapshot ---------------------------------------------------

/// Creates a target related to `source` as `init --copy-chunker-params` does, but with
/// `pack_size` packs (the command line has no option for the pack size), via the library.
fn init_related_small_packs(target: &Repo, source: &Repo, pack_size: u32) {
    use lifeboat_repo::keys::KdfParams;
    use lifeboat_repo::{InitOptions, Repository};
    use lifeboat_store::{Store, StoreOptions};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let opts = StoreOptions::default();
    let src = Repository::open(
        Store::open(&source.location, &opts).expect("source store"),
        rt.handle().clone(),
        source.password.as_bytes(),
    )
    .expect("open source");
    Repository::init(
        Store::open(&target.location, &opts).expect("target store"),
        rt.handle().clone(),
        target.password.as_bytes(),
        InitOptions {
            copy_chunker_from: Some(src.config().clone()),
            related_key: Some(src.key().clone()),
            kdf: Some(KdfParams::insecure_for_tests()),
            pack_size_bytes: Some(pack_size),
            ..Default::default()
        },
    )
    .expect("init target");
}

/// Distinct blobs in `repo`'s index (`stats`).
fn indexed_blobs(repo: &Repo) -> u64 {
    let s = repo.json(&["stats"]);
    num(&s["repository"], "data_blobs") + num(&s["repository"], "tree_blobs")
}

#[test]
fn a_killed_copy_of_one_large_snapshot_resumes_from_its_index_checkpoints() {
    let tmp = common::tempdir();
    let source = source_at(path_str(&tmp.path().join("source")));
    source.init();
    // ~300 small files: with 32 KiB packs a copy writes dozens of packs for this one snapshot
    // and checkpoints its index every 16 of them.
    let mut h = History::new(tmp.path(), 0xc4ec, 300, 200_000);
    let id = h.backup(&source, &[]);
    let pack_size = 32 * 1024;
    let reference = target_at(path_str(&tmp.path().join("reference")));
    init_related_small_packs(&reference, &source, pack_size);
    let full = copy(&source, &reference, &[]);
    let full_blobs = num(&full, "blobs_copied");
    let index_files = common::files_below(&tmp.path().join("reference/index"), false).len();
    assert!(
        num(&full, "packs_written") >= 48 && index_files >= 4,
        "too few packs or checkpoints to test resuming: {full:#}"
    );

    let dir = tmp.path().join("target");
    let target = target_at(path_str(&dir));
    init_related_small_packs(&target, &source, pack_size);
    let mut kills = 0;
    let mut blobs_sent = 0;
    loop {
        let indexed = indexed_blobs(&target);
        let before = target_state(&dir);
        let out = run_with_signal(
            copy_cmd(&source, &target, &[]),
            Signal::SIGKILL,
            Trigger::When(Box::new({
                let dir = dir.clone();
                move || target_state(&dir).indexes > before.indexes
            })),
        )
        .expect("run copy");
        let context = format!("after kill {kills}");
        assert_consistent_prefix(&target, std::slice::from_ref(&id), &context);
        if out.killed_by() == Some(Signal::SIGKILL as i32) {
            kills += 1;
            let now = indexed_blobs(&target);
            assert!(
                now > indexed,
                "{context}: a kill after a checkpoint kept nothing ({indexed} → {now} blobs)"
            );
            blobs_sent += now - indexed; // at least; orphaned packs are sent again
            if target_state(&dir).snapshots == 1 {
                // The trigger fired on the final index file and the kill landed only after
                // the snapshot that follows it: the copy had finished. Still consistent.
                assert_eq!(now, full_blobs, "{context}: a snapshot before all blobs");
                break;
            }
            continue;
        }
        assert_eq!(out.code(), Some(0), "{}", out.stderr_text());
        let r: Value = serde_json::from_slice(&out.stdout).expect("copy report");
        assert_eq!(
            num(&r, "blobs_present"),
            indexed,
            "the resuming copy reuses every checkpointed blob: {r:#}"
        );
        assert_eq!(
            num(&r, "blobs_copied") + indexed,
            full_blobs,
            "the resuming copy sends exactly the rest: {r:#}"
        );
        if kills > 0 {
            assert!(num(&r, "bytes_sent") < num(&full, "bytes_sent"), "{r:#}");
        }
        blobs_sent += num(&r, "blobs_copied");
        break;
    }
    eprintln!("{kills} kills at index checkpoints; {blobs_sent} of {full_blobs} blobs kept");
    assert!(kills >= 3, "only {kills} checkpoints were hit");
    assert_eq!(blobs_sent, full_blobs);
    let map = assert_faithful_copies(&target, &source.snapshots(), true);
    h.assert_restores(&target, &map[&id], &id, tmp.path());
    let c = target.run(&["--json", "check", "--read-data"]);
    c.expect_code(0);
}

// ---- locks ---------------------------------------------------------------------------

/// Longest wait for an event a child process should produce.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A child running in the background, reaped only by [`Bg::finish`] (so signals sent before
/// reach only it, never a recycled pid). Its stdout is discarded: it is judged by its exit
/// code, its stderr and what it leaves in the repositories.
struct Bg {
    what: String,
    child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Bg {
    fn spawn(mut cmd: Command) -> Bg {
        let what = format!("{cmd:?}");
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let mut pipe = child.stderr.take().expect("piped");
        let stderr = Some(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = std::io::Read::read_to_end(&mut pipe, &mut buf);
            buf
        }));
        Bg {
            what,
            child,
            stderr,
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Polls `cond` until it holds; panics if the child exits first.
    #[track_caller]
    fn wait_until(&mut self, event: &str, mut cond: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !cond() {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                panic!("`{}` exited ({st}) before {event}", self.what);
            }
            assert!(
                t0.elapsed() < EVENT_TIMEOUT,
                "`{}`: no {event} within {EVENT_TIMEOUT:?}",
                self.what
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("kill(2)");
    }

    /// Waits for the child; its exit code and stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().expect("wait");
        let err = self
            .stderr
            .take()
            .map(|h| h.join().expect("stderr reader"))
            .unwrap_or_default();
        (status.code(), String::from_utf8_lossy(&err).into_owned())
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(self.pid(), Signal::SIGCONT);
            let _ = nix::sys::signal::kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// A source with `snapshots` backups of about 2 MiB new data each, and a related target.
fn fixture(tmp: &Path, seed: u64, snapshots: usize) -> (Repo, Repo, History, Vec<String>) {
    let source = source_at(path_str(&tmp.join("source")));
    source.init();
    let mut h = History::new(tmp, seed, 40, 2 << 20);
    let mut ids = vec![h.backup(&source, &[])];
    while ids.len() < snapshots {
        h.change(2 << 20);
        ids.push(h.backup(&source, &[]));
    }
    let target = target_at(path_str(&tmp.join("target")));
    init_related(&target, &source, Secret::Env);
    (source, target, h, ids)
}

#[test]
fn copy_holds_shared_locks_on_both_repositories() {
    let tmp = common::tempdir();
    let (source, target, mut h, ids) = fixture(tmp.path(), 0x10c, 3);
    let src_locks = tmp.path().join("source/locks");
    let dst_locks = tmp.path().join("target/locks");

    // Stop the copy once it holds both locks (the source's is taken first).
    let mut c = Bg::spawn(copy_cmd(&source, &target, &[]));
    c.wait_until("the copy's lock in the target", || {
        !common::files_below(&dst_locks, false).is_empty()
    });
    c.signal(Signal::SIGSTOP);
    assert_eq!(
        common::files_below(&src_locks, false).len(),
        1,
        "source lock"
    );
    assert_eq!(
        common::files_below(&dst_locks, false).len(),
        1,
        "target lock"
    );

    // Prune (exclusive) is refused on either side, naming the copy.
    for (repo, op) in [(&target, "`copy`"), (&source, "`copy (source)`")] {
        let r = repo.run(&["prune"]);
        r.expect_code(13);
        let err = r.stderr();
        assert!(
            err.contains("repository is locked")
                && err.contains(op)
                && err.contains(&format!("pid {}", c.pid())),
            "prune's refusal does not name the copy ({op}): {err}"
        );
    }
    // Backups (shared) go on meanwhile, on both sides.
    h.change(10_000);
    let during = h.backup(&source, &[]);
    target_at(&target.location).backup(&[path_str(&h.src)]);

    c.signal(Signal::SIGCONT);
    let (code, err) = c.finish();
    assert_eq!(code, Some(0), "copy failed: {err}");
    assert!(
        common::files_below(&src_locks, true).is_empty(),
        "source lock left"
    );
    assert!(
        common::files_below(&dst_locks, true).is_empty(),
        "target lock left"
    );
    // Whatever the copy selected, one more copy brings everything over exactly once.
    copy(&source, &target, &[]);
    let originals: Vec<String> = target
        .snapshots()
        .iter()
        .filter_map(|s| s["original"].as_str().map(str::to_owned))
        .collect();
    let mut want = ids.clone();
    want.push(during);
    assert_eq!(originals, want, "every source snapshot copied once");
    assert_eq!(
        target.snapshots().len(),
        ids.len() + 2,
        "copies + the direct backup"
    );
    let r = target.run(&["--json", "check"]);
    r.expect_code(0);
}

#[test]
fn concurrent_copies_into_one_target_copy_each_snapshot_once() {
    let tmp = common::tempdir();
    let (source, target, _h, ids) = fixture(tmp.path(), 0xdc, 4);
    let dst = tmp.path().join("target");
    // Copy A is stopped mid-way: after its first pack, before its last snapshot.
    let mut a = Bg::spawn(copy_cmd(&source, &target, &[]));
    a.wait_until("copy A's first pack", || target_state(&dst).packs >= 1);
    a.signal(Signal::SIGSTOP);
    let done_by_a = target_state(&dst).snapshots;
    assert!(
        done_by_a < ids.len(),
        "copy A finished before it could be stopped; make the fixture bigger"
    );
    // Copy B runs to completion meanwhile.
    let b = copy(&source, &target, &[]);
    assert_eq!(
        copied_pairs(&b).len(),
        ids.len() - done_by_a,
        "B copies what A had not: {b:#}"
    );
    a.signal(Signal::SIGCONT);
    let (code, err) = a.finish();
    assert_eq!(code, Some(0), "copy A failed: {err}");
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for s in target.snapshots() {
        *count
            .entry(s["original"].as_str().expect("original").to_owned())
            .or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "source snapshots copied more than once: {dups:?}"
    );
    assert_eq!(count.len(), ids.len());
}
