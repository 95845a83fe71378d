//! `lifeboat diff` and `lifeboat stats` end to end: real backups of a tree mutated in known
//! ways, checked against what the test itself knows about the source.

use lifeboat_testkit::repo_cli as common;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn snapshot_id(backup: &Value) -> String {
    backup["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot id in {backup:#}"))
        .to_owned()
}

/// Compressible but never repeating text (no chunk dedups against another).
fn log_lines(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            format!(
                "{i:08} INFO request served in {} ms by worker {}\n",
                i % 97,
                i % 7
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// Sum of regular file sizes below `root`, a multiply-linked inode counted once.
fn source_size(root: &Path) -> u64 {
    fn walk(p: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        let md = fs::symlink_metadata(p).unwrap();
        if md.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), seen, total);
            }
        } else if md.is_file() && (md.nlink() == 1 || seen.insert((md.dev(), md.ino()))) {
            *total += md.len();
        }
    }
    let mut total = 0;
    walk(root, &mut HashSet::new(), &mut total);
    total
}

/// `(change, path)` pairs of a diff's JSON.
type Changes = Vec<(String, String)>;

/// A diff's changes, split into those below `src` (paths relative to it) and the rest.
fn changes(diff: &Value, src: &Path) -> (Changes, Changes) {
    let mut below = Vec::new();
    let mut outside = Vec::new();
    for c in diff["changes"].as_array().expect("changes array") {
        let kind = c["change"].as_str().unwrap().to_owned();
        let path = PathBuf::from(c["path"].as_str().unwrap());
        match path.strip_prefix(src) {
            Ok(rel) => below.push((kind, rel.display().to_string())),
            Err(_) => outside.push((kind, path.display().to_string())),
        }
    }
    (below, outside)
}

const FROZEN_DIR_MTIME: i64 = 1_600_000_000;

