//! End-to-end happy paths of the `lifeboat` binary: every test drives real processes against a
//! real (local or S3) repository and asserts on what lands on disk, not just on exit codes.

use lifeboat_testkit::repo_cli as common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use serde_json::Value;

/// A small tree of `n` random files in two directories; returns their relative paths.
fn make_plain_tree(root: &Path, n: usize, size: usize, seed: u64) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for i in 0..n {
        let rel = if i % 2 == 0 {
            PathBuf::from(format!("even/file-{i}.dat"))
        } else {
            PathBuf::from(format!("odd/deeper/file-{i}.dat"))
        };
        write(&root.join(&rel), &random_bytes(seed + i as u64, size + i));
        files.push(rel);
    }
    files
}

fn snapshot_id(backup: &Value) -> String {
    backup["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot id in {backup:#}"))
        .to_owned()
}

fn errors_of(restore_summary: &Value) -> Vec<Value> {
    restore_summary["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array in {restore_summary:#}"))
        .clone()
}

#[test]
fn roundtrip_preserves_content_and_metadata() {
    let t = tempdir();
    let src = t.path().join("src");
    make_rich_tree(&src);
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();

    let b = repo.backup(&[&src]);
    let s = &b["summary"];
    assert_eq!(num(s, "errors"), 0, "{b:#}");
    assert!(b["parent"].is_null(), "first backup has no parent: {b:#}");
    // Regular files (each hard link name counts): see make_rich_tree.
    assert_eq!(num(s, "files_new"), 17, "{b:#}");
    let total: u64 = 12 + 3 * 1024 * 1024 + 17 + 2 * 1024 * 1024 + 5 + 2536 * 1024;
    assert!(num(s, "total_bytes") > total, "{b:#}");

    let target = t.path().join("restore");
    let r = repo.restore(&snapshot_id(&b), &target, &["--verify"]);
    assert!(errors_of(&r).is_empty(), "{r:#}");
    assert_eq!(num(&r, "hardlinks"), 1, "{r:#}");
    assert_eq!(num(&r, "symlinks"), 3, "{r:#}");
    assert_eq!(num(&r, "files_restored"), 16, "{r:#}");
    assert_eq!(num(&r, "files_verified"), 16, "{r:#}");
    assert_trees_equal(&src, &restored_path(&target, &src));

    // Nothing but the source's ancestors appears at the top of the target.
    let top: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let first = src.components().nth(1).unwrap().as_os_str().to_owned();
    assert_eq!(top, vec![first]);
}

#[test]
fn incremental_backups_detect_changes() {
    let t = tempdir();
    let src = t.path().join("src");
    let files = make_plain_tree(&src, 6, 150_000, 10);
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();

    let b1 = repo.backup(&[&src]);
    assert_eq!(num(&b1["summary"], "files_new"), 6, "{b1:#}");
    let total = num(&b1["summary"], "total_bytes");
    assert_eq!(num(&b1["summary"], "bytes_read"), total, "{b1:#}");

    // No change: nothing read, no data stored, only (a few) trees.
    let b2 = repo.backup(&[&src]);
    let s2 = &b2["summary"];
    assert_eq!(b2["parent"], b1["snapshot"], "{b2:#}");
    assert_eq!(num(s2, "files_unchanged"), 6, "{b2:#}");
    assert_eq!(num(s2, "files_new"), 0, "{b2:#}");
    assert_eq!(num(s2, "files_changed"), 0, "{b2:#}");
    assert_eq!(num(s2, "bytes_read"), 0, "{b2:#}");
    assert_eq!(num(s2, "data_blobs_added"), 0, "{b2:#}");
    assert!(num(s2, "bytes_added") < 32 * 1024, "trees only: {b2:#}");
    assert_eq!(num(s2, "total_bytes"), total, "{b2:#}");

    // One file grows.
    let grown = src.join(&files[3]);
    fs::OpenOptions::new()
        .append(true)
        .open(&grown)
        .unwrap()
        .write_all(b"one more line\n")
        .unwrap();
    let b3 = repo.backup(&[&src]);
    let s3 = &b3["summary"];
    assert_eq!(b3["parent"], b2["snapshot"], "{b3:#}");
    assert_eq!(num(s3, "files_changed"), 1, "{b3:#}");
    assert_eq!(num(s3, "files_unchanged"), 5, "{b3:#}");
    assert_eq!(num(s3, "files_new"), 0, "{b3:#}");
    assert_eq!(
        num(s3, "bytes_read"),
        fs::metadata(&grown).unwrap().len(),
        "{b3:#}"
    );

    // Same size, mtime put back: only the ctime (and content) tell; still must be re-read.
    let sneaky = src.join(&files[0]);
    let md = fs::metadata(&sneaky).unwrap();
    let mut data = fs::read(&sneaky).unwrap();
    data[10] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&sneaky, &data).unwrap();
    set_mtime(&sneaky, md.mtime(), md.mtime_nsec());
    let b4 = repo.backup(&[&src]);
    assert_eq!(num(&b4["summary"], "files_changed"), 1, "{b4:#}");
    assert_eq!(num(&b4["summary"], "files_unchanged"), 5, "{b4:#}");

    // A new file next to old ones.
    write(&src.join("even/new.txt"), b"brand new");
    let b5 = repo.backup(&[&src]);
    assert_eq!(num(&b5["summary"], "files_new"), 1, "{b5:#}");
    assert_eq!(num(&b5["summary"], "files_unchanged"), 6, "{b5:#}");

    // --force re-reads everything, but dedup stores nothing new.
    let b6 = repo.backup(&[src.as_os_str(), "--force".as_ref()]);
    let s6 = &b6["summary"];
    assert_eq!(num(s6, "files_unchanged"), 0, "{b6:#}");
    assert_eq!(num(s6, "bytes_read"), num(s6, "total_bytes"), "{b6:#}");
    assert_eq!(num(s6, "files_new") + num(s6, "files_changed"), 7, "{b6:#}");
    assert_eq!(num(s6, "data_blobs_added"), 0, "{b6:#}");

    // The latest snapshot restores to the current state.
    let target = t.path().join("restore");
    let r = repo.restore("latest", &target, &[] as &[&str]);
    assert!(errors_of(&r).is_empty(), "{r:#}");
    assert_trees_equal(&src, &restored_path(&target, &src));
}

