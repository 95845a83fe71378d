//! `lifeboat forget`: remove snapshots by id, or those a retention policy does not keep.
//!
//! The policy engine is `lifeboat_repo::retention` (semantics in `docs/retention.md`); this
//! file selects the snapshots, prints the plan group by group and deletes `snapshots/<id>`
//! objects. Data stays in the packs until a prune.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::ArgGroup;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use lifeboat_repo::forget;
use lifeboat_repo::lock::SharedLock;
use lifeboat_repo::retention::{GroupBy, KeepSpan, Plan, Policy, EMPTY_POLICY};
use lifeboat_repo::snapshot::Snapshot;
use lifeboat_repo::{Error, Repository};
use lifeboat_types::{CancelToken, SnapshotId};
use serde_json::json;

use lifeboat_repo::prune::{PruneOptions, PruneReport};

use crate::common::{open, print_json, GlobalArgs};

/// Arguments of `forget`.
#[derive(clap::Args)]
#[command(
    group(ArgGroup::new("policy").multiple(true)),
    group(ArgGroup::new("filter").multiple(true))
)]
pub struct Args {
    /// Snapshots to remove (id, unique prefix or `latest`); no policy is applied.
    #[arg(value_name = "SNAPSHOT_ID", conflicts_with_all = ["policy", "filter"])]
    ids: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", group = "policy")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N", group = "policy")]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest days that have one.
    #[arg(long, value_name = "N", group = "policy")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one.
    #[arg(long, value_name = "N", group = "policy")]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest months that have one.
    #[arg(long, value_name = "N", group = "policy")]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest years that have one.
    #[arg(long, value_name = "N", group = "policy")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot newer than the group's newest minus this (e.g. 7d, 2w, 1y6m, 36h).
    #[arg(long, value_name = "DURATION", group = "policy")]
    keep_within: Option<KeepSpan>,
    /// Keep the newest snapshot of every hour within this of the group's newest.
    #[arg(long, value_name = "DURATION", group = "policy")]
    keep_within_hourly: Option<KeepSpan>,
    /// Keep the newest snapshot of every day within this of the group's newest.
    #[arg(long, value_name = "DURATION", group = "policy")]
    keep_within_daily: Option<KeepSpan>,
    /// Keep the newest snapshot of every ISO week within this of the group's newest.
    #[arg(long, value_name = "DURATION", group = "policy")]
    keep_within_weekly: Option<KeepSpan>,
    /// Keep the newest snapshot of every month within this of the group's newest.
    #[arg(long, value_name = "DURATION", group = "policy")]
    keep_within_monthly: Option<KeepSpan>,
    /// Keep the newest snapshot of every year within this of the group's newest.
    #[arg(long, value_name = "DURATION", group = "policy")]
    keep_within_yearly: Option<KeepSpan>,
    /// Keep every snapshot carrying this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG", group = "policy")]
    keep_tags: Vec<String>,
    /// Apply the policy separately per group of these fields: a comma-separated subset of
    /// host, paths, tags ("" = one group).
    #[arg(long, value_name = "FIELDS", default_value = "host,paths")]
    group_by: GroupBy,
    /// Only consider snapshots of this host (repeatable: any of them).
    #[arg(long = "host", value_name = "HOST", group = "filter")]
    hosts: Vec<String>,
    /// Only consider snapshots carrying this tag (repeatable: any of them).
    #[arg(long = "tag", value_name = "TAG", group = "filter")]
    tags: Vec<String>,
    /// Only consider snapshots whose paths include this one (repeatable: all of them).
    #[arg(long = "path", value_name = "PATH", group = "filter")]
    paths: Vec<PathBuf>,
    /// Time zone for hour/day/week/month/year boundaries (IANA name, e.g. Europe/Berlin or
    /// UTC; default: this machine's).
    #[arg(long, value_name = "TZ")]
    timezone: Option<String>,
    /// Show what would be removed; remove nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Run `prune` afterwards (takes the exclusive lock once the snapshots are gone).
    #[arg(long, conflicts_with = "dry_run")]
    prune: bool,
    /// --max-unused for --prune.
    #[arg(long, default_value = "5%", requires = "prune", value_parser = crate::prune::parse_share)]
    max_unused: f64,
}

