//! Crash safety of `lifeboat backup`: a real process is SIGKILLed at random moments (and
//! interrupted with SIGINT); after every kill the repository must check clean, list only whole
//! snapshots, and accept the next backup.
//!
//! The kill moments come from a seeded RNG (override with `LIFEBOAT_KILL_SEED=<u64>`). Most are
//! uniform over the measured duration of a full backup; some wait for the first pack, the
//! first index file or the snapshot object to appear, so the short index- and snapshot-writing
//! phases are hit too. Each kill is classified by what it left behind, and the histogram is
//! printed (`cargo test --test kill -- --nocapture`). The main loop kills first backups into a
//! fresh repository (so every phase does real work); a few more kills then hit incremental
//! backups that have a parent snapshot and some changed files.

use lifeboat_testkit::repo_cli as common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lifeboat_testkit::{
    assert_trees_equal, generate_tree, restored_path, run_with_signal, Lifeboat, Signal, TreeSpec,
    TreeStats, Trigger,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");
/// Kills that must actually land (the backup died of SIGKILL).
const KILLS: usize = 50;
/// Give up if this many attempts did not produce enough kills.
const MAX_ATTEMPTS: usize = 200;
/// Kills of incremental backups after the main loop.
const INCREMENTAL_KILLS: usize = 6;
/// Start a fresh repository after this many kills, so leftovers stay bounded.
const KILLS_PER_REPO: usize = 12;

/// The tests in this file are timing-sensitive; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// ~10 MiB in ~1,600 files (most small, one of 3 MiB that spans several chunks).
///
/// Small on purpose: in debug builds the AEAD code is instantiated in the unoptimized repo
/// crate, so a backup runs at only a few MiB/s; the kill count matters more than the size.
fn dataset(root: &Path) -> TreeStats {
    generate_tree(
        root,
        0x11fe_b0a7,
        &TreeSpec {
            files: 1500,
            max_file_size: 16 * 1024,
            dirs: 60,
            max_depth: 5,
            duplicates: 40,
            large_files: 1,
            large_file_size: 3 << 20,
        },
    )
}

/// Object counts of a local repository; staging files (`name#N`, left by a killed upload) are
/// counted separately.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Objects {
    packs: usize,
    indexes: usize,
    snapshots: usize,
    staging: usize,
}

fn count_dir(dir: &Path, o: &mut Objects, field: fn(&mut Objects) -> &mut usize) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            count_dir(&p, o, field);
        } else if e.file_name().to_string_lossy().contains('#') {
            o.staging += 1;
        } else {
            *field(o) += 1;
        }
    }
}

fn objects(repo: &Path) -> Objects {
    let mut o = Objects::default();
    count_dir(&repo.join("data"), &mut o, |o| &mut o.packs);
    count_dir(&repo.join("index"), &mut o, |o| &mut o.indexes);
    count_dir(&repo.join("snapshots"), &mut o, |o| &mut o.snapshots);
    o
}

/// What a killed backup had got to, judged by what it left behind.
fn phase(before: Objects, after: Objects) -> &'static str {
    if after.snapshots > before.snapshots {
        "snapshot written"
    } else if after.indexes > before.indexes {
        "index written, no snapshot"
    } else if after.staging > before.staging {
        "mid-upload (staging file left)"
    } else if after.packs > before.packs {
        "packs uploaded, no index"
    } else {
        "walking/chunking/packing (nothing stored)"
    }
}