#[test]
fn excludes_and_tags() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src.join("keep.txt"), b"keep");
    write(&src.join("debug.log"), b"log");
    write(&src.join("sub/deeper/trace.log"), b"log");
    write(&src.join("sub/keep.dat"), b"keep");
    write(&src.join("sub/scratch.tmp"), b"tmp");
    write(&src.join("cache/blob1"), b"cache");
    write(&src.join("cache/nested/blob2"), b"cache");
    write(
        &src.join("other/cache"),
        b"a file named cache, kept by the path glob",
    );
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();

    let cache = src.join("cache");
    let by_path_tmp = format!("{}/sub/*.tmp", src.display());
    let b = repo.backup(&[
        src.as_os_str(),
        "--exclude".as_ref(),
        "*.log".as_ref(),
        "--exclude".as_ref(),
        cache.as_os_str(),
        "--exclude".as_ref(),
        by_path_tmp.as_ref(),
        "--tag".as_ref(),
        "daily".as_ref(),
        "--tag".as_ref(),
        "e2e".as_ref(),
    ]);
    assert_eq!(num(&b["summary"], "files_new"), 3, "{b:#}");
    let listed: BTreeSet<String> = repo
        .json(&["ls", "latest"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .filter_map(|p| {
            p.strip_prefix(&format!("{}/", src.display()))
                .map(str::to_owned)
        })
        .collect();
    let expected: BTreeSet<String> = [
        "keep.txt",
        "sub",
        "sub/deeper",
        "sub/keep.dat",
        "other",
        "other/cache",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(listed, expected);

    let b2 = repo.backup(&[
        src.as_os_str(),
        "--tag".as_ref(),
        "weekly".as_ref(),
        "--host".as_ref(),
        "elsewhere".as_ref(),
    ]);
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 2);
    let tags_of = |id: &Value| -> Vec<Value> {
        snaps
            .iter()
            .find(|s| s["id"] == *id)
            .unwrap_or_else(|| panic!("snapshot {id} not listed"))["tags"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert_eq!(tags_of(&b["snapshot"]), vec!["daily", "e2e"]);
    assert_eq!(tags_of(&b2["snapshot"]), vec!["weekly"]);
    // Another host: no parent, everything is new.
    assert!(b2["parent"].is_null(), "{b2:#}");
    assert_eq!(num(&b2["summary"], "files_new"), 8, "{b2:#}");

    let daily = repo.json(&["snapshots", "--tag", "daily"]);
    let ids: Vec<_> = daily.as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, vec![&b["snapshot"]]);
    let none = repo.json(&["snapshots", "--tag", "no-such-tag"]);
    assert_eq!(none.as_array().unwrap().len(), 0);
    let host = repo.json(&["snapshots", "--host", "elsewhere"]);
    let ids: Vec<_> = host.as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, vec![&b2["snapshot"]]);
}

#[test]
fn stdin_and_command_backups() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();

    // Piped stdin: binary, several chunks.
    let mut payload = random_bytes(42, 2_500_000);
    payload.extend_from_slice(b"\0\n\xff tail");
    let mut c = repo.cmd(&[
        "--json",
        "backup",
        "--stdin",
        "--stdin-filename",
        "dump.bin",
    ]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = payload.clone();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    let r = Run {
        what: "backup --stdin".into(),
        out,
    };
    r.success();
    let b = r.json();
    assert_eq!(num(&b["summary"], "total_bytes"), payload.len() as u64);

    let target = t.path().join("r1");
    let s = repo.restore(&snapshot_id(&b), &target, &["--verify"]);
    assert!(errors_of(&s).is_empty(), "{s:#}");
    assert_eq!(fs::read(target.join("dump.bin")).unwrap(), payload);

    // A command's stdout.
    let b = repo.backup(&[
        "--stdin-from-command",
        "--stdin-filename",
        "cmd.txt",
        "--",
        "sh",
        "-c",
        r"printf 'hello\nworld\000\001 end'",
    ]);
    let target = t.path().join("r2");
    let s = repo.restore(&snapshot_id(&b), &target, &[] as &[&str]);
    assert!(errors_of(&s).is_empty(), "{s:#}");
    assert_eq!(
        fs::read(target.join("cmd.txt")).unwrap(),
        b"hello\nworld\0\x01 end"
    );
    let listed = repo.json(&["ls", &snapshot_id(&b)]);
    assert_eq!(listed[0]["path"], "/cmd.txt", "{listed:#}");

    // A failing command: non-zero exit, names the command, no snapshot.
    let before = repo.snapshots().len();
    let r = repo.run(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "partial.txt",
        "--",
        "sh",
        "-c",
        "echo partial; exit 3",
    ]);
    assert_ne!(r.code(), Some(0), "failing command must fail the backup");
    assert!(
        r.stderr().contains("echo partial; exit 3") && r.stderr().contains("no snapshot"),
        "message should name the command: {}",
        r.stderr()
    );
    assert_eq!(repo.snapshots().len(), before, "a snapshot was written");
    // A command that cannot even start.
    let r = repo.run(&[
        "backup",
        "--stdin-from-command",
        "--",
        "/nonexistent/lifeboat-dump-tool",
    ]);
    assert_ne!(r.code(), Some(0));
    assert!(
        r.stderr().contains("/nonexistent/lifeboat-dump-tool"),
        "{}",
        r.stderr()
    );
    assert_eq!(repo.snapshots().len(), before, "a snapshot was written");
}

