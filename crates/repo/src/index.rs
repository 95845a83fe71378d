//! Index files (which blob is where) and the compact in-memory index built from them.
//!
//! Index file plaintext: `"LBIX" ‖ u32 version ‖ u32 pack_count ‖ (pack_id[32] ‖ u32 n ‖
//! entry[46]×n)*`, zstd-compressed, then sealed. The in-memory form is one sorted `Vec` of
//! 52-byte entries plus a 32-byte id per pack: 52 bytes per blob, no per-entry allocation.

use std::collections::HashMap;

use lifeboat_types::{BlobId, IndexId, PackId};

use crate::crypto::MasterKey;
use crate::pack::{BlobKind, PackEntry, ENTRY_LEN};

/// Index file format version.
pub const INDEX_VERSION: u32 = 1;
const MAGIC: &[u8; 4] = b"LBIX";
const AAD: &[u8] = b"lifeboat index v1";
/// Packs per index file before a new file is started (keeps files a few MiB).
pub const MAX_PACKS_PER_INDEX_FILE: usize = 256;
/// Entries per index file before a new file is started: packs of tiny blobs hold thousands
/// each, and a file is decoded whole when loaded.
pub const MAX_ENTRIES_PER_INDEX_FILE: usize = 65_536;

/// Object name of an index file.
pub fn index_key(id: &IndexId) -> String {
    format!("index/{}", id.to_hex())
}

/// The packs one index file describes.
pub type IndexContents = Vec<(PackId, Vec<PackEntry>)>;

/// Encodes and seals an index file; returns its id and stored bytes.
pub fn encode_index(key: &MasterKey, packs: &[(PackId, Vec<PackEntry>)]) -> (IndexId, Vec<u8>) {
    let blobs: usize = packs.iter().map(|(_, e)| e.len()).sum();
    let mut plain = Vec::with_capacity(12 + packs.len() * 36 + blobs * ENTRY_LEN);
    plain.extend_from_slice(MAGIC);
    plain.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    plain.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for (id, entries) in packs {
        plain.extend_from_slice(&id.0);
        plain.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            e.encode(&mut plain);
        }
    }
    let compressed = zstd::bulk::compress(&plain, 3).expect("zstd compresses any input");
    let stored = lifeboat_crypto::seal(key.aead(), AAD, &compressed);
    (IndexId(*blake3::hash(&stored).as_bytes()), stored)
}

/// Opens and decodes an index file; errors say what failed.
pub fn decode_index(key: &MasterKey, stored: &[u8]) -> Result<IndexContents, String> {
    let compressed = lifeboat_crypto::open(key.aead(), AAD, stored).map_err(|e| e.to_string())?;
    let plain = zstd::stream::decode_all(&compressed[..]).map_err(|e| format!("zstd: {e}"))?;
    if plain.len() < 12 || &plain[..4] != MAGIC {
        return Err("bad index magic".into());
    }
    let u = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let version = u(&plain[4..8]);
    if version != INDEX_VERSION {
        return Err(format!("index format version {version} is not supported"));
    }
    let count = u(&plain[8..12]) as usize;
    let mut pos = 12;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let head = plain.get(pos..pos + 36).ok_or("index truncated")?;
        let id = PackId(head[..32].try_into().expect("32 bytes"));
        let n = u(&head[32..36]) as usize;
        pos += 36;
        let body = plain
            .get(pos..pos + n * ENTRY_LEN)
            .ok_or("index truncated")?;
        let entries = body
            .chunks_exact(ENTRY_LEN)
            .map(|b| PackEntry::decode(b).ok_or("malformed index entry"))
            .collect::<Result<Vec<_>, _>>()?;
        pos += n * ENTRY_LEN;
        out.push((id, entries));
    }
    if pos != plain.len() {
        return Err("trailing bytes after the last pack".into());
    }
    Ok(out)
}

const BUCKETS: usize = 1 << 16;

fn prefix(id: &BlobId) -> usize {
    u16::from_be_bytes([id.0[0], id.0[1]]) as usize
}

/// Location of one blob, as held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack holding the blob.
    pub pack: PackId,
    /// The pack entry.
    pub entry: PackEntry,
}

#[derive(Clone, Copy)]
struct Slot {
    id: BlobId,
    pack: u32,
    offset: u32,
    length: u32,
    raw_len: u32,
    kind: BlobKind,
    compressed: bool,
}

