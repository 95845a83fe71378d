//! Damage detection and containment: one flipped byte in a data pack, a tree pack, an index
//! file or a snapshot file must be reported by `check` naming the object (and, for packs, the
//! snapshots that depend on it), and must not stop undamaged files from restoring. Also the
//! documented exit codes for an unknown format version, a wrong password and a missing
//! repository.
//!
//! Every damage test starts from two backups of two unrelated directories, so each snapshot
//! has its own data pack, tree pack, index file and snapshot file, and damage to one backup's
//! objects must leave the other's restore byte-identical.

use lifeboat_testkit::repo_cli as common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use lifeboat_testkit::{
    assert_trees_equal, compare_trees, flip_byte, flip_middle_byte, generate_tree, restored_path,
    Difference, Lifeboat, TreeSpec,
};
use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

/// Objects (paths relative to the repository root, e.g. `data/ab/ab…`) one backup created.
#[derive(Debug)]
struct Backup {
    src: PathBuf,
    snapshot: String,
    data_pack: String,
    tree_pack: String,
    index: String,
}

struct Fixture {
    tmp: TempDir,
    lb: Lifeboat,
    a: Backup,
    b: Backup,
}

/// Every file below `dir`, relative to `root`, as `/`-joined strings.
fn objects(root: &Path, dir: &str) -> BTreeSet<String> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root)
                        .expect("below root")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, &root.join(dir), &mut out);
    out
}

fn new_objects(before: &BTreeSet<String>, after: &BTreeSet<String>) -> Vec<String> {
    after.difference(before).cloned().collect()
}

/// Backs up `src` and works out which of the new packs hold trees and which file data.
///
/// Pack payloads are encrypted, so this is decided by behaviour instead of by size or count
/// (which depend on the pipeline's thread count): with one byte in the middle of a pack
/// flipped, a structure-only `check` names that pack in a finding about a *tree* exactly
/// when the pack holds trees (it reads every tree, but no file data). Each flip is undone.
fn backup(lb: &Lifeboat, src: PathBuf) -> Backup {
    let repo = lb.repo();
    let (packs0, index0) = (objects(repo, "data"), objects(repo, "index"));
    let snapshot = lb.backup(&[&src]);
    let packs = new_objects(&packs0, &objects(repo, "data"));
    let index = new_objects(&index0, &objects(repo, "index"));
    assert_eq!(index.len(), 1, "expected one index file: {index:?}");
    let (mut tree_packs, mut data_packs) = (Vec::new(), Vec::new());
    for p in packs {
        let path = repo.join(&p);
        let offset = flip_middle_byte(&path).expect("flip");
        let (_, report) = lb.check(&[]);
        flip_byte(&path, offset).expect("flip back");
        let is_tree = report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| {
                f["object"] == p.as_str()
                    && f["message"].as_str().unwrap_or_default().contains("tree ")
            });
        let size = fs::metadata(&path).expect("pack").len();
        if is_tree {
            tree_packs.push((size, p));
        } else {
            data_packs.push((size, p));
        }
    }
    assert!(
        !tree_packs.is_empty() && !data_packs.is_empty(),
        "expected tree and data packs: trees {tree_packs:?}, data {data_packs:?}"
    );
    // The biggest of each, so the middle byte surely lies inside a blob.
    tree_packs.sort();
    data_packs.sort();
    Backup {
        src,
        snapshot,
        tree_pack: tree_packs.pop().expect("tree pack").1,
        data_pack: data_packs.pop().expect("data pack").1,
        index: index[0].clone(),
    }
}

fn source(root: &Path, seed: u64) -> PathBuf {
    generate_tree(
        root,
        seed,
        &TreeSpec {
            files: 80,
            max_file_size: 64 * 1024,
            dirs: 8,
            max_depth: 3,
            duplicates: 4,
            large_files: 1,
            large_file_size: 1536 * 1024,
        },
    );
    root.to_path_buf()
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lb = Lifeboat::new(BIN, tmp.path().join("repo"));
    lb.ok(&common::INIT);
    let a = backup(&lb, source(&tmp.path().join("a"), 1));
    let b = backup(&lb, source(&tmp.path().join("b"), 2));
    let (run, _) = lb.check(&["--read-data"]);
    run.expect_code(0);
    Fixture { tmp, lb, a, b }
}