#[test]
fn restore_include_verify_and_idempotence() {
    let t = tempdir();
    let src = t.path().join("src");
    let files = make_plain_tree(&src, 8, 60_000, 100);
    write(&src.join("notes/readme.md"), b"# notes\n");
    write(&src.join("notes/todo.md"), b"- restore\n");
    std::os::unix::fs::symlink("readme.md", src.join("notes/link.md")).unwrap();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let snap = snapshot_id(&repo.backup(&[&src]));

    // --include by file name glob and by full path.
    let target = t.path().join("partial");
    let odd_dir = format!("{}/odd", src.display());
    let s = repo.restore(
        &snap,
        &target,
        &["--include", "*.md", "--include", &odd_dir],
    );
    assert!(errors_of(&s).is_empty(), "{s:#}");
    let got: BTreeSet<PathBuf> = list_tree(&restored_path(&target, &src))
        .into_iter()
        .collect();
    let mut want: BTreeSet<PathBuf> = [
        "notes",
        "notes/readme.md",
        "notes/todo.md",
        "notes/link.md",
        "odd",
        "odd/deeper",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    want.extend(files.iter().filter(|f| f.starts_with("odd")).cloned());
    assert_eq!(got, want);
    for f in files.iter().filter(|f| f.starts_with("odd")) {
        assert_eq!(
            fs::read(restored_path(&target, &src).join(f)).unwrap(),
            fs::read(src.join(f)).unwrap()
        );
    }

    // Full restore with --verify.
    let target = t.path().join("full");
    let s = repo.restore(&snap, &target, &["--verify"]);
    assert!(errors_of(&s).is_empty(), "{s:#}");
    let all = num(&s, "files_restored");
    assert_eq!(all, 10, "{s:#}");
    assert_eq!(num(&s, "files_verified"), all, "{s:#}");
    assert_trees_equal(&src, &restored_path(&target, &src));

    // Again over the same target: nothing rewritten.
    let inode_before = fs::metadata(restored_path(&target, &src).join(&files[0]))
        .unwrap()
        .ino();
    let s = repo.restore(&snap, &target, &["--verify"]);
    assert!(errors_of(&s).is_empty(), "{s:#}");
    assert_eq!(num(&s, "files_unchanged"), all, "{s:#}");
    assert_eq!(num(&s, "files_restored"), 0, "{s:#}");
    assert_eq!(num(&s, "bytes_written"), 0, "{s:#}");
    assert_eq!(num(&s, "files_verified"), all, "{s:#}");
    assert_eq!(
        fs::metadata(restored_path(&target, &src).join(&files[0]))
            .unwrap()
            .ino(),
        inode_before,
        "an unchanged file was rewritten"
    );
    assert_trees_equal(&src, &restored_path(&target, &src));

    // Edit one restored file: only that one is rewritten.
    let edited = restored_path(&target, &src).join(&files[5]);
    fs::write(&edited, b"local edit").unwrap();
    let s = repo.restore(&snap, &target, &[] as &[&str]);
    assert!(errors_of(&s).is_empty(), "{s:#}");
    assert_eq!(num(&s, "files_restored"), 1, "{s:#}");
    assert_eq!(num(&s, "files_unchanged"), all - 1, "{s:#}");
    assert_eq!(
        num(&s, "bytes_written"),
        fs::metadata(src.join(&files[5])).unwrap().len(),
        "{s:#}"
    );
    assert_trees_equal(&src, &restored_path(&target, &src));

    // --overwrite-always rewrites everything.
    let s = repo.restore(&snap, &target, &["--overwrite-always"]);
    assert_eq!(num(&s, "files_restored"), all, "{s:#}");
    assert_trees_equal(&src, &restored_path(&target, &src));
}

#[test]
fn key_management() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    write(&t.path().join("src/f"), b"data");
    repo.backup(&[t.path().join("src")]);

    let second_pw = "second password";
    let pw2 = t.path().join("pw2");
    write(
        &pw2,
        format!("{second_pw}\nignored second line\n").as_bytes(),
    );
    let added = repo.json(&[
        "key".as_ref(),
        "add".as_ref(),
        "--new-password-file".as_ref(),
        pw2.as_os_str(),
        "--kdf-memory-mib".as_ref(),
        "8".as_ref(),
        "--kdf-iterations".as_ref(),
        "1".as_ref(),
    ]);
    let new_id = added["id"].as_str().unwrap().to_owned();

    let as2 = Repo {
        location: repo.location.clone(),
        password: second_pw.into(),
    };
    assert_eq!(as2.snapshots().len(), 1, "the new password opens the repo");
    // Through --password-file too.
    let r = run_cmd({
        let mut c = repo.cmd_pw(None, &["--json", "snapshots"]);
        c.arg("--password-file").arg(&pw2);
        c
    });
    r.success();

    let keys = as2.json(&["key", "list"]);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{keys:#?}");
    let current: Vec<_> = keys.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], new_id.as_str());

    // Removing the key in use is refused, and it keeps working.
    let r = as2.run(&["key", "remove", &new_id[..12]]);
    assert_ne!(
        r.code(),
        Some(0),
        "removing the current key must be refused"
    );
    assert!(r.stderr().contains("refusing"), "{}", r.stderr());
    assert_eq!(as2.json(&["key", "list"]).as_array().unwrap().len(), 2);

    // passwd: the old password stops working, the new one works, the other slot is untouched.
    let pw3 = t.path().join("pw3");
    write(&pw3, b"third password\n");
    repo.ok(&[
        "key".as_ref(),
        "passwd".as_ref(),
        "--new-password-file".as_ref(),
        pw3.as_os_str(),
        "--kdf-memory-mib".as_ref(),
        "8".as_ref(),
        "--kdf-iterations".as_ref(),
        "1".as_ref(),
    ]);
    repo.run(&["snapshots"]).expect_code(11);
    let as3 = Repo {
        location: repo.location.clone(),
        password: "third password".into(),
    };
    assert_eq!(as3.snapshots().len(), 1);
    assert_eq!(as2.snapshots().len(), 1);
    assert_eq!(as3.json(&["key", "list"]).as_array().unwrap().len(), 2);

    // Removing another slot works; that password then fails.
    as3.ok(&["key", "remove", &new_id]);
    as2.run(&["snapshots"]).expect_code(11);
    assert_eq!(as3.json(&["key", "list"]).as_array().unwrap().len(), 1);
    // The data is still there.
    let target = t.path().join("restore");
    as3.restore("latest", &target, &[] as &[&str]);
    assert_eq!(
        fs::read(restored_path(&target, &t.path().join("src/f"))).unwrap(),
        b"data"
    );
}

