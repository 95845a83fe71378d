//! Bad input and hostile environments: every failure must come with a clear message and the
//! documented exit code, and must never lose or half-write data.

use lifeboat_testkit::repo_cli as common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use lifeboat_testkit::TmpfsMount;

/// Every object file below a local repository, with its bytes.
fn repo_objects(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = list_tree(dir)
        .into_iter()
        .filter(|p| dir.join(p).is_file())
        .map(|p| {
            let bytes = fs::read(dir.join(&p)).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

fn assert_mentions(r: &Run, needles: &[&str]) {
    let err = r.stderr();
    for n in needles {
        assert!(
            err.to_lowercase().contains(&n.to_lowercase()),
            "`{}`: stderr should mention {n:?}:\n{err}",
            r.what
        );
    }
}

#[test]
fn missing_repository() {
    let t = tempdir();
    let nope = t.path().join("nope");
    let never = t.path().join("never");
    let repo = Repo::at(&nope);
    for args in [
        vec!["snapshots"],
        vec!["backup", "/etc/hostname"],
        vec!["restore", "latest", "--target", never.to_str().unwrap()],
        vec!["check"],
        vec!["key", "list"],
    ] {
        let r = repo.run(&args);
        r.expect_code(10);
        assert_mentions(&r, &["no repository", "lifeboat init"]);
    }
    assert!(
        !nope.exists(),
        "a read of a missing repository created {nope:?}"
    );
    assert!(!never.exists());

    // An empty directory is not a repository either.
    fs::create_dir(&nope).unwrap();
    repo.run(&["snapshots"]).expect_code(10);

    // No location at all.
    let r = run_cmd({
        let mut c = lifeboat_cmd(Some(PASSWORD));
        c.arg("snapshots");
        c
    });
    assert_eq!(r.code(), Some(1), "{}", r.stderr());
    assert_mentions(&r, &["LIFEBOAT_REPOSITORY"]);
}

#[test]
fn init_twice_keeps_the_first_repository() {
    let t = tempdir();
    let dir = t.path().join("repo");
    let repo = Repo::at(&dir);
    repo.init();
    write(&t.path().join("src/f"), b"precious");
    repo.backup(&[t.path().join("src")]);
    let before = repo_objects(&dir);

    let other = Repo {
        location: repo.location.clone(),
        password: "a different password".into(),
    };
    for r in [other.run(&["init"]), repo.run(&["init"])] {
        assert_eq!(r.code(), Some(1), "second init: {}", r.stderr());
        assert_mentions(&r, &["already exists"]);
    }
    assert_eq!(
        repo_objects(&dir),
        before,
        "a second init changed the repository"
    );
    other.run(&["snapshots"]).expect_code(11);
    assert_eq!(repo.snapshots().len(), 1);
    assert_eq!(repo.json(&["key", "list"]).as_array().unwrap().len(), 1);
    repo.ok(&["check", "--read-data"]);
}

#[test]
fn wrong_password() {
    let t = tempdir();
    let dir = t.path().join("repo");
    let repo = Repo::at(&dir);
    repo.init();
    write(&t.path().join("src/f"), b"x");
    repo.backup(&[t.path().join("src")]);
    let before = repo_objects(&dir);
    let wrong = Repo {
        location: repo.location.clone(),
        password: "not it".into(),
    };
    let src = t.path().join("src");
    let target = t.path().join("target");
    for args in [
        vec!["snapshots".as_ref(), "--json".as_ref()],
        vec!["backup".as_ref(), src.as_os_str()],
        vec![
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ],
        vec!["check".as_ref()],
        vec!["key".as_ref(), "list".as_ref()],
    ] {
        let r = wrong.run(&args);
        r.expect_code(11);
        assert_mentions(&r, &["wrong password"]);
        assert!(r.out.stdout.is_empty(), "stdout: {}", r.stdout());
    }
    assert!(!target.exists());
    assert_eq!(
        repo_objects(&dir),
        before,
        "a wrong password changed the repository"
    );

    // A wrong --password-file wins over nothing else and fails the same way.
    let pwf = t.path().join("pw");
    write(&pwf, b"not it either\n");
    let mut c = repo.cmd_pw(None, &["snapshots"]);
    c.arg("--password-file").arg(&pwf);
    run_cmd(c).expect_code(11);
}

#[test]
fn no_password() {
    let t = tempdir();
    let dir = t.path().join("repo");
    let repo = Repo::at(&dir);
    let r = run_cmd(repo.cmd_pw(None, &["init"]));
    assert_eq!(r.code(), Some(1));
    assert_mentions(&r, &["no password", "LIFEBOAT_PASSWORD"]);
    assert!(!dir.exists(), "init without a password left {dir:?} behind");

    repo.init();
    let r = run_cmd(repo.cmd_pw(None, &["snapshots"]));
    assert_eq!(r.code(), Some(1));
    assert_mentions(&r, &["no password", "--password-file"]);

    // A password file that does not exist names the file.
    let mut c = repo.cmd_pw(None, &["snapshots"]);
    c.arg("--password-file").arg(t.path().join("missing-pw"));
    let r = run_cmd(c);
    assert_eq!(r.code(), Some(1));
    assert_mentions(&r, &["missing-pw"]);
}

#[test]
fn empty_password_is_refused_at_init() {
    // `LIFEBOAT_PASSWORD=$UNSET_VAR lifeboat init` must not create a repository anyone can open.
    let t = tempdir();
    let dir = t.path().join("repo");
    let repo = Repo::at(&dir);
    let r = run_cmd(repo.cmd_pw(Some(""), &["init"]));
    assert_ne!(r.code(), Some(0), "init accepted an empty password");
    assert!(!dir.join("config").exists());
    let empty = t.path().join("empty-pw");
    write(&empty, b"\n");
    let mut c = repo.cmd_pw(None, &["init"]);
    c.arg("--password-file").arg(&empty);
    let r = run_cmd(c);
    assert_ne!(r.code(), Some(0), "init accepted an empty password file");
    assert!(!dir.join("config").exists());
}

const NOBODY: u32 = 65534;

fn chown_tree(root: &Path) {
    std::os::unix::fs::lchown(root, Some(NOBODY), Some(NOBODY)).unwrap();
    for rel in list_tree(root) {
        std::os::unix::fs::lchown(root.join(rel), Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

#[test]
fn unreadable_source_files_are_skipped_with_exit_3() {
    // Root reads everything, so run lifeboat as `nobody` against files `nobody` cannot read.
    let probe = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .arg("--version")
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!("skipping: cannot run lifeboat as uid {NOBODY} via setpriv: {other:?}");
            return;
        }
    }
    let t = tempdir();
    let work = t.path().join("work");
    let src = work.join("src");
    write(&src.join("ok1.txt"), b"readable one");
    write(&src.join("sub/ok2.txt"), b"readable two");
    write(&src.join("secret.txt"), b"cannot read me");
    write(&src.join("locked/inner.txt"), b"behind a locked dir");
    chown_tree(&work);
    chmod(&src.join("secret.txt"), 0o000);
    chmod(&src.join("locked"), 0o000);
    let repo_dir = work.join("repo");
    let as_nobody = |args: &[&std::ffi::OsStr]| {
        let mut c = lifeboat_cmd_as(NOBODY, NOBODY, Some(PASSWORD));
        c.arg("-r").arg(&repo_dir).args(args);
        run_cmd(c)
    };
    let init: Vec<&std::ffi::OsStr> = INIT.iter().map(std::ffi::OsStr::new).collect();
    as_nobody(&init).success();

    let r = as_nobody(&["--json".as_ref(), "backup".as_ref(), src.as_os_str()]);
    r.expect_code(3);
    let b = r.json();
    assert_eq!(num(&b["summary"], "errors"), 2, "{b:#}");
    // The unreadable file is an error, not a new file (it was not stored).
    assert_eq!(num(&b["summary"], "files_new"), 2, "{b:#}");
    let warnings = b["warnings"].to_string();
    assert!(warnings.contains("secret.txt"), "{b:#}");
    assert!(warnings.contains("locked"), "{b:#}");
    assert!(
        warnings.to_lowercase().contains("permission denied"),
        "{b:#}"
    );

    // Text mode names each skipped entry and says the snapshot is incomplete, same exit code.
    let r = as_nobody(&["backup".as_ref(), src.as_os_str()]);
    r.expect_code(3);
    assert_mentions(
        &r,
        &[
            "secret.txt",
            "locked",
            "permission denied",
            "could not be read",
            "incomplete",
        ],
    );

    // The snapshots exist and hold everything that was readable.
    let repo = Repo::at(&repo_dir);
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 2);
    assert_eq!(num(&snaps[0]["summary"], "errors"), 2);
    let listed: Vec<String> = repo
        .json(&["ls", snaps[0]["id"].as_str().unwrap()])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    let s = src.display().to_string();
    for want in ["/ok1.txt", "/sub/ok2.txt"] {
        assert!(listed.contains(&format!("{s}{want}")), "{listed:#?}");
    }
    assert!(
        !listed.iter().any(|p| p.contains("secret.txt")),
        "{listed:#?}"
    );
    assert!(
        !listed.iter().any(|p| p.contains("inner.txt")),
        "{listed:#?}"
    );

    let target = t.path().join("restore");
    let sum = repo.restore("latest", &target, &["--verify"]);
    assert!(sum["errors"].as_array().unwrap().is_empty(), "{sum:#}");
    let got = restored_path(&target, &src);
    assert_eq!(fs::read(got.join("ok1.txt")).unwrap(), b"readable one");
    assert_eq!(fs::read(got.join("sub/ok2.txt")).unwrap(), b"readable two");
    assert!(!got.join("secret.txt").exists());
    repo.ok(&["check", "--read-data"]);
    // Let the temp dir cleanup (as root) work on the 000 dir regardless.
    chmod(&src.join("locked"), 0o755);
}

fn one_snapshot_repo(t: &Path, files: &[(&str, Vec<u8>)]) -> (Repo, std::path::PathBuf) {
    let src = t.join("src");
    for (rel, data) in files {
        write(&src.join(rel), data);
    }
    let repo = Repo::at(&t.join("repo"));
    repo.init();
    repo.backup(&[&src]);
    (repo, src)
}

#[test]
fn unwritable_restore_target() {
    let t = tempdir();
    let (repo, _src) = one_snapshot_repo(t.path(), &[("a.txt", b"aaa".to_vec())]);

    // Below a regular file.
    let file = t.path().join("plain-file");
    write(&file, b"not a dir");
    for target in [file.join("out"), file.clone()] {
        let r = repo.run(&[
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ]);
        assert_eq!(r.code(), Some(1), "{}", r.stderr());
        assert_mentions(&r, &[&file.display().to_string()]);
    }
    assert_eq!(fs::read(&file).unwrap(), b"not a dir");

    // A read-only file system.
    let ro = t.path().join("ro");
    let guard = match TmpfsMount::new(&ro, "ro,size=1m") {
        Ok(g) => g,
        Err(why) => {
            eprintln!("skipping the read-only mount part: {why}");
            return;
        }
    };
    for target in [guard.path.join("out"), guard.path.clone()] {
        let r = repo.run(&[
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ]);
        assert_eq!(r.code(), Some(1), "{}", r.stderr());
        assert_mentions(&r, &["read-only file system"]);
    }
    assert!(list_tree(&guard.path).is_empty());
}

/// Files in `target` either carry their final name with complete, correct content, or do not
/// exist; no temporary file is left over.
fn assert_no_partial_files(target: &Path, src: &Path) {
    let mut problems = Vec::new();
    for rel in list_tree(target) {
        let p = target.join(&rel);
        let name = rel.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains("lifeboat-restore") || name.starts_with('.') {
            problems.push(format!("leftover temporary file {rel:?}"));
            continue;
        }
        if p.is_file() {
            let Ok(inner) = p.strip_prefix(restored_path(target, src)) else {
                problems.push(format!("unexpected file {rel:?}"));
                continue;
            };
            let want = fs::read(src.join(inner)).unwrap();
            if fs::read(&p).unwrap() != want {
                problems.push(format!("{rel:?} has its final name but is incomplete"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn disk_full_while_restoring() {
    let t = tempdir();
    let mut files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                format!("big-{i}.bin"),
                random_bytes(500 + i, 2 * 1024 * 1024 + 1000 * i as usize),
            )
        })
        .collect();
    files.push(("a-small.txt".into(), b"small file that fits".to_vec()));
    let borrowed: Vec<(&str, Vec<u8>)> =
        files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    let (repo, src) = one_snapshot_repo(t.path(), &borrowed);

    let Some((guard, target, r)) = restore_into_tmpfs(&repo, &t.path().join("small"), "size=4m")
    else {
        return;
    };
    assert_ne!(
        r.code(),
        Some(0),
        "restoring 10 MiB into 4 MiB succeeded?\n{}",
        r.stdout()
    );
    assert_says_disk_full(&r);
    assert_no_partial_files(&target, &src);

    // After making room, the same restore completes.
    drop(guard);
    let target = t.path().join("roomy");
    let sum = repo.restore("latest", &target, &["--verify"]);
    assert!(sum["errors"].as_array().unwrap().is_empty(), "{sum:#}");
    assert_no_partial_files(&target, &src);
    assert_eq!(num(&sum, "files_restored"), 6);
}

#[test]
fn out_of_inodes_while_restoring_leaves_no_temp_files() {
    // Creating the temporary files themselves fails (ENOSPC from inode exhaustion).
    let t = tempdir();
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("f{i:02}.txt"), format!("file {i}\n").into_bytes()))
        .collect();
    let borrowed: Vec<(&str, Vec<u8>)> =
        files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    let (repo, src) = one_snapshot_repo(t.path(), &borrowed);
    let Some((_guard, target, r)) =
        restore_into_tmpfs(&repo, &t.path().join("few-inodes"), "size=8m,nr_inodes=24")
    else {
        return;
    };
    assert_ne!(
        r.code(),
        Some(0),
        "restoring 40 files into 24 inodes succeeded?"
    );
    assert_says_disk_full(&r);
    assert_no_partial_files(&target, &src);
}

/// Mounts a tmpfs with `options` at `mnt` and restores the latest snapshot into it; `None`
/// (after printing why) where this machine cannot mount.
fn restore_into_tmpfs(
    repo: &Repo,
    mnt: &Path,
    options: &str,
) -> Option<(TmpfsMount, PathBuf, Run)> {
    let guard = match TmpfsMount::new(mnt, options) {
        Ok(g) => g,
        Err(why) => {
            eprintln!("skipping: {why}");
            return None;
        }
    };
    let target = guard.path.join("out");
    let r = repo.run(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    Some((guard, target, r))
}

fn assert_says_disk_full(r: &Run) {
    let err = r.stderr();
    assert!(
        err.contains("disk full") || err.contains("No space"),
        "message should say the disk is full:\n{err}"
    );
}

#[test]
fn malformed_arguments() {
    let t = tempdir();
    let (repo, src) = one_snapshot_repo(t.path(), &[("a.txt", b"a".to_vec())]);

    for bad in ["abc", "0%", "150%", "-5%"] {
        let r = repo.run(&["check", &format!("--read-data-subset={bad}")]);
        assert!(matches!(r.code(), Some(1 | 2)), "{bad}: {:?}", r.code());
        assert_mentions(&r, &["read-data-subset"]);
    }

    let target = t.path().join("never");
    let missing = "ab".repeat(32);
    for snap in [missing.as_str(), "deadbeef"] {
        let r = repo.run(&[
            "restore".as_ref(),
            snap.as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ]);
        assert_eq!(r.code(), Some(1));
        assert_mentions(&r, &["no snapshot", "lifeboat snapshots"]);
    }
    let r = repo.run(&["ls", "deadbeef"]);
    assert_eq!(r.code(), Some(1));
    assert_mentions(&r, &["lifeboat snapshots"]);
    assert!(!target.exists(), "a failed restore created its target");

    // Include/exclude globs: bad syntax and no match are explained, nothing is written.
    let r = repo.run(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
        "--include".as_ref(),
        "[".as_ref(),
    ]);
    assert_eq!(r.code(), Some(1));
    assert_mentions(&r, &["--include"]);
    let r = repo.run(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
        "--include".as_ref(),
        "*.nothing".as_ref(),
    ]);
    assert_eq!(r.code(), Some(1));
    assert_mentions(&r, &["no path in the snapshot matches"]);
    assert!(!target.exists());

    let before = repo.snapshots().len();
    let r = repo.run(&[
        "backup".as_ref(),
        src.as_os_str(),
        "--exclude".as_ref(),
        "[".as_ref(),
    ]);
    assert_eq!(r.code(), Some(1));
    assert_mentions(&r, &["--exclude"]);
    let r = repo.run(&["backup"]);
    assert_eq!(r.code(), Some(1));
    assert_mentions(&r, &["nothing to back up"]);
    let gone = t.path().join("does-not-exist");
    let r = repo.run(&["backup".as_ref(), src.as_os_str(), gone.as_os_str()]);
    assert_eq!(r.code(), Some(1));
    assert_mentions(&r, &["does-not-exist"]);
    let r = repo.run(&["backup", "--stdin", "--stdin-filename", "a/b"]);
    assert_eq!(r.code(), Some(1));
    assert_mentions(&r, &["plain file name"]);
    let r = repo.run(&["backup", "--stdin-from-command"]);
    assert_eq!(r.code(), Some(1));
    assert_mentions(&r, &["needs a command"]);
    assert_eq!(
        repo.snapshots().len(),
        before,
        "a failed backup wrote a snapshot"
    );

    // Usage errors are clap's (exit 2).
    repo.run(&["snapshots", "--frobnicate"]).expect_code(2);
    repo.run(&["init", "--compression", "99"]).expect_code(2);
    repo.run(&["check", "--read-data", "--read-data-subset", "5%"])
        .expect_code(2);
}

#[test]
fn interrupted_backup_writes_no_snapshot() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let mut c = repo.cmd(&["backup", "--stdin", "--stdin-filename", "stream"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Once lifeboat has consumed a few MiB it is reading (its signal handler is installed).
    let chunk = random_bytes(77, 1024 * 1024);
    for _ in 0..4 {
        stdin.write_all(&chunk).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    // Keep feeding until lifeboat notices and closes the pipe (or a generous limit).
    let started = Instant::now();
    let mut seed = 78;
    while started.elapsed() < Duration::from_secs(60) {
        seed += 1;
        if stdin.write_all(&random_bytes(seed, 256 * 1024)).is_err() {
            break;
        }
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let r = Run {
        what: "interrupted backup".into(),
        out,
    };
    r.expect_code(130);
    assert_mentions(&r, &["interrupted"]);
    assert_eq!(
        repo.snapshots().len(),
        0,
        "an interrupted backup wrote a snapshot"
    );
    // Leftover packs are at most warnings.
    repo.ok(&["check"]);
}

#[test]
fn key_file_secret() {
    // Key files are raw bytes, not "first line": a key with newlines must still work.
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let key = t.path().join("key.bin");
    write(&key, &random_bytes(9, 64));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    repo.ok(&[
        "key".as_ref(),
        "add".as_ref(),
        "--new-key-file".as_ref(),
        key.as_os_str(),
        "--kdf-memory-mib".as_ref(),
        "8".as_ref(),
        "--kdf-iterations".as_ref(),
        "1".as_ref(),
    ]);
    let mut c = repo.cmd_pw(None, &["snapshots"]);
    c.arg("--key-file").arg(&key);
    run_cmd(c).success();
    write(&key, &random_bytes(10, 64));
    let mut c = repo.cmd_pw(None, &["snapshots"]);
    c.arg("--key-file").arg(&key);
    run_cmd(c).expect_code(11);
}

#[test]
fn restore_does_not_follow_a_planted_symlink() {
    // Restoring into a directory others can write to: a symlink planted at the temporary
    // name must not redirect the write to (and destroy) a file outside the target.
    let t = tempdir();
    let (repo, src) = one_snapshot_repo(t.path(), &[("a.txt", b"from the snapshot".to_vec())]);
    let victim = t.path().join("victim");
    write(&victim, b"must survive");
    let target = t.path().join("shared-target");
    let dir = restored_path(&target, &src);
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join(".a.txt.lifeboat-restore")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("a.txt")).unwrap();

    let r = repo.run(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&fs::read(&victim).unwrap()),
        "must survive",
        "restore wrote through a symlink outside the target (exit {:?}, stderr {})",
        r.code(),
        r.stderr()
    );
    if r.code() == Some(0) {
        let md = fs::symlink_metadata(dir.join("a.txt")).unwrap();
        assert!(md.is_file(), "a.txt should be a regular file now");
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"from the snapshot");
    }
}

#[test]
fn restore_that_cannot_place_one_file_exits_3() {
    let t = tempdir();
    let (repo, src) = one_snapshot_repo(
        t.path(),
        &[("a.txt", b"aaa".to_vec()), ("b.txt", b"bbb".to_vec())],
    );
    let target = t.path().join("target");
    // A non-empty directory where a.txt belongs: that one path cannot be restored.
    write(
        &restored_path(&target, &src).join("a.txt/keep"),
        b"user data",
    );
    let r = repo.run(&[
        "--json".as_ref(),
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    r.expect_code(3);
    let errors = r.json()["summary"]["errors"].to_string();
    assert!(errors.contains("a.txt"), "{errors}");
    assert_mentions(&r, &["a.txt", "not restored"]);
    let dir = restored_path(&target, &src);
    assert_eq!(fs::read(dir.join("b.txt")).unwrap(), b"bbb");
    assert_eq!(fs::read(dir.join("a.txt/keep")).unwrap(), b"user data");
    assert_no_temp_files(&target);
}

fn assert_no_temp_files(target: &Path) {
    let temps: Vec<_> = list_tree(target)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("lifeboat-restore"))
        .collect();
    assert!(temps.is_empty(), "leftover temporary files: {temps:?}");
}

#[test]
fn repository_disk_full_during_backup() {
    let t = tempdir();
    let mnt = t.path().join("small-repo");
    let guard = match TmpfsMount::new(&mnt, "size=3m") {
        Ok(g) => g,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let repo = Repo::at(&guard.path.join("repo"));
    repo.init();
    let src = t.path().join("src");
    write(&src.join("small.txt"), b"fits");
    write(&src.join("big.bin"), &random_bytes(31, 6 * 1024 * 1024));
    let r = repo.run(&["backup".as_ref(), src.as_os_str()]);
    assert_eq!(r.code(), Some(1), "{}", r.stderr());
    assert_mentions(&r, &["disk full"]);
    assert_eq!(
        repo.snapshots().len(),
        0,
        "a failed backup wrote a snapshot"
    );
    // Leftovers of the failed backup are harmless: check passes, the next backup works.
    repo.ok(&["check"]);
    fs::remove_file(src.join("big.bin")).unwrap();
    repo.backup(&[&src]);
    repo.ok(&["check", "--read-data"]);
    let target = t.path().join("restore");
    let sum = repo.restore("latest", &target, &[] as &[&str]);
    assert!(sum["errors"].as_array().unwrap().is_empty(), "{sum:#}");
    assert_eq!(
        fs::read(restored_path(&target, &src).join("small.txt")).unwrap(),
        b"fits"
    );
}

#[test]
fn verify_catches_a_silently_changed_restored_file() {
    // Same size and mtime, different bytes: skipped as unchanged, but --verify must notice.
    let t = tempdir();
    let (repo, src) = one_snapshot_repo(t.path(), &[("data.bin", random_bytes(4, 200_000))]);
    let target = t.path().join("target");
    repo.restore("latest", &target, &[] as &[&str]);
    let f = restored_path(&target, &src).join("data.bin");
    let md = fs::metadata(&f).unwrap();
    let mut bytes = fs::read(&f).unwrap();
    bytes[123_456] ^= 0x01;
    fs::write(&f, &bytes).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        set_mtime(&f, md.mtime(), md.mtime_nsec());
    }
    let r = repo.run(&[
        "--json".as_ref(),
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
        "--verify".as_ref(),
    ]);
    r.expect_code(3);
    let sum = r.json()["summary"].clone();
    assert_eq!(num(&sum, "files_unchanged"), 1, "{sum:#}");
    assert_eq!(num(&sum, "files_verified"), 0, "{sum:#}");
    assert!(sum["errors"].to_string().contains("data.bin"), "{sum:#}");
    // --overwrite-always repairs it.
    let sum = repo.restore("latest", &target, &["--overwrite-always", "--verify"]);
    assert!(sum["errors"].as_array().unwrap().is_empty(), "{sum:#}");
    assert_eq!(
        fs::read(&f).unwrap(),
        fs::read(src.join("data.bin")).unwrap()
    );
}