impl Args {
    /// The policy the `--keep-*` flags describe.
    fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last.unwrap_or(0),
            keep_hourly: self.keep_hourly.unwrap_or(0),
            keep_daily: self.keep_daily.unwrap_or(0),
            keep_weekly: self.keep_weekly.unwrap_or(0),
            keep_monthly: self.keep_monthly.unwrap_or(0),
            keep_yearly: self.keep_yearly.unwrap_or(0),
            keep_within: self.keep_within,
            keep_within_hourly: self.keep_within_hourly,
            keep_within_daily: self.keep_within_daily,
            keep_within_weekly: self.keep_within_weekly,
            keep_within_monthly: self.keep_within_monthly,
            keep_within_yearly: self.keep_within_yearly,
            keep_tags: self.keep_tags.clone(),
        }
    }
}

/// The `--host`/`--tag`/`--path` selection; snapshots outside it are neither shown nor touched.
struct Filter {
    hosts: Vec<String>,
    tags: Vec<String>,
    paths: Vec<String>,
}

impl Filter {
    fn new(a: &Args) -> Result<Filter> {
        let paths = a
            .paths
            .iter()
            .map(|p| absolute(p).with_context(|| format!("resolve --path {}", p.display())))
            .collect::<Result<_>>()?;
        Ok(Filter {
            hosts: a.hosts.clone(),
            tags: a.tags.clone(),
            paths,
        })
    }

    fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && (self.tags.is_empty() || self.tags.iter().any(|t| s.tags.contains(t)))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }
}

/// Absolute and lexically normal, as `backup` records source paths.
fn absolute(p: &Path) -> std::io::Result<String> {
    Ok(lifeboat_repo::absolute_path(p)?.display().to_string())
}