/// Every indexed blob, sorted by id for binary search.
#[derive(Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_pos: HashMap<PackId, u32>,
    slots: Vec<Slot>,
    sorted: bool,
    /// `buckets[p]..buckets[p + 1]` holds the slots whose id starts with the 16-bit prefix
    /// `p`: ids are uniform hashes, so a lookup searches ~len/65536 slots, not all of them.
    buckets: Vec<u32>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pack's entries; call [`Index::finalize`] before lookups.
    pub fn add_pack(&mut self, pack: PackId, entries: &[PackEntry]) {
        let pos = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        });
        self.slots.extend(entries.iter().map(|e| Slot {
            id: e.id,
            pack: pos,
            offset: e.offset,
            length: e.length,
            raw_len: e.raw_len,
            kind: e.kind,
            compressed: e.compressed,
        }));
        self.sorted = false;
    }

    /// Makes room for `blobs` more entries at once, so loading never doubles the slot vector.
    pub fn reserve(&mut self, blobs: usize) {
        self.slots.reserve_exact(blobs);
    }

    /// Sorts and drops exact duplicates (the same pack listed by two index files).
    pub fn finalize(&mut self) {
        self.slots
            .sort_unstable_by(|a, b| a.id.cmp(&b.id).then(a.pack.cmp(&b.pack)));
        self.slots.dedup_by(|a, b| a.id == b.id && a.pack == b.pack);
        self.buckets.clear();
        self.buckets.reserve_exact(BUCKETS + 1);
        let mut at = 0usize;
        for p in 0..=BUCKETS {
            while at < self.slots.len() && prefix(&self.slots[at].id) < p {
                at += 1;
            }
            self.buckets.push(at as u32);
        }
        // No shrink_to_fit: it would copy the whole vector; unused capacity was never touched.
        self.sorted = true;
    }

    /// First slot with an id ≥ `id`, searching only `id`'s prefix bucket.
    fn lower_bound(&self, id: &BlobId) -> usize {
        debug_assert!(self.sorted, "Index::finalize must run before lookups");
        let p = prefix(id);
        let (b0, b1) = match self.buckets.get(p..p + 2) {
            Some(b) => (b[0] as usize, b[1] as usize),
            None => (0, self.slots.len()),
        };
        b0 + self.slots[b0..b1].partition_point(|s| s.id < *id)
    }

    fn range(&self, id: &BlobId) -> &[Slot] {
        let lo = self.lower_bound(id);
        let hi = lo + self.slots[lo..].partition_point(|s| s.id == *id);
        &self.slots[lo..hi]
    }

    /// Where a blob is (the first copy if several packs hold it).
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.range(id).first().map(|s| self.location(s))
    }

    /// Every copy of a blob.
    pub fn get_all(&self, id: &BlobId) -> Vec<BlobLocation> {
        self.range(id).iter().map(|s| self.location(s)).collect()
    }

    /// True if any pack holds the blob.
    pub fn contains(&self, id: &BlobId) -> bool {
        !self.range(id).is_empty()
    }

    /// Position of a blob's first copy in the sorted index: a dense key in `0..len()`, so
    /// per-blob sets can be bitsets ([`BlobSet`]) instead of hash sets of 32-byte ids.
    pub fn position(&self, id: &BlobId) -> Option<usize> {
        let lo = self.lower_bound(id);
        (self.slots.get(lo)?.id == *id).then_some(lo)
    }

    /// The blob copy at a position (`0..len()`, sorted by blob id, copies of one blob adjacent).
    pub fn at(&self, pos: usize) -> BlobLocation {
        self.location(&self.slots[pos])
    }

    fn location(&self, s: &Slot) -> BlobLocation {
        BlobLocation {
            pack: self.packs[s.pack as usize],
            entry: PackEntry {
                kind: s.kind,
                compressed: s.compressed,
                id: s.id,
                offset: s.offset,
                length: s.length,
                raw_len: s.raw_len,
            },
        }
    }

    /// The position in [`Index::packs`] of the pack holding the copy at `pos`.
    pub fn pack_at(&self, pos: usize) -> u32 {
        self.slots[pos].pack
    }

    /// Entry positions ordered by (pack, offset): walk packs without copying the index.
    pub fn positions_by_pack(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.slots.len() as u32).collect();
        order.sort_unstable_by_key(|&i| {
            let s = &self.slots[i as usize];
            (s.pack, s.offset)
        });
        order
    }

    /// Number of blob entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No blobs.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every indexed pack.
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// The pack's position in [`Index::packs`], if indexed.
    pub fn pack_position(&self, id: &PackId) -> Option<u32> {
        self.pack_pos.get(id).copied()
    }

    /// True if the pack is indexed.
    pub fn has_pack(&self, id: &PackId) -> bool {
        self.pack_pos.contains_key(id)
    }

    /// Entries grouped by pack, each pack's entries sorted by offset (for check and repair).
    pub fn entries_by_pack(&self) -> HashMap<PackId, Vec<PackEntry>> {
        let mut out: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
        for s in &self.slots {
            let loc = self.location(s);
            out.entry(loc.pack).or_default().push(loc.entry);
        }
        for v in out.values_mut() {
            v.sort_by_key(|e| e.offset);
        }
        out
    }

    /// Bytes held per blob in memory (reported in docs and `stats`).
    pub const BYTES_PER_BLOB: usize = std::mem::size_of::<Slot>();
}

