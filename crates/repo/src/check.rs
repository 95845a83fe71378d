//! `check`: structure (snapshots, index, pack trailers, trees) and optionally every blob's bytes.
//!
//! Every finding names the damaged object and the snapshots that depend on it, so an operator
//! knows what is lost and what still restores.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use lifeboat_types::{BlobId, CancelToken, IndexId, PackId, SnapshotId};
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::error::{stop_if_cancelled, Error, Result};
use crate::index::{decode_index, index_key, Index};
use crate::lock::WriteLock;
use crate::pack::{pack_key, parse_trailer, PackEntry};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::NodeKind;
use crate::verified;

/// How much pack data to read back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// Structure only (trailers, trees).
    None,
    /// Every pack.
    All,
    /// This percentage of packs, chosen at random.
    SubsetPercent(f64),
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Data is damaged or missing.
    Error,
    /// Harmless but worth knowing (e.g. leftovers of an interrupted backup).
    Warning,
}

/// One problem.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Object name in the repository (e.g. `data/ab/ab12…`, `index/…`, `snapshots/…`).
    pub object: String,
    /// What is wrong.
    pub message: String,
    /// Snapshots that cannot be fully restored because of it.
    pub snapshots: Vec<String>,
}

/// The result of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Everything found.
    pub findings: Vec<Finding>,
    /// Snapshots read.
    pub snapshots: usize,
    /// Index files read.
    pub index_files: usize,
    /// Packs in the repository.
    pub packs: usize,
    /// Distinct trees walked.
    pub trees: usize,
    /// Packs whose data was read back.
    pub packs_read: usize,
    /// Blobs decrypted and re-hashed.
    pub blobs_verified: u64,
    /// Bytes read back.
    pub bytes_read: u64,
    /// Packs whose data no check has ever read back.
    pub packs_never_verified: usize,
    /// Their bytes.
    pub bytes_never_verified: u64,
    /// The oldest last-verification time among packs verified at least once.
    pub oldest_verified: Option<jiff::Timestamp>,
    /// Non-fatal problems reading verification records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl CheckReport {
    /// True when no error-level finding exists.
    pub fn is_ok(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

struct Checker<'a> {
    repo: &'a Repository,
    cancel: &'a CancelToken,
    report: CheckReport,
    /// Damaged blob → indexes of findings about it.
    bad_blobs: HashMap<BlobId, Vec<usize>>,
    /// Damaged or missing pack → findings.
    bad_packs: HashMap<PackId, Vec<usize>>,
}

impl Checker<'_> {
    fn add(&mut self, severity: Severity, object: String, message: String) -> usize {
        self.report.findings.push(Finding {
            severity,
            object,
            message,
            snapshots: Vec::new(),
        });
        self.report.findings.len() - 1
    }
}

/// Runs a check without recording which packs were verified (read-only).
pub fn run(repo: &Repository, read_data: ReadData, progress: &dyn Progress) -> Result<CheckReport> {
    run_with(repo, read_data, None, &CancelToken::new(), progress)
}

