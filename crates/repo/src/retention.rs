//! Retention policies for `lifeboat forget`: which snapshots a GFS policy keeps, and why.
//!
//! [`apply`] is a pure function of the snapshots, the [`Policy`], the [`GroupBy`] and a time
//! zone: no I/O and no clock, so a plan can be shown before anything is removed, and running
//! `forget` again later never removes more because time passed (durations are measured from
//! each group's newest snapshot, not from now). Semantics are restic's: rules are OR-ed, a
//! period counts only when it has a snapshot, the newest snapshot of a period is the one kept,
//! and an unfilled rule also keeps the group's oldest snapshot. `docs/retention.md` describes
//! them exactly, with a worked example.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use lifeboat_types::SnapshotId;
use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::snapshot::Snapshot;

/// Why [`apply`] refuses an empty policy: without a keep rule every snapshot would go.
pub const EMPTY_POLICY: &str = "no keep rule given; refusing to remove every snapshot";

/// A retention duration or `--group-by` value that could not be parsed, saying what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct ParseError {
    /// What was being parsed ("duration", "group-by").
    pub what: &'static str,
    /// The rejected input.
    pub input: String,
    /// What is wrong and what is accepted instead.
    pub reason: String,
}

// ---- durations ---------------------------------------------------------------------------

/// How far back from a group's newest snapshot a `keep_within*` rule reaches, e.g. `7d`, `2w`,
/// `1y6m`, `36h`, `1y5m7d2h`.
///
/// Units: `y` years, `m` **months** (there are no minutes), `w` weeks (7 days), `d` days, `h`
/// hours; each at most once, in any order; the total must be longer than zero. Years, months,
/// weeks and days are calendar units, subtracted on the civil clock of the policy's time zone
/// (so `1d` across a daylight-saving change is 23 or 25 hours, and `1m` back from March 31 is
/// February 28/29: the day is clamped to the month); hours are then subtracted as exact
/// elapsed time. This is jiff's `Zoned - Span`, and restic's `AddDate` + `Add` except for the
/// clamping (Go normalizes March 31 − 1 month to March 3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KeepSpan {
    /// Calendar years.
    pub years: u32,
    /// Calendar months.
    pub months: u32,
    /// Weeks of 7 calendar days.
    pub weeks: u32,
    /// Calendar days.
    pub days: u32,
    /// Exact hours.
    pub hours: u32,
}

impl KeepSpan {
    /// `n` calendar days, for code that builds policies (tests, defaults).
    pub const fn days(n: u32) -> KeepSpan {
        KeepSpan {
            years: 0,
            months: 0,
            weeks: 0,
            days: n,
            hours: 0,
        }
    }

    /// `n` calendar years, for code that builds policies (tests, defaults).
    pub const fn years(n: u32) -> KeepSpan {
        KeepSpan {
            years: n,
            months: 0,
            weeks: 0,
            days: 0,
            hours: 0,
        }
    }

    /// No time at all: such a rule keeps nothing, so a policy made only of them is empty.
    pub fn is_zero(&self) -> bool {
        *self == KeepSpan::default()
    }

    /// The span as jiff arithmetic sees it; `None` if a field exceeds jiff's range (such a span
    /// reaches back before any representable time, i.e. it covers everything).
    pub fn to_span(&self) -> Option<Span> {
        Span::new()
            .try_years(self.years)
            .and_then(|s| s.try_months(self.months))
            .and_then(|s| s.try_weeks(self.weeks))
            .and_then(|s| s.try_days(self.days))
            .and_then(|s| s.try_hours(self.hours))
            .ok()
    }

    /// The earliest excluded instant: a snapshot is within the span of `newest` exactly when
    /// it is strictly later than this. `None`: the span reaches past the representable past,
    /// every snapshot is within.
    pub fn cutoff(&self, newest: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let span = self.to_span()?;
        newest
            .to_zoned(tz.clone())
            .checked_sub(span)
            .ok()
            .map(|z| z.timestamp())
    }
}

impl fmt::Display for KeepSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0d");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.weeks, 'w'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for KeepSpan {
    type Err = ParseError;

    fn from_str(s: &str) -> std::result::Result<KeepSpan, ParseError> {
        let err = |reason: String| ParseError {
            what: "duration",
            input: s.to_owned(),
            reason,
        };
        const FORMS: &str =
            "use a number and a unit, e.g. 7d, 2w, 1y6m, 36h (units y, m = months, w, d, h)";
        if s.is_empty() {
            return Err(err(format!("empty; {FORMS}")));
        }
        let mut span = KeepSpan::default();
        let mut seen = [false; 5];
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let (slot, field) = match c {
                'y' => (0, &mut span.years),
                'm' => (1, &mut span.months),
                'w' => (2, &mut span.weeks),
                'd' => (3, &mut span.days),
                'h' => (4, &mut span.hours),
                _ => return Err(err(format!("unknown unit {c:?}; {FORMS}"))),
            };
            if digits.is_empty() {
                return Err(err(format!("unit {c:?} has no number before it; {FORMS}")));
            }
            if std::mem::replace(&mut seen[slot], true) {
                return Err(err(format!("unit {c:?} is given twice")));
            }
            *field = digits
                .parse()
                .map_err(|_| err(format!("{digits} is too large")))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(err(format!("{digits} has no unit; {FORMS}")));
        }
        if span.is_zero() {
            return Err(err("must be longer than zero".into()));
        }
        if span.to_span().is_none() {
            return Err(err("is too long".into()));
        }
        Ok(span)
    }
}