impl Fixture {
    fn path(&self, object: &str) -> PathBuf {
        self.lb.repo().join(object)
    }

    /// Restores `snapshot` into a fresh directory; returns the run and the restored copy of
    /// `src`.
    fn restore(&self, snapshot: &str, src: &Path, name: &str) -> (lifeboat_testkit::Run, PathBuf) {
        let target = self.tmp.path().join(name);
        let run = self.lb.restore(snapshot, &target, &[]);
        (run, restored_path(&target, src))
    }

    /// The undamaged backup restores completely and exactly.
    #[track_caller]
    fn assert_restores_exactly(&self, backup: &Backup, name: &str) {
        let (run, restored) = self.restore(&backup.snapshot, &backup.src, name);
        run.expect_code(0);
        assert_trees_equal(&backup.src, &restored);
    }

    /// The damaged backup restores partially (exit 3): whatever was restored equals the
    /// source, and something is missing. Returns the missing paths.
    #[track_caller]
    fn assert_restores_partially(&self, backup: &Backup, name: &str) -> Vec<PathBuf> {
        let (run, restored) = self.restore(&backup.snapshot, &backup.src, name);
        run.expect_code(3);
        fs::create_dir_all(&restored).expect("restored root");
        let diffs = compare_trees(&backup.src, &restored);
        let missing: Vec<PathBuf> = diffs
            .iter()
            .filter_map(|d| match d {
                Difference::Missing(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        for d in &diffs {
            match d {
                Difference::Missing(_) => {}
                // A hard link whose partner was not restored is fine.
                Difference::HardLinks {
                    expected, actual, ..
                } if actual.is_subset(expected)
                    && expected.difference(actual).all(|p| missing.contains(p)) => {}
                d => panic!("a restored entry differs from its source: {d}\n{run:?}"),
            }
        }
        assert!(
            !missing.is_empty(),
            "restore exited 3 but nothing is missing"
        );
        missing
    }
}

/// The findings of `check EXTRA…`, asserting exit 4.
#[track_caller]
fn damaged_findings(lb: &Lifeboat, extra: &[&str]) -> Vec<Value> {
    let (run, report) = lb.check(extra);
    run.expect_code(4);
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "error")
        .cloned()
        .collect()
}

/// Error findings about `object`, asserting there is at least one.
#[track_caller]
fn about<'a>(findings: &'a [Value], object: &str) -> Vec<&'a Value> {
    let mine: Vec<&Value> = findings.iter().filter(|f| f["object"] == object).collect();
    assert!(
        !mine.is_empty(),
        "no finding names {object}; findings: {findings:#?}"
    );
    mine
}