/// Runs `forget`.
pub fn run(g: &GlobalArgs, a: Args) -> Result<ExitCode> {
    let tz = match &a.timezone {
        Some(name) => TimeZone::get(name).with_context(|| {
            format!("unknown time zone {name:?}: use an IANA name such as Europe/Berlin or UTC")
        })?,
        None => TimeZone::system(),
    };
    if !a.ids.is_empty() {
        return forget_ids(g, &a);
    }
    let policy = a.policy();
    // Refuse before asking for the password: nothing to do without a rule.
    if policy.is_empty() {
        return Err(Error::InvalidInput(EMPTY_POLICY.into()).into());
    }
    let filter = Filter::new(&a)?;
    let s = open(g)?;
    // Removing snapshots only ever makes a concurrent prune keep more: a shared lock suffices.
    let lock = g.lock_shared(&s.repo, "forget")?;
    let cancel = g.cancel_on_signal(s.repo.runtime())?;
    let planned = forget::plan_policy(&s.repo, &policy, a.group_by, &tz, &|sn| filter.matches(sn))?;
    for (id, e) in &planned.unreadable {
        eprintln!(
            "warning: snapshot {} is unreadable and is never removed by a policy (remove it by id if you mean to): {e}",
            id.short()
        );
    }
    let soon = Timestamp::now() + SignedDuration::from_mins(5);
    for d in planned
        .plan
        .groups
        .iter()
        .flat_map(|g| &g.snapshots)
        .filter(|d| d.time > soon)
    {
        eprintln!(
            "warning: snapshot {} is dated in the future ({}); --keep-within* windows of its group are measured from it",
            d.id.short(),
            d.time
        );
    }
    let plan = &planned.plan;
    let doomed = planned.doomed();
    let kept = plan.kept().count();
    if g.chatty() {
        print_plan(plan, &policy, a.group_by, &tz);
    }
    let (removed, failed) = if a.dry_run {
        (doomed, Vec::new())
    } else {
        delete(&s.repo, &lock, &doomed, &cancel, g.chatty())?
    };
    lock.release()?;
    let pruned = then_prune(g, &s.repo, &a, &failed, &cancel)?;
    if g.json {
        print_json(&json!({
            "prune": pruned,
            "groups": plan.groups.iter().map(|grp| json!({
                "key": grp.key,
                "snapshots": grp.snapshots.iter().map(|d| json!({
                    "id": d.id.to_hex(),
                    "time": d.time,
                    "action": if d.keep() { "keep" } else { "remove" },
                    "reasons": d.reasons,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "removed": removed.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "dry_run": a.dry_run,
        }))?;
    } else if !g.quiet {
        summary(
            kept + failed.len(),
            removed.len(),
            a.dry_run,
            pruned.is_some(),
        );
    }
    finish(&failed, removed.len())
}

/// Removes exactly the snapshots named on the command line (also damaged ones).
fn forget_ids(g: &GlobalArgs, a: &Args) -> Result<ExitCode> {
    let s = open(g)?;
    let lock = g.lock_shared(&s.repo, "forget")?;
    let cancel = g.cancel_on_signal(s.repo.runtime())?;
    let listed = s.repo.list_snapshots_checked()?;
    // Resolve every id before deleting anything, so a typo removes nothing.
    let mut doomed: Vec<SnapshotId> = Vec::new();
    for reference in &a.ids {
        let (id, damaged) = forget::resolve(&listed, reference)?;
        if let Some(e) = damaged {
            eprintln!("warning: removing damaged snapshot {}: {e}", id.short());
        }
        if !doomed.contains(&id) {
            doomed.push(id);
        }
    }
    if g.chatty() && a.dry_run {
        for id in &doomed {
            println!("would remove snapshot {}", id.short());
        }
    }
    let (removed, failed) = if a.dry_run {
        (doomed, Vec::new())
    } else {
        delete(&s.repo, &lock, &doomed, &cancel, g.chatty())?
    };
    lock.release()?;
    let pruned = then_prune(g, &s.repo, a, &failed, &cancel)?;
    if g.json {
        print_json(&json!({
            "prune": pruned,
            "groups": [],
            "removed": removed.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "dry_run": a.dry_run,
        }))?;
    } else if !g.quiet {
        summary(
            listed.len() - removed.len(),
            removed.len(),
            a.dry_run,
            pruned.is_some(),
        );
    }
    finish(&failed, removed.len())
}

/// Deletes through the library engine, reporting each snapshot as it goes.
fn delete(
    repo: &Repository,
    lock: &SharedLock,
    ids: &[SnapshotId],
    cancel: &CancelToken,
    chatty: bool,
) -> Result<(Vec<SnapshotId>, forget::Failures)> {
    let r = forget::remove_snapshots(repo, lock, ids, cancel, &mut |id, err| match err {
        None if chatty => println!("removed snapshot {}", id.short()),
        None => {}
        Some(e) => eprintln!("error: cannot remove snapshot {}: {e}", id.short()),
    })?;
    Ok((r.removed, r.failed))
}

/// The plan, group by group: every snapshot with its verdict and reasons.
fn print_plan(plan: &Plan, policy: &Policy, group_by: GroupBy, tz: &TimeZone) {
    let zone = tz.iana_name().unwrap_or("local time");
    println!("applying policy: keep {policy} (grouped by {group_by}; calendar in {zone})");
    for grp in &plan.groups {
        println!();
        println!("snapshots for {}:", grp.key);
        println!("{:<10} {:<26} {:<7} reasons", "id", "time", "action");
        for d in &grp.snapshots {
            let time = d.time.to_zoned(tz.clone());
            let reasons: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
            let line = format!(
                "{:<10} {:<26} {:<7} {}",
                d.id.short(),
                time.strftime("%Y-%m-%d %H:%M:%S %:z").to_string(),
                if d.keep() { "keep" } else { "remove" },
                reasons.join(", ")
            );
            println!("{}", line.trim_end());
        }
    }
    println!();
}

/// The closing line.
fn summary(kept: usize, removed: usize, dry_run: bool, pruned: bool) {
    if dry_run {
        println!("dry run: would keep {kept} and remove {removed} snapshots; nothing was removed");
    } else if pruned {
        println!("kept {kept}, removed {removed} snapshots and pruned");
    } else {
        println!("kept {kept}, removed {removed} snapshots; run `lifeboat prune` (or forget --prune) to free space");
    }
}

/// Exit 0, or an error (exit 1) when some deletes failed; they were reported one by one.
/// Runs prune after a successful forget when `--prune` was given.
fn then_prune(
    g: &GlobalArgs,
    repo: &Repository,
    a: &Args,
    failed: &[(SnapshotId, Error)],
    cancel: &CancelToken,
) -> Result<Option<PruneReport>> {
    if !a.prune || a.dry_run || !failed.is_empty() {
        return Ok(None);
    }
    let opts = PruneOptions {
        max_unused: a.max_unused,
        dry_run: false,
        // The same token: a Ctrl-C during the forget must not be missed by the prune.
        cancel: cancel.clone(),
    };
    crate::prune::run_with(g, repo, &opts, !g.json).map(Some)
}

fn finish(failed: &[(SnapshotId, Error)], removed: usize) -> Result<ExitCode> {
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    Err(anyhow!(
        "{} snapshots could not be removed ({removed} were); run `lifeboat forget` again",
        failed.len()
    ))
}