/// A set of index positions ([`Index::position`]): one bit per indexed blob, so the set of
/// blobs a whole repository references costs `len() / 8` bytes rather than ≥ 32 bytes per blob.
#[derive(Debug, Clone)]
pub struct BlobSet {
    bits: Vec<u64>,
}

impl BlobSet {
    /// An empty set sized for `index`.
    pub fn new(index: &Index) -> Self {
        BlobSet {
            bits: vec![0; index.len().div_ceil(64)],
        }
    }

    /// Adds a position; true if it was not yet in the set.
    pub fn insert(&mut self, pos: usize) -> bool {
        let (w, b) = (pos / 64, 1u64 << (pos % 64));
        let new = self.bits[w] & b == 0;
        self.bits[w] |= b;
        new
    }

    /// True if the position is in the set.
    pub fn contains(&self, pos: usize) -> bool {
        self.bits[pos / 64] & (1u64 << (pos % 64)) != 0
    }

    /// Empties the set, keeping its allocation (reused per snapshot).
    pub fn clear(&mut self) {
        self.bits.fill(0);
    }

    /// The positions in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let b = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(w * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            compressed: i.is_multiple_of(2),
            id: BlobId([i; 32]),
            offset: i as u32 * 10,
            length: 10,
            raw_len: 20,
        }
    }

    #[test]
    fn index_file_round_trip_and_lookup() {
        let key = MasterKey::generate();
        let packs = vec![
            (PackId([1; 32]), vec![entry(3), entry(1)]),
            (PackId([2; 32]), vec![entry(2)]),
        ];
        let (id, stored) = encode_index(&key, &packs);
        assert_eq!(id, IndexId(*blake3::hash(&stored).as_bytes()));
        let back = decode_index(&key, &stored).unwrap();
        assert_eq!(back, packs);
        let mut bad = stored.clone();
        bad[30] ^= 1;
        assert!(decode_index(&key, &bad).is_err());

        let mut idx = Index::new();
        for (p, e) in &back {
            idx.add_pack(*p, e);
        }
        idx.add_pack(PackId([1; 32]), &packs[0].1); // duplicate listing
        idx.finalize();
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.get(&BlobId([2; 32])).unwrap().pack, PackId([2; 32]));
        assert_eq!(idx.get(&BlobId([3; 32])).unwrap().entry, entry(3));
        assert!(!idx.contains(&BlobId([9; 32])));
        assert_eq!(Index::BYTES_PER_BLOB, 52);
    }

    #[test]
    fn positions_and_blob_sets() {
        let mut idx = Index::new();
        idx.add_pack(PackId([1; 32]), &[entry(5), entry(1)]);
        idx.add_pack(PackId([2; 32]), &[entry(5), entry(3)]);
        idx.finalize();
        // Sorted by id; blob 5's two copies are adjacent and `position` names the first.
        assert_eq!(idx.position(&BlobId([1; 32])), Some(0));
        assert_eq!(idx.position(&BlobId([3; 32])), Some(1));
        assert_eq!(idx.position(&BlobId([5; 32])), Some(2));
        assert_eq!(idx.at(3).entry.id, BlobId([5; 32]));
        assert_eq!(idx.at(3).pack, PackId([2; 32]));
        assert_eq!(idx.position(&BlobId([4; 32])), None);
        assert_eq!(idx.position(&BlobId([9; 32])), None);

        let mut big = Index::new();
        let entries: Vec<PackEntry> = (0..=200u8).map(entry).collect();
        big.add_pack(PackId([7; 32]), &entries);
        big.finalize();
        let mut set = BlobSet::new(&big);
        for p in [0, 63, 64, 127, 200] {
            assert!(set.insert(p));
        }
        assert!(!set.insert(64));
        assert!(set.contains(127) && !set.contains(128));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 63, 64, 127, 200]);
        set.clear();
        assert_eq!(set.iter().count(), 0);
    }
}