#[test]
fn ls_and_check_on_a_healthy_repo() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src.join("a/one.txt"), b"1");
    write(&src.join("a/two.txt"), b"22");
    write(&src.join("ab/three.txt"), b"333");
    write(&src.join("big"), &random_bytes(5, 3_000_000));
    std::os::unix::fs::symlink("a/one.txt", src.join("link")).unwrap();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let snap = snapshot_id(&repo.backup(&[&src]));
    let s = src.display().to_string();

    let all = repo.json(&["ls", &snap]);
    let entries = all.as_array().unwrap();
    let paths: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for rel in [
        "",
        "/a",
        "/a/one.txt",
        "/a/two.txt",
        "/ab",
        "/ab/three.txt",
        "/big",
        "/link",
    ] {
        assert!(
            paths.contains(format!("{s}{rel}").as_str()),
            "{rel} missing: {paths:#?}"
        );
    }
    let one = entries
        .iter()
        .find(|e| e["path"] == format!("{s}/a/one.txt"))
        .unwrap();
    assert_eq!(one["type"], "file");
    assert_eq!(one["size"], 1);
    let big = entries
        .iter()
        .find(|e| e["path"] == format!("{s}/big"))
        .unwrap();
    assert_eq!(big["size"], 3_000_000);
    let link = entries
        .iter()
        .find(|e| e["path"] == format!("{s}/link"))
        .unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "a/one.txt");

    // A path argument lists that directory's subtree only (not the sibling "ab").
    let sub = repo.json(&["ls", &snap, &format!("{s}/a")]);
    let sub: BTreeSet<&str> = sub
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    let want: BTreeSet<String> = ["/a", "/a/one.txt", "/a/two.txt"]
        .iter()
        .map(|r| format!("{s}{r}"))
        .collect();
    assert_eq!(sub, want.iter().map(String::as_str).collect());

    // Plain text output lists the same paths, one per line.
    let text = repo.ok(&["ls", &snap]).stdout();
    assert!(
        text.lines().any(|l| l == format!("{s}/a/two.txt")),
        "{text}"
    );

    // check: structure, all data, half the data.
    let c = repo.json(&["check"]);
    assert_eq!(c["findings"].as_array().map(Vec::len), Some(0), "{c:#}");
    let c = repo.json(&["check", "--read-data"]);
    assert_eq!(c["findings"].as_array().map(Vec::len), Some(0), "{c:#}");
    assert!(num(&c, "blobs_verified") >= 4, "{c:#}");
    assert_eq!(num(&c, "packs_read"), num(&c, "packs"), "{c:#}");
    let c = repo.json(&["check", "--read-data-subset", "50%"]);
    assert_eq!(c["findings"].as_array().map(Vec::len), Some(0), "{c:#}");
    repo.ok(&["check", "--read-data"]);
    repo.ok(&["check", "--read-data-subset", "50%"]);
    let text = repo.ok(&["check"]).stdout();
    assert!(text.contains("no errors were found"), "{text}");
}

