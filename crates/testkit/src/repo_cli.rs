//! Helpers for the `lifeboat` binary's end-to-end and fault tests (`crates/cli/tests`): a
//! process harness with a clean environment, tree builders, a restore comparer.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use rand::{RngCore, SeedableRng};
use serde_json::Value;

/// The password every test repository is created with.
pub const PASSWORD: &str = "correct horse battery staple";

/// Cheapest KDF the CLI accepts, passed explicitly to every `init` / `key add` / `key passwd`
/// in the tests (no environment variable weakens the KDF).
pub const TEST_KDF: [&str; 4] = ["--kdf-memory-mib", "8", "--kdf-iterations", "1"];

/// `init` with [`TEST_KDF`], for harnesses that build their own command lines.
pub const INIT: [&str; 5] = ["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"];

/// The binary under test: `lifeboat` next to the running test binary's `deps/` directory
/// (cargo builds a package's binaries before running its integration tests).
pub fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut dir = exe.parent().expect("test binary directory").to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let bin = dir.join("lifeboat");
        assert!(
            bin.is_file(),
            "{} is missing: run the tests of lifeboat-cli through cargo, which builds it",
            bin.display()
        );
        bin
    })
}

/// A `lifeboat` command with a clean environment: the given password, no inherited
/// repository/password settings.
pub fn lifeboat_cmd(password: Option<&str>) -> Command {
    let mut c = Command::new(bin());
    apply_env(&mut c, password);
    c
}

/// Runs `lifeboat` as an unprivileged user through `setpriv` (same environment rules).
pub fn lifeboat_cmd_as(uid: u32, gid: u32, password: Option<&str>) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(bin());
    apply_env(&mut c, password);
    c
}

/// The given password, no inherited LIFEBOAT_* settings (the copy target's and init
/// source's too), stdin from /dev/null.
pub fn apply_env(c: &mut Command, password: Option<&str>) {
    for v in [
        "LIFEBOAT_REPOSITORY",
        "LIFEBOAT_PASSWORD",
        "LIFEBOAT_PASSWORD_FILE",
        "LIFEBOAT_KEY_FILE",
        "LIFEBOAT_NEW_PASSWORD",
        "LIFEBOAT_LOG",
        "LIFEBOAT_TO_REPOSITORY",
        "LIFEBOAT_TO_PASSWORD",
        "LIFEBOAT_TO_PASSWORD_FILE",
        "LIFEBOAT_TO_KEY_FILE",
        "LIFEBOAT_FROM_REPOSITORY",
        "LIFEBOAT_FROM_PASSWORD",
        "LIFEBOAT_FROM_PASSWORD_FILE",
        "LIFEBOAT_FROM_KEY_FILE",
        "LIFEBOAT_INSECURE_TEST_KDF",
    ] {
        c.env_remove(v);
    }
    if let Some(p) = password {
        c.env("LIFEBOAT_PASSWORD", p);
    }
    c.stdin(Stdio::null());
}

/// Output of one finished process, with helpers for assertions.
pub struct Run {
    /// What was run (for messages).
    pub what: String,
    /// The raw output.
    pub out: Output,
}

impl Run {
    /// The exit code (None if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    /// Stdout as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    /// Stderr as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// Panics with full context unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "`{}` exited with {:?}, expected {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.out.status,
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// Panics unless the process succeeded.
    pub fn success(&self) -> &Self {
        self.expect_code(0)
    }

    /// Stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.out.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` printed no valid JSON ({e})\n--- stdout\n{}\n--- stderr\n{}",
                self.what,
                self.stdout(),
                self.stderr()
            )
        })
    }
}

/// Runs a prepared command to completion.
pub fn run_cmd(mut c: Command) -> Run {
    let what = format!("{c:?}");
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    Run { what, out }
}

/// One repository location plus the password to open it.
pub struct Repo {
    /// Location passed with `-r` (a path or an s3:// URL).
    pub location: String,
    /// Password set in LIFEBOAT_PASSWORD.
    pub password: String,
}

impl Repo {
    /// A repository handle (not yet initialized).
    pub fn new(location: impl Into<String>) -> Repo {
        Repo {
            location: location.into(),
            password: PASSWORD.into(),
        }
    }