#[test]
fn diff_lists_exactly_the_changes() {
    let t = tempdir();
    let src = t.path().join("src");
    let edit_old = random_bytes(1, 200_000);
    write(&src.join("keep.txt"), b"unchanged content\n");
    write(&src.join("edit.bin"), &edit_old);
    write(&src.join("gone.txt"), b"this file will be removed\n");
    write(&src.join("chmod.txt"), b"only the mode changes\n");
    write(&src.join("becomes"), b"a file that becomes a directory\n");
    write(&src.join("sub/deep.txt"), b"deep and untouched\n");
    chmod(&src.join("chmod.txt"), 0o644);
    // The source directory's own mtime would change with every add/remove; pin it so the
    // only directory-level difference below `src` is the type change.
    set_mtime(&src, FROZEN_DIR_MTIME, 0);
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let s1 = snapshot_id(&repo.backup(&[&src]));

    let new_txt = b"a brand new file\n".to_vec();
    let inner = b"inside the new directory\n".to_vec();
    let mut edit_new = edit_old.clone();
    edit_new[1000] ^= 0xff;
    edit_new.extend_from_slice(b"appended");
    write(&src.join("new.txt"), &new_txt);
    fs::remove_file(src.join("gone.txt")).unwrap();
    fs::write(src.join("edit.bin"), &edit_new).unwrap();
    chmod(&src.join("chmod.txt"), 0o600);
    fs::remove_file(src.join("becomes")).unwrap();
    write(&src.join("becomes/inner.txt"), &inner);
    set_mtime(&src, FROZEN_DIR_MTIME, 0);
    let s2 = snapshot_id(&repo.backup(&[&src]));

    let d = repo.json(&["diff", &s1[..8], "latest"]);
    assert_eq!(d["first"], s1.as_str(), "{d:#}");
    assert_eq!(d["second"], s2.as_str(), "{d:#}");
    let (below, outside) = changes(&d, &src);
    let want: Changes = [
        ("type", "becomes"),
        ("added", "becomes/inner.txt"),
        ("metadata", "chmod.txt"),
        ("modified", "edit.bin"),
        ("removed", "gone.txt"),
        ("added", "new.txt"),
    ]
    .iter()
    .map(|(k, p)| (k.to_string(), p.to_string()))
    .collect();
    assert_eq!(below, want, "{d:#}");
    // Above the source only its ancestors can differ (/tmp's mtime moves with other tests).
    for (kind, path) in &outside {
        assert_eq!(kind, "metadata", "{d:#}");
        assert!(src.starts_with(path), "{path} is not an ancestor: {d:#}");
    }

    let s = &d["summary"];
    assert_eq!(num(s, "files_added"), 2, "{s:#}");
    assert_eq!(num(s, "files_removed"), 1, "{s:#}");
    assert_eq!(num(s, "files_changed"), 1, "{s:#}");
    assert_eq!(num(s, "files_metadata"), 1, "{s:#}");
    assert_eq!(num(s, "dirs_added"), 0, "{s:#}");
    assert_eq!(num(s, "dirs_removed"), 0, "{s:#}");
    assert_eq!(num(s, "dirs_metadata"), outside.len() as u64, "{s:#}");
    assert_eq!(num(s, "type_changed"), 1, "{s:#}");
    let becomes_len = b"a file that becomes a directory\n".len() as u64;
    let gone_len = b"this file will be removed\n".len() as u64;
    assert_eq!(
        num(s, "bytes_added"),
        (new_txt.len() + inner.len()) as u64,
        "{s:#}"
    );
    assert_eq!(num(s, "bytes_removed"), gone_len + becomes_len, "{s:#}");
    // Every file is below the 512 KiB minimum chunk: one blob per file.
    assert_eq!(num(s, "data_blobs_added"), 3, "{s:#}");
    assert_eq!(
        num(s, "data_bytes_added"),
        (edit_new.len() + new_txt.len() + inner.len()) as u64,
        "{s:#}"
    );
    assert_eq!(num(s, "data_blobs_removed"), 3, "{s:#}");
    assert_eq!(
        num(s, "data_bytes_removed"),
        edit_old.len() as u64 + gone_len + becomes_len,
        "{s:#}"
    );

    // Human output: restic-style lines in tree order, then the summary block.
    let out = repo.ok(&["diff", &s1, &s2]).stdout();
    let src_lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(src.to_str().unwrap()))
        .collect();
    let p = |rel: &str| src.join(rel).display().to_string();
    assert_eq!(
        src_lines,
        [
            format!("T    {}", p("becomes")),
            format!("+    {}", p("becomes/inner.txt")),
            format!("U    {}", p("chmod.txt")),
            format!("M    {}", p("edit.bin")),
            format!("-    {}", p("gone.txt")),
            format!("+    {}", p("new.txt")),
        ],
        "{out}"
    );
    assert!(
        out.contains("Files:        2 new, 1 removed, 1 changed, 1 metadata only"),
        "{out}"
    );
    assert!(out.contains("Type changed: 1"), "{out}");

    // --summary-only: the same counts, no paths.
    let only = repo.ok(&["diff", "--summary-only", &s1, &s2]).stdout();
    assert!(!only.contains(src.to_str().unwrap()), "{only}");
    assert!(only.contains("Files:        2 new"), "{only}");
    let j = repo.json(&["diff", "--summary-only", &s1, &s2]);
    assert!(j.get("changes").is_none(), "{j:#}");
    assert_eq!(j["summary"], d["summary"]);

    // Reversed, additions and removals swap.
    let r = repo.json(&["diff", &s2, &s1]);
    assert_eq!(r["summary"]["files_added"], d["summary"]["files_removed"]);
    assert_eq!(r["summary"]["bytes_added"], d["summary"]["bytes_removed"]);
    assert_eq!(
        r["summary"]["data_bytes_removed"],
        d["summary"]["data_bytes_added"]
    );
}

#[test]
fn diff_of_a_snapshot_with_itself_is_empty() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src.join("a"), b"a");
    write(&src.join("d/b"), &random_bytes(3, 50_000));
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let s = snapshot_id(&repo.backup(&[&src]));
    let d = repo.json(&["diff", &s, "latest"]);
    assert_eq!(d["changes"], serde_json::json!([]), "{d:#}");
    let sum = d["summary"].as_object().unwrap();
    assert!(!sum.is_empty());
    assert!(sum.values().all(|v| v == 0), "{d:#}");
    let out = repo.ok(&["diff", &s, &s]).stdout();
    assert!(!out.lines().any(|l| l.contains('/')), "{out}");
    assert!(
        out.contains("Files:        0 new, 0 removed, 0 changed"),
        "{out}"
    );
}