#[test]
fn concurrent_backups_into_one_repository() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let shared = random_bytes(999, 1_500_000);
    let srcs: Vec<PathBuf> = (0..2)
        .map(|i| {
            let s = t.path().join(format!("src{i}"));
            make_plain_tree(&s, 5, 400_000, 1000 * (i + 1));
            // The same content in both: both processes race to store the same blobs.
            write(&s.join("shared.bin"), &shared);
            s
        })
        .collect();

    for round in 0..2 {
        let children: Vec<_> = srcs
            .iter()
            .map(|s| {
                let mut c = repo.cmd(&["--json".as_ref(), "backup".as_ref(), s.as_os_str()]);
                c.stdout(Stdio::piped()).stderr(Stdio::piped());
                (s.clone(), c.spawn().unwrap())
            })
            .collect();
        for (s, child) in children {
            let r = Run {
                what: format!("concurrent backup {} (round {round})", s.display()),
                out: child.wait_with_output().unwrap(),
            };
            r.success();
            assert_eq!(num(&r.json()["summary"], "errors"), 0);
        }
        // Change something for the second round so both write new data again.
        for (i, s) in srcs.iter().enumerate() {
            write(
                &s.join(format!("round-{round}.bin")),
                &random_bytes(7_000 + i as u64, 900_000),
            );
        }
    }
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 4);
    let c = repo.json(&["check", "--read-data"]);
    let errors: Vec<_> = c["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "warning")
        .collect();
    assert!(errors.is_empty(), "{c:#}");
    repo.ok(&["check", "--read-data"]);

    // The latest snapshot of each source restores exactly (minus the files written after it).
    for (i, s) in srcs.iter().enumerate() {
        let snap = snaps
            .iter()
            .rev()
            .find(|sn| sn["paths"][0] == s.display().to_string())
            .unwrap();
        let target = t.path().join(format!("restore{i}"));
        let r = repo.restore(snap["id"].as_str().unwrap(), &target, &["--verify"]);
        assert!(errors_of(&r).is_empty(), "{r:#}");
        fs::remove_file(s.join("round-1.bin")).unwrap();
        // The directory's mtime changed with that removal; compare files only.
        let got = restored_path(&target, s);
        for rel in list_tree(s) {
            let (a, b) = (s.join(&rel), got.join(&rel));
            if a.is_file() {
                assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "{rel:?}");
            }
        }
        assert_eq!(list_tree(s), list_tree(&got));
    }
}