    /// A local repository at `path`.
    pub fn at(path: &Path) -> Repo {
        Repo::new(path.to_str().expect("utf-8 temp path"))
    }

    /// `lifeboat -r LOCATION ARGS...` with this repo's password.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        self.cmd_pw(Some(&self.password), args)
    }

    /// Like [`Repo::cmd`] with another (or no) password.
    pub fn cmd_pw<S: AsRef<OsStr>>(&self, password: Option<&str>, args: &[S]) -> Command {
        let mut c = lifeboat_cmd(password);
        c.arg("-r").arg(&self.location);
        c.args(args);
        c
    }

    /// Runs and returns the result, whatever it is.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        run_cmd(self.cmd(args))
    }

    /// Runs, asserts success.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let r = self.run(args);
        r.success();
        r
    }

    /// Runs with `--json`, asserts success, parses stdout.
    pub fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        let mut c = self.cmd(&["--json"]);
        c.args(args);
        let r = run_cmd(c);
        r.success();
        r.json()
    }

    /// `init` with the cheap [`TEST_KDF`], asserting success.
    pub fn init(&self) {
        self.ok(&INIT);
    }

    /// `backup --json PATHS...`, asserting success; returns the JSON report.
    pub fn backup<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        let mut a: Vec<OsString> = vec!["backup".into()];
        a.extend(args.iter().map(|s| s.as_ref().to_owned()));
        self.json(&a)
    }

    /// `snapshots --json` as a list.
    pub fn snapshots(&self) -> Vec<Value> {
        self.json(&["snapshots"])
            .as_array()
            .expect("snapshots --json is a list")
            .clone()
    }

    /// `restore SNAP --target DIR --json EXTRA...`, asserting success; returns the summary.
    pub fn restore<S: AsRef<OsStr>>(&self, snap: &str, target: &Path, extra: &[S]) -> Value {
        let mut a: Vec<OsString> = vec![
            "restore".into(),
            snap.into(),
            "--target".into(),
            target.into(),
        ];
        a.extend(extra.iter().map(|s| s.as_ref().to_owned()));
        self.json(&a)["summary"].clone()
    }
}

/// A numeric field of a JSON object, with a helpful panic.
pub fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field:?} is not a number in {v:#}"))
}

/// A world-traversable temporary directory (tempfile makes 0700 ones; some tests run
/// processes as `nobody`).
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("lifeboat-e2e-")
        .tempdir()
        .expect("tempdir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    d
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Writes a file, creating parent directories.
pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("mkdir -p");
    }
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    f.write_all(bytes).expect("write");
}

/// Sets mode bits.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
}

/// Sets atime and mtime (seconds + nanoseconds) without following symlinks.
pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let t = TimeSpec::new(secs, nanos);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .unwrap_or_else(|e| panic!("utimensat {path:?}: {e}"));
}

