//! Continuous verification end to end: `check --read-data-subset N%` reads the least recently
//! verified packs first and records what it verified in `verified/` objects, so repeated
//! subset checks cover the whole repository; every check reports what was never read back.
//!
//! Recorded times have one-second resolution, so where a test needs two runs to record
//! different times it waits for the wall clock to pass the second the earlier run ended in
//! (an event, polled; no fixed sleeps).

use lifeboat_testkit::repo_cli as common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{num, Repo};
use jiff::Timestamp;
use lifeboat_testkit::flip_middle_byte;
use serde_json::Value;

/// Files below `dir` (recursively), `relative name → size`.
fn files_below(dir: &Path) -> BTreeMap<String, u64> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, u64>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let md = fs::symlink_metadata(&p).expect("lstat");
            if md.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("below root");
                out.insert(rel.to_string_lossy().into_owned(), md.len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A local repository and its directory.
struct Local {
    repo: Repo,
    dir: PathBuf,
}

impl Local {
    /// `data/xx/<id>` → size.
    fn packs(&self) -> BTreeMap<String, u64> {
        files_below(&self.dir.join("data"))
            .into_iter()
            .map(|(k, v)| (format!("data/{k}"), v))
            .collect()
    }

    /// Verification records: name → size.
    fn records(&self) -> BTreeMap<String, u64> {
        files_below(&self.dir.join("verified"))
    }

    /// `[--no-lock] check --json EXTRA…`, asserting exit `code`; the report.
    #[track_caller]
    fn check(&self, no_lock: bool, extra: &[&str], code: i32) -> Value {
        let mut a = vec!["--json"];
        if no_lock {
            a.push("--no-lock");
        }
        a.push("check");
        a.extend_from_slice(extra);
        let r = self.repo.run(&a);
        r.expect_code(code);
        r.json()
    }

    /// A subset check that must find nothing; also returns the wall-clock seconds it ran in.
    #[track_caller]
    fn subset(&self, no_lock: bool, pct: &str) -> (Value, (i64, i64)) {
        let start = Timestamp::now().as_second();
        let c = self.check(no_lock, &["--read-data-subset", pct], 0);
        let end = Timestamp::now().as_second();
        assert_eq!(c["findings"], serde_json::json!([]), "{c:#}");
        (c, (start, end))
    }
}

/// A new repository with at least `min` packs, a multiple of `multiple` of them: each backup
/// of a new incompressible file adds a data pack and a tree pack.
fn repo_with_packs(tmp: &Path, min: usize, multiple: usize) -> Local {
    let dir = tmp.join("repo");
    let repo = Repo::at(&dir);
    repo.init();
    let local = Local { repo, dir };
    let src = tmp.join("src");
    let mut i = 0;
    while local.packs().len() < min || !local.packs().len().is_multiple_of(multiple) {
        i += 1;
        common::write(
            &src.join(format!("f{i:02}")),
            &common::random_bytes(i, 100_000 + 37_000 * i as usize),
        );
        local.repo.backup(&[&src]);
        assert!(i < 50, "no pack count ≥ {min} divisible by {multiple}");
    }
    local
}

/// `oldest_verified` as a timestamp (seconds), `None` for null.
fn oldest(c: &Value) -> Option<i64> {
    match &c["oldest_verified"] {
        Value::Null => None,
        Value::String(s) => Some(
            s.parse::<Timestamp>()
                .unwrap_or_else(|e| panic!("bad oldest_verified {s:?}: {e}"))
                .as_second(),
        ),
        v => panic!("oldest_verified is {v}"),
    }
}

/// Waits until the wall clock is past second `t`, so the next recorded time is later.
fn wait_past_second(t: i64) {
    while Timestamp::now().as_second() <= t {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Error findings of a report, as `(object, message)`.
fn errors(c: &Value) -> Vec<(String, String)> {
    c["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| {
            (
                f["object"].as_str().expect("object").to_owned(),
                f["message"].as_str().expect("message").to_owned(),
            )
        })
        .collect()
}

/// `check --json` (structure only) agrees with `c` on what was ever verified.
#[track_caller]
fn assert_recorded(l: &Local, c: &Value) {
    let s = l.check(false, &[], 0);
    for k in [
        "packs_never_verified",
        "bytes_never_verified",
        "oldest_verified",
    ] {
        assert_eq!(
            s[k], c[k],
            "{k}: recorded state differs from the run's report"
        );
    }
    assert_eq!(num(&s, "packs_read"), 0);
}

#[test]
fn subset_checks_cover_every_pack_once_then_reread_the_oldest() {
    let tmp = common::tempdir();
    let l = repo_with_packs(tmp.path(), 8, 4);
    let packs = l.packs();
    let n = packs.len();
    let total: u64 = packs.values().sum();
    let per = n.div_ceil(4);

    // Nothing verified yet.
    let c = l.check(false, &[], 0);
    assert_eq!(num(&c, "packs") as usize, n, "{c:#}");
    assert_eq!(num(&c, "packs_never_verified") as usize, n, "{c:#}");
    assert_eq!(num(&c, "bytes_never_verified"), total, "{c:#}");
    assert_eq!(oldest(&c), None, "{c:#}");
    assert!(l.records().is_empty());
    let human = l.repo.ok(&["check"]).stdout();
    assert!(
        human.contains(&format!("data verification: {n} packs"))
            && human.contains("never read back; no pack verified yet"),
        "{human}"
    );

    // Four quarter checks: each reads only packs never read before, so together they read
    // every pack exactly once.
    let mut never_bytes = total;
    let mut runs: Vec<(Value, (i64, i64))> = Vec::new();
    for k in 1..=4 {
        if let Some((_, (_, end))) = runs.last() {
            wait_past_second(*end);
        }
        let (c, (start, end)) = l.subset(false, "25%");
        assert_eq!(num(&c, "packs_read") as usize, per, "run {k}: {c:#}");
        assert!(num(&c, "blobs_verified") >= per as u64, "run {k}: {c:#}");
        assert_eq!(
            num(&c, "packs_never_verified") as usize,
            n - k * per,
            "run {k} re-read a pack already verified: {c:#}"
        );
        let read = num(&c, "bytes_read");
        assert_eq!(
            num(&c, "bytes_never_verified"),
            never_bytes - read,
            "run {k}: the bytes read are not all bytes never verified before: {c:#}"
        );
        never_bytes -= read;
        assert_eq!(l.records().len(), k, "run {k}: one record per run");
        let t1 = match runs.first() {
            None => oldest(&c).expect("something is verified now"),
            Some((first, _)) => oldest(first).expect("oldest of run 1"),
        };
        if k == 1 {
            assert!(
                (start..=end).contains(&t1),
                "run 1 at {t1} not in {start}..={end}"
            );
        }
        assert_eq!(
            oldest(&c),
            Some(t1),
            "run {k}: run 1's packs are the oldest"
        );
        assert_recorded(&l, &c);
        runs.push((c, (start, end)));
    }
    assert_eq!(never_bytes, 0);
    let read_total: u64 = runs.iter().map(|(c, _)| num(c, "bytes_read")).sum();
    assert_eq!(read_total, total, "four quarters read the repository once");

    // A fifth run reads the oldest: exactly run 1's packs (same count, same bytes), after
    // which the oldest verification is run 2's.
    wait_past_second(runs[3].1 .1);
    let (c5, _) = l.subset(false, "25%");
    assert_eq!(num(&c5, "packs_read") as usize, per, "{c5:#}");
    assert_eq!(
        num(&c5, "bytes_read"),
        num(&runs[0].0, "bytes_read"),
        "the fifth run did not re-read run 1's packs: {c5:#}"
    );
    assert_eq!(num(&c5, "packs_never_verified"), 0, "{c5:#}");
    let t2 = oldest(&c5).expect("oldest");
    let (s2, e2) = runs[1].1;
    assert!(
        (s2..=e2).contains(&t2),
        "after re-reading run 1's packs the oldest should be run 2's ({s2}..={e2}), is {t2}"
    );
    assert_eq!(l.records().len(), 5);
    assert_recorded(&l, &c5);

    // --no-lock: reads, records nothing.
    let records = l.records();
    let (c, _) = l.subset(true, "25%");
    assert_eq!(num(&c, "packs_read") as usize, per, "{c:#}");
    assert_eq!(l.records(), records, "a --no-lock check wrote a record");
    let s = l.check(false, &[], 0);
    assert_eq!(
        oldest(&s),
        Some(t2),
        "a --no-lock check's reads were recorded"
    );

    // A damaged pack is read, reported, and not recorded: it stays the oldest.
    let (victim, _) = packs.iter().max_by_key(|(_, s)| **s).expect("a pack");
    flip_middle_byte(&l.dir.join(victim)).expect("flip");
    let before = Timestamp::now().as_second();
    wait_past_second(before);
    let c = l.check(false, &["--read-data"], 4);
    assert_eq!(num(&c, "packs_read") as usize, n, "{c:#}");
    let errs = errors(&c);
    assert!(!errs.is_empty(), "{c:#}");
    for (object, _) in &errs {
        assert_eq!(object, victim, "only the damaged pack is named: {c:#}");
    }
    let s = l.check(false, &[], 0);
    assert_eq!(num(&s, "packs_never_verified"), 0, "{s:#}");
    let victim_time = oldest(&s).expect("oldest");
    assert!(
        victim_time <= before,
        "the damaged pack was recorded as verified by the failing run: {s:#}"
    );
    // The smallest subset reads the oldest pack: the damaged one, every time.
    for _ in 0..2 {
        let c = l.check(false, &["--read-data-subset", "1%"], 4);
        assert_eq!(num(&c, "packs_read"), 1, "{c:#}");
        let errs = errors(&c);
        assert!(
            !errs.is_empty() && errs.iter().all(|(o, _)| o == victim),
            "the oldest-verified pack should be the damaged {victim}: {c:#}"
        );
        assert_eq!(oldest(&c), Some(victim_time), "{c:#}");
    }
}

#[test]
fn a_damaged_pack_stays_never_verified() {
    let tmp = common::tempdir();
    let l = repo_with_packs(tmp.path(), 4, 2);
    let packs = l.packs();
    let n = packs.len();
    let (victim, &size) = packs.iter().max_by_key(|(_, s)| **s).expect("a pack");
    flip_middle_byte(&l.dir.join(victim)).expect("flip");

    let c = l.check(false, &["--read-data"], 4);
    assert_eq!(num(&c, "packs_read") as usize, n, "{c:#}");
    let errs = errors(&c);
    assert!(
        errs.iter()
            .any(|(o, m)| o == victim && m.contains("does not match its name")),
        "{c:#}"
    );
    assert!(errs.iter().all(|(o, _)| o == victim), "{c:#}");
    // Everything else is verified now; the damaged pack never was.
    let s = l.check(false, &[], 0);
    assert_eq!(num(&s, "packs_never_verified"), 1, "{s:#}");
    assert_eq!(num(&s, "bytes_never_verified"), size, "{s:#}");
    assert!(oldest(&s).is_some(), "{s:#}");
    assert_eq!(l.records().len(), 1);
    // So the next subset check picks it first, and still does not record it.
    let c = l.check(false, &["--read-data-subset", "1%"], 4);
    assert_eq!(num(&c, "packs_read"), 1, "{c:#}");
    assert!(errors(&c).iter().all(|(o, _)| o == victim), "{c:#}");
    assert!(!errors(&c).is_empty(), "{c:#}");
    assert_eq!(num(&c, "packs_never_verified"), 1, "{c:#}");
    assert_eq!(
        l.records().len(),
        1,
        "a run that verified nothing wrote a record"
    );
    let human = l.repo.run(&["check"]);
    human.expect_code(0);
    assert!(
        human.stdout().contains("data verification: 1 packs (")
            && human
                .stdout()
                .contains("never read back; oldest verification"),
        "{}",
        human.stdout()
    );
}

#[test]
fn many_verification_records_are_merged_without_losing_any() {
    let tmp = common::tempdir();
    let l = repo_with_packs(tmp.path(), 8, 4);
    let n = l.packs().len();
    // Record after record: the first runs cover every pack, later ones re-read the oldest.
    let mut last = Value::Null;
    while l.records().len() < 32 {
        last = l.subset(false, "10%").0;
    }
    assert_eq!(num(&last, "packs_never_verified"), 0, "{last:#}");
    let before = l.records();
    let s = l.check(false, &[], 0);
    // The next recording run merges the 32 records it read into one.
    let (c, _) = l.subset(false, "10%");
    let after = l.records();
    assert_eq!(after.len(), 1, "records not merged: {after:?}");
    assert!(
        after.keys().all(|k| !before.contains_key(k)),
        "the merged record is a new object"
    );
    assert_eq!(num(&c, "packs_never_verified"), 0, "{c:#}");
    assert!(oldest(&c) >= oldest(&s), "{c:#}");
    assert_recorded(&l, &c);
    // The merged record still knows every pack: nothing reads as never verified.
    let again = l.check(false, &[], 0);
    assert_eq!(num(&again, "packs_never_verified"), 0, "{again:#}");
    assert_eq!(num(&again, "packs") as usize, n);
}

#[test]
fn a_damaged_verification_record_costs_only_its_information() {
    let tmp = common::tempdir();
    let l = repo_with_packs(tmp.path(), 8, 4);
    let n = l.packs().len();
    let per = n.div_ceil(4);
    let (c, _) = l.subset(false, "25%");
    assert_eq!(num(&c, "packs_never_verified") as usize, n - per);
    let records = l.records();
    assert_eq!(records.len(), 1);
    let record = records.keys().next().expect("record").clone();
    flip_middle_byte(&l.dir.join("verified").join(&record)).expect("flip");

    // Not an error: the check passes with a note naming the record, and the packs it listed
    // count as never verified again.
    let s = l.check(false, &[], 0);
    assert_eq!(s["findings"], serde_json::json!([]), "{s:#}");
    let notes = s["notes"].as_array().expect("notes").clone();
    assert!(
        notes.len() == 1 && notes[0].as_str().is_some_and(|m| m.contains(&record)),
        "the damaged record is not named: {s:#}"
    );
    assert_eq!(num(&s, "packs_never_verified") as usize, n, "{s:#}");
    assert_eq!(oldest(&s), None, "{s:#}");
    let human = l.repo.run(&["check"]);
    human.expect_code(0);
    assert!(
        human.stderr().contains("warning:") && human.stderr().contains(&record),
        "{}",
        human.stderr()
    );
    // Subset checks go on recording, and the next recording check merges the damaged record
    // away: one record remains and nothing warns any more.
    let (c, _) = l.subset(false, "25%");
    assert_eq!(num(&c, "packs_never_verified") as usize, n - per, "{c:#}");
    let after = l.records();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        !after.contains_key(&record),
        "the damaged record survived: {after:?}"
    );
    let quiet = l.check(false, &[], 0);
    assert_eq!(quiet["notes"], serde_json::Value::Null, "{quiet:#}");
}