#[test]
fn quickstart_runs_end_to_end() {
    let t = tempdir();
    let dir = t.path().join("qs");
    let r = run_cmd({
        let mut c = lifeboat_cmd(Some(PASSWORD));
        c.args(["quickstart", "--dir"])
            .arg(&dir)
            .args(["--size-mib", "8"]);
        c
    });
    r.success();
    assert!(!r.stdout().is_empty(), "quickstart should say what it did");
    // It left a real repository behind that the same password opens.
    let repo = Repo::at(&dir.join("repo"));
    assert!(!repo.snapshots().is_empty());
    repo.ok(&["check"]);
    // A second run refuses the now non-empty directory.
    let r = run_cmd({
        let mut c = lifeboat_cmd(Some(PASSWORD));
        c.args(["quickstart", "--dir"])
            .arg(&dir)
            .args(["--size-mib", "1"]);
        c
    });
    assert_ne!(r.code(), Some(0));
    assert!(r.stderr().contains("not empty"), "{}", r.stderr());
}

#[test]
fn s3_roundtrip() {
    let Ok(base) = std::env::var("LIFEBOAT_TEST_S3") else {
        if std::env::var("LIFEBOAT_REQUIRE_S3").is_ok_and(|v| v == "1") {
            panic!("LIFEBOAT_REQUIRE_S3=1 but LIFEBOAT_TEST_S3 is not set");
        }
        eprintln!("skipping S3 end-to-end test: set LIFEBOAT_TEST_S3 (see crates/store/S3_TEST_SERVER.md)");
        return;
    };
    let unique = format!(
        "e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let repo = Repo::new(format!("{}/{unique}", base.trim_end_matches('/')));
    // No repository there yet.
    repo.run(&["snapshots"]).expect_code(10);
    repo.init();
    assert_ne!(repo.run(&["init"]).code(), Some(0), "second init must fail");

    let t = tempdir();
    let src = t.path().join("src");
    make_rich_tree(&src);
    let b = repo.backup(&[&src]);
    assert_eq!(num(&b["summary"], "errors"), 0);
    let b2 = repo.backup(&[&src]);
    assert_eq!(num(&b2["summary"], "files_unchanged"), 17, "{b2:#}");
    let target = t.path().join("restore");
    let r = repo.restore(&snapshot_id(&b), &target, &["--verify"]);
    assert!(errors_of(&r).is_empty(), "{r:#}");
    assert_trees_equal(&src, &restored_path(&target, &src));
    let c = repo.json(&["check", "--read-data"]);
    assert_eq!(c["findings"].as_array().map(Vec::len), Some(0), "{c:#}");
    let wrong = Repo {
        location: repo.location.clone(),
        password: "nope".into(),
    };
    wrong.run(&["snapshots"]).expect_code(11);
}