// ---- periods and buckets -----------------------------------------------------------------

/// The calendar period a count or within-bucket rule keeps one snapshot of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    /// A clock hour.
    Hour,
    /// A calendar day.
    Day,
    /// An ISO 8601 week (Monday to Sunday; week 1 holds the year's first Thursday).
    Week,
    /// A calendar month.
    Month,
    /// A calendar year.
    Year,
}

impl Period {
    /// Every period, shortest first (the order rules are evaluated and reasons listed in).
    pub const ALL: [Period; 5] = [
        Period::Hour,
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Year,
    ];

    /// "hourly", "daily", …: the word used in flags and reasons.
    pub fn adjective(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// The period instance a local date and time falls in.
    pub fn bucket(self, dt: DateTime) -> Bucket {
        let d = dt.date();
        match self {
            Period::Hour => Bucket::Hour(d, dt.hour()),
            Period::Day => Bucket::Day(d),
            Period::Week => {
                let w = d.iso_week_date();
                Bucket::Week {
                    year: w.year(),
                    week: w.week(),
                }
            }
            Period::Month => Bucket::Month {
                year: d.year(),
                month: d.month(),
            },
            Period::Year => Bucket::Year(d.year()),
        }
    }
}

/// One concrete period (an hour, day, ISO week, month or year) in the policy's time zone:
/// snapshots in the same bucket compete, the newest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// A clock hour of a local date (a repeated hour at a DST fall-back is one bucket).
    Hour(Date, i8),
    /// A local date.
    Day(Date),
    /// An ISO week; `year` is the ISO week-numbering year (2027-01-01 is in 2026-W53).
    Week {
        /// ISO week-numbering year.
        year: i16,
        /// Week 1..=53.
        week: i8,
    },
    /// A month.
    Month {
        /// Calendar year.
        year: i16,
        /// Month 1..=12.
        month: i8,
    },
    /// A calendar year.
    Year(i16),
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bucket::Hour(d, h) => write!(f, "{d} {h:02}:00"),
            Bucket::Day(d) => write!(f, "{d}"),
            Bucket::Week { year, week } => write!(f, "{year:04}-W{week:02}"),
            Bucket::Month { year, month } => write!(f, "{year:04}-{month:02}"),
            Bucket::Year(y) => write!(f, "{y:04}"),
        }
    }
}

// ---- policy ------------------------------------------------------------------------------

/// What to keep; every rule that is set keeps snapshots independently (OR), the rest are
/// removed. Counts of 0 and absent durations are unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N newest snapshots.
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the N newest days that have one.
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one.
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the N newest months that have one.
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the N newest years that have one.
    pub keep_yearly: u32,
    /// Keep every snapshot newer than the group's newest minus this.
    pub keep_within: Option<KeepSpan>,
    /// Keep the newest snapshot of every hour, among those within this of the group's newest.
    pub keep_within_hourly: Option<KeepSpan>,
    /// Keep the newest snapshot of every day, among those within this of the group's newest.
    pub keep_within_daily: Option<KeepSpan>,
    /// Keep the newest snapshot of every ISO week, among those within this of the newest.
    pub keep_within_weekly: Option<KeepSpan>,
    /// Keep the newest snapshot of every month, among those within this of the newest.
    pub keep_within_monthly: Option<KeepSpan>,
    /// Keep the newest snapshot of every year, among those within this of the newest.
    pub keep_within_yearly: Option<KeepSpan>,
    /// Keep every snapshot carrying at least one of these tags.
    pub keep_tags: Vec<String>,
}

impl Policy {
    /// The default a new deployment starts from: hourly for 7 days, daily for 30 days, weekly
    /// for 90 days, monthly for 365 days, yearly for 7 years
    /// (`--keep-within-hourly 7d --keep-within-daily 30d --keep-within-weekly 90d
    /// --keep-within-monthly 365d --keep-within-yearly 7y`).
    pub fn seed_default() -> Policy {
        Policy {
            keep_within_hourly: Some(KeepSpan::days(7)),
            keep_within_daily: Some(KeepSpan::days(30)),
            keep_within_weekly: Some(KeepSpan::days(90)),
            keep_within_monthly: Some(KeepSpan::days(365)),
            keep_within_yearly: Some(KeepSpan::years(7)),
            ..Policy::default()
        }
    }

