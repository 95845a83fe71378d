//! What a new user trips over: restic-style locations and an unexpanded `~` (which used to
//! create odd local directories), `init` into a directory holding other data, an empty
//! snapshot id or password from an unset variable, world-readable repository files, and a
//! KDF weakened by an environment variable in a production binary.

use lifeboat_testkit::repo_cli as common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

fn assert_mentions(r: &Run, needles: &[&str]) {
    let err = r.stderr();
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
}

#[test]
fn restic_style_locations_are_refused_with_the_expected_syntax() {
    let t = tempdir();
    let cases: &[(&str, &[&str])] = &[
        (
            "s3:minio.local:9000/bucket/prefix",
            &[
                "s3://bucket/prefix",
                "--s3-endpoint https://minio.local:9000",
            ],
        ),
        (
            "s3:s3.amazonaws.com/bucket",
            &["s3://bucket", "--s3-endpoint"],
        ),
        ("sftp:user@host:/srv/repo", &["sftp", "s3://BUCKET/PREFIX"]),
        ("rest:http://host:8000/", &["rest", "file:///path"]),
        ("azure:container:/path", &["azure"]),
        ("gs:bucket:/path", &["gs"]),
        ("b2:bucket:path", &["b2"]),
        ("rclone:remote:path", &["rclone"]),
        ("~/backup", &["'~' was not expanded", "$HOME"]),
    ];
    for (location, needles) in cases {
        for args in [INIT.as_slice(), &["snapshots"]] {
            let mut c = lifeboat_cmd(Some(PASSWORD));
            c.current_dir(t.path()).arg("-r").arg(location).args(args);
            let r = run_cmd(c);
            assert_eq!(r.code(), Some(1), "{location}: {}", r.stderr());
            assert_mentions(&r, &["invalid storage location", location]);
            assert_mentions(&r, needles);
        }
    }
    let left: Vec<_> = fs::read_dir(t.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "refused locations created {left:?}");
}

#[test]
fn init_refuses_a_non_empty_directory_that_is_not_a_repository() {
    let t = tempdir();
    let dir = t.path().join("photos");
    write(&dir.join("holiday.jpg"), b"not a repository");
    let repo = Repo::at(&dir);
    let r = run_cmd(repo.cmd(&INIT));
    assert_eq!(r.code(), Some(1), "{}", r.stderr());
    assert_mentions(&r, &[&dir.display().to_string(), "not empty"]);
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["holiday.jpg"], "init wrote into {dir:?}");

    // An empty directory is fine, and so is a new one.
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    Repo::at(&empty).init();
    Repo::at(&t.path().join("new")).init();
}

#[test]
fn empty_snapshot_id_selects_nothing() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    write(&t.path().join("src/f"), b"data");
    repo.backup(&[t.path().join("src")]);
    let target = t.path().join("target");
    let cases: [Vec<&std::ffi::OsStr>; 4] = [
        vec![
            "restore".as_ref(),
            "".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ],
        vec!["ls".as_ref(), "".as_ref()],
        vec!["diff".as_ref(), "".as_ref(), "latest".as_ref()],
        vec!["stats".as_ref(), "".as_ref()],
    ];
    for args in cases {
        let r = repo.run(&args);
        assert_eq!(r.code(), Some(1), "{args:?}: {}", r.stderr());
        assert_mentions(&r, &["empty snapshot id", "latest"]);
        assert!(r.out.stdout.is_empty(), "{args:?}: {}", r.stdout());
    }
    assert!(!target.exists(), "restore '' restored something");
}