fn snapshots_of(f: &Value) -> Vec<String> {
    f["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| s.as_str().expect("id").to_owned())
        .collect()
}

/// `short` is a prefix of `full` (findings use 8-character short ids).
fn same_id(short: &str, full: &str) -> bool {
    !short.is_empty() && full.starts_with(short)
}

/// Some finding about the object lists snapshot `hit`, none lists `spared`.
#[track_caller]
fn assert_affects(findings: &[&Value], hit: &str, spared: &str) {
    let ids: Vec<String> = findings.iter().flat_map(|f| snapshots_of(f)).collect();
    assert!(
        ids.iter().any(|s| same_id(s, hit)),
        "findings should list snapshot {hit}: {findings:#?}"
    );
    assert!(
        !ids.iter().any(|s| same_id(s, spared)),
        "findings should not list snapshot {spared}: {findings:#?}"
    );
}

#[test]
fn flipped_byte_in_data_pack() {
    let fx = fixture();
    let offset = flip_middle_byte(&fx.path(&fx.a.data_pack)).expect("flip");

    // Structure-only check need not read blob bytes; it must not fail outright either way.
    let (run, _) = fx.lb.check(&[]);
    assert!(
        matches!(run.code, Some(0) | Some(4)),
        "structure check: {run:?}"
    );

    let findings = damaged_findings(&fx.lb, &["--read-data"]);
    let mine = about(&findings, &fx.a.data_pack);
    assert_affects(&mine, &fx.a.snapshot, &fx.b.snapshot);
    assert!(
        findings
            .iter()
            .all(|f| f["object"] == fx.a.data_pack.as_str()),
        "only the damaged pack is reported: {findings:#?}"
    );

    let missing = fx.assert_restores_partially(&fx.a, "restore-a");
    for p in &missing {
        assert!(
            fs::symlink_metadata(fx.a.src.join(p))
                .expect("source")
                .is_file(),
            "only files can be lost to a damaged data blob, not {}",
            p.display()
        );
    }
    fx.assert_restores_exactly(&fx.b, "restore-b");

    // Undo the damage: everything is fine again (the flip was the only problem).
    flip_byte(&fx.path(&fx.a.data_pack), offset).expect("flip back");
    fx.lb.check(&["--read-data"]).0.expect_code(0);
}

#[test]
fn flipped_byte_in_tree_pack() {
    let fx = fixture();
    flip_middle_byte(&fx.path(&fx.a.tree_pack)).expect("flip");

    // Trees are read by every check, so no --read-data is needed.
    let findings = damaged_findings(&fx.lb, &[]);
    let mine = about(&findings, &fx.a.tree_pack);
    assert_affects(&mine, &fx.a.snapshot, &fx.b.snapshot);
    assert!(
        mine.iter()
            .any(|f| f["message"].as_str().unwrap_or_default().contains("tree")),
        "the finding should say a tree is damaged: {mine:#?}"
    );
    let findings = damaged_findings(&fx.lb, &["--read-data"]);
    assert_affects(
        &about(&findings, &fx.a.tree_pack),
        &fx.a.snapshot,
        &fx.b.snapshot,
    );

    fx.assert_restores_partially(&fx.a, "restore-a");
    fx.assert_restores_exactly(&fx.b, "restore-b");
}

#[test]
fn flipped_byte_in_index_file_then_repair() {
    let fx = fixture();
    flip_middle_byte(&fx.path(&fx.a.index)).expect("flip");

    let findings = damaged_findings(&fx.lb, &[]);
    about(&findings, &fx.a.index);
    assert!(
        findings.iter().all(|f| f["object"] == fx.a.index.as_str()),
        "the packs themselves are fine: {findings:#?}"
    );

    // Restores fall back to the pack trailers.
    fx.assert_restores_exactly(&fx.a, "restore-a");
    fx.assert_restores_exactly(&fx.b, "restore-b");

    fx.lb.ok(&["repair", "index"]);
    assert!(
        !fx.path(&fx.a.index).exists(),
        "repair index should remove the damaged index file"
    );
    let (run, report) = fx.lb.check(&["--read-data"]);
    run.expect_code(0);
    assert_eq!(
        report["findings"].as_array().expect("findings").len(),
        0,
        "after repair: {report:#}"
    );
    fx.assert_restores_exactly(&fx.a, "restore-a2");
}

#[test]
fn flipped_byte_in_snapshot_file() {
    let fx = fixture();
    let object = format!("snapshots/{}", fx.a.snapshot);
    flip_middle_byte(&fx.path(&object)).expect("flip");

    let findings = damaged_findings(&fx.lb, &[]);
    about(&findings, &object);

    // The other snapshot is still listed and restores; the damaged one is skipped.
    let snaps = fx.lb.run(&["snapshots", "--json"]);
    snaps.expect_code(0);
    let ids: Vec<String> = snaps
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids, vec![fx.b.snapshot.clone()]);
    assert!(
        snaps.stderr.contains(&fx.a.snapshot[..8]),
        "snapshots should warn about the damaged one: {}",
        snaps.stderr
    );
    fx.assert_restores_exactly(&fx.b, "restore-b");
    let (run, _) = fx.restore(&fx.a.snapshot, &fx.a.src, "restore-a");
    assert_ne!(
        run.code,
        Some(0),
        "a damaged snapshot cannot restore: {run:?}"
    );
}

