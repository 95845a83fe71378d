//! `lifeboat forget` end to end: snapshots made at chosen times with `backup --time`, policies
//! checked snapshot by snapshot (action and reasons) in a dry run, then applied and checked
//! against `snapshots --json`; explicit ids; refusals; grouping; the seed default policy on three
//! years of daily snapshots.

use lifeboat_testkit::repo_cli as common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

use common::*;
use jiff::civil::Date;
use jiff::ToSpan;
use serde_json::Value;

/// A `backup --stdin --time TIME EXTRA...` snapshot (empty content); returns its id.
fn snap_at(repo: &Repo, time: &str, extra: &[&str]) -> String {
    let mut args = vec!["--stdin", "--time", time];
    args.extend_from_slice(extra);
    let b = repo.backup(&args);
    b["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot id in {b:#}"))
        .to_owned()
}

/// `forget --json ARGS...`, asserting success.
fn forget(repo: &Repo, args: &[&str]) -> Value {
    let mut a = vec!["forget"];
    a.extend_from_slice(args);
    repo.json(&a)
}

/// Every snapshot of a forget report: id → (action, reasons).
fn verdicts(report: &Value) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for g in report["groups"].as_array().expect("groups") {
        for s in g["snapshots"].as_array().expect("snapshots") {
            let reasons = s["reasons"]
                .as_array()
                .expect("reasons")
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
            let prev = out.insert(
                s["id"].as_str().unwrap().to_owned(),
                (s["action"].as_str().unwrap().to_owned(), reasons),
            );
            assert!(prev.is_none(), "a snapshot is listed twice: {report:#}");
        }
    }
    out
}

fn ids_of(list: &[Value], field: &str) -> BTreeSet<String> {
    list.iter()
        .map(|s| s[field].as_str().unwrap().to_owned())
        .collect()
}

