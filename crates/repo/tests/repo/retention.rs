//! Property tests of the retention engine (`lifeboat_repo::retention`): random snapshot
//! histories (years of spread, tight clusters, duplicate times, DST and year-boundary hot
//! spots), random hosts/paths/tags, random policies, groupings and time zones. The engine's
//! verdict must equal a deliberately simple reference model written separately below, and a few
//! invariants must hold (keep-last exactness, monotonicity in N, input-order independence).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};
use lifeboat_repo::retention::{apply, Candidate, GroupBy, KeepSpan, Plan, Policy, EMPTY_POLICY};
use lifeboat_types::SnapshotId;
use proptest::prelude::*;

const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe", // 30-minute DST shift
    "Asia/Kolkata",        // +05:30, no DST
    "Pacific/Chatham",     // +12:45 / +13:45
    "America/Sao_Paulo",
];

/// Instants where calendars are tricky: DST transitions, year ends (2026 has an ISO week 53).
const HOT_SPOTS: &[&str] = &[
    "2024-03-10T07:00:00Z", // New York spring forward
    "2024-11-03T06:00:00Z", // New York fall back
    "2025-03-30T01:00:00Z", // Berlin spring forward
    "2025-10-26T01:00:00Z", // Berlin fall back
    "2025-04-05T15:00:00Z", // Lord Howe fall back (30 min)
    "2024-12-31T23:30:00Z",
    "2026-12-31T23:00:00Z",
    "2027-01-03T12:00:00Z",
];

/// The durations random policies use (and `When::Edge` lands on).
const SPANS: &[&str] = &[
    "6h", "36h", "3d", "2w", "1m", "45d", "1y2m", "2y", "1y5m7d2h", "90d", "365d", "7y",
];

const START: i64 = 1_672_531_200; // 2023-01-01T00:00:00Z
const SPREAD: i64 = 3 * 366 * 86_400;

#[derive(Debug, Clone)]
enum When {
    /// Anywhere in the three years.
    Uniform(i64),
    /// Close (± 3 days, minute resolution) to one of a few random centers.
    Near(usize, i64),
    /// Close (± 3 h) to a hot spot.
    Hot(usize, i64),
    /// The same time as an earlier snapshot.
    Dup(usize),
    /// Exactly one of the test spans (in UTC) before an earlier snapshot: lands on a window's
    /// edge whenever that snapshot is the newest.
    Edge(usize, usize),
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        3 => (0..SPREAD).prop_map(When::Uniform),
        3 => (any::<usize>(), -4320i64..4320).prop_map(|(c, m)| When::Near(c, m * 60)),
        2 => (any::<usize>(), -10_800i64..10_800).prop_map(|(h, s)| When::Hot(h, s)),
        1 => any::<usize>().prop_map(When::Dup),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(k, s)| When::Edge(k, s)),
    ]
}

#[derive(Debug, Clone)]
struct Meta {
    when: When,
    salt: u64,
    host: usize,
    paths: usize,
    tags: Vec<bool>,
}

fn meta() -> impl Strategy<Value = Meta> {
    (
        when(),
        any::<u64>(),
        0usize..2,
        0usize..3,
        prop::collection::vec(prop::bool::weighted(0.2), 3),
    )
        .prop_map(|(when, salt, host, paths, tags)| Meta {
            when,
            salt,
            host,
            paths,
            tags,
        })
}