#[test]
fn unknown_format_version_says_upgrade() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lb = Lifeboat::new(BIN, tmp.path().join("repo"));
    lb.ok(&common::INIT);
    let src = source(&tmp.path().join("src"), 3);
    let id = lb.backup(&[&src]);

    let config = tmp.path().join("repo/config");
    let mut bytes = fs::read(&config).expect("config");
    assert_eq!(&bytes[..4], b"LBRC");
    bytes[4..8].copy_from_slice(&99u32.to_le_bytes());
    fs::write(&config, bytes).expect("write config");

    let target = tmp.path().join("target");
    let commands: Vec<Vec<&str>> = vec![
        vec!["snapshots"],
        vec!["snapshots", "--json"],
        vec!["check"],
        vec!["backup", src.to_str().expect("utf-8")],
        vec!["restore", &id, "--target", target.to_str().expect("utf-8")],
        vec!["ls", &id],
        vec!["repair", "index"],
        vec!["key", "list"],
    ];
    for args in commands {
        let r = lb.run(&args);
        r.expect_code(12);
        assert!(
            r.stderr.contains("upgrade") && r.stderr.contains("99"),
            "{args:?}: message should name the version and say upgrade: {}",
            r.stderr
        );
        // A wrong password must not mask the version problem.
        lb.with_password("not the password")
            .run(&args)
            .expect_code(12);
    }
    assert!(!target.exists(), "nothing may be restored");
}

#[test]
fn wrong_password_exits_11() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lb = Lifeboat::new(BIN, tmp.path().join("repo"));
    lb.ok(&common::INIT);
    let bad = lb.with_password("not the password");
    for args in [
        vec!["snapshots"],
        vec!["check"],
        vec!["backup", "/dev/null"],
    ] {
        let r = bad.run(&args);
        r.expect_code(11);
        assert!(
            r.stderr.contains("wrong password"),
            "{args:?}: message should say wrong password: {}",
            r.stderr
        );
    }
    lb.ok(&["snapshots"]);
}

#[test]
fn missing_repository_exits_10() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    for repo in [tmp.path().join("does-not-exist"), empty] {
        let lb = Lifeboat::new(BIN, &repo);
        for args in [
            vec!["snapshots"],
            vec!["check"],
            vec!["backup", "/dev/null"],
        ] {
            let r = lb.run(&args);
            r.expect_code(10);
            assert!(
                r.stderr.contains("no repository") && r.stderr.contains("init"),
                "{} {args:?}: message should say there is no repository and how to make one: {}",
                repo.display(),
                r.stderr
            );
        }
        assert!(
            !repo.join("config").exists(),
            "a read command must not create a repository"
        );
    }
}

/// With a data pack gone, restore must name every path it could not restore (not just the
/// pack, or the first few files), and say how many.
#[test]
fn restore_after_damage_names_every_unrestored_path() {
    let fx = fixture();
    fs::remove_file(fx.path(&fx.a.data_pack)).expect("remove data pack");
    let (run, restored) = fx.restore(&fx.a.snapshot, &fx.a.src, "restore-a");
    fs::create_dir_all(&restored).expect("restored root");
    let missing: Vec<PathBuf> = compare_trees(&fx.a.src, &restored)
        .into_iter()
        .filter_map(|d| match d {
            Difference::Missing(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(!missing.is_empty(), "nothing is missing: {run:?}");
    let named: BTreeSet<&str> = run
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("not restored: "))
        .collect();
    for p in &missing {
        let path = fx.a.src.join(p).display().to_string();
        assert!(
            named.contains(path.as_str()),
            "{path} is missing from the target but not reported ({} missing, {} named)\n{run:?}",
            missing.len(),
            named.len()
        );
    }
    assert_eq!(named.len(), missing.len(), "{run:?}");
    // Whether other packs held some of the files depends on the backup's thread count.
    if objects(&restored, "").is_empty() {
        run.expect_code(1);
        assert!(run.stderr.contains("nothing was restored"), "{run:?}");
    } else {
        run.expect_code(3);
        let count = format!("{} paths were not restored", missing.len());
        assert!(run.stderr.contains(&count), "{run:?}");
    }
    fx.assert_restores_exactly(&fx.b, "restore-b");
}

/// A restore that could restore nothing at all failed: exit 1 (fatal), not 3 (partial).
#[test]
fn restore_that_restored_nothing_exits_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lb = Lifeboat::new(BIN, tmp.path().join("repo"));
    lb.ok(&common::INIT);
    let src = source(&tmp.path().join("src"), 3);
    let snapshot = lb.backup(&[&src]);
    for pack in objects(lb.repo(), "data") {
        fs::remove_file(lb.repo().join(pack)).expect("remove pack");
    }
    let run = lb.restore(&snapshot, &tmp.path().join("target"), &[]);
    run.expect_code(1);
    assert!(run.stderr.contains("nothing was restored"), "{run:?}");
    assert!(run.stderr.contains("not restored: /"), "{run:?}");
}