    /// True when no rule could keep anything; [`apply`] refuses such a policy.
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0
            && self.counts().iter().all(|(_, n)| *n == 0)
            && self.keep_within.is_none_or(|s| s.is_zero())
            && self
                .within_buckets()
                .iter()
                .all(|(_, s)| s.is_none_or(|s| s.is_zero()))
            && self.keep_tags.is_empty()
    }

    /// The count rules by period (`keep_hourly` … `keep_yearly`).
    pub fn counts(&self) -> [(Period, u32); 5] {
        [
            (Period::Hour, self.keep_hourly),
            (Period::Day, self.keep_daily),
            (Period::Week, self.keep_weekly),
            (Period::Month, self.keep_monthly),
            (Period::Year, self.keep_yearly),
        ]
    }

    /// The within-bucket rules by period (`keep_within_hourly` … `keep_within_yearly`).
    pub fn within_buckets(&self) -> [(Period, Option<KeepSpan>); 5] {
        [
            (Period::Hour, self.keep_within_hourly),
            (Period::Day, self.keep_within_daily),
            (Period::Week, self.keep_within_weekly),
            (Period::Month, self.keep_within_monthly),
            (Period::Year, self.keep_within_yearly),
        ]
    }
}

impl fmt::Display for Policy {
    /// A one-line summary such as "last 3, daily 7, within-daily 30d, tag prod".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.keep_last > 0 {
            parts.push(format!("last {}", self.keep_last));
        }
        for (p, n) in self.counts() {
            if n > 0 {
                parts.push(format!("{} {n}", p.adjective()));
            }
        }
        if let Some(s) = self.keep_within {
            parts.push(format!("within {s}"));
        }
        for (p, s) in self.within_buckets() {
            if let Some(s) = s {
                parts.push(format!("within-{} {s}", p.adjective()));
            }
        }
        for t in &self.keep_tags {
            parts.push(format!("tag {t}"));
        }
        if parts.is_empty() {
            return f.write_str("nothing");
        }
        f.write_str(&parts.join(", "))
    }
}

// ---- grouping ----------------------------------------------------------------------------

/// Which snapshot fields split snapshots into groups that are retained independently (so one
/// host's backups never push out another's). Default: host and paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// Same host.
    pub host: bool,
    /// Same set of source paths.
    pub paths: bool,
    /// Same set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> GroupBy {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl GroupBy {
    /// The group a snapshot belongs to.
    pub fn key(&self, c: &Candidate) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        GroupKey {
            host: self.host.then(|| c.host.clone()),
            paths: self.paths.then(|| sorted(&c.paths)),
            tags: self.tags.then(|| sorted(&c.tags)),
        }
    }
}

impl FromStr for GroupBy {
    type Err = ParseError;

    /// A comma-separated subset of `host`, `paths`, `tags`; empty means one group for all.
    fn from_str(s: &str) -> std::result::Result<GroupBy, ParseError> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                _ => {
                    return Err(ParseError {
                        what: "group-by",
                        input: s.to_owned(),
                        reason: format!(
                            "unknown field {part:?}; use a comma-separated subset of host, paths, tags (or \"\" for one group)"
                        ),
                    })
                }
            }
        }
        Ok(g)
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [
            (self.host, "host"),
            (self.paths, "paths"),
            (self.tags, "tags"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&parts.join(","))
    }
}

/// The identity of one group: the grouped-by fields (paths and tags sorted), `None` for the
/// fields not grouped by (and left out of JSON).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GroupKey {
    /// The host, when grouping by host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The sorted source paths, when grouping by paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// The sorted tags, when grouping by tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl fmt::Display for GroupKey {
    /// `host "db1", paths /etc /srv, tags (none)`, or `all snapshots` without grouping.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_owned()
            } else {
                v.join(" ")
            }
        };
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h:?}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths {}", list(p)));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags {}", list(t)));
        }
        if parts.is_empty() {
            return f.write_str("all snapshots");
        }
        f.write_str(&parts.join(", "))
    }
}

// ---- input and output --------------------------------------------------------------------

/// What the policy engine needs to know about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The snapshot's id (also the tie-breaker between equal times: the larger id counts as
    /// newer, so the result never depends on input order).
    pub id: SnapshotId,
    /// When the backup started.
    pub time: Timestamp,
    /// Host that made it.
    pub host: String,
    /// Its source paths.
    pub paths: Vec<String>,
    /// Its tags.
    pub tags: Vec<String>,
}

impl Candidate {
    /// The fields of a stored snapshot that retention looks at.
    pub fn new(id: SnapshotId, s: &Snapshot) -> Candidate {
        Candidate {
            id,
            time: s.time,
            host: s.host.clone(),
            paths: s.paths.clone(),
            tags: s.tags.clone(),
        }
    }
}