/// A random history: 1..60 snapshots around 1..4 cluster centers.
fn history() -> impl Strategy<Value = Vec<Candidate>> {
    (
        prop::collection::vec(0..SPREAD, 1..4),
        prop::collection::vec(meta(), 1..60),
    )
        .prop_map(|(centers, metas)| {
            let mut out: Vec<Candidate> = Vec::new();
            for (i, m) in metas.into_iter().enumerate() {
                let secs = match m.when {
                    When::Uniform(s) => START + s,
                    When::Near(c, off) => START + centers[c % centers.len()] + off,
                    When::Hot(h, off) => {
                        let t: Timestamp = HOT_SPOTS[h % HOT_SPOTS.len()].parse().unwrap();
                        t.as_second() + off
                    }
                    When::Dup(k) if !out.is_empty() => out[k % out.len()].time.as_second(),
                    When::Edge(k, s) if !out.is_empty() => {
                        let span: KeepSpan = SPANS[s % SPANS.len()].parse().unwrap();
                        let from = out[k % out.len()].time;
                        from.to_zoned(TimeZone::UTC)
                            .checked_sub(span.to_span().unwrap())
                            .unwrap()
                            .timestamp()
                            .as_second()
                    }
                    When::Dup(k) | When::Edge(k, _) => START + (k as i64).rem_euclid(SPREAD),
                };
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&m.salt.to_le_bytes());
                id[8..16].copy_from_slice(&(i as u64).to_le_bytes());
                let tags = ["prod", "db", "tmp"]
                    .iter()
                    .zip(&m.tags)
                    .filter(|(_, on)| **on)
                    .map(|(t, _)| t.to_string())
                    .collect();
                out.push(Candidate {
                    id: SnapshotId(id),
                    time: Timestamp::from_second(secs).unwrap(),
                    host: ["alpha", "beta"][m.host].into(),
                    paths: [vec!["/x"], vec!["/y"], vec!["/y", "/x"]][m.paths]
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                    tags,
                });
            }
            out
        })
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(0u32), 2 => 1u32..6, 1 => 6u32..40]
}

fn span() -> impl Strategy<Value = Option<KeepSpan>> {
    prop_oneof![
        3 => Just(None),
        2 => prop::sample::select(SPANS).prop_map(|s| Some(s.parse().unwrap())),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::collection::vec(count(), 6),
        prop::collection::vec(span(), 6),
        prop::collection::vec(prop::bool::weighted(0.15), 3),
    )
        .prop_map(|(c, w, t)| {
            let mut p = Policy {
                keep_last: c[0],
                keep_hourly: c[1],
                keep_daily: c[2],
                keep_weekly: c[3],
                keep_monthly: c[4],
                keep_yearly: c[5],
                keep_within: w[0],
                keep_within_hourly: w[1],
                keep_within_daily: w[2],
                keep_within_weekly: w[3],
                keep_within_monthly: w[4],
                keep_within_yearly: w[5],
                keep_tags: ["prod", "db", "absent"]
                    .iter()
                    .zip(&t)
                    .filter(|(_, on)| **on)
                    .map(|(t, _)| t.to_string())
                    .collect(),
            };
            if p.is_empty() {
                p.keep_daily = 1;
            }
            p
        })
}

fn group_by() -> impl Strategy<Value = GroupBy> {
    (0u8..8).prop_map(|b| GroupBy {
        host: b & 1 != 0,
        paths: b & 2 != 0,
        tags: b & 4 != 0,
    })
}

fn zone() -> impl Strategy<Value = TimeZone> {
    prop::sample::select(ZONES).prop_map(|z| TimeZone::get(z).unwrap())
}

// ---- the reference model -----------------------------------------------------------------

/// A period key as plain numbers, computed from the zoned time's fields; ISO weeks by hand
/// (the Thursday of a date's Monday-to-Sunday week decides the week-numbering year).
fn model_bucket(period: usize, t: Timestamp, tz: &TimeZone) -> (i32, i32, i32, i32) {
    let z = t.to_zoned(tz.clone());
    let (y, m, d, h) = (
        z.year() as i32,
        z.month() as i32,
        z.day() as i32,
        z.hour() as i32,
    );
    match period {
        0 => (y, m, d, h),
        1 => (y, m, d, 0),
        2 => {
            let date = z.date();
            let from_monday = date.weekday().to_monday_zero_offset() as i64;
            let thursday = date.checked_add(Span::new().days(3 - from_monday)).unwrap();
            let week = (thursday.day_of_year() as i32 - 1) / 7 + 1;
            (thursday.year() as i32, week, 0, 0)
        }
        3 => (y, m, 0, 0),
        _ => (y, 0, 0, 0),
    }
}

/// The earliest excluded instant for a `within` span, or `None` if it reaches past the
/// representable range: calendar part on the zoned clock, then exact hours.
fn model_cutoff(newest: Timestamp, s: &KeepSpan, tz: &TimeZone) -> Option<Timestamp> {
    let calendar = Span::new()
        .years(s.years as i64)
        .months(s.months as i64)
        .days(7 * s.weeks as i64 + s.days as i64);
    let z = newest.to_zoned(tz.clone()).checked_sub(calendar).ok()?;
    z.timestamp()
        .checked_sub(SignedDuration::from_hours(s.hours as i64))
        .ok()
}

const NAMES: [&str; 5] = ["hourly", "daily", "weekly", "monthly", "yearly"];