/// Backs up a tree with a hard-link pair, an empty file, a symlink, random and highly
/// compressible data.
fn stats_source(root: &Path) {
    write(&root.join("random.bin"), &random_bytes(7, 600_000));
    write(&root.join("logs/app.log"), &log_lines(10_000));
    write(&root.join("logs/empty"), b"");
    write(&root.join("linked"), b"one inode, two names\n");
    fs::hard_link(root.join("linked"), root.join("logs/linked-too")).unwrap();
    std::os::unix::fs::symlink("random.bin", root.join("link")).unwrap();
}

const SNAPSHOT_FIELDS: &[&str] = &[
    "id",
    "time",
    "host",
    "paths",
    "files",
    "dirs",
    "symlinks",
    "restore_size",
    "data_blobs",
    "raw_bytes",
    "stored_bytes",
    "trees",
    "missing_blobs",
];

const REPOSITORY_FIELDS: &[&str] = &[
    "snapshots",
    "packs",
    "pack_bytes",
    "unindexed_packs",
    "unindexed_pack_bytes",
    "data_blobs",
    "tree_blobs",
    "raw_bytes",
    "stored_bytes",
    "duplicate_bytes",
    "referenced_data_blobs",
    "referenced_raw_bytes",
    "referenced_stored_bytes",
    "referenced_tree_blobs",
    "garbage_bytes",
    "restore_size",
    "dedup_ratio",
    "compression_ratio",
];

/// Field presence and the inequalities that must hold in any repository.
fn assert_consistent(st: &Value) {
    let r = &st["repository"];
    for f in REPOSITORY_FIELDS {
        assert!(r.get(*f).is_some(), "repository.{f} missing: {st:#}");
    }
    let snaps = st["snapshots"].as_array().expect("snapshots array");
    for s in snaps {
        for f in SNAPSHOT_FIELDS {
            assert!(s.get(*f).is_some(), "snapshot.{f} missing: {st:#}");
        }
        assert!(
            num(s, "data_blobs") <= num(r, "referenced_data_blobs"),
            "{st:#}"
        );
        assert!(
            num(s, "raw_bytes") <= num(r, "referenced_raw_bytes"),
            "{st:#}"
        );
        assert_eq!(num(s, "missing_blobs"), 0, "{st:#}");
    }
    assert!(
        num(r, "stored_bytes") + num(r, "duplicate_bytes")
            <= num(r, "pack_bytes") - num(r, "unindexed_pack_bytes"),
        "{st:#}"
    );
    assert!(
        num(r, "referenced_stored_bytes") <= num(r, "stored_bytes"),
        "{st:#}"
    );
    assert!(
        num(r, "referenced_raw_bytes") <= num(r, "raw_bytes"),
        "{st:#}"
    );
    assert!(
        num(r, "referenced_data_blobs") <= num(r, "data_blobs"),
        "{st:#}"
    );
    assert!(
        num(r, "referenced_tree_blobs") <= num(r, "tree_blobs"),
        "{st:#}"
    );
    assert!(
        num(r, "garbage_bytes") >= num(r, "unindexed_pack_bytes"),
        "{st:#}"
    );
    assert!(num(r, "packs") >= num(r, "unindexed_packs"), "{st:#}");
}

