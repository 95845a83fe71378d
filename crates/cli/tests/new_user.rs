//! What a new user trips over: restic-style locations and an unexpanded `~` (which used to
//! create odd local directories), `init` into a directory holding other data, an empty
//! snapshot id or password from an unset variable, world-readable repository files, and a
//! KDF weakened by an environment variable in a production binary.

mod common;

use common::*;

fn assert_mentions(r: &Run, needles: &[&str]) {
    let err = r.stderr();
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
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