/// `check` exits 0 with warnings only about unindexed packs; `snapshots --json` parses and
/// names exactly the snapshot objects present. Returns the snapshot ids.
#[track_caller]
fn assert_consistent(lb: &Lifeboat, context: &str) -> Vec<String> {
    let (run, report) = lb.check(&[]);
    assert_eq!(
        run.code,
        Some(0),
        "{context}: check failed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    for f in report["findings"].as_array().expect("findings array") {
        let object = f["object"].as_str().unwrap_or_default();
        let message = f["message"].as_str().unwrap_or_default();
        assert!(
            f["severity"] == "warning"
                && object.starts_with("data/")
                && message.contains("not in any index"),
            "{context}: unexpected finding {f}"
        );
    }
    let snaps = lb.run(&["snapshots", "--json"]);
    snaps.expect_code(0);
    assert!(
        !snaps.stderr.contains("warning"),
        "{context}: snapshots warns: {}",
        snaps.stderr
    );
    let ids: Vec<String> = snaps
        .json()
        .as_array()
        .expect("snapshots array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        objects(lb.repo()).snapshots,
        "{context}: every snapshot object must be listed"
    );
    ids
}

/// Restores `id` with --verify and compares it with `src`.
#[track_caller]
fn assert_restores(lb: &Lifeboat, id: &str, src: &Path, scratch: &Path) {
    let target = scratch.join(format!("restore-{id}"));
    lb.restore(id, &target, &["--verify"]).expect_code(0);
    assert_trees_equal(src, &restored_path(&target, src));
    fs::remove_dir_all(&target).expect("remove restore");
}

fn new_repo(base: &Path, n: usize) -> Lifeboat {
    let lb = Lifeboat::new(BIN, base.join(format!("repo{n:02}")));
    lb.ok(&common::INIT);
    lb
}

/// Polls until a file (or staging file) exists below `dir` (recursively).
fn appears_below(dir: PathBuf) -> Trigger {
    fn any_file(d: &Path) -> bool {
        fs::read_dir(d).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let p = e.path();
                if p.is_dir() {
                    any_file(&p)
                } else {
                    true
                }
            })
        })
    }
    Trigger::When(Box::new(move || any_file(&dir)))
}