fn removed(report: &Value) -> BTreeSet<String> {
    report["removed"]
        .as_array()
        .expect("removed")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn policy_dry_run_shows_every_reason_then_removes_exactly_the_rest() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let times = [
        "2026-11-20T18:00:00Z", // 0: Fri, ISO week 47
        "2026-11-20T09:00:00Z", // 1
        "2026-11-19T12:00:00Z", // 2
        "2026-11-17T12:00:00Z", // 3
        "2026-11-14T12:00:00Z", // 4: Sat, week 46
        "2026-11-09T12:00:00Z", // 5: Mon, week 46
        "2026-11-01T12:00:00Z", // 6: Sun, week 44 (week 45 has no snapshot)
        "2026-10-20T12:00:00Z", // 7: tagged keepme
        "2026-10-05T12:00:00Z", // 8
        "2026-09-15T12:00:00Z", // 9
        "2026-08-01T12:00:00Z", // 10
        "2026-07-01T12:00:00Z", // 11
    ];
    // Made out of order on purpose: only the recorded time matters.
    let mut ids = vec![String::new(); times.len()];
    for i in [5, 0, 11, 3, 7, 1, 9, 2, 4, 10, 6, 8] {
        let extra: &[&str] = if i == 7 { &["--tag", "keepme"] } else { &[] };
        ids[i] = snap_at(&repo, times[i], extra);
    }
    let policy = [
        "--keep-last",
        "2",
        "--keep-daily",
        "3",
        "--keep-weekly",
        "3",
        "--keep-monthly",
        "4",
        "--keep-within",
        "2d",
        "--keep-tag",
        "keepme",
        "--timezone",
        "UTC",
    ];
    let mut args = policy.to_vec();
    args.push("--dry-run");
    let report = forget(&repo, &args);
    assert_eq!(report["dry_run"], true, "{report:#}");
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{report:#}");
    assert_eq!(groups[0]["key"]["paths"], serde_json::json!(["/stdin"]));
    // Newest first, each with its time.
    let listed: Vec<&str> = groups[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(groups[0]["snapshots"][0]["time"], times[0]);

    let keep = |r: &[&str]| ("keep".to_owned(), strs(r));
    let remove = || ("remove".to_owned(), Vec::new());
    let expected: Vec<(String, Vec<String>)> = vec![
        keep(&[
            "within 2d",
            "last 1/2",
            "daily 2026-11-20",
            "weekly 2026-W47",
            "monthly 2026-11",
        ]),
        keep(&["within 2d", "last 2/2"]),
        keep(&["within 2d", "daily 2026-11-19"]),
        keep(&["daily 2026-11-17"]),
        keep(&["weekly 2026-W46"]),
        remove(),
        keep(&["weekly 2026-W44"]),
        keep(&["tag keepme", "monthly 2026-10"]),
        remove(),
        keep(&["monthly 2026-09"]),
        keep(&["monthly 2026-08"]),
        remove(), // four months were found before it: monthly is filled
    ];
    let got = verdicts(&report);
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(&got[&ids[i]], want, "snapshot {i} ({})", times[i]);
    }
    let doomed: BTreeSet<String> = [5, 8, 11].iter().map(|&i| ids[i].clone()).collect();
    assert_eq!(removed(&report), doomed, "{report:#}");
    // A dry run removes nothing.
    assert_eq!(repo.snapshots().len(), 12);

    // Human dry run: the table and the summary.
    let mut human = vec!["forget"];
    human.extend_from_slice(&args);
    let out = repo.ok(&human).stdout();
    assert!(out.contains("snapshots for host"), "{out}");
    assert!(
        out.contains(&format!(
            "{}   2026-11-09 12:00:00 +00:00 remove",
            &ids[5][..8]
        )),
        "{out}"
    );
    assert!(
        out.contains("dry run: would keep 9 and remove 3 snapshots; nothing was removed"),
        "{out}"
    );

    // For real: human output reports each delete and the summary.
    let mut real = vec!["forget"];
    real.extend_from_slice(&policy);
    let out = repo.ok(&real).stdout();
    for &i in &[5, 8, 11] {
        assert!(
            out.contains(&format!("removed snapshot {}", &ids[i][..8])),
            "{out}"
        );
    }
    assert!(
        out.contains(
            "kept 9, removed 3 snapshots; run `lifeboat prune` (or forget --prune) to free space"
        ),
        "{out}"
    );
    let left = ids_of(&repo.snapshots(), "id");
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(left, &all - &doomed);

    // Applying the same policy again removes nothing more (durations run from the newest).
    let again = forget(&repo, &policy);
    assert_eq!(again["dry_run"], false);
    assert!(removed(&again).is_empty(), "{again:#}");
    assert_eq!(repo.snapshots().len(), 9);
    // The repository still checks clean.
    repo.ok(&["check"]);
}

#[test]
fn explicit_ids_remove_exactly_those() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let a = snap_at(&repo, "2026-01-01T00:00:00Z", &[]);
    let b = snap_at(&repo, "2026-01-02T00:00:00Z", &[]);
    let c = snap_at(&repo, "2026-01-03T00:00:00Z", &[]);

    // A dry run lists them and removes nothing.
    let r = forget(&repo, &[a.as_str(), &b[..10], "--dry-run"]);
    assert_eq!(removed(&r), BTreeSet::from([a.clone(), b.clone()]));
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["groups"], serde_json::json!([]));
    assert_eq!(repo.snapshots().len(), 3);

    // One unknown id: nothing at all is removed.
    let r = repo.run(&["forget", a.as_str(), "ffffffffffff"]);
    r.expect_code(1);
    assert!(
        r.stderr().contains("no snapshot matches \"ffffffffffff\""),
        "{}",
        r.stderr()
    );
    assert_eq!(repo.snapshots().len(), 3);

    // Full id and a prefix (given twice): exactly those two go.
    let r = forget(&repo, &[a.as_str(), &b[..10], b.as_str()]);
    assert_eq!(removed(&r), BTreeSet::from([a.clone(), b.clone()]));
    assert_eq!(r["dry_run"], false);
    assert_eq!(ids_of(&repo.snapshots(), "id"), BTreeSet::from([c.clone()]));

    // `latest` works too; the repository ends empty but valid.
    let r = repo.ok(&["forget", "latest"]).stdout();
    assert!(r.contains(&format!("removed snapshot {}", &c[..8])), "{r}");
    assert!(repo.snapshots().is_empty());
}