/// One rule that kept a snapshot; `Display` is the text shown to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Carries this tag of `keep_tags`: "tag prod".
    Tag(String),
    /// Newer than the group's newest minus `keep_within`: "within 7d".
    Within(KeepSpan),
    /// The `nth` newest of `keep_last` = `of`: "last 1/3".
    Last {
        /// 1 for the newest.
        nth: u32,
        /// The `keep_last` count.
        of: u32,
    },
    /// The newest snapshot of the `nth` newest non-empty bucket of a count rule:
    /// "daily 2026-11-20".
    Count {
        /// The rule's period.
        period: Period,
        /// The bucket it is the newest of.
        bucket: Bucket,
        /// 1 for the newest bucket.
        nth: u32,
        /// The rule's count.
        of: u32,
    },
    /// The group's oldest snapshot, kept because the group has fewer than `of` buckets of
    /// `period` (it extends the history the rule was asked to keep): "oldest of unfilled monthly".
    OldestUnfilled {
        /// The rule's period.
        period: Period,
        /// The rule's count.
        of: u32,
    },
    /// The newest snapshot of its bucket, within `span` of the group's newest:
    /// "within-daily 30d (2026-11-20)".
    WithinBucket {
        /// The rule's period.
        period: Period,
        /// The rule's duration.
        span: KeepSpan,
        /// The bucket it is the newest of.
        bucket: Bucket,
    },
    /// The group's oldest snapshot, kept because it lies within `span` of the newest (the
    /// group's history is shorter than the window): "oldest within-yearly 7y".
    OldestWithin {
        /// The rule's period.
        period: Period,
        /// The rule's duration.
        span: KeepSpan,
    },
}

impl Reason {
    /// The rule's name as in the flags without `keep-`: "tag", "within", "last", "daily",
    /// "within-daily", …; the oldest-snapshot reasons belong to their rule.
    pub fn rule(&self) -> &'static str {
        match self {
            Reason::Tag(_) => "tag",
            Reason::Within(_) => "within",
            Reason::Last { .. } => "last",
            Reason::Count { period, .. } | Reason::OldestUnfilled { period, .. } => {
                period.adjective()
            }
            Reason::WithinBucket { period, .. } | Reason::OldestWithin { period, .. } => {
                match period {
                    Period::Hour => "within-hourly",
                    Period::Day => "within-daily",
                    Period::Week => "within-weekly",
                    Period::Month => "within-monthly",
                    Period::Year => "within-yearly",
                }
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Tag(t) => write!(f, "tag {t}"),
            Reason::Within(s) => write!(f, "within {s}"),
            Reason::Last { nth, of } => write!(f, "last {nth}/{of}"),
            Reason::Count { period, bucket, .. } => write!(f, "{} {bucket}", period.adjective()),
            Reason::OldestUnfilled { period, .. } => {
                write!(f, "oldest of unfilled {}", period.adjective())
            }
            Reason::WithinBucket { span, bucket, .. } => {
                write!(f, "{} {span} ({bucket})", self.rule())
            }
            Reason::OldestWithin { span, .. } => write!(f, "oldest {} {span}", self.rule()),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time.
    pub time: Timestamp,
    /// Every rule that keeps it, in rule order; empty means remove.
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// Kept exactly when some rule keeps it.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The verdicts for one group, newest snapshot first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlan {
    /// What the group's snapshots share.
    pub key: GroupKey,
    /// One decision per snapshot of the group, newest first.
    pub snapshots: Vec<Decision>,
}

/// The verdicts for every snapshot, grouped (groups sorted by key) so they can be shown group
/// by group before anything is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The groups, sorted by key.
    pub groups: Vec<GroupPlan>,
}

impl Plan {
    /// Every decision, group by group.
    pub fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.groups.iter().flat_map(|g| g.snapshots.iter())
    }

    /// The snapshots to keep.
    pub fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.decisions().filter(|d| d.keep())
    }

    /// The snapshots to remove.
    pub fn removed(&self) -> impl Iterator<Item = &Decision> {
        self.decisions().filter(|d| !d.keep())
    }
}

// ---- the engine --------------------------------------------------------------------------

/// Decides, group by group, which snapshots `policy` keeps and why; calendar buckets are taken
/// in `tz`. Refuses an empty policy ([`EMPTY_POLICY`]), which would remove everything.
pub fn apply(
    snapshots: &[Candidate],
    policy: &Policy,
    group_by: GroupBy,
    tz: &TimeZone,
) -> Result<Plan> {
    if policy.is_empty() {
        return Err(Error::InvalidInput(EMPTY_POLICY.into()));
    }
    let mut groups: BTreeMap<GroupKey, Vec<&Candidate>> = BTreeMap::new();
    for c in snapshots {
        groups.entry(group_by.key(c)).or_default().push(c);
    }
    let groups = groups
        .into_iter()
        .map(|(key, members)| GroupPlan {
            key,
            snapshots: apply_group(members, policy, tz),
        })
        .collect();
    Ok(Plan { groups })
}

