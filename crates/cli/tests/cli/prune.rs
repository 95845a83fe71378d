//! `lifeboat prune` and repository locks end to end: real processes against local
//! repositories, with assertions on what lands on (and disappears from) disk.
//!
//! * random interleavings of backup / forget / prune keep every live snapshot restorable, and
//!   what prune reports matches what it did to `data/`;
//! * SIGKILL of a prune at random moments never damages the repository, and the dead prune's
//!   lock never blocks the next command;
//! * a backup and a prune never work at the same time, and each names the other when refused;
//! * stale (dead holder) and live locks as `unlock` and prune see them;
//! * a paused holder whose lease ran out fences itself;
//! * prune's refusals delete nothing.
//!
//! Randomized tests print their seed; `LIFEBOAT_PRUNE_SEED=<u64>` replays another one.
//! Processes are synchronised on events they leave behind — a lock object, the lock refresher
//! thread in `/proc/<pid>/task`, new or removed files — not on sleeps. The only wall-clock
//! waits are the lease expiry in the self-fencing test and the deliberately random kill
//! delays of the kill test (any moment is a valid moment to kill).

use lifeboat_testkit::repo_cli as common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{num, run_cmd, Repo, Run};
use lifeboat_testkit::{
    assert_trees_equal, flip_byte, flip_middle_byte, generate_tree, restored_path, run_with_signal,
    Signal, TreeSpec, Trigger,
};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// Longest wait for an event a child process should produce.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Thread name of a lock holder's refresher: it exists exactly while the lock is held.
const REFRESHER: &str = "lock-refresh";

// ---- repository ----------------------------------------------------------------------

/// Removes snapshot `id` (full hex) from the local repository at `repo` with `lifeboat forget`.
fn forget(repo: &Path, id: &str) {
    common::Repo::at(repo).ok(&["forget", id]);
    assert!(
        !repo.join("snapshots").join(id).exists(),
        "forget {id} left the object"
    );
}

/// A local repository: the CLI handle plus its directory.
struct LocalRepo {
    cli: Repo,
    dir: PathBuf,
}

impl LocalRepo {
    fn init(dir: PathBuf) -> LocalRepo {
        let cli = Repo::at(&dir);
        cli.init();
        LocalRepo { cli, dir }
    }

    fn run(&self, args: &[&str]) -> Run {
        run_cmd(self.cli.cmd(args))
    }

    /// `--json ARGS`, asserting success.
    fn json(&self, args: &[&str]) -> Value {
        self.cli.json(args)
    }

    /// Backs up `src`; returns the snapshot id (full hex).
    fn backup(&self, src: &Path) -> String {
        let b = self.cli.backup(&[src]);
        b["snapshot"]
            .as_str()
            .unwrap_or_else(|| panic!("no snapshot id in {b:#}"))
            .to_owned()
    }

    /// Snapshot ids as `snapshots --json` lists them.
    fn snapshot_ids(&self) -> BTreeSet<String> {
        self.cli
            .snapshots()
            .iter()
            .map(|s| s["id"].as_str().expect("snapshot id").to_owned())
            .collect()
    }

    /// `prune --json EXTRA…`, asserting success; the report.
    fn prune(&self, extra: &[&str]) -> Value {
        let mut a = vec!["prune"];
        a.extend_from_slice(extra);
        self.json(&a)
    }

    /// `prune --dry-run --max-unused SHARE --json`.
    fn dry_run(&self, share: &str) -> Value {
        self.prune(&["--dry-run", "--max-unused", share])
    }

    /// `stats --json`'s repository part (stats takes no lock).
    fn stats(&self) -> Value {
        self.json(&["stats"])["repository"].clone()
    }

    /// `check [--read-data]` exits 0 and finds nothing at all, not even a warning.
    #[track_caller]
    fn assert_clean(&self, read_data: bool, context: &str) {
        let mut a = vec!["--json", "check"];
        if read_data {
            a.push("--read-data");
        }
        let r = self.run(&a);
        r.expect_code(0);
        let findings = r.json()["findings"].clone();
        assert_eq!(
            findings.as_array().map(Vec::len),
            Some(0),
            "{context}: check finds {findings:#}"
        );
    }

    /// `check` exits 0 (warnings allowed); returns the number of warnings. Takes no lock, so
    /// a dead holder's lock is left for the next command to deal with.
    #[track_caller]
    fn assert_consistent(&self, context: &str) -> usize {
        let r = self.run(&["--json", "--no-lock", "check"]);
        assert_eq!(
            r.code(),
            Some(0),
            "{context}: check fails\n{}\n{}",
            r.stdout(),
            r.stderr()
        );
        let findings = r.json()["findings"].clone();
        let findings = findings.as_array().expect("findings");
        for f in findings {
            assert_eq!(f["severity"], "warning", "{context}: {f}");
        }
        findings.len()
    }

    /// Restores `id` and compares it byte for byte with `expected`, the frozen copy of `src`
    /// at backup time.
    #[track_caller]
    fn assert_restores(&self, id: &str, expected: &Path, src: &Path, scratch: &Path) {
        let target = scratch.join(format!("restore-{}", &id[..12]));
        let r = self.run(&[
            "--json",
            "--no-lock",
            "restore",
            id,
            "--target",
            target.to_str().expect("utf-8 path"),
            "--verify",
        ]);
        r.expect_code(0);
        assert_trees_equal(expected, &restored_path(&target, src));
        fs::remove_dir_all(&target).expect("remove restore target");
    }

    /// Pack objects, `xx/<id>` (below `data/`) → size.
    fn packs(&self) -> BTreeMap<String, u64> {
        common::files_below(&self.dir.join("data"), false)
    }

    fn index_files(&self) -> BTreeMap<String, u64> {
        common::files_below(&self.dir.join("index"), false)
    }

    /// Lock object names (without the `locks/` prefix).
    fn locks(&self) -> BTreeSet<String> {
        common::files_below(&self.dir.join("locks"), false)
            .into_keys()
            .collect()
    }
}

/// A fresh temporary directory holding a new repository `repo/`.
fn setup() -> (tempfile::TempDir, LocalRepo) {
    let tmp = common::tempdir();
    let repo = LocalRepo::init(tmp.path().join("repo"));
    (tmp, repo)
}