#[test]
fn empty_policy_and_bad_flags_are_refused() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let a = snap_at(&repo, "2026-01-01T00:00:00Z", &[]);
    for args in [
        vec!["forget"],
        vec!["forget", "--keep-last", "0"],
        vec!["forget", "--host", "x", "--dry-run"],
    ] {
        let r = repo.run(&args);
        r.expect_code(1);
        assert_eq!(
            r.stderr().trim(),
            "error: no keep rule given; refusing to remove every snapshot",
            "{args:?}"
        );
    }
    // Usage errors (exit 2): bad durations, ids together with a policy, bad --group-by.
    for args in [
        vec!["forget", "--keep-within", "0d"],
        vec!["forget", "--keep-within-daily", "7x"],
        vec!["forget", "--keep-within", "7"],
        vec!["forget", a.as_str(), "--keep-last", "1"],
        vec!["forget", a.as_str(), "--host", "x"],
        vec!["forget", "--keep-last", "1", "--group-by", "hosts"],
    ] {
        let r = repo.run(&args);
        r.expect_code(2);
    }
    let r = repo.run(&["forget", "--keep-within", "7x"]);
    assert!(
        r.stderr().contains("invalid duration \"7x\""),
        "{}",
        r.stderr()
    );
    let r = repo.run(&["forget", "--keep-last", "1", "--timezone", "Mars/Olympus"]);
    r.expect_code(1);
    assert!(
        r.stderr().contains("unknown time zone \"Mars/Olympus\""),
        "{}",
        r.stderr()
    );
    assert_eq!(repo.snapshots().len(), 1);
}

#[test]
fn group_by_host_with_host_filters() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let with = |host: &'static str, name: &'static str| -> Vec<&'static str> {
        vec!["--host", host, "--stdin-filename", name]
    };
    let a1 = snap_at(&repo, "2026-05-01T00:00:00Z", &with("a", "x"));
    let a2 = snap_at(&repo, "2026-05-02T00:00:00Z", &with("a", "y"));
    let a3 = snap_at(&repo, "2026-05-03T00:00:00Z", &with("a", "x"));
    let b1 = snap_at(&repo, "2026-05-01T00:00:00Z", &with("b", "x"));
    let b2 = snap_at(&repo, "2026-05-04T00:00:00Z", &with("b", "x"));
    let c1 = snap_at(&repo, "2026-05-01T00:00:00Z", &with("c", "x"));

    // Grouped by host only: a's two path sets compete; c is not selected at all.
    let args = [
        "--group-by",
        "host",
        "--host",
        "a",
        "--host",
        "b",
        "--keep-last",
        "1",
        "--timezone",
        "UTC",
    ];
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let r = forget(&repo, &dry);
    let groups = r["groups"].as_array().unwrap();
    let keys: Vec<&Value> = groups.iter().map(|g| &g["key"]).collect();
    assert_eq!(
        keys,
        vec![
            &serde_json::json!({"host": "a"}),
            &serde_json::json!({"host": "b"})
        ],
        "{r:#}"
    );
    let v = verdicts(&r);
    assert_eq!(v.len(), 5, "c is filtered out: {r:#}");
    assert_eq!(v[&a3], ("keep".into(), strs(&["last 1/1"])));
    assert_eq!(v[&b2], ("keep".into(), strs(&["last 1/1"])));
    for id in [&a1, &a2, &b1] {
        assert_eq!(v[id].0, "remove");
    }

    // The default grouping (host and paths) makes a's /y its own group, so a2 would stay.
    let r = forget(
        &repo,
        &[
            "--host",
            "a",
            "--host",
            "b",
            "--keep-last",
            "1",
            "--dry-run",
        ],
    );
    assert_eq!(r["groups"].as_array().unwrap().len(), 3, "{r:#}");
    assert_eq!(
        removed(&r),
        BTreeSet::from([a1.clone(), b1.clone()]),
        "{r:#}"
    );

    // --path and --tag narrow the selection further.
    let r = forget(
        &repo,
        &[
            "--path",
            "/y",
            "--keep-last",
            "1",
            "--dry-run",
            "--group-by",
            "",
        ],
    );
    assert_eq!(verdicts(&r).keys().collect::<Vec<_>>(), vec![&a2], "{r:#}");
    let r = forget(&repo, &["--tag", "nope", "--keep-last", "1", "--dry-run"]);
    assert!(r["groups"].as_array().unwrap().is_empty(), "{r:#}");

    forget(&repo, &args);
    assert_eq!(
        ids_of(&repo.snapshots(), "id"),
        BTreeSet::from([a3, b2, c1])
    );
}

/// Newest snapshot per key among `days` (newest first).
fn newest_per<K: Eq + Hash>(days: &[Date], key: impl Fn(Date) -> K) -> BTreeSet<Date> {
    let mut seen = HashMap::new();
    for &d in days {
        seen.entry(key(d)).or_insert(d);
    }
    seen.into_values().collect()
}