fn ratio(st: &Value, field: &str) -> f64 {
    st["repository"][field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number: {st:#}"))
}

#[test]
fn stats_sizes_dedup_and_compression() {
    let t = tempdir();
    let src = t.path().join("src");
    stats_source(&src);
    let expected_size = source_size(&src);
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let s1 = snapshot_id(&repo.backup(&[&src]));

    let st = repo.json(&["stats"]);
    assert_consistent(&st);
    let snap = &st["snapshots"][0];
    assert_eq!(snap["id"], s1.as_str());
    assert_eq!(num(snap, "restore_size"), expected_size, "{st:#}");
    assert_eq!(
        num(snap, "files"),
        5,
        "each hard-link name is a file: {st:#}"
    );
    assert_eq!(num(snap, "symlinks"), 1, "{st:#}");
    let r1 = st["repository"].clone();
    assert_eq!(num(&r1, "snapshots"), 1);
    assert_eq!(num(&r1, "restore_size"), expected_size);
    // No two files share content, so nothing is deduplicated yet.
    assert_eq!(num(&r1, "referenced_raw_bytes"), expected_size, "{st:#}");
    assert!((ratio(&st, "dedup_ratio") - 1.0).abs() < 1e-9, "{st:#}");
    assert!(ratio(&st, "compression_ratio") > 1.5, "{st:#}");
    assert!(num(snap, "stored_bytes") < num(snap, "raw_bytes"), "{st:#}");
    assert_eq!(num(&r1, "garbage_bytes"), 0, "{st:#}");
    assert_eq!(num(&r1, "unindexed_packs"), 0, "{st:#}");

    // The same tree again: twice the restore size, not one more referenced byte.
    let s2 = snapshot_id(&repo.backup(&[&src]));
    let st = repo.json(&["stats"]);
    assert_consistent(&st);
    let r2 = &st["repository"];
    assert_eq!(num(r2, "snapshots"), 2);
    assert_eq!(num(r2, "restore_size"), 2 * expected_size, "{st:#}");
    assert_eq!(
        num(r2, "referenced_raw_bytes"),
        num(&r1, "referenced_raw_bytes"),
        "{st:#}"
    );
    assert_eq!(num(r2, "data_blobs"), num(&r1, "data_blobs"), "{st:#}");
    assert!((ratio(&st, "dedup_ratio") - 2.0).abs() < 1e-9, "{st:#}");
    let snaps = st["snapshots"].as_array().unwrap();
    assert_eq!(snaps[1]["id"], s2.as_str());
    assert_eq!(snaps[0]["data_blobs"], snaps[1]["data_blobs"]);
    assert_eq!(snaps[0]["restore_size"], snaps[1]["restore_size"]);

    // Naming snapshots narrows the list, never the repository totals.
    let one = repo.json(&["stats", &s1[..8]]);
    let listed: Vec<&Value> = one["snapshots"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], s1.as_str());
    assert_eq!(one["repository"], st["repository"]);

    // Human output: the table and the totals.
    let out = repo.ok(&["stats"]).stdout();
    assert!(out.contains(&s1[..8]) && out.contains(&s2[..8]), "{out}");
    assert!(out.contains("dedup ratio:        2.00"), "{out}");
    assert!(out.contains("garbage:            0 B"), "{out}");

    // A pack no index names (as an interrupted backup leaves) is garbage, byte for byte.
    let some_pack = walk_files(&t.path().join("repo/data"))[0].clone();
    let orphan = t.path().join("repo/data/00").join("0".repeat(64));
    fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    fs::copy(&some_pack, &orphan).unwrap();
    let orphan_len = fs::metadata(&orphan).unwrap().len();
    let st = repo.json(&["stats"]);
    assert_consistent(&st);
    let r3 = &st["repository"];
    assert_eq!(num(r3, "unindexed_packs"), 1, "{st:#}");
    assert_eq!(num(r3, "unindexed_pack_bytes"), orphan_len, "{st:#}");
    assert_eq!(num(r3, "garbage_bytes"), orphan_len, "{st:#}");
    assert_eq!(num(r3, "pack_bytes"), num(r2, "pack_bytes") + orphan_len);
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn bad_references_and_repositories_exit_as_documented() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src.join("f"), b"f");
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let s = snapshot_id(&repo.backup(&[&src]));

    for args in [
        vec!["diff", "deadbeef", "latest"],
        vec!["diff", s.as_str(), "deadbeef"],
        vec!["stats", "deadbeef"],
    ] {
        let r = repo.run(&args);
        r.expect_code(1);
        assert!(
            r.stderr().contains("no snapshot matches \"deadbeef\""),
            "{}",
            r.stderr()
        );
    }
    let r = repo.run(&["diff", "latest"]);
    r.expect_code(2);

    let nowhere = Repo::at(&t.path().join("no-repo"));
    nowhere.run(&["stats"]).expect_code(10);
    nowhere.run(&["diff", "a", "b"]).expect_code(10);
    let wrong = run_cmd(repo.cmd_pw(Some("wrong"), &["stats"]));
    wrong.expect_code(11);
    let wrong = run_cmd(repo.cmd_pw(Some("wrong"), &["diff", "latest", "latest"]));
    wrong.expect_code(11);
}