/// Runs a check. With `record`, packs whose data verified cleanly are recorded with the time,
/// and a subset check reads the least recently verified packs first, so repeated subset
/// checks cover the whole repository. Recording is a write, so it needs a lock. A cancelled
/// check returns [`Error::Cancelled`] and records nothing.
pub fn run_with(
    repo: &Repository,
    read_data: ReadData,
    record: Option<&dyn WriteLock>,
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let mut c = Checker {
        repo,
        cancel,
        report: CheckReport::default(),
        bad_blobs: HashMap::new(),
        bad_packs: HashMap::new(),
    };

    stop_if_cancelled(cancel)?;
    // Snapshots.
    let mut snaps: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for (id, r) in repo.list_snapshots_checked()? {
        match r {
            Ok(s) => snaps.push((id, s)),
            Err(e) => {
                c.add(
                    Severity::Error,
                    format!("snapshots/{id}"),
                    format!("snapshot {} is unreadable: {e}", id.short()),
                );
            }
        }
    }
    c.report.snapshots = snaps.len();

    stop_if_cancelled(cancel)?;
    // Index files, each on its own so a damaged one is named.
    let mut index = Index::new();
    let metas = repo.block_on(repo.store().list("index/"))?;
    let mut any_bad_index = false;
    for m in &metas {
        let Some(id) = m
            .key
            .strip_prefix("index/")
            .and_then(|k| k.parse::<IndexId>().ok())
        else {
            c.add(
                Severity::Warning,
                m.key.clone(),
                "unexpected object in index/".into(),
            );
            continue;
        };
        let key = index_key(&id);
        let bytes = match repo.block_on(repo.store().get(&key)) {
            Ok(b) => b,
            Err(e) => {
                any_bad_index = true;
                c.add(Severity::Error, key, format!("cannot read index file: {e}"));
                continue;
            }
        };
        if IndexId(*blake3::hash(&bytes).as_bytes()) != id {
            any_bad_index = true;
            c.add(
                Severity::Error,
                key.clone(),
                "index file content does not match its name (damaged)".into(),
            );
        }
        match decode_index(repo.key(), &bytes) {
            Ok(packs) => {
                c.report.index_files += 1;
                for (p, e) in &packs {
                    index.add_pack(*p, e);
                }
            }
            Err(e) => {
                any_bad_index = true;
                c.add(
                    Severity::Error,
                    key,
                    format!("index file is damaged: {e}; run `lifeboat repair index`"),
                );
            }
        }
    }

    stop_if_cancelled(cancel)?;
    // Packs present vs indexed; trailers vs index.
    let present: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    c.report.packs = present.len();
    index.finalize();
    let by_pack = index.entries_by_pack();
    for p in index.packs() {
        if !present.contains_key(p) {
            let f = c.add(
                Severity::Error,
                pack_key(p),
                "pack is in the index but missing from the repository".into(),
            );
            c.bad_packs.entry(*p).or_default().push(f);
        }
    }
    let mut unindexed: Vec<(PackId, u64)> = present
        .iter()
        .filter(|(p, _)| !index.has_pack(p))
        .map(|(p, s)| (*p, *s))
        .collect();
    unindexed.sort();
    let to_read: Vec<(PackId, u64)> = present
        .iter()
        .filter(|(p, _)| index.has_pack(p))
        .map(|(p, s)| (*p, *s))
        .collect();
    for (p, r) in repo.read_trailers(&to_read) {
        match r {
            Ok(entries) => {
                let mut mine: Vec<PackEntry> = entries;
                mine.sort_by_key(|e| e.offset);
                if by_pack.get(&p).is_some_and(|v| *v != mine) {
                    let f = c.add(
                        Severity::Error,
                        pack_key(&p),
                        "pack trailer and index disagree".into(),
                    );
                    c.bad_packs.entry(p).or_default().push(f);
                }
            }
            Err(e) => {
                let f = c.add(Severity::Error, pack_key(&p), format!("{e}"));
                c.bad_packs.entry(p).or_default().push(f);
            }
        }
    }
    if !unindexed.is_empty() {
        let mut extra = Index::new();
        for (p, r) in repo.read_trailers(&unindexed) {
            match r {
                Ok(entries) => {
                    if any_bad_index {
                        extra.add_pack(p, &entries);
                    }
                    c.add(
                        Severity::Warning,
                        pack_key(&p),
                        "pack is not in any index (left by an interrupted backup, or its index is damaged); \
                         `lifeboat repair index` adds it"
                            .into(),
                    );
                }
                Err(e) => {
                    c.add(
                        Severity::Warning,
                        pack_key(&p),
                        format!("unindexed pack is unreadable: {e}"),
                    );
                }
            }
        }
        if any_bad_index {
            // Use the trailers so tree checks below judge snapshots by what really exists.
            for (p, e) in extra.entries_by_pack() {
                index.add_pack(p, &e);
            }
            index.finalize();
        }
    }

    stop_if_cancelled(cancel)?;
    // Read data, least recently verified first.
    let (mut verified_at, records, notes) = verified::load(repo)?;
    c.report.notes = notes;
    if read_data != ReadData::None {
        let mut packs: Vec<(PackId, u64)> = present.iter().map(|(p, s)| (*p, *s)).collect();
        packs.shuffle(&mut rand::thread_rng());
        packs.sort_by_key(|(p, _)| verified_at.get(p).copied().unwrap_or(i64::MIN));
        if let ReadData::SubsetPercent(pct) = read_data {
            let n = ((packs.len() as f64 * pct / 100.0).ceil() as usize).min(packs.len());
            packs.truncate(n);
        }
        let bad = read_packs(&mut c, &packs, progress);
        stop_if_cancelled(cancel)?;
        let now = jiff::Timestamp::now().as_second();
        let fresh: verified::VerifiedAt = packs
            .iter()
            .filter(|(p, _)| !bad.contains(p))
            .map(|(p, _)| (*p, now))
            .collect();
        if let Some(lock) = record {
            let damaged = !c.report.notes.is_empty();
            verified::record(repo, lock, &fresh, &verified_at, &records, damaged, &|p| {
                present.contains_key(p)
            })?;
        }
        verified_at.extend(fresh);
    }
    for (p, size) in &present {
        if !verified_at.contains_key(p) {
            c.report.packs_never_verified += 1;
            c.report.bytes_never_verified += size;
        }
    }
    c.report.oldest_verified = present
        .keys()
        .filter_map(|p| verified_at.get(p))
        .min()
        .and_then(|t| jiff::Timestamp::from_second(*t).ok());

    stop_if_cancelled(cancel)?;
    // Trees, with memoized damage attribution per snapshot.
    let mut memo: HashMap<BlobId, BTreeSet<usize>> = HashMap::new();
    for (sid, snap) in &snaps {
        stop_if_cancelled(cancel)?;
        let damage = tree_damage(&mut c, &index, &snap.tree, &mut memo);
        for f in damage {
            c.report.findings[f].snapshots.push(sid.short());
        }
    }
    c.report.trees = memo.len();
    Ok(c.report)
}