#[test]
fn seed_default_policy_on_three_years_of_daily_snapshots() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let first = Date::new(2023, 11, 21).unwrap();
    let last = Date::new(2026, 11, 20).unwrap();
    let mut days = Vec::new();
    let mut d = last;
    while d >= first {
        days.push(d); // newest first
        d = d.yesterday().unwrap();
    }
    assert_eq!(days.len(), 1096);

    // One snapshot a day at noon UTC, made by a few concurrent backups (they need no lock).
    let by_day: Vec<(Date, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let (repo, days) = (&repo, &days);
                s.spawn(move || {
                    days.iter()
                        .skip(w)
                        .step_by(3)
                        .map(|d| (*d, snap_at(repo, &format!("{d}T12:00:00Z"), &[])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let id_of: HashMap<Date, String> = by_day.into_iter().collect();

    // The expectation, rule by rule, on dates: a day is within N days of the newest when it is
    // later than the newest day minus N (all snapshots are at the same clock time).
    let within = |n: i32| -> Vec<Date> {
        let cutoff = last.checked_sub(n.days()).unwrap();
        days.iter().copied().filter(|d| *d > cutoff).collect()
    };
    let mut keep: BTreeSet<Date> = BTreeSet::new();
    keep.extend(within(7)); // hourly: every snapshot is alone in its hour
    keep.extend(within(30)); // daily: every snapshot is alone in its day
    keep.extend(newest_per(&within(90), |d| {
        let w = d.iso_week_date();
        (w.year(), w.week())
    }));
    keep.extend(newest_per(&within(365), |d| (d.year(), d.month())));
    // 7 years reach past the first snapshot: the newest of each year, plus the oldest.
    keep.extend(newest_per(&days, |d| d.year()));
    keep.insert(first);
    // Hand count: 30 days + 9 more ISO weeks + 11 more month ends + 2023-12-31, 2024-12-31
    // and the oldest.
    assert_eq!(keep.len(), 53);

    let report = forget(
        &repo,
        &[
            "--keep-within-hourly",
            "7d",
            "--keep-within-daily",
            "30d",
            "--keep-within-weekly",
            "90d",
            "--keep-within-monthly",
            "365d",
            "--keep-within-yearly",
            "7y",
            "--timezone",
            "UTC",
            "--dry-run",
        ],
    );
    let v = verdicts(&report);
    assert_eq!(v.len(), 1096);
    let kept: BTreeSet<Date> = days
        .iter()
        .copied()
        .filter(|d| v[&id_of[d]].0 == "keep")
        .collect();
    assert_eq!(kept, keep);
    assert_eq!(removed(&report).len(), 1096 - 53);
    assert_eq!(
        v[&id_of[&first]].1,
        strs(&["oldest within-yearly 7y"]),
        "{:?}",
        v[&id_of[&first]]
    );
    assert_eq!(
        v[&id_of[&Date::new(2024, 12, 31).unwrap()]].1,
        strs(&["within-yearly 7y (2024)"])
    );
    assert_eq!(
        v[&id_of[&last]].1,
        strs(&[
            "within-hourly 7d (2026-11-20 12:00)",
            "within-daily 30d (2026-11-20)",
            "within-weekly 90d (2026-W47)",
            "within-monthly 365d (2026-11)",
            "within-yearly 7y (2026)",
        ])
    );
    assert_eq!(repo.snapshots().len(), 1096, "a dry run removes nothing");
}

#[test]
fn damaged_snapshots_survive_policies_but_go_by_id() {
    let t = tempdir();
    let repo = Repo::at(&t.path().join("repo"));
    repo.init();
    let old = snap_at(&repo, "2026-01-01T00:00:00Z", &[]);
    let new = snap_at(&repo, "2026-01-02T00:00:00Z", &[]);
    write(
        &t.path().join("repo/snapshots").join(&old),
        b"not a snapshot",
    );

    let r = repo.run(&["forget", "--keep-last", "1", "--json"]);
    r.success();
    assert!(
        r.stderr().contains(&format!(
            "warning: snapshot {} is unreadable and is never removed by a policy",
            &old[..8]
        )),
        "{}",
        r.stderr()
    );
    let report = r.json();
    assert!(removed(&report).is_empty(), "{report:#}");
    assert_eq!(verdicts(&report).keys().collect::<Vec<_>>(), vec![&new]);
    assert!(t.path().join("repo/snapshots").join(&old).exists());

    // Named explicitly, it is removed (with a warning).
    let r = repo.run(&["forget", &old[..12]]);
    r.success();
    assert!(
        r.stderr().contains("warning: removing damaged snapshot"),
        "{}",
        r.stderr()
    );
    assert!(!t.path().join("repo/snapshots").join(&old).exists());
    assert_eq!(ids_of(&repo.snapshots(), "id"), BTreeSet::from([new]));
}