#[test]
fn empty_password_says_no_password_given() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let r = run_cmd(repo.cmd_pw(Some(""), &["snapshots"]));
    assert_eq!(r.code(), Some(1), "{}", r.stderr());
    assert_mentions(&r, &["no password given", "LIFEBOAT_PASSWORD", "empty"]);
    assert!(!r.stderr().contains("wrong password"), "{}", r.stderr());

    let empty = t.path().join("empty-pw");
    write(&empty, b"\n");
    let mut c = repo.cmd_pw(None, &["snapshots"]);
    c.arg("--password-file").arg(&empty);
    let r = run_cmd(c);
    assert_eq!(r.code(), Some(1), "{}", r.stderr());
    assert_mentions(&r, &["no password given", "empty-pw"]);
}

/// Every directory 0700 and every file 0600 below `root` (and `root` itself).
fn assert_owner_only(root: &Path) {
    let mut bad = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut files = 0;
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        let mode = md.permissions().mode() & 0o7777;
        if md.is_dir() {
            if mode != 0o700 {
                bad.push(format!("dir {} is {mode:o}", p.display()));
            }
            stack.extend(fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else {
            files += 1;
            if mode != 0o600 {
                bad.push(format!("file {} is {mode:o}", p.display()));
            }
        }
    }
    assert!(
        files >= 4,
        "expected config, key, index, pack, snapshot files"
    );
    assert!(bad.is_empty(), "not owner-only:\n  {}", bad.join("\n  "));
}

#[test]
fn repository_files_are_owner_only() {
    let t = tempdir();
    let dir = t.path().join("repo");
    let repo = Repo::at(&dir);
    repo.init();
    write(&t.path().join("src/f"), &random_bytes(4, 100_000));
    repo.backup(&[t.path().join("src")]);
    assert!(dir.join("keys").is_dir() && dir.join("snapshots").is_dir());
    assert_owner_only(&dir);
}

fn key_params(repo: &Repo) -> Vec<(u64, u64)> {
    repo.json(&["key", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                num(&k["params"], "memory_kib"),
                num(&k["params"], "iterations"),
            )
        })
        .collect()
}

#[test]
fn old_test_kdf_variable_no_longer_weakens_key_slots() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    let mut c = repo.cmd(&["init"]);
    c.env("LIFEBOAT_INSECURE_TEST_KDF", "1");
    run_cmd(c).success();
    assert_eq!(
        key_params(&repo),
        [(64 * 1024, 3)],
        "init used a weakened KDF"
    );

    let pw = t.path().join("pw2");
    write(&pw, b"second password\n");
    let mut c = repo.cmd(&[
        "key".as_ref(),
        "add".as_ref(),
        "--new-password-file".as_ref(),
        pw.as_os_str(),
    ]);
    c.env("LIFEBOAT_INSECURE_TEST_KDF", "1");
    run_cmd(c).success();
    assert_eq!(
        key_params(&repo),
        [(64 * 1024, 3); 2],
        "key add used a weakened KDF"
    );
}

#[test]
fn kdf_options_set_and_bound_the_key_slot_cost() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    assert_eq!(key_params(&repo), [(8 * 1024, 1)]);

    let pw = t.path().join("pw2");
    write(&pw, b"second password\n");
    repo.ok(&[
        "key".as_ref(),
        "add".as_ref(),
        "--new-password-file".as_ref(),
        pw.as_os_str(),
        "--kdf-memory-mib".as_ref(),
        "16".as_ref(),
    ]);
    let mut got = key_params(&repo);
    got.sort();
    assert_eq!(got, [(8 * 1024, 1), (16 * 1024, 3)]);

    // Below the floor or absurdly high: a usage error naming the range, nothing created.
    let other = Repo::at(&t.path().join("other"));
    for bad in [
        ["--kdf-memory-mib", "4"],
        ["--kdf-memory-mib", "100000"],
        ["--kdf-iterations", "0"],
        ["--kdf-iterations", "1000"],
    ] {
        let r = run_cmd(other.cmd(&["init", bad[0], bad[1]]));
        assert_eq!(r.code(), Some(2), "{bad:?}: {}", r.stderr());
        assert_mentions(&r, &[bad[0]]);
    }
    assert!(!t.path().join("other").exists());
}