// ---- source trees --------------------------------------------------------------------

fn seed(default: u64, test: &str) -> u64 {
    let s = std::env::var("LIFEBOAT_PRUNE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("{test}: seed {s} (set LIFEBOAT_PRUNE_SEED to replay another)");
    s
}

/// Regular files below `root`, relative paths.
fn regular_files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = fs::read_dir(d)
            .expect("read dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let md = fs::symlink_metadata(&p).expect("lstat");
            if md.is_dir() {
                walk(root, &p, out);
            } else if md.is_file() {
                out.push(p.strip_prefix(root).expect("below root").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// A source tree that changes between backups.
struct Source {
    root: PathBuf,
    rng: StdRng,
    round: usize,
    spec: TreeSpec,
}

impl Source {
    /// A generated tree at `root/base` (small files, one larger multi-chunk file).
    fn new(root: PathBuf, seed: u64, spec: TreeSpec) -> Source {
        generate_tree(&root.join("base"), seed, &spec);
        Source {
            root,
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            round: 0,
            spec,
        }
    }

    /// Adds a small generated subtree, drops some earlier ones, and rewrites, grows, truncates
    /// or deletes a random tenth of the files.
    fn mutate(&mut self) {
        self.round += 1;
        let rng = &mut self.rng;
        let added = format!("add{:03}", self.round);
        let spec = TreeSpec {
            files: rng.gen_range(5..20),
            max_file_size: self.spec.max_file_size,
            dirs: 3,
            max_depth: 2,
            duplicates: 2,
            large_files: rng.gen_range(0..2),
            large_file_size: rng.gen_range(200_000..600_000),
        };
        for e in fs::read_dir(&self.root).expect("read source") {
            let p = e.expect("entry").path();
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            if name.starts_with("add") && rng.gen_bool(0.25) {
                fs::remove_dir_all(&p).expect("remove subtree");
            }
        }
        for rel in regular_files(&self.root) {
            let p = self.root.join(&rel);
            match rng.gen_range(0..30) {
                0 => {
                    let mut data = vec![0u8; rng.gen_range(0..self.spec.max_file_size)];
                    rng.fill(&mut data[..]);
                    fs::write(&p, data).expect("rewrite");
                }
                1 => {
                    let mut data = vec![0u8; rng.gen_range(1..20_000)];
                    rng.fill(&mut data[..]);
                    let mut old = fs::read(&p).expect("read");
                    old.extend(data);
                    fs::write(&p, old).expect("append");
                }
                2 => {
                    let len = fs::metadata(&p).expect("stat").len();
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .and_then(|f| f.set_len(len / 2))
                        .expect("truncate");
                }
                3 => fs::remove_file(&p).expect("remove file"),
                _ => {}
            }
        }
        generate_tree(&self.root.join(added), rng.gen(), &spec);
    }
}

/// About 48 MiB in two large random files plus some small ones: a backup of it runs long
/// enough to be caught (and stopped) while it holds its lock.
fn big_tree(root: &Path, seed: u64) {
    generate_tree(
        root,
        seed,
        &TreeSpec {
            files: 30,
            max_file_size: 8 * 1024,
            dirs: 4,
            max_depth: 2,
            duplicates: 2,
            large_files: 2,
            large_file_size: 24 << 20,
        },
    );
}

/// A tree whose packs mix 24 MiB of kept data with 8 MiB of garbage: backed up with
/// `large03.bin`, then without it, and the first snapshot forgotten, so a prune at 0 % repacks
/// about 24 MiB (long enough to catch it at work). Returns the kept snapshot, the garbage
/// file's path relative to `src` and its bytes.
fn mixed_garbage(repo: &LocalRepo, src: &Path, seed: u64) -> (String, PathBuf, Vec<u8>) {
    generate_tree(
        src,
        seed,
        &TreeSpec {
            files: 20,
            max_file_size: 4096,
            dirs: 2,
            max_depth: 1,
            duplicates: 0,
            large_files: 4,
            large_file_size: 8 << 20,
        },
    );
    let rel = regular_files(src)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "large03.bin"))
        .expect("large03.bin");
    let bytes = fs::read(src.join(&rel)).expect("read garbage file");
    let first = repo.backup(src);
    fs::remove_file(src.join(&rel)).expect("drop the garbage file");
    let kept = repo.backup(src);
    forget(&repo.dir, &first);
    (kept, rel, bytes)
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .expect("gethostname")
        .into_string()
        .expect("utf-8 host name")
}

// ---- processes -----------------------------------------------------------------------

/// Whether process `pid` has a thread called `name`.
fn has_thread(pid: u32, name: &str) -> bool {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    rd.flatten()
        .any(|t| fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// A child running in the background. It is reaped only by [`Bg::exited`] and
/// [`Bg::finish`], so until then its pid cannot be recycled and signals reach only it.
struct Bg {
    what: String,
    child: Child,
    status: Option<ExitStatus>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

/// How a background child ended.
struct Done {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Done {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn killed_by(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.status.signal()
    }

    #[track_caller]
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "`{}` ended with {:?}, expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}): {}", self.what, self.stdout))
    }
}

impl Bg {
    fn spawn(mut cmd: Command) -> Bg {
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let out = Some(drain(child.stdout.take().expect("piped")));
        let err = Some(drain(child.stderr.take().expect("piped")));
        Bg {
            what,
            child,
            status: None,
            out,
            err,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reaps the child if it has exited (a stopped child has not).
    fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status.is_some()
    }

    fn signal(&mut self, sig: Signal) {
        assert!(
            self.status.is_none(),
            "`{}` was already reaped; not signalling",
            self.what
        );
        // Not reaped: the pid is still ours, even if the child is a zombie by now.
        nix::sys::signal::kill(Pid::from_raw(self.pid() as i32), sig).expect("kill(2)");
    }

    /// Whether the child holds a repository lock right now.
    fn holds_lock(&self) -> bool {
        has_thread(self.pid(), REFRESHER)
    }

    /// Polls `cond` until it holds; panics with the child's output if the child exits first.
    #[track_caller]
    fn wait_until(&mut self, event: &str, mut cond: impl FnMut(&Bg) -> bool) {
        let t0 = Instant::now();
        loop {
            if cond(self) {
                return;
            }
            if self.exited() {
                let d = self.collect();
                panic!(
                    "`{}` exited ({:?}) before {event}\n--- stdout\n{}\n--- stderr\n{}",
                    d.what, d.status, d.stdout, d.stderr
                );
            }
            assert!(
                t0.elapsed() < EVENT_TIMEOUT,
                "`{}`: no {event} within {EVENT_TIMEOUT:?}",
                self.what
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn collect(&mut self) -> Done {
        let status = match self.status {
            Some(s) => s,
            None => {
                let s = self.child.wait().expect("wait");
                self.status = Some(s);
                s
            }
        };
        let text = |h: Option<JoinHandle<Vec<u8>>>| {
            h.map(|h| String::from_utf8_lossy(&h.join().expect("reader")).into_owned())
                .unwrap_or_default()
        };
        Done {
            what: self.what.clone(),
            status,
            stdout: text(self.out.take()),
            stderr: text(self.err.take()),
        }
    }

    /// Waits for the child to exit.
    fn finish(mut self) -> Done {
        self.collect()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if !self.exited() {
            let pid = Pid::from_raw(self.pid() as i32);
            let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Starts `backup SRC` and stops it (SIGSTOP) as soon as it holds its lock; asserts that it had
/// not written its snapshot yet.
fn stopped_backup(repo: &LocalRepo, src: &Path, extra: &[&str]) -> Bg {
    let before = repo.snapshot_ids();
    let mut cmd = repo.cli.cmd(extra);
    cmd.arg("--json").arg("backup").arg(src);
    let mut b = Bg::spawn(cmd);
    b.wait_until("the backup holds its lock", Bg::holds_lock);
    b.signal(Signal::SIGSTOP);
    assert_eq!(
        repo.snapshot_ids(),
        before,
        "the backup wrote its snapshot before it could be stopped; make the tree bigger"
    );
    assert_eq!(repo.locks().len(), 1, "the stopped backup's lock object");
    b
}

// ---- 1. random interleavings ---------------------------------------------------------

/// Checks a prune report against what happened to `data/`: exactly the packs it counts as
/// unused, repacked or unindexed are gone (with exactly `bytes_deleted`), and exactly
/// `packs_written` new packs of `bytes_written` appeared.
#[track_caller]
fn assert_report_matches_disk(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    r: &Value,
    context: &str,
) {
    assert_eq!(
        num(r, "packs_total"),
        before.len() as u64,
        "{context}: {r:#}"
    );
    assert_eq!(
        num(r, "bytes_total"),
        before.values().sum::<u64>(),
        "{context}: {r:#}"
    );
    let gone: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    let new: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(
        gone.len() as u64,
        num(r, "packs_unused") + num(r, "packs_repacked") + num(r, "packs_unindexed"),
        "{context}: packs deleted {gone:?} vs report {r:#}"
    );
    assert_eq!(
        gone.iter().map(|k| before[*k]).sum::<u64>(),
        num(r, "bytes_deleted"),
        "{context}: {r:#}"
    );
    assert_eq!(
        new.len() as u64,
        num(r, "packs_written"),
        "{context}: {r:#}"
    );
    assert_eq!(
        new.iter().map(|k| after[*k]).sum::<u64>(),
        num(r, "bytes_written"),
        "{context}: {r:#}"
    );
}

#[test]
fn random_interleavings_keep_every_live_snapshot_restorable() {
    const ROUNDS: usize = 8;
    const SHARES: [&str; 4] = ["0%", "5%", "50%", "100%"];
    let t0 = Instant::now();
    let seed = seed(0x9a11_0f0e, "interleavings");
    let mut rng = StdRng::seed_from_u64(seed);
    let (tmp, repo) = setup();
    let scratch = tmp.path().join("scratch");
    let mut src = Source::new(
        tmp.path().join("src"),
        rng.gen(),
        TreeSpec {
            files: 60,
            max_file_size: 64 * 1024,
            dirs: 8,
            max_depth: 3,
            duplicates: 4,
            large_files: 1,
            large_file_size: 1 << 20,
        },
    );
    // Live snapshots and the frozen copy of the source each one was taken from.
    let mut live: Vec<(String, PathBuf)> = Vec::new();
    let mut forgotten_total = 0;
    let mut repacked_total = 0;
    for round in 1..=ROUNDS {
        for _ in 0..rng.gen_range(1..=2) {
            src.mutate();
            let id = repo.backup(&src.root);
            let frozen = tmp.path().join("frozen").join(&id);
            common::freeze(&src.root, &frozen);
            live.push((id, frozen));
        }
        // Forget a random subset (sometimes all of them: an empty repository is a case too).
        let mut forgotten = Vec::new();
        live.retain(|(id, frozen)| {
            let f = rng.gen_bool(0.35);
            if f {
                forget(&repo.dir, id);
                fs::remove_dir_all(frozen).expect("remove frozen copy");
                forgotten.push(id[..8].to_owned());
            }
            !f
        });
        forgotten_total += forgotten.len();
        let share = *SHARES.choose(&mut rng).expect("shares");
        let context = format!(
            "round {round} (seed {seed}): {} live, forgot {forgotten:?}, --max-unused {share}",
            live.len()
        );
        eprintln!("{context}");

        let before = repo.packs();
        let r = repo.prune(&["--max-unused", share]);
        let after = repo.packs();
        assert_eq!(num(&r, "snapshots"), live.len() as u64, "{context}: {r:#}");
        assert_eq!(num(&r, "packs_missing"), 0, "{context}: {r:#}");
        assert_report_matches_disk(&before, &after, &r, &context);
        repacked_total += num(&r, "packs_repacked");

        // Done means done: the same threshold finds nothing more, and what stays unused is
        // exactly what `stats` (an independent walk) calls garbage.
        let again = repo.dry_run(share);
        for field in ["packs_unused", "packs_repacked", "packs_unindexed"] {
            assert_eq!(
                num(&again, field),
                0,
                "{context}: dry run after prune: {again:#}"
            );
        }
        let stats = repo.stats();
        assert_eq!(
            num(&stats, "garbage_bytes"),
            num(&r, "bytes_unused_kept"),
            "{context}: stats {stats:#} vs prune {r:#}"
        );
        if share == "0%" {
            assert_eq!(num(&stats, "garbage_bytes"), 0, "{context}: {stats:#}");
        }

        let listed = repo.snapshot_ids();
        let expected: BTreeSet<String> = live.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(listed, expected, "{context}: snapshots after prune");
        repo.assert_clean(true, &context);
        for (id, frozen) in &live {
            repo.assert_restores(id, frozen, &src.root, &scratch);
        }
    }
    assert!(
        forgotten_total > 0,
        "seed {seed}: nothing was ever forgotten"
    );
    eprintln!("{forgotten_total} snapshots forgotten, {repacked_total} packs repacked");

    // Finally forget everything but one new snapshot: the space really comes back.
    src.mutate();
    let keep = repo.backup(&src.root);
    let frozen = tmp.path().join("frozen").join(&keep);
    common::freeze(&src.root, &frozen);
    for (id, f) in live.drain(..) {
        forget(&repo.dir, &id);
        fs::remove_dir_all(f).expect("remove frozen copy");
    }
    let size = |r: &LocalRepo| -> u64 { r.packs().values().sum() };
    let before = size(&repo);
    let r = repo.prune(&["--max-unused", "0%"]);
    let after = size(&repo);
    assert!(
        after < before && num(&r, "bytes_freed") == before - after,
        "forgetting all but one snapshot freed nothing: {before} → {after} bytes, {r:#}"
    );
    let dry = repo.prune(&["--dry-run"]);
    assert_eq!(num(&dry, "packs_unused"), 0, "{dry:#}");
    assert_eq!(num(&dry, "packs_unindexed"), 0, "{dry:#}");
    repo.assert_clean(true, "final prune");
    repo.assert_restores(&keep, &frozen, &src.root, &scratch);
    eprintln!("interleavings took {:.2?}", t0.elapsed());
}

// ---- 2. kill test --------------------------------------------------------------------

/// What a killed prune had got to, judged by what it left behind.
fn prune_phase(
    packs: (&BTreeMap<String, u64>, &BTreeMap<String, u64>),
    index: (&BTreeMap<String, u64>, &BTreeMap<String, u64>),
) -> &'static str {
    let added = |(b, a): (&BTreeMap<String, u64>, &BTreeMap<String, u64>)| {
        a.keys().any(|k| !b.contains_key(k))
    };
    let removed = |(b, a): (&BTreeMap<String, u64>, &BTreeMap<String, u64>)| {
        b.keys().any(|k| !a.contains_key(k))
    };
    if removed(packs) {
        "sweep: packs deleted"
    } else if removed(index) {
        "old index files being deleted"
    } else if added(index) {
        "new index written, old index still there"
    } else if added(packs) {
        "repack: new packs, no new index"
    } else {
        "before any write"
    }
}

/// A kill moment for a prune of the repository at `dir`: immediately, after a short random
/// delay (any moment is valid, so wall-clock randomness is fine here), or when the k-th event
/// of some kind (lock taken, new pack or index file, old index file or pack gone) is seen.
fn kill_trigger(rng: &mut StdRng, dir: &Path) -> (Trigger, String) {
    let data = dir.join("data");
    let index = dir.join("index");
    let locks = dir.join("locks");
    let packs0 = common::files_below(&data, true);
    let index0 = common::files_below(&index, false);
    match rng.gen_range(0..8) {
        0 => (Trigger::After(Duration::ZERO), "immediately".into()),
        1 | 2 => {
            let d = Duration::from_millis(rng.gen_range(1..150));
            (Trigger::After(d), format!("after {d:?}"))
        }
        3 => (
            Trigger::When(Box::new(move || {
                !common::files_below(&locks, true).is_empty()
            })),
            "once its lock object appears".into(),
        ),
        4 => {
            let k = rng.gen_range(1..=3);
            (
                Trigger::When(Box::new(move || {
                    common::files_below(&data, true)
                        .keys()
                        .filter(|n| !packs0.contains_key(*n))
                        .count()
                        >= k
                })),
                format!("when new pack #{k} appears"),
            )
        }
        5 => (
            Trigger::When(Box::new(move || {
                common::files_below(&index, true)
                    .keys()
                    .any(|n| !index0.contains_key(n))
            })),
            "when a new index file appears".into(),
        ),
        6 => {
            let k = rng.gen_range(1..=index0.len().max(1));
            (
                Trigger::When(Box::new(move || {
                    let now = common::files_below(&index, false);
                    index0.keys().filter(|n| !now.contains_key(*n)).count() >= k
                })),
                format!("when old index file #{k} is gone"),
            )
        }
        _ => {
            let k = rng.gen_range(1..=6);
            (
                Trigger::When(Box::new(move || {
                    let now = common::files_below(&data, true);
                    packs0.keys().filter(|n| !now.contains_key(*n)).count() >= k
                })),
                format!("when pack #{k} is deleted"),
            )
        }
    }
}

#[test]
fn sigkill_of_prune_at_random_moments_never_loses_live_data() {
    const KILLS: usize = 30;
    const MAX_ATTEMPTS: usize = 120;
    let t0 = Instant::now();
    let seed = seed(0x6b11_9e0e, "prune kill test");
    let mut rng = StdRng::seed_from_u64(seed);
    let (tmp, repo) = setup();
    let scratch = tmp.path().join("scratch");
    let mut src = Source::new(
        tmp.path().join("src"),
        rng.gen(),
        TreeSpec {
            files: 120,
            max_file_size: 64 * 1024,
            dirs: 10,
            max_depth: 3,
            duplicates: 6,
            large_files: 2,
            large_file_size: 2 << 20,
        },
    );
    let mut live: Vec<(String, PathBuf)> = Vec::new();
    let backup = |src: &mut Source, live: &mut Vec<(String, PathBuf)>| {
        src.mutate();
        let id = repo.backup(&src.root);
        let frozen = tmp.path().join("frozen").join(&id);
        common::freeze(&src.root, &frozen);
        live.push((id, frozen));
    };
    for _ in 0..6 {
        backup(&mut src, &mut live);
    }
    let forget_some = |rng: &mut StdRng, live: &mut Vec<(String, PathBuf)>, n: usize| {
        for _ in 0..n {
            let (id, frozen) = live.remove(rng.gen_range(0..live.len()));
            forget(&repo.dir, &id);
            fs::remove_dir_all(frozen).expect("remove frozen copy");
        }
    };
    forget_some(&mut rng, &mut live, 3);

    let mut kills = 0;
    let mut attempts = 0;
    let mut completed = 0;
    let mut took_over = 0;
    let mut locks_left = 0;
    let mut replenished = 0;
    let mut phases: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut restore_next = 0;
    while kills < KILLS {
        attempts += 1;
        assert!(
            attempts <= MAX_ATTEMPTS,
            "seed {seed}: only {kills} of {attempts} prunes were killed while running"
        );
        // Nothing left to prune (stats takes no lock): make new garbage, some of it sharing
        // packs with live data so there is repacking to do too. Not while a killed prune's
        // lock is left: the next prune, not a backup, must be the one to face it.
        let stale_before = repo.locks();
        let st = repo.stats();
        if stale_before.is_empty()
            && num(&st, "garbage_bytes") == 0
            && num(&st, "duplicate_bytes") == 0
        {
            backup(&mut src, &mut live);
            forget_some(&mut rng, &mut live, 1);
            replenished += 1;
        }
        let (packs0, index0) = (repo.packs(), repo.index_files());
        let (trigger, what) = kill_trigger(&mut rng, &repo.dir);
        let context = format!("seed {seed}, attempt {attempts}: SIGKILL {what}");
        let o = run_with_signal(
            repo.cli.cmd(&["prune", "--max-unused", "0%"]),
            Signal::SIGKILL,
            trigger,
        )
        .expect("spawn prune");
        let locks_after = repo.locks();
        if o.killed_by() == Some(Signal::SIGKILL as i32) {
            kills += 1;
            if !locks_after.is_empty() {
                locks_left += 1;
            }
            let phase = prune_phase((&packs0, &repo.packs()), (&index0, &repo.index_files()));
            *phases.entry(phase).or_default() += 1;
        } else {
            // Never blocked by the lock a killed prune left behind (exit 13), and it removes it.
            assert_eq!(o.code(), Some(0), "{context}: {}", o.stderr_text());
            assert!(
                locks_after.is_empty(),
                "{context}: locks left {locks_after:?}"
            );
            completed += 1;
        }
        if !stale_before.is_empty() && stale_before.is_disjoint(&locks_after) {
            took_over += 1;
        }

        let warnings = repo.assert_consistent(&context);
        let listed = repo.snapshot_ids();
        let expected: BTreeSet<String> = live.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(listed, expected, "{context}: snapshots");
        if attempts % 4 == 0 {
            let (id, frozen) = &live[restore_next % live.len()];
            restore_next += 1;
            repo.assert_restores(id, frozen, &src.root, &scratch);
        }
        if warnings > 0 && o.signalled {
            eprintln!("{context}: {warnings} warnings");
        }
    }
    eprintln!(
        "{kills} kills in {attempts} attempts ({completed} prunes finished first, garbage \
         replenished {replenished} times); {locks_left} kills left a lock, {took_over} prunes \
         took over a dead prune's lock"
    );
    for (p, n) in &phases {
        eprintln!("  {n:3} × {p}");
    }
    assert!(
        phases.len() >= 3,
        "seed {seed}: kills landed in too few phases: {phases:?}"
    );
    assert!(
        took_over >= 3,
        "seed {seed}: a dead prune's lock was taken over only {took_over} times"
    );

    // A prune left to finish cleans up everything the killed ones left.
    let r = repo.prune(&["--max-unused", "0%"]);
    assert_eq!(num(&r, "snapshots"), live.len() as u64, "{r:#}");
    assert!(repo.locks().is_empty(), "locks left: {:?}", repo.locks());
    let dry = repo.dry_run("0%");
    for field in ["packs_unused", "packs_unindexed", "packs_repacked"] {
        assert_eq!(num(&dry, field), 0, "seed {seed}: {dry:#}");
    }
    repo.assert_clean(true, "after the final prune");
    for (id, frozen) in &live {
        repo.assert_restores(id, frozen, &src.root, &scratch);
    }
    let staging =
        common::files_below(&repo.dir, true).len() - common::files_below(&repo.dir, false).len();
    eprintln!(
        "{staging} staging files of killed writes remain; prune kill test took {:.2?}",
        t0.elapsed()
    );
}

// ---- 3. backup and prune exclude each other ------------------------------------------

#[test]
fn prune_is_refused_while_a_backup_runs_and_waits_for_it_with_retry_lock() {
    let (tmp, repo) = setup();
    // Garbage for the prune to delete: a forgotten snapshot.
    let old = tmp.path().join("old");
    generate_tree(&old, 31, &TreeSpec::default());
    let old_id = repo.backup(&old);
    forget(&repo.dir, &old_id);
    let garbage = repo.packs();

    let big = tmp.path().join("big");
    big_tree(&big, 32);
    let mut backup = stopped_backup(&repo, &big, &[]);
    let backup_lock = repo.locks();

    let r = repo.run(&["prune"]);
    r.expect_code(13);
    let err = r.stderr();
    for needle in [
        "repository is locked".to_owned(),
        "`backup`".to_owned(),
        format!("host {}", host_name()),
        format!("pid {}", backup.pid()),
    ] {
        assert!(
            err.contains(&needle),
            "prune's refusal lacks {needle:?}: {err}"
        );
    }
    assert!(
        garbage.keys().all(|k| repo.packs().contains_key(k)),
        "a refused prune deleted packs"
    );

    // With --retry-lock it waits: it keeps trying (each attempt writes and removes a lock
    // object of its own) without getting the lock while the backup holds its own.
    let mut cmd = repo.cli.cmd(&["--retry-lock", "5m", "--json"]);
    cmd.args(["prune", "--max-unused", "0%"]);
    let mut pruner = Bg::spawn(cmd);
    let mut attempts = BTreeSet::new();
    pruner.wait_until("two lock attempts by the waiting prune", |_| {
        for l in common::files_below(&repo.dir.join("locks"), true).into_keys() {
            let name = l.split('#').next().expect("name").to_owned();
            if !backup_lock.contains(&name) {
                attempts.insert(name);
            }
        }
        attempts.len() >= 2
    });
    assert!(
        !pruner.holds_lock(),
        "prune took the lock of a running backup"
    );
    assert!(
        garbage.keys().all(|k| repo.packs().contains_key(k)),
        "the waiting prune deleted packs"
    );

    backup.signal(Signal::SIGCONT);
    let b = backup.finish();
    b.expect_code(0);
    let id = b.json()["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_owned();
    let p = pruner.finish();
    p.expect_code(0);
    let report = p.json();
    // It ran after the backup: it saw the new snapshot and deleted the old garbage.
    assert_eq!(num(&report, "snapshots"), 1, "{report:#}");
    assert!(num(&report, "packs_unused") >= 1, "{report:#}");
    assert!(
        garbage.keys().all(|k| !repo.packs().contains_key(k)),
        "the forgotten snapshot's packs survived the prune"
    );
    assert!(repo.locks().is_empty(), "locks left: {:?}", repo.locks());
    repo.assert_clean(true, "after backup and waiting prune");
    repo.assert_restores(&id, &big, &big, &tmp.path().join("scratch"));
}

#[test]
fn backup_is_refused_while_prune_holds_the_exclusive_lock() {
    let (tmp, repo) = setup();
    let mix = tmp.path().join("mix");
    let (second, _, _) = mixed_garbage(&repo, &mix, 41);
    let frozen = tmp.path().join("frozen");
    common::freeze(&mix, &frozen);

    let mut cmd = repo.cli.cmd(&["--json"]);
    cmd.args(["prune", "--max-unused", "0%"]);
    let mut pruner = Bg::spawn(cmd);
    pruner.wait_until("prune holds its lock", Bg::holds_lock);
    pruner.signal(Signal::SIGSTOP);
    assert_eq!(repo.locks().len(), 1, "the stopped prune's lock object");

    let other = tmp.path().join("other");
    generate_tree(&other, 42, &TreeSpec::default());
    let r = repo.run(&["backup", other.to_str().expect("utf-8")]);
    r.expect_code(13);
    let err = r.stderr();
    for needle in [
        "exclusive lock by `prune`".to_owned(),
        format!("host {}", host_name()),
        format!("pid {}", pruner.pid()),
    ] {
        assert!(
            err.contains(&needle),
            "backup's refusal lacks {needle:?}: {err}"
        );
    }
    assert_eq!(
        repo.snapshot_ids(),
        BTreeSet::from([second.clone()]),
        "a refused backup wrote a snapshot"
    );

    pruner.signal(Signal::SIGCONT);
    let p = pruner.finish();
    p.expect_code(0);
    let report = p.json();
    assert!(num(&report, "packs_repacked") >= 1, "{report:#}");
    let third = repo.backup(&other);
    assert!(repo.locks().is_empty(), "locks left: {:?}", repo.locks());
    repo.assert_clean(true, "after prune and backup");
    let scratch = tmp.path().join("scratch");
    repo.assert_restores(&second, &frozen, &mix, &scratch);
    repo.assert_restores(&third, &other, &other, &scratch);
}

// ---- 4. stale and live locks ---------------------------------------------------------

/// The entries of `unlock --json` (or `unlock --dry-run --json`) and how many it removed.
fn unlock(repo: &LocalRepo, extra: &[&str]) -> (Vec<Value>, u64) {
    let mut a = vec!["unlock"];
    a.extend_from_slice(extra);
    let v = repo.json(&a);
    (
        v["locks"].as_array().expect("locks array").clone(),
        num(&v, "removed"),
    )
}

#[test]
fn a_dead_holders_lock_is_stale_and_a_live_holders_is_not() {
    let (tmp, repo) = setup();
    let big = tmp.path().join("big");
    big_tree(&big, 51);

    // Dead holder: a backup killed while it holds its lock leaves the lock object behind.
    let mut b = Bg::spawn({
        let mut c = repo.cli.cmd(&["backup"]);
        c.arg(&big);
        c
    });
    b.wait_until("the backup holds its lock", Bg::holds_lock);
    let pid = b.pid();
    b.signal(Signal::SIGKILL);
    assert_eq!(b.finish().killed_by(), Some(Signal::SIGKILL as i32));
    let left = repo.locks();
    assert_eq!(
        left.len(),
        1,
        "a killed backup leaves its lock object: {left:?}"
    );
    let name = left.iter().next().expect("one lock").clone();

    let (locks, removed) = unlock(&repo, &["--dry-run"]);
    assert_eq!((locks.len(), removed), (1, 0), "{locks:#?}");
    let l = &locks[0];
    assert_eq!(l["object"], format!("locks/{name}"), "{l:#}");
    assert_eq!(l["holder"]["operation"], "backup", "{l:#}");
    assert_eq!(l["holder"]["pid"], pid, "{l:#}");
    assert_eq!(l["holder"]["host"], host_name(), "{l:#}");
    let stale = l["stale"].as_str().unwrap_or_default();
    assert!(
        stale.contains("gone"),
        "a dead local holder is stale: {l:#}"
    );
    assert_eq!(l["removed"], false, "{l:#}");
    assert_eq!(repo.locks(), left, "unlock --dry-run removed a lock");

    // The next prune is not blocked: it removes the dead lock (and the killed backup's packs).
    let r = repo.run(&["--json", "prune"]);
    r.expect_code(0);
    assert!(
        r.stderr().contains("removing stale"),
        "prune should say it removed a stale lock: {}",
        r.stderr()
    );
    assert!(repo.locks().is_empty(), "locks left: {:?}", repo.locks());
    repo.assert_clean(true, "after taking over a dead backup's lock");

    // Live holder: a stopped backup's lock is live; plain `unlock` keeps it, --all removes it.
    let mut b = stopped_backup(&repo, &big, &[]);
    let (locks, _) = unlock(&repo, &["--dry-run"]);
    assert_eq!(locks.len(), 1, "{locks:#?}");
    assert_eq!(locks[0]["holder"]["pid"], b.pid(), "{locks:#?}");
    assert!(
        locks[0]["stale"].is_null(),
        "a live holder is not stale: {locks:#?}"
    );
    let held = repo.locks();
    let (locks, removed) = unlock(&repo, &[]);
    assert_eq!(removed, 0, "unlock removed a live lock: {locks:#?}");
    assert_eq!(locks[0]["removed"], false, "{locks:#?}");
    assert_eq!(repo.locks(), held, "unlock removed a live lock");
    let (locks, removed) = unlock(&repo, &["--all"]);
    assert_eq!(removed, 1, "{locks:#?}");
    assert_eq!(locks[0]["removed"], true, "{locks:#?}");
    assert!(
        repo.locks().is_empty(),
        "unlock --all left {:?}",
        repo.locks()
    );
    b.signal(Signal::SIGKILL);
    b.finish();
    repo.assert_consistent("after unlock --all and a killed backup");
}

// ---- 5. self-fencing -----------------------------------------------------------------

#[test]
fn a_paused_backup_whose_lease_ran_out_writes_nothing() {
    let (tmp, repo) = setup();
    let big = tmp.path().join("big");
    big_tree(&big, 61);
    let before = repo.snapshot_ids();
    let mut b = stopped_backup(&repo, &big, &["--lock-expiry", "3s"]);
    let paused = Instant::now();
    // The lease is judged on the boot clock, which runs on while the process is stopped: this
    // wait is the point of the test, not a synchronisation.
    std::thread::sleep(Duration::from_millis(3500));
    // Another host would now see the lock expired and break it.
    let (locks, removed) = unlock(&repo, &["--all"]);
    assert_eq!(removed, 1, "{locks:#?}");
    b.signal(Signal::SIGCONT);
    let d = b.finish();
    assert!(
        d.code().is_some_and(|c| c != 0),
        "the backup paused for {:.1?} went on after losing its lease: {:?}\n{}",
        paused.elapsed(),
        d.status,
        d.stderr
    );
    assert!(
        d.stderr.contains("lost the repository lock"),
        "stderr should say the lock was lost: {}",
        d.stderr
    );
    assert_eq!(
        repo.snapshot_ids(),
        before,
        "a fenced backup wrote a snapshot"
    );
    repo.assert_consistent("after a fenced backup");
}

/// Stops a prune in its repack phase (it has marked, so the forgotten file is garbage to it),
/// waits `pause`, removes its lock as another host that judged it expired would, backs the
/// garbage file up again (that backup dedups it against the index and stores nothing new),
/// and resumes the prune. The prune must stop before deleting anything, and the new snapshot
/// must stay whole.
fn resume_a_prune_after_its_lock_was_broken(lock_expiry: &str, pause: Duration) {
    let (tmp, repo) = setup();
    let src = tmp.path().join("mix");
    let (_, garbage_file, garbage) = mixed_garbage(&repo, &src, 71);

    let packs0 = common::files_below(&repo.dir.join("data"), true);
    let mut cmd = repo.cli.cmd(&["--json", "--lock-expiry", lock_expiry]);
    cmd.args(["prune", "--max-unused", "0%"]);
    let mut pruner = Bg::spawn(cmd);
    let data = repo.dir.join("data");
    pruner.wait_until("prune writes its first new pack", |_| {
        common::files_below(&data, true)
            .keys()
            .any(|k| !packs0.contains_key(k))
    });
    pruner.signal(Signal::SIGSTOP);
    // For the lease to run out, the wait is the point, not a synchronisation.
    std::thread::sleep(pause);
    let (locks, removed) = unlock(&repo, &["--all"]);
    assert_eq!(removed, 1, "{locks:#?}");
    fs::write(src.join(&garbage_file), &garbage).expect("put the garbage file back");
    let third = repo.backup(&src);
    let frozen = tmp.path().join("frozen");
    common::freeze(&src, &frozen);

    pruner.signal(Signal::SIGCONT);
    let p = pruner.finish();
    let check = repo.run(&["--json", "check"]);
    assert_eq!(
        check.code(),
        Some(0),
        "the resumed prune ({:?}) damaged the repository:\n{}\n--- prune stderr\n{}",
        p.status,
        check.stdout(),
        p.stderr
    );
    assert!(
        p.code().is_some_and(|c| c != 0) && p.stderr.contains("lost the repository lock"),
        "the resumed prune went on without its lock: {:?}\n{}",
        p.status,
        p.stderr
    );
    let now = repo.packs();
    let deleted: Vec<_> = packs0
        .keys()
        .filter(|k| !k.contains('#') && !now.contains_key(*k))
        .collect();
    assert!(deleted.is_empty(), "the fenced prune deleted {deleted:?}");
    repo.assert_restores(&third, &frozen, &src, &tmp.path().join("scratch"));
}

#[test]
fn a_paused_prune_whose_lease_ran_out_deletes_nothing() {
    resume_a_prune_after_its_lock_was_broken("3s", Duration::from_millis(3500));
}

/// A stopped holder whose (unexpired) lock is removed must notice before its next write too:
/// `lock.rs` promises every write "checks ... that nobody removed its lock".
#[test]
fn a_resumed_prune_whose_lock_was_removed_deletes_nothing() {
    resume_a_prune_after_its_lock_was_broken("15m", Duration::ZERO);
}

/// The same promise for a backup: stopped, its lock removed, resumed → no snapshot.
#[test]
fn a_resumed_backup_whose_lock_was_removed_writes_no_snapshot() {
    let (tmp, repo) = setup();
    let big = tmp.path().join("big");
    big_tree(&big, 81);
    let before = repo.snapshot_ids();
    let mut b = stopped_backup(&repo, &big, &[]);
    let (_, removed) = unlock(&repo, &["--all"]);
    assert_eq!(removed, 1);
    b.signal(Signal::SIGCONT);
    let d = b.finish();
    assert_eq!(
        repo.snapshot_ids(),
        before,
        "the resumed backup ({:?}) wrote a snapshot without its lock; stderr: {}",
        d.status,
        d.stderr
    );
    assert!(
        d.stderr.contains("lost the repository lock"),
        "{:?}: {}",
        d.status,
        d.stderr
    );
}

// ---- 6. refusals ---------------------------------------------------------------------

/// A repository where prune has something to delete, and packs to damage it with.
struct Refusal {
    /// Live snapshots.
    live: Vec<String>,
    /// A pack holding only data blobs of a live snapshot (`data/xx/<id>`).
    data_pack: String,
    /// A pack holding only tree blobs of a live snapshot.
    tree_pack: String,
}

/// Four snapshots of a changing tree, the first forgotten.
fn refusal_fixture(repo: &LocalRepo, tmp: &Path, seed: u64) -> Refusal {
    let mut src = Source::new(
        tmp.join("src"),
        seed,
        TreeSpec {
            files: 40,
            max_file_size: 64 * 1024,
            dirs: 4,
            max_depth: 2,
            duplicates: 2,
            large_files: 1,
            large_file_size: 1 << 20,
        },
    );
    // A backup, and the packs it added.
    let backup = |src: &Path| {
        let before = repo.packs();
        let id = repo.backup(src);
        let added: BTreeMap<String, u64> = repo
            .packs()
            .into_iter()
            .filter(|(k, _)| !before.contains_key(k))
            .collect();
        (id, added)
    };
    let first = repo.backup(&src.root);
    src.mutate();
    let second = repo.backup(&src.root);
    // The only new data is one 1 MiB file: the largest new pack holds (some of) its chunks,
    // data and trees never share a pack, and this backup's trees are a few KiB.
    common::write(
        &src.root.join("new-data.bin"),
        &common::random_bytes(seed, 1 << 20),
    );
    let (third, added) = backup(&src.root);
    let (data_pack, size) = added
        .iter()
        .max_by_key(|(_, s)| **s)
        .expect("the third backup added packs");
    assert!(*size > 256 << 10, "{added:?}");
    // The only change is a new empty directory: one new pack, of trees only.
    fs::create_dir(src.root.join("new-empty-dir")).expect("mkdir");
    let (fourth, added) = backup(&src.root);
    assert_eq!(
        added.len(),
        1,
        "a tree-only backup adds one pack: {added:?}"
    );
    let tree_pack = added.into_keys().next().expect("one pack");
    forget(&repo.dir, &first);
    let dry = repo.dry_run("0%");
    assert!(
        num(&dry, "bytes_deleted") > 0,
        "the fixture should leave prune something to delete: {dry:#}"
    );
    Refusal {
        live: vec![second, third, fourth],
        data_pack: data_pack.clone(),
        tree_pack,
    }
}

/// Runs a prune that must be refused (exit 4, "prune refused", naming `what`) and must not
/// change `data/`, `index/` or `locks/`; returns its stderr.
#[track_caller]
fn assert_refused(repo: &LocalRepo, what: &str) -> String {
    let (packs, index) = (repo.packs(), repo.index_files());
    let r = repo.run(&["prune", "--max-unused", "0%"]);
    assert_eq!(repo.packs(), packs, "a refused prune changed data/");
    assert_eq!(repo.index_files(), index, "a refused prune changed index/");
    assert!(repo.locks().is_empty(), "locks left: {:?}", repo.locks());
    r.expect_code(4);
    let err = r.stderr();
    assert!(
        err.contains("prune refused") && err.contains(what),
        "the refusal should name {what}: {err}"
    );
    err
}

#[test]
fn prune_refuses_a_damaged_snapshot_or_a_missing_data_pack_and_deletes_nothing() {
    let (tmp, repo) = setup();
    let f = refusal_fixture(&repo, tmp.path(), 91);

    // A damaged snapshot: its data cannot be marked, so nothing may be deleted.
    let snap = repo.dir.join("snapshots").join(&f.live[0]);
    let offset = flip_middle_byte(&snap).expect("flip a snapshot byte");
    assert_refused(&repo, &f.live[0][..8]);
    flip_byte(&snap, offset).expect("flip it back");
    assert_eq!(repo.snapshot_ids().len(), 3);

    // A missing pack that holds live data: deleting anything could lose more.
    fs::remove_file(repo.dir.join("data").join(&f.data_pack)).expect("delete a live pack");
    let pack_id = f.data_pack.rsplit('/').next().expect("pack id");
    assert_refused(&repo, pack_id);
}

#[test]
fn prune_refuses_a_missing_tree_pack() {
    let (tmp, repo) = setup();
    let f = refusal_fixture(&repo, tmp.path(), 93);
    fs::remove_file(repo.dir.join("data").join(&f.tree_pack)).expect("delete a tree pack");
    let pack_id = f.tree_pack.rsplit('/').next().expect("pack id");
    assert_refused(&repo, pack_id);
}

/// Every refusal should tell the user that nothing was deleted (`Error::PruneRefused`'s doc:
/// "it stopped before deleting anything"); only some of the messages do.
#[test]
fn every_prune_refusal_says_nothing_was_deleted() {
    let (tmp, repo) = setup();
    let f = refusal_fixture(&repo, tmp.path(), 92);
    let snap = repo.dir.join("snapshots").join(&f.live[0]);
    let offset = flip_middle_byte(&snap).expect("flip a snapshot byte");
    let damaged = assert_refused(&repo, &f.live[0][..8]);
    flip_byte(&snap, offset).expect("flip it back");
    fs::remove_file(repo.dir.join("data").join(&f.data_pack)).expect("delete a live pack");
    let missing = assert_refused(&repo, f.data_pack.rsplit('/').next().expect("id"));
    assert!(
        damaged.contains("nothing was deleted") && missing.contains("nothing was deleted"),
        "damaged snapshot: {damaged}\nmissing pack: {missing}"
    );
}

/// A holder that outlives several expiries keeps its lock by refreshing it: a backup whose
/// input takes 3 lock expiries to produce still writes its snapshot.
#[test]
fn a_long_running_holder_refreshes_its_lock() {
    let (_tmp, repo) = setup();
    let before = repo.snapshot_ids().len();
    let r = common::Repo::at(&repo.dir).run(&[
        "--lock-expiry",
        "2s",
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "slow.txt",
        "--",
        "sh",
        "-c",
        "sleep 6; echo done",
    ]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert!(!r.stderr().contains("panicked"), "stderr: {}", r.stderr());
    assert_eq!(repo.snapshot_ids().len(), before + 1);
}