/// For each snapshot, the names of the rules that keep it; each rule evaluated on its own.
fn model(
    snaps: &[Candidate],
    p: &Policy,
    g: GroupBy,
    tz: &TimeZone,
) -> BTreeMap<SnapshotId, BTreeSet<String>> {
    type Key = (
        Option<String>,
        Option<BTreeSet<String>>,
        Option<BTreeSet<String>>,
    );
    let mut groups: BTreeMap<Key, Vec<&Candidate>> = BTreeMap::new();
    for s in snaps {
        let key = (
            g.host.then(|| s.host.clone()),
            g.paths.then(|| s.paths.iter().cloned().collect()),
            g.tags.then(|| s.tags.iter().cloned().collect()),
        );
        groups.entry(key).or_default().push(s);
    }
    let mut out: BTreeMap<SnapshotId, BTreeSet<String>> = BTreeMap::new();
    for (_, mut list) in groups {
        // Newest first; equal times: larger id first.
        list.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let newest = list[0].time;
        let oldest = list[list.len() - 1].id;
        for s in &list {
            out.entry(s.id).or_default();
        }
        let mut keep = |id: SnapshotId, rule: &str| {
            out.entry(id).or_default().insert(rule.to_string());
        };
        for s in &list {
            if s.tags.iter().any(|t| p.keep_tags.contains(t)) {
                keep(s.id, "tag");
            }
        }
        if let Some(w) = &p.keep_within {
            let cutoff = model_cutoff(newest, w, tz);
            for s in &list {
                if cutoff.is_none_or(|c| s.time > c) {
                    keep(s.id, "within");
                }
            }
        }
        for s in list.iter().take(p.keep_last as usize) {
            keep(s.id, "last");
        }
        let counts = [
            p.keep_hourly,
            p.keep_daily,
            p.keep_weekly,
            p.keep_monthly,
            p.keep_yearly,
        ];
        for (period, &n) in counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let mut seen = HashSet::new();
            for s in &list {
                if seen.len() < n as usize && seen.insert(model_bucket(period, s.time, tz)) {
                    keep(s.id, NAMES[period]);
                }
            }
            let distinct: HashSet<_> = list
                .iter()
                .map(|s| model_bucket(period, s.time, tz))
                .collect();
            if distinct.len() < n as usize {
                keep(oldest, NAMES[period]);
            }
        }
        let windows = [
            p.keep_within_hourly,
            p.keep_within_daily,
            p.keep_within_weekly,
            p.keep_within_monthly,
            p.keep_within_yearly,
        ];
        for (period, w) in windows.iter().enumerate() {
            let Some(w) = w else { continue };
            let cutoff = model_cutoff(newest, w, tz);
            let inside: Vec<&&Candidate> = list
                .iter()
                .filter(|s| cutoff.is_none_or(|c| s.time > c))
                .collect();
            let name = format!("within-{}", NAMES[period]);
            let mut seen = HashSet::new();
            for s in &inside {
                if seen.insert(model_bucket(period, s.time, tz)) {
                    keep(s.id, &name);
                }
            }
            if inside.iter().any(|s| s.id == oldest) {
                keep(oldest, &name);
            }
        }
    }
    out
}

/// The engine's verdict in the model's shape.
fn engine_rules(plan: &Plan) -> BTreeMap<SnapshotId, BTreeSet<String>> {
    plan.decisions()
        .map(|d| {
            (
                d.id,
                d.reasons.iter().map(|r| r.rule().to_string()).collect(),
            )
        })
        .collect()
}

fn kept_ids(plan: &Plan) -> BTreeSet<SnapshotId> {
    plan.kept().map(|d| d.id).collect()
}