/// One group: sort newest first, then let every rule add its reasons.
fn apply_group(mut snaps: Vec<&Candidate>, p: &Policy, tz: &TimeZone) -> Vec<Decision> {
    snaps.sort_by_key(|s| std::cmp::Reverse((s.time, s.id)));
    let n = snaps.len();
    let oldest = n - 1; // groups are never empty
    let newest = snaps[0].time;
    let local: Vec<DateTime> = snaps.iter().map(|s| tz.to_datetime(s.time)).collect();
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); n];

    let mut tags: Vec<&String> = Vec::new();
    for t in &p.keep_tags {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    for (i, s) in snaps.iter().enumerate() {
        for t in &tags {
            if s.tags.contains(t) {
                reasons[i].push(Reason::Tag((*t).clone()));
            }
        }
    }

    if let Some(span) = p.keep_within.filter(|s| !s.is_zero()) {
        let cutoff = span.cutoff(newest, tz);
        for (i, s) in snaps.iter().enumerate() {
            if within(s.time, cutoff) {
                reasons[i].push(Reason::Within(span));
            }
        }
    }

    for (i, r) in reasons.iter_mut().enumerate().take(p.keep_last as usize) {
        r.push(Reason::Last {
            nth: i as u32 + 1,
            of: p.keep_last,
        });
    }

    for (period, of) in p.counts() {
        if of == 0 {
            continue;
        }
        let mut seen = HashSet::new();
        let mut kept_oldest = false;
        for i in 0..n {
            if seen.len() as u32 == of {
                break;
            }
            let bucket = period.bucket(local[i]);
            if seen.insert(bucket) {
                reasons[i].push(Reason::Count {
                    period,
                    bucket,
                    nth: seen.len() as u32,
                    of,
                });
                kept_oldest |= i == oldest;
            }
        }
        if (seen.len() as u32) < of && !kept_oldest {
            reasons[oldest].push(Reason::OldestUnfilled { period, of });
        }
    }

    for (period, span) in p.within_buckets() {
        let Some(span) = span.filter(|s| !s.is_zero()) else {
            continue;
        };
        let cutoff = span.cutoff(newest, tz);
        let mut seen = HashSet::new();
        let mut kept_oldest = false;
        // Newest first, so the snapshots within the window are a prefix.
        for i in (0..n).take_while(|&i| within(snaps[i].time, cutoff)) {
            let bucket = period.bucket(local[i]);
            if seen.insert(bucket) {
                reasons[i].push(Reason::WithinBucket {
                    period,
                    span,
                    bucket,
                });
                kept_oldest |= i == oldest;
            }
        }
        if within(snaps[oldest].time, cutoff) && !kept_oldest {
            reasons[oldest].push(Reason::OldestWithin { period, span });
        }
    }

    snaps
        .into_iter()
        .zip(reasons)
        .map(|(s, reasons)| Decision {
            id: s.id,
            time: s.time,
            reasons,
        })
        .collect()
}