#[test]
fn sigkill_at_random_moments_never_corrupts_the_repository() {
    let _serial = serial();
    let t0 = Instant::now();
    let seed: u64 = std::env::var("LIFEBOAT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b11_1ed5);
    eprintln!("kill test seed: {seed} (set LIFEBOAT_KILL_SEED to reproduce another run)");
    let mut rng = StdRng::seed_from_u64(seed);

    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    let stats = dataset(&src);
    eprintln!(
        "dataset: {} files, {} dirs, {} symlinks, {:.1} MiB (generated in {:.2?})",
        stats.files,
        stats.dirs,
        stats.symlinks,
        stats.bytes as f64 / (1 << 20) as f64,
        t0.elapsed()
    );

    // Typical duration of a full backup (a fresh repository, so nothing dedups).
    let probe = new_repo(tmp.path(), 99);
    let o = run_with_signal(
        probe.command(&[Path::new("backup"), &src]),
        Signal::SIGKILL,
        Trigger::Never,
    )
    .expect("spawn backup");
    assert_eq!(o.code(), Some(0), "probe backup: {}", o.stderr_text());
    let full = o.elapsed;
    eprintln!("full backup takes {full:.2?}");
    fs::remove_dir_all(probe.repo()).expect("remove probe repo");

    let mut repo_no = 0;
    let mut lb = new_repo(tmp.path(), repo_no);
    let mut kills_in_repo = 0;
    let mut kills = 0;
    let mut completed = 0;
    let mut phases: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut attempts = 0;
    let mut known = Vec::<String>::new();
    let mut restored_finished = false;
    while kills < KILLS {
        attempts += 1;
        assert!(
            attempts <= MAX_ATTEMPTS,
            "only {kills} of {attempts} attempts killed a running backup"
        );
        let (trigger, what) = match rng.gen_range(0..10) {
            0 => (
                appears_below(lb.repo().join("data")),
                "first pack".to_string(),
            ),
            1 => (appears_below(lb.repo().join("index")), "first index".into()),
            2 => (
                appears_below(lb.repo().join("snapshots")),
                "snapshot".into(),
            ),
            _ => {
                // Uniform over the whole backup.
                let d = full.mul_f64(rng.gen_range(0.0..0.8));
                (Trigger::After(d), format!("after {d:.2?}"))
            }
        };
        let before = objects(lb.repo());
        let o = run_with_signal(
            lb.command(&[Path::new("backup"), &src]),
            Signal::SIGKILL,
            trigger,
        )
        .expect("spawn backup");
        let after = objects(lb.repo());
        let context = format!("attempt {attempts} (kill {what})");
        if o.killed_by() == Some(Signal::SIGKILL as i32) {
            kills += 1;
            kills_in_repo += 1;
            *phases.entry(phase(before, after)).or_default() += 1;
        } else {
            assert_eq!(
                o.code(),
                Some(0),
                "{context}: backup failed on its own: {}",
                o.stderr_text()
            );
            completed += 1;
        }

        let ids = assert_consistent(&lb, &context);
        // A snapshot that appeared must be whole: `check` walked its trees; restoring it too
        // (and comparing with the source) costs a full restore, so do that for every snapshot
        // a killed backup left and for the first one a finished backup wrote.
        for id in ids.iter().filter(|id| !known.contains(id)) {
            if o.signalled || !restored_finished {
                assert_restores(&lb, id, &src, tmp.path());
                restored_finished |= !o.signalled;
            }
        }
        known = ids;

        // Keep kills landing in a first (non-incremental) backup, and leftovers bounded.
        if (!known.is_empty() || kills_in_repo >= KILLS_PER_REPO) && kills < KILLS {
            fs::remove_dir_all(lb.repo()).expect("remove repo");
            repo_no += 1;
            lb = new_repo(tmp.path(), repo_no);
            known.clear();
            kills_in_repo = 0;
        }
    }
    eprintln!(
        "{kills} kills in {attempts} attempts ({completed} backups finished first), {} repositories",
        repo_no + 1
    );
    for (p, n) in &phases {
        eprintln!("  {n:3} × {p}");
    }

    // The repository left by the last kills still takes a normal backup that restores exactly.
    let id = lb.backup(&[&src]);
    assert_consistent(&lb, "final backup");
    assert_restores(&lb, &id, &src, tmp.path());

    // Incremental backups (with a parent, some files changed) survive kills too.
    let mut incremental_kills = 0;
    let mut incremental_attempts = 0;
    mutate(&src, &stats, &mut rng, 0);
    while incremental_kills < INCREMENTAL_KILLS {
        incremental_attempts += 1;
        assert!(
            incremental_attempts <= 12 * INCREMENTAL_KILLS,
            "incremental backups keep finishing before the kill"
        );
        let d = full.mul_f64(rng.gen_range(0.0..0.3));
        let o = run_with_signal(
            lb.command(&[Path::new("backup"), &src]),
            Signal::SIGKILL,
            Trigger::After(d),
        )
        .expect("spawn backup");
        let context = format!("incremental attempt {incremental_attempts} (kill after {d:.2?})");
        if o.killed_by() == Some(Signal::SIGKILL as i32) {
            incremental_kills += 1;
        } else {
            assert_eq!(o.code(), Some(0), "{context}: {}", o.stderr_text());
            mutate(&src, &stats, &mut rng, incremental_attempts);
        }
        assert_consistent(&lb, &context);
    }
    let id = lb.backup(&[&src]);
    assert_consistent(&lb, "final incremental backup");
    assert_restores(&lb, &id, &src, tmp.path());
    eprintln!(
        "{incremental_kills} kills of incremental backups in {incremental_attempts} attempts"
    );
    eprintln!("kill test took {:.2?}", t0.elapsed());
}

/// Rewrites every 8th file (new size and content) and adds a directory of new files, so the
/// next backup has a parent but also new data to store.
fn mutate(src: &Path, stats: &TreeStats, rng: &mut StdRng, round: usize) {
    for rel in stats.file_paths.iter().skip(round % 8).step_by(8) {
        let p = src.join(rel);
        let mut data = vec![0u8; rng.gen_range(0..40_000)];
        rng.fill(&mut data[..]);
        let _ = fs::remove_file(&p);
        fs::write(&p, data).expect("rewrite file");
    }
    let dir = src.join(format!("added-{round}"));
    fs::create_dir(&dir).expect("mkdir");
    for i in 0..20 {
        let mut data = vec![0u8; rng.gen_range(0..40_000)];
        rng.fill(&mut data[..]);
        fs::write(dir.join(format!("new{i}")), data).expect("write file");
    }
}

#[test]
fn ctrl_c_stops_backup_without_a_snapshot() {
    let _serial = serial();
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    // Six 16 MiB random files make several packs, so "the k-th new pack appeared" is a
    // deterministic mid-backup moment (a time-based trigger raced the fast release-mode engine).
    generate_tree(
        &src,
        0xc7_1c,
        &TreeSpec {
            files: 300,
            max_file_size: 16 * 1024,
            dirs: 12,
            max_depth: 3,
            duplicates: 0,
            large_files: 6,
            large_file_size: 16 << 20,
        },
    );
    let lb = new_repo(tmp.path(), 0);

    for new_packs in [1usize, 3] {
        let what = format!("SIGINT after {new_packs} new pack(s)");
        let repo = lb.repo().to_path_buf();
        let base = objects(&repo).packs;
        let o = run_with_signal(
            lb.command(&[Path::new("backup"), &src]),
            Signal::SIGINT,
            Trigger::When(Box::new(move || objects(&repo).packs >= base + new_packs)),
        )
        .expect("spawn backup");
        assert!(o.signalled, "{what}: backup finished before SIGINT");
        assert_eq!(
            o.code(),
            Some(130),
            "{what}: must exit 130; stderr: {}",
            o.stderr_text()
        );
        assert!(
            o.stderr_text().contains("interrupted"),
            "{what}: stderr should say so: {}",
            o.stderr_text()
        );
        // Exit took a moment, not the rest of the backup.
        assert!(
            o.elapsed - o.signalled_after < Duration::from_secs(30),
            "{what}: took {:.2?} to stop",
            o.elapsed - o.signalled_after
        );
        let ids = assert_consistent(&lb, &what);
        assert!(ids.is_empty(), "{what}: interrupted backup wrote {ids:?}");
    }

    let id = lb.backup(&[&src]);
    assert_eq!(assert_consistent(&lb, "after interrupts"), vec![id.clone()]);
    assert_restores(&lb, &id, &src, tmp.path());
    eprintln!("ctrl-c test took {:.2?}", t0.elapsed());
}

/// Regression: Ctrl-C while the last packs are uploaded (after all files were read) used to be
/// ignored — the backup wrote its snapshot and exited 0. The uploaders and the step before
/// `save_snapshot` now check the interrupt flag.
#[test]
fn ctrl_c_during_final_upload_writes_no_snapshot() {
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    dataset(&src); // smaller than one pack: the first pack is stored after all files are read
                   // The window between the first pack appearing and the snapshot is a few fsyncs long; if the
                   // backup wins the race the attempt proves nothing, so try again in a fresh repository.
    let (lb, o) = (0..5)
        .map(|attempt| {
            let lb = new_repo(tmp.path(), attempt);
            let o = run_with_signal(
                lb.command(&[Path::new("backup"), &src]),
                Signal::SIGINT,
                appears_below(lb.repo().join("data")),
            )
            .expect("spawn backup");
            (lb, o)
        })
        .find(|(_, o)| o.signalled && o.code() != Some(0))
        .expect(
            "in 5 attempts the backup always finished (exit 0) despite SIGINT after its first pack",
        );
    let ids = assert_consistent(&lb, "late SIGINT");
    assert_eq!(
        (o.code(), ids.len()),
        (Some(130), 0),
        "SIGINT {:.2?} into the backup, during the final upload: expected exit 130 and no \
         snapshot; stderr: {}",
        o.signalled_after,
        o.stderr_text()
    );
}
