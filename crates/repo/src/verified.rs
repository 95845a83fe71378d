//! When each pack's data was last read back and verified: continuous verification.
//!
//! Each `check --read-data[-subset]` run appends one object `verified/<random>` listing the
//! packs it verified cleanly and when. Appending (never rewriting) keeps concurrent checks
//! safe; once there are many such objects a check merges the ones it read into one and deletes
//! exactly those, dropping packs that no longer exist.
//!
//! Object format: sealed(zstd("LBVF" ‖ u32 version ‖ u32 count ‖ (pack_id[32] ‖ i64 unix
//! seconds)×count)), AAD `"lifeboat verified v1"` ‖ object name.

use std::collections::HashMap;

use futures::stream::{self, StreamExt};
use lifeboat_types::PackId;

use crate::error::{Error, Result};
use crate::lock::WriteLock;
use crate::repository::Repository;

const MAGIC: &[u8; 4] = b"LBVF";
/// Verification record format version.
pub const VERIFIED_VERSION: u32 = 1;
const AAD: &[u8] = b"lifeboat verified v1";
/// Records beyond this many are merged into one.
const MERGE_AT: usize = 32;

/// Last verification time (unix seconds) per pack.
pub type VerifiedAt = HashMap<PackId, i64>;

fn aad(object: &str) -> Vec<u8> {
    let mut a = AAD.to_vec();
    a.extend_from_slice(object.as_bytes());
    a
}

fn encode(entries: &VerifiedAt) -> Vec<u8> {
    let mut plain = Vec::with_capacity(12 + entries.len() * 40);
    plain.extend_from_slice(MAGIC);
    plain.extend_from_slice(&VERIFIED_VERSION.to_le_bytes());
    plain.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort();
    for (p, t) in sorted {
        plain.extend_from_slice(&p.0);
        plain.extend_from_slice(&t.to_le_bytes());
    }
    zstd::bulk::compress(&plain, 3).expect("zstd compresses any input")
}

fn decode(plain: &[u8]) -> std::result::Result<VerifiedAt, String> {
    let plain = zstd::stream::decode_all(plain).map_err(|e| format!("zstd: {e}"))?;
    if plain.len() < 12 || &plain[..4] != MAGIC {
        return Err("bad magic".into());
    }
    let version = u32::from_le_bytes(plain[4..8].try_into().expect("4 bytes"));
    if version != VERIFIED_VERSION {
        return Err(format!("version {version} is not supported"));
    }
    let n = u32::from_le_bytes(plain[8..12].try_into().expect("4 bytes")) as usize;
    let body = &plain[12..];
    if body.len() != n * 40 {
        return Err("truncated".into());
    }
    Ok(body
        .chunks_exact(40)
        .map(|c| {
            (
                PackId(c[..32].try_into().expect("32 bytes")),
                i64::from_le_bytes(c[32..].try_into().expect("8 bytes")),
            )
        })
        .collect())
}

/// Every verification record merged (latest time per pack), plus the record objects read.
///
/// A damaged record only costs its information (those packs count as never verified), so it
/// is reported as a warning, not an error.
pub fn load(repo: &Repository) -> Result<(VerifiedAt, Vec<String>, Vec<String>)> {
    let metas = repo.block_on(repo.store().list("verified/"))?;
    let results: Vec<(String, Result<VerifiedAt>)> = repo.block_on(
        stream::iter(metas)
            .map(|m| async move {
                let r = match repo.store().get(&m.key).await {
                    Ok(b) => lifeboat_crypto::open(repo.key().aead(), &aad(&m.key), &b)
                        .map_err(|e| e.to_string())
                        .and_then(|p| decode(&p))
                        .map_err(|e| Error::corrupt(&m.key, e)),
                    Err(e) => Err(e.into()),
                };
                (m.key, r)
            })
            .buffer_unordered(16)
            .collect(),
    );
    let mut merged = VerifiedAt::new();
    let mut objects = Vec::new();
    let mut warnings = Vec::new();
    for (key, r) in results {
        match r {
            Ok(v) => {
                for (p, t) in v {
                    let e = merged.entry(p).or_insert(t);
                    *e = (*e).max(t);
                }
                objects.push(key);
            }
            Err(e) => {
                warnings.push(format!("{e} (it is replaced at the next recording check)"));
                // Listed as read, so the next merge deletes it.
                objects.push(key);
            }
        }
    }
    Ok((merged, objects, warnings))
}

/// Appends a record of packs verified now; merges old records when there are many (or when
/// `force_merge`, e.g. to replace a damaged one).
pub fn record(
    repo: &Repository,
    lock: &dyn WriteLock,
    fresh: &VerifiedAt,
    known: &VerifiedAt,
    read_objects: &[String],
    force_merge: bool,
    existing_packs: &dyn Fn(&PackId) -> bool,
) -> Result<()> {
    let merge = force_merge || read_objects.len() >= MERGE_AT;
    let mut out = if merge {
        known
            .iter()
            .filter(|(p, _)| existing_packs(p))
            .map(|(p, t)| (*p, *t))
            .collect()
    } else {
        VerifiedAt::new()
    };
    if fresh.is_empty() && !merge {
        return Ok(());
    }
    for (p, t) in fresh {
        let e = out.entry(*p).or_insert(*t);
        *e = (*e).max(*t);
    }
    let object = format!("verified/{}", hex::encode(rand::random::<[u8; 16]>()));
    let sealed = lifeboat_crypto::seal(repo.key().aead(), &aad(&object), &encode(&out));
    lock.fence(repo)?;
    repo.block_on(repo.store().put(&object, sealed.into()))?;
    if merge {
        // Only the records this run read: a concurrent check's new record survives.
        for o in read_objects {
            repo.block_on(repo.store().delete(o))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut v = VerifiedAt::new();
        v.insert(PackId([1; 32]), 1_700_000_000);
        v.insert(PackId([2; 32]), -5);
        assert_eq!(decode(&encode(&v)).unwrap(), v);
        let mut bad = zstd::stream::decode_all(&encode(&v)[..]).unwrap();
        bad.truncate(bad.len() - 1);
        assert!(decode(&zstd::bulk::compress(&bad, 1).unwrap()).is_err());
    }
}