/// Builds the rich sample tree used by the round-trip test below `root` and returns the
/// relative paths of regular files (without the second hard link name).
///
/// Contains nested dirs, empty files, an empty dir, symlinks (relative, absolute, dangling),
/// a hard-link pair, a non-UTF-8 name, odd modes (setuid, sticky, read-only dir), foreign
/// ownership, multi-chunk random data, a sparse-looking zero file and exact nanosecond mtimes.
pub fn make_rich_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    write(&root.join("a/b/c/deep.txt"), b"deep inside\n");
    write(&root.join("a/empty-file"), b"");
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    write(
        &root.join("big.bin"),
        &random_bytes(1, 3 * 1024 * 1024 + 17),
    );
    write(&root.join("zeros.bin"), &vec![0u8; 2 * 1024 * 1024 + 5]);
    write(&root.join("mixed.bin"), &{
        let mut v = random_bytes(2, 700 * 1024);
        v.extend(vec![0u8; 1536 * 1024]);
        v.extend(random_bytes(3, 300 * 1024));
        v
    });
    write(&root.join("hard1"), b"shared by two names\n");
    fs::hard_link(root.join("hard1"), root.join("a/hard2")).unwrap();
    let odd = OsStr::from_bytes(b"caf\xe9-\xff.txt");
    write(&root.join(odd), b"latin-1 name\n");
    fs::create_dir_all(root.join(OsStr::from_bytes(b"dir-\xfe"))).unwrap();
    write(
        &root.join(OsStr::from_bytes(b"dir-\xfe")).join("x y"),
        b"space",
    );
    std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/lifeboat/target", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"caf\xe9-\xff.txt"),
        root.join("odd-link"),
    )
    .unwrap();
    write(&root.join("modes/secret"), b"0600");
    write(&root.join("modes/exec.sh"), b"#!/bin/sh\necho hi\n");
    write(&root.join("modes/readonly"), b"0444");
    write(&root.join("modes/setuid"), b"04755");
    write(&root.join("modes/weird"), b"0147");
    write(&root.join("ro-dir/inside"), b"in a 0555 dir");
    fs::create_dir_all(root.join("sticky")).unwrap();
    write(&root.join("owned"), b"uid 1234 gid 5678");
    std::os::unix::fs::chown(root.join("owned"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(root.join("rel-link"), Some(4321), Some(8765)).unwrap();

    chmod(&root.join("modes/secret"), 0o600);
    chmod(&root.join("modes/exec.sh"), 0o755);
    chmod(&root.join("modes/readonly"), 0o444);
    chmod(&root.join("modes/setuid"), 0o4755);
    chmod(&root.join("modes/weird"), 0o147);
    chmod(&root.join("sticky"), 0o1777);
    chmod(&root.join("a/b"), 0o700);

    // mtimes: files first, directories deepest first (creating entries touches the parent).
    let mut n = 0i64;
    let mut stamp = |p: &Path| {
        n += 1;
        set_mtime(p, 1_234_567_890 + n * 86_400, 123_456_789 + n);
    };
    for rel in [
        "a/b/c/deep.txt",
        "a/empty-file",
        "big.bin",
        "zeros.bin",
        "mixed.bin",
        "hard1",
        "modes/secret",
        "modes/exec.sh",
        "modes/readonly",
        "modes/setuid",
        "modes/weird",
        "ro-dir/inside",
        "owned",
        "rel-link",
        "dangling",
        "odd-link",
    ] {
        stamp(&root.join(rel));
    }
    stamp(&root.join(odd));
    stamp(&root.join(OsStr::from_bytes(b"dir-\xfe")).join("x y"));
    write(&root.join("old-1970"), b"epoch plus one");
    set_mtime(&root.join("old-1970"), 1, 1);
    chmod(&root.join("ro-dir"), 0o555);
    for rel in [
        "a/b/c",
        "a/b",
        "a",
        "empty-dir",
        "modes",
        "ro-dir",
        "sticky",
    ] {
        stamp(&root.join(rel));
    }
    stamp(&root.join(OsStr::from_bytes(b"dir-\xfe")));
    stamp(root);
}

/// Where a source path lands below a restore target.
pub fn restored_path(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("absolute source path"))
}

/// One entry of a tree, as the comparer sees it.
#[derive(Debug)]
struct Entry {
    md: fs::Metadata,
}

fn collect(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let p = root.join(rel);
    let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {p:?}: {e}"));
    let is_dir = md.is_dir();
    out.insert(rel.to_path_buf(), Entry { md });
    if is_dir {
        for e in fs::read_dir(&p).unwrap_or_else(|e| panic!("read_dir {p:?}: {e}")) {
            let e = e.unwrap();
            collect(root, &rel.join(e.file_name()), out);
        }
    }
}