/// Strictly newer than the cutoff (`None`: no cutoff).
fn within(t: Timestamp, cutoff: Option<Timestamp>) -> bool {
    cutoff.is_none_or(|c| t > c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn snap(n: u8, time: &str) -> Candidate {
        Candidate {
            id: SnapshotId([n; 32]),
            time: ts(time),
            host: "h".into(),
            paths: vec!["/data".into()],
            tags: vec![],
        }
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    /// `(id byte, reasons as text)` for every snapshot of the only group, newest first.
    fn verdicts(snaps: &[Candidate], p: &Policy, tz: &TimeZone) -> Vec<(u8, Vec<String>)> {
        let plan = apply(snaps, p, GroupBy::default(), tz).unwrap();
        assert_eq!(plan.groups.len(), 1);
        plan.groups[0]
            .snapshots
            .iter()
            .map(|d| (d.id.0[0], d.reasons.iter().map(|r| r.to_string()).collect()))
            .collect()
    }

    fn kept(snaps: &[Candidate], p: &Policy, tz: &TimeZone) -> Vec<u8> {
        verdicts(snaps, p, tz)
            .into_iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(id, _)| id)
            .collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn durations_parse_and_print() {
        let d: KeepSpan = "7d".parse().unwrap();
        assert_eq!(d, KeepSpan::days(7));
        let d: KeepSpan = "1y5m7d2h".parse().unwrap();
        assert_eq!(
            d,
            KeepSpan {
                years: 1,
                months: 5,
                weeks: 0,
                days: 7,
                hours: 2
            }
        );
        assert_eq!(d.to_string(), "1y5m7d2h");
        // Any order in, canonical order out.
        assert_eq!("36h2w".parse::<KeepSpan>().unwrap().to_string(), "2w36h");
        assert_eq!("1y6m".parse::<KeepSpan>().unwrap().to_string(), "1y6m");
        assert_eq!("1y0m".parse::<KeepSpan>().unwrap().to_string(), "1y");
        for bad in [
            "",
            "7",
            "d",
            "7x",
            "7D",
            "0d",
            "0y0h",
            "1d1d",
            "1.5d",
            "-1d",
            "7 d",
            "99999999999d",
            "20000y",
        ] {
            let e = bad.parse::<KeepSpan>().unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().starts_with("invalid duration"), "{e}");
        }
    }

    #[test]
    fn group_by_parses() {
        assert_eq!("host,paths".parse::<GroupBy>().unwrap(), GroupBy::default());
        let g: GroupBy = "tags, host".parse().unwrap();
        assert!(g.host && g.tags && !g.paths);
        assert_eq!(g.to_string(), "host,tags");
        let none: GroupBy = "".parse().unwrap();
        assert!(!none.host && !none.paths && !none.tags);
        assert!("hosts".parse::<GroupBy>().is_err());
    }

    #[test]
    fn empty_policy_is_refused() {
        let snaps = [snap(1, "2026-01-01T00:00:00Z")];
        for p in [
            Policy::default(),
            Policy {
                keep_within: Some(KeepSpan::default()),
                keep_within_daily: Some(KeepSpan::default()),
                ..Policy::default()
            },
        ] {
            let e = apply(&snaps, &p, GroupBy::default(), &utc()).unwrap_err();
            assert_eq!(e.to_string(), EMPTY_POLICY);
        }
        // No snapshots is fine for a real policy.
        let p = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        assert!(apply(&[], &p, GroupBy::default(), &utc())
            .unwrap()
            .groups
            .is_empty());
    }

    #[test]
    fn daily_counts_only_days_with_snapshots_and_keeps_the_newest_of_each() {
        let snaps = [
            snap(1, "2026-11-20T18:00:00Z"),
            snap(2, "2026-11-20T06:00:00Z"),
            // 11-19 and 11-18 have no snapshot: they do not count.
            snap(3, "2026-11-17T23:59:59Z"),
            snap(4, "2026-11-17T00:00:00Z"),
            snap(5, "2026-11-10T12:00:00Z"),
            snap(6, "2026-11-01T12:00:00Z"),
        ];
        let p = Policy {
            keep_daily: 3,
            ..Policy::default()
        };
        assert_eq!(
            verdicts(&snaps, &p, &utc()),
            vec![
                (1, s(&["daily 2026-11-20"])),
                (2, s(&[])),
                (3, s(&["daily 2026-11-17"])),
                (4, s(&[])),
                (5, s(&["daily 2026-11-10"])),
                (6, s(&[])),
            ]
        );
    }

    #[test]
    fn unfilled_count_rule_keeps_the_oldest() {
        let snaps = [
            snap(1, "2026-11-20T00:00:00Z"),
            snap(2, "2026-11-02T00:00:00Z"),
            snap(3, "2026-10-15T00:00:00Z"),
            snap(4, "2026-10-01T00:00:00Z"),
        ];
        // Two months < 12: the oldest is kept too.
        let p = Policy {
            keep_monthly: 12,
            ..Policy::default()
        };
        assert_eq!(
            verdicts(&snaps, &p, &utc()),
            vec![
                (1, s(&["monthly 2026-11"])),
                (2, s(&[])),
                (3, s(&["monthly 2026-10"])),
                (4, s(&["oldest of unfilled monthly"])),
            ]
        );
        // Exactly filled: no extra.
        let p = Policy {
            keep_monthly: 2,
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &p, &utc()), vec![1, 3]);
        // The oldest alone in its bucket is kept by the rule itself, not twice.
        let p = Policy {
            keep_daily: 9,
            ..Policy::default()
        };
        assert_eq!(
            verdicts(&snaps, &p, &utc())[3],
            (4, s(&["daily 2026-10-01"]))
        );
    }

    #[test]
    fn rules_are_ored_and_every_reason_is_listed() {
        let mut snaps = vec![
            snap(1, "2026-11-20T12:00:00Z"),
            snap(2, "2026-11-20T08:00:00Z"),
            snap(3, "2026-11-19T12:00:00Z"),
            snap(4, "2026-11-10T12:00:00Z"),
            snap(5, "2026-10-10T12:00:00Z"),
            snap(6, "2026-09-10T12:00:00Z"),
        ];
        snaps[4].tags = vec!["prod".into()];
        let p = Policy {
            keep_last: 2,
            keep_daily: 2,
            keep_monthly: 2,
            keep_within: Some("2d".parse().unwrap()),
            keep_tags: vec!["prod".into(), "prod".into()],
            ..Policy::default()
        };
        assert_eq!(
            verdicts(&snaps, &p, &utc()),
            vec![
                (
                    1,
                    s(&[
                        "within 2d",
                        "last 1/2",
                        "daily 2026-11-20",
                        "monthly 2026-11"
                    ])
                ),
                (2, s(&["within 2d", "last 2/2"])),
                (3, s(&["within 2d", "daily 2026-11-19"])),
                (4, s(&[])),
                (5, s(&["tag prod", "monthly 2026-10"])),
                (6, s(&[])),
            ]
        );
    }

    #[test]
    fn within_is_relative_to_the_newest_snapshot_and_strict() {
        let snaps = [
            snap(1, "2020-01-10T00:00:00Z"),
            snap(2, "2020-01-03T00:00:01Z"),
            snap(3, "2020-01-03T00:00:00Z"), // exactly 7 days older: not within
        ];
        let p = Policy {
            keep_within: Some(KeepSpan::days(7)),
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &p, &utc()), vec![1, 2]);
        // Hours are exact: 36h back from 01-10 00:00 is 01-08 12:00.
        let snaps = [
            snap(1, "2020-01-10T00:00:00Z"),
            snap(2, "2020-01-08T12:00:01Z"),
            snap(3, "2020-01-08T12:00:00Z"),
        ];
        let p = Policy {
            keep_within: Some("36h".parse().unwrap()),
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &p, &utc()), vec![1, 2]);
    }

    #[test]
    fn months_are_calendar_months_clamped_to_the_month_end() {
        // 1m back from March 31 is February 29 (2024 is a leap year), not March 2.
        let snaps = [
            snap(1, "2024-03-31T10:00:00Z"),
            snap(2, "2024-02-29T10:00:01Z"),
            snap(3, "2024-02-29T10:00:00Z"),
        ];
        let p = Policy {
            keep_within: Some("1m".parse().unwrap()),
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &p, &utc()), vec![1, 2]);
    }

    #[test]
    fn day_buckets_follow_the_local_calendar_across_dst() {
        let ny = TimeZone::get("America/New_York").unwrap();
        // 2026-11-01 is 25 hours long in New York (EDT -4 → EST -5 at 02:00 local).
        let snaps = [
            snap(1, "2026-11-02T05:30:00Z"), // 11-02 00:30 EST
            snap(2, "2026-11-02T04:59:59Z"), // 11-01 23:59:59 EST
            snap(3, "2026-11-01T04:00:00Z"), // 11-01 00:00 EDT
            snap(4, "2026-11-01T03:59:59Z"), // 10-31 23:59:59 EDT
        ];
        let p = Policy {
            keep_daily: 10,
            ..Policy::default()
        };
        assert_eq!(
            verdicts(&snaps, &p, &ny),
            vec![
                (1, s(&["daily 2026-11-02"])),
                (2, s(&["daily 2026-11-01"])),
                (3, s(&[])),
                (4, s(&["daily 2026-10-31"])),
            ]
        );
        // The same instants in UTC fall on other days.
        assert_eq!(
            verdicts(&snaps, &p, &utc()),
            vec![
                (1, s(&["daily 2026-11-02"])),
                (2, s(&[])),
                (3, s(&["daily 2026-11-01"])),
                (4, s(&["oldest of unfilled daily"])),
            ]
        );
        // The repeated 01:00 hour is one hourly bucket: only the later 01:30 is kept.
        let snaps = [
            snap(1, "2026-11-01T06:30:00Z"), // 01:30 EST
            snap(2, "2026-11-01T05:30:00Z"), // 01:30 EDT
            snap(3, "2026-11-01T04:30:00Z"), // 00:30 EDT
        ];
        let p = Policy {
            keep_hourly: 2,
            ..Policy::default()
        };
        assert_eq!(
            verdicts(&snaps, &p, &ny),
            vec![
                (1, s(&["hourly 2026-11-01 01:00"])),
                (2, s(&[])),
                (3, s(&["hourly 2026-11-01 00:00"])),
            ]
        );
        // Spring forward (03-08 02:00 EST → 03:00 EDT): 1d back from 03-09 01:00 EDT is 03-08
        // 01:00 EST, only 23 h earlier; 24h reaches one hour further.
        let snaps = [
            snap(1, "2026-03-09T05:00:00Z"), // 03-09 01:00 EDT
            snap(2, "2026-03-08T06:30:00Z"), // 03-08 01:30 EST, 22.5 h earlier
            snap(3, "2026-03-08T05:30:00Z"), // 03-08 00:30 EST, 23.5 h earlier
        ];
        let day = Policy {
            keep_within: Some("1d".parse().unwrap()),
            ..Policy::default()
        };
        let hours = Policy {
            keep_within: Some("24h".parse().unwrap()),
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &day, &ny), vec![1, 2]);
        assert_eq!(kept(&snaps, &hours, &ny), vec![1, 2, 3]);
        // Fall back: 1d back from 11-02 00:30 EST is 11-01 00:30 EDT, 25 h earlier.
        let snaps = [
            snap(1, "2026-11-02T05:30:00Z"), // 11-02 00:30 EST
            snap(2, "2026-11-01T05:00:00Z"), // 11-01 01:00 EDT, 24.5 h earlier
        ];
        assert_eq!(kept(&snaps, &day, &ny), vec![1, 2]);
        assert_eq!(kept(&snaps, &hours, &ny), vec![1]);
    }

    #[test]
    fn iso_week_53_and_the_year_boundary() {
        // 2026 has 53 ISO weeks: 2026-W53 is Mon 2026-12-28 .. Sun 2027-01-03.
        let snaps = [
            snap(1, "2027-01-04T10:00:00Z"), // Mon, 2027-W01
            snap(2, "2027-01-02T10:00:00Z"), // Sat, 2026-W53
            snap(3, "2027-01-01T10:00:00Z"), // Fri, 2026-W53
            snap(4, "2026-12-28T10:00:00Z"), // Mon, 2026-W53
            snap(5, "2026-12-27T10:00:00Z"), // Sun, 2026-W52
            snap(6, "2026-12-21T10:00:00Z"), // Mon, 2026-W52
        ];
        let p = Policy {
            keep_weekly: 3,
            keep_yearly: 2,
            ..Policy::default()
        };
        assert_eq!(
            verdicts(&snaps, &p, &utc()),
            vec![
                (1, s(&["weekly 2027-W01", "yearly 2027"])),
                (2, s(&["weekly 2026-W53"])),
                (3, s(&[])),
                (4, s(&["yearly 2026"])),
                (5, s(&["weekly 2026-W52"])),
                (6, s(&[])),
            ]
        );
    }

    #[test]
    fn within_bucket_rules_and_their_oldest() {
        let snaps = [
            snap(1, "2026-11-20T12:00:00Z"),
            snap(2, "2026-11-20T06:00:00Z"),
            snap(3, "2026-11-18T12:00:00Z"),
            snap(4, "2026-11-18T06:00:00Z"),
            snap(5, "2026-11-01T12:00:00Z"),
        ];
        // 3 days back from 11-20 12:00: 11-18 is in, 11-01 is out.
        let p = Policy {
            keep_within_daily: Some(KeepSpan::days(3)),
            ..Policy::default()
        };
        assert_eq!(
            verdicts(&snaps, &p, &utc()),
            vec![
                (1, s(&["within-daily 3d (2026-11-20)"])),
                (2, s(&[])),
                (3, s(&["within-daily 3d (2026-11-18)"])),
                (4, s(&[])),
                (5, s(&[])),
            ]
        );
        // A window reaching past the oldest snapshot also keeps the oldest.
        let p = Policy {
            keep_within_monthly: Some(KeepSpan::years(1)),
            ..Policy::default()
        };
        assert_eq!(
            verdicts(&snaps, &p, &utc()),
            vec![
                (1, s(&["within-monthly 1y (2026-11)"])),
                (2, s(&[])),
                (3, s(&[])),
                (4, s(&[])),
                (5, s(&["oldest within-monthly 1y"])),
            ]
        );
    }

    #[test]
    fn groups_are_independent_and_sorted() {
        let mut snaps = vec![
            snap(1, "2026-11-20T12:00:00Z"),
            snap(2, "2026-11-19T12:00:00Z"),
            snap(3, "2026-11-18T12:00:00Z"),
            snap(4, "2026-11-17T12:00:00Z"),
        ];
        snaps[1].host = "a".into();
        snaps[3].host = "a".into();
        snaps[2].paths = vec!["/x".into(), "/data".into()];
        let p = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        let plan = apply(&snaps, &p, GroupBy::default(), &utc()).unwrap();
        let summary: Vec<(String, Vec<(u8, bool)>)> = plan
            .groups
            .iter()
            .map(|g| {
                (
                    g.key.to_string(),
                    g.snapshots.iter().map(|d| (d.id.0[0], d.keep())).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "host \"a\", paths /data".into(),
                    vec![(2, true), (4, false)]
                ),
                ("host \"h\", paths /data".into(), vec![(1, true)]),
                ("host \"h\", paths /data /x".into(), vec![(3, true)]),
            ]
        );
        let by_host = apply(&snaps, &p, "host".parse().unwrap(), &utc()).unwrap();
        assert_eq!(by_host.groups.len(), 2);
        assert_eq!(
            serde_json::to_value(&by_host.groups[0].key).unwrap(),
            serde_json::json!({"host": "a"})
        );
        let all = apply(&snaps, &p, "".parse().unwrap(), &utc()).unwrap();
        assert_eq!(all.groups.len(), 1);
        assert_eq!(all.groups[0].key.to_string(), "all snapshots");
        assert_eq!(all.kept().map(|d| d.id.0[0]).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn equal_times_break_ties_by_id() {
        let snaps = [
            snap(1, "2026-11-20T12:00:00Z"),
            snap(9, "2026-11-20T12:00:00Z"),
        ];
        let p = Policy {
            keep_daily: 1,
            ..Policy::default()
        };
        assert_eq!(kept(&snaps, &p, &utc()), vec![9]);
        let rev = [snaps[1].clone(), snaps[0].clone()];
        assert_eq!(kept(&rev, &p, &utc()), vec![9]);
    }

    #[test]
    fn seed_default_policy() {
        let p = Policy::seed_default();
        assert_eq!(
            p.to_string(),
            "within-hourly 7d, within-daily 30d, within-weekly 90d, within-monthly 365d, within-yearly 7y"
        );
        // Every 6 hours for 10 days: the last 7 days keep 4 a day (hourly), the 3 older days
        // one a day (daily), and the oldest is kept by every window reaching past it.
        let start: Timestamp = ts("2026-11-01T00:00:00Z");
        let snaps: Vec<Candidate> = (0..40u8)
            .map(|i| Candidate {
                time: start + jiff::SignedDuration::from_hours(6 * i as i64),
                ..snap(i, "2026-01-01T00:00:00Z")
            })
            .collect();
        let plan = apply(&snaps, &p, GroupBy::default(), &utc()).unwrap();
        // Newest is 11-10 18:00; 7d back is 11-03 18:00 (exclusive): 11-04 00:00 .. 11-10
        // 18:00 = 28 snapshots; then 11-03 18:00, 11-02 18:00 by daily; 11-01 18:00 by daily
        // and 11-01 00:00 as the oldest.
        assert_eq!(plan.kept().count(), 28 + 3 + 1);
        let oldest = plan.groups[0].snapshots.last().unwrap();
        assert_eq!(
            oldest
                .reasons
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>(),
            s(&[
                "oldest within-daily 30d",
                "oldest within-weekly 90d",
                "oldest within-monthly 365d",
                "oldest within-yearly 7y",
            ])
        );
    }
}