/// Findings that make the tree `id` (or anything below it) unrestorable.
fn tree_damage(
    c: &mut Checker<'_>,
    index: &Index,
    id: &BlobId,
    memo: &mut HashMap<BlobId, BTreeSet<usize>>,
) -> BTreeSet<usize> {
    if let Some(d) = memo.get(id) {
        return d.clone();
    }
    let mut damage = blob_damage(c, index, id, "tree");
    if damage.is_empty() {
        match c.repo.read_tree(index, id) {
            Ok(tree) => {
                for node in &tree.nodes {
                    match node.kind {
                        NodeKind::Dir => match &node.subtree {
                            Some(sub) => damage.extend(tree_damage(c, index, sub, memo)),
                            None => {
                                let f = c.add(
                                    Severity::Error,
                                    format!("tree {id}"),
                                    format!("directory {} has no subtree", node.name.display()),
                                );
                                damage.insert(f);
                            }
                        },
                        NodeKind::File => {
                            for b in &node.content {
                                damage.extend(blob_damage(c, index, b, "data"));
                            }
                        }
                        NodeKind::Symlink => {}
                    }
                }
            }
            Err(e) => {
                let loc = index.get(id).map(|l| pack_key(&l.pack)).unwrap_or_default();
                let f = c.add(Severity::Error, loc, format!("tree {}: {e}", id.short()));
                c.bad_blobs.entry(*id).or_default().push(f);
                damage.insert(f);
            }
        }
    }
    memo.insert(*id, damage.clone());
    damage
}

/// Findings that make one blob unreadable (missing, in a damaged pack, or failed read-data).
fn blob_damage(c: &mut Checker<'_>, index: &Index, id: &BlobId, what: &str) -> BTreeSet<usize> {
    if let Some(f) = c.bad_blobs.get(id) {
        return f.iter().copied().collect();
    }
    let locs = index.get_all(id);
    if locs.is_empty() {
        let f = c.add(
            Severity::Error,
            format!("{what} blob {id}"),
            format!("{what} blob {} is referenced but in no pack", id.short()),
        );
        c.bad_blobs.insert(*id, vec![f]);
        return [f].into();
    }
    // Usable if any copy lives in an undamaged pack.
    if locs.iter().any(|l| !c.bad_packs.contains_key(&l.pack)) {
        return BTreeSet::new();
    }
    locs.iter()
        .flat_map(|l| c.bad_packs[&l.pack].iter().copied())
        .collect()
}

/// Downloads packs and authenticates + re-hashes every blob in them.
fn read_packs(
    c: &mut Checker<'_>,
    packs: &[(PackId, u64)],
    progress: &dyn Progress,
) -> std::collections::HashSet<PackId> {
    let repo = c.repo;
    let next = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let blobs = AtomicU64::new(0);
    // (pack, damaged blob if known, message, whole pack unusable)
    type Problem = (PackId, Option<BlobId>, String, bool);
    let problems: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    progress.add_total(packs.iter().map(|p| p.1).sum());
    // One whole pack in memory per thread: cores, not more, keeps RSS near 2 × pack size.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if c.cancel.is_cancelled() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((pack, size)) = packs.get(i) else {
                    return;
                };
                let key = pack_key(pack);
                let data = match repo.block_on(repo.store().get(&key)) {
                    Ok(d) => d,
                    Err(e) => {
                        problems.lock().expect("lock").push((
                            *pack,
                            None,
                            format!("cannot read: {e}"),
                            true,
                        ));
                        continue;
                    }
                };
                bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                progress.advance(*size);
                if PackId(*blake3::hash(&data).as_bytes()) != *pack {
                    let msg = "pack content does not match its name (damaged)".to_string();
                    problems
                        .lock()
                        .expect("lock")
                        .push((*pack, None, msg, false));
                }
                let entries = match parse_trailer(repo.key(), &data, data.len() as u64) {
                    Ok(e) => e,
                    Err(e) => {
                        problems
                            .lock()
                            .expect("lock")
                            .push((*pack, None, e.to_string(), true));
                        continue;
                    }
                };
                for e in entries {
                    let sealed = &data[e.offset as usize..(e.offset + e.length) as usize];
                    let r = repo.open_blob(&key, &e, sealed).and_then(|plain| {
                        if repo.key().blob_id(&plain) == e.id {
                            Ok(())
                        } else {
                            Err(Error::corrupt(
                                &key,
                                format!("blob {} does not match its id", e.id.short()),
                            ))
                        }
                    });
                    match r {
                        Ok(()) => {
                            blobs.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => problems.lock().expect("lock").push((
                            *pack,
                            Some(e.id),
                            err.to_string(),
                            false,
                        )),
                    }
                }
            });
        }
    });
    c.report.packs_read = packs.len();
    c.report.bytes_read = bytes.into_inner();
    c.report.blobs_verified = blobs.into_inner();
    let mut bad = std::collections::HashSet::new();
    for (pack, blob, msg, whole) in problems.into_inner().expect("lock") {
        bad.insert(pack);
        let f = c.add(Severity::Error, pack_key(&pack), msg);
        if let Some(b) = blob {
            c.bad_blobs.entry(b).or_default().push(f);
        }
        if whole {
            c.bad_packs.entry(pack).or_default().push(f);
        }
    }
    bad
}