/// Asserts that `restored` is a faithful copy of `source`: same names, types, contents,
/// modes, owners, mtimes (to the nanosecond), symlink targets, and hard links that share an
/// inode exactly where the source's do.
pub fn assert_trees_equal(source: &Path, restored: &Path) {
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    collect(source, Path::new(""), &mut a);
    collect(restored, Path::new(""), &mut b);
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(
        names_a, names_b,
        "restored tree {restored:?} lists different entries than {source:?}"
    );
    let mut problems = Vec::new();
    let mut src_inodes: HashMap<u64, Vec<&PathBuf>> = HashMap::new();
    for (rel, ea) in &a {
        let eb = &b[rel];
        let (ma, mb) = (&ea.md, &eb.md);
        let ta = ma.file_type();
        let tb = mb.file_type();
        if (ta.is_dir(), ta.is_file(), ta.is_symlink())
            != (tb.is_dir(), tb.is_file(), tb.is_symlink())
        {
            problems.push(format!("{rel:?}: type {ta:?} became {tb:?}"));
            continue;
        }
        if !ta.is_symlink() && ma.mode() & 0o7777 != mb.mode() & 0o7777 {
            problems.push(format!(
                "{rel:?}: mode {:o} became {:o}",
                ma.mode() & 0o7777,
                mb.mode() & 0o7777
            ));
        }
        if (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
            problems.push(format!(
                "{rel:?}: owner {}:{} became {}:{}",
                ma.uid(),
                ma.gid(),
                mb.uid(),
                mb.gid()
            ));
        }
        // The root of the comparison is the source directory itself; its mtime matters too.
        if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            problems.push(format!(
                "{rel:?}: mtime {}.{:09} became {}.{:09}",
                ma.mtime(),
                ma.mtime_nsec(),
                mb.mtime(),
                mb.mtime_nsec()
            ));
        }
        if ta.is_symlink() {
            let la = fs::read_link(source.join(rel)).unwrap();
            let lb = fs::read_link(restored.join(rel)).unwrap();
            if la != lb {
                problems.push(format!("{rel:?}: symlink target {la:?} became {lb:?}"));
            }
        }
        if ta.is_file() {
            if ma.size() != mb.size() {
                problems.push(format!("{rel:?}: size {} became {}", ma.size(), mb.size()));
            } else if fs::read(source.join(rel)).unwrap() != fs::read(restored.join(rel)).unwrap() {
                problems.push(format!("{rel:?}: content differs"));
            }
            if ma.nlink() > 1 {
                src_inodes.entry(ma.ino()).or_default().push(rel);
            } else if mb.nlink() != 1 {
                problems.push(format!(
                    "{rel:?}: not hard linked in the source but has {} links after restore",
                    mb.nlink()
                ));
            }
        }
    }
    for group in src_inodes.values() {
        let inodes: Vec<u64> = group.iter().map(|r| b[*r].md.ino()).collect();
        if inodes.windows(2).any(|w| w[0] != w[1]) {
            problems.push(format!(
                "hard links {group:?} no longer share an inode after restore ({inodes:?})"
            ));
        }
        for r in group {
            if b[*r].md.nlink() != a[*r].md.nlink() {
                problems.push(format!(
                    "{r:?}: link count {} became {}",
                    a[*r].md.nlink(),
                    b[*r].md.nlink()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "restore of {source:?} into {restored:?} differs:\n  {}",
        problems.join("\n  ")
    );
}

/// All paths below `root` (relative), for "what is in the target" assertions.
pub fn list_tree(root: &Path) -> Vec<PathBuf> {
    let mut m = BTreeMap::new();
    collect(root, Path::new(""), &mut m);
    m.into_keys()
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

/// Objects below `dir` (recursively) as `name → size`, names relative to `dir`. Staging files
/// (`name#N`, left by a killed write) are left out unless `staging`.
pub fn files_below(dir: &Path, staging: bool) -> BTreeMap<String, u64> {
    fn walk(root: &Path, d: &Path, staging: bool, out: &mut BTreeMap<String, u64>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue; // deleted meanwhile
            };
            if md.is_dir() {
                walk(root, &p, staging, out);
            } else if staging || !e.file_name().to_string_lossy().contains('#') {
                let rel = p.strip_prefix(root).expect("below root");
                out.insert(rel.to_string_lossy().into_owned(), md.len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, staging, &mut out);
    out
}

/// Copies a tree with modes, mtimes, symlinks and hard links (`cp -a`).
pub fn freeze(src: &Path, dst: &Path) {
    fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("run cp -a");
    assert!(st.success(), "cp -a {src:?} {dst:?} failed");
}