// ---- properties --------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_reference_model(
        snaps in history(), p in policy(), g in group_by(), tz in zone()
    ) {
        let plan = apply(&snaps, &p, g, &tz).unwrap();
        let engine = engine_rules(&plan);
        let expected = model(&snaps, &p, g, &tz);
        prop_assert_eq!(&engine, &expected, "policy {} group-by {:?} tz {:?}", p, g, tz.iana_name());

        // Every snapshot exactly once; kept exactly when there is a reason.
        prop_assert_eq!(plan.decisions().count(), snaps.len());
        let all: BTreeSet<_> = plan.decisions().map(|d| d.id).collect();
        prop_assert_eq!(all.len(), snaps.len());
        for d in plan.decisions() {
            prop_assert_eq!(d.keep(), !d.reasons.is_empty());
        }
        prop_assert_eq!(plan.kept().count() + plan.removed().count(), snaps.len());
        // Within a group: newest first, one key, groups sorted and distinct.
        for grp in &plan.groups {
            prop_assert!(!grp.snapshots.is_empty());
            prop_assert!(grp
                .snapshots
                .windows(2)
                .all(|w| (w[0].time, w[0].id) > (w[1].time, w[1].id)));
        }
        prop_assert!(plan.groups.windows(2).all(|w| w[0].key < w[1].key));
    }

    #[test]
    fn result_is_independent_of_input_order(
        (snaps, shuffled) in history().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        p in policy(), g in group_by(), tz in zone()
    ) {
        let a = apply(&snaps, &p, g, &tz).unwrap();
        let b = apply(&shuffled, &p, g, &tz).unwrap();
        prop_assert_eq!(a, b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn keep_last_keeps_exactly_the_newest(snaps in history(), n in 1u32..70, g in group_by()) {
        let p = Policy { keep_last: n, ..Policy::default() };
        let plan = apply(&snaps, &p, g, &TimeZone::UTC).unwrap();
        for grp in &plan.groups {
            let want = grp.snapshots.len().min(n as usize);
            let kept: Vec<bool> = grp.snapshots.iter().map(|d| d.keep()).collect();
            let expected: Vec<bool> = (0..grp.snapshots.len()).map(|i| i < want).collect();
            prop_assert_eq!(kept, expected);
        }
    }

    #[test]
    fn keep_set_is_monotone_in_n(
        snaps in history(), p in policy(), rule in 0usize..6, extra in 1u32..5,
        g in group_by(), tz in zone()
    ) {
        let mut more = p.clone();
        let field = match rule {
            0 => &mut more.keep_last,
            1 => &mut more.keep_hourly,
            2 => &mut more.keep_daily,
            3 => &mut more.keep_weekly,
            4 => &mut more.keep_monthly,
            _ => &mut more.keep_yearly,
        };
        *field += extra;
        let small = kept_ids(&apply(&snaps, &p, g, &tz).unwrap());
        let large = kept_ids(&apply(&snaps, &more, g, &tz).unwrap());
        prop_assert!(small.is_subset(&large), "{} keeps {:?} not kept by {}", p, small.difference(&large).collect::<Vec<_>>(), more);
    }

    #[test]
    fn keep_set_is_monotone_in_window(
        snaps in history(), rule in 0usize..6, a in 1u32..400, b in 1u32..400, tz in zone()
    ) {
        let (short, long) = (KeepSpan::days(a.min(b)), KeepSpan::days(a.max(b)));
        let with = |s: KeepSpan| {
            let mut p = Policy::default();
            *match rule {
                0 => &mut p.keep_within,
                1 => &mut p.keep_within_hourly,
                2 => &mut p.keep_within_daily,
                3 => &mut p.keep_within_weekly,
                4 => &mut p.keep_within_monthly,
                _ => &mut p.keep_within_yearly,
            } = Some(s);
            kept_ids(&apply(&snaps, &p, GroupBy::default(), &tz).unwrap())
        };
        prop_assert!(with(short).is_subset(&with(long)));
    }

    #[test]
    fn an_empty_policy_is_always_refused(snaps in history(), g in group_by()) {
        let e = apply(&snaps, &Policy::default(), g, &TimeZone::UTC).unwrap_err();
        prop_assert_eq!(e.to_string(), EMPTY_POLICY);
    }
}

/// The hand-written ISO week in the model agrees with the calendar on known dates.
#[test]
fn model_iso_weeks_are_right() {
    let utc = TimeZone::UTC;
    let at = |y, m, d| {
        Date::new(y, m, d)
            .unwrap()
            .at(12, 0, 0, 0)
            .to_zoned(utc.clone())
    };
    for (date, want) in [
        (at(2026, 12, 28), (2026, 53)),
        (at(2027, 1, 3), (2026, 53)),
        (at(2027, 1, 4), (2027, 1)),
        (at(2024, 12, 30), (2025, 1)),
        (at(2021, 1, 3), (2020, 53)),
    ] {
        let date = date.unwrap();
        let (y, w, _, _) = model_bucket(2, date.timestamp(), &utc);
        assert_eq!((y, w), want, "{date}");
    }
}
