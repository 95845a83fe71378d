//! Pack files: sealed blobs back to back, then a sealed trailer listing them.
//!
//! The trailer makes every pack self-describing, so `repair index` can rebuild the index from
//! packs alone. Layout (all integers little-endian):
//! `blob* ‖ sealed(trailer) ‖ u32 sealed_trailer_len ‖ u32 version ‖ "LBPK"`.

use lifeboat_types::{BlobId, PackId};

use crate::crypto::{AuthError, MasterKey};

/// Pack format version written in every footer.
pub const PACK_VERSION: u32 = 1;
/// Footer length in bytes.
pub const FOOTER_LEN: usize = 12;
const MAGIC: &[u8; 4] = b"LBPK";
const TRAILER_AAD: &[u8] = b"lifeboat pack trailer v1";
/// Encoded length of one entry in trailers and index files.
pub const ENTRY_LEN: usize = 46;
const FLAG_ZSTD: u8 = 1;

/// What a blob holds; data and tree blobs live in separate packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobKind {
    /// File content.
    Data = 0,
    /// A directory listing.
    Tree = 1,
}

impl BlobKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// Where a blob lives inside its pack and how to decode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// Data or tree.
    pub kind: BlobKind,
    /// Stored zstd-compressed.
    pub compressed: bool,
    /// Content id.
    pub id: BlobId,
    /// Byte offset of the sealed blob.
    pub offset: u32,
    /// Sealed length (nonce + ciphertext + tag).
    pub length: u32,
    /// Plaintext length after decompression.
    pub raw_len: u32,
}

impl PackEntry {
    /// Encodes the fixed 46-byte form shared by trailers and index files.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.push(if self.compressed { FLAG_ZSTD } else { 0 });
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
    }

    /// Decodes one entry; `None` if malformed.
    pub fn decode(b: &[u8]) -> Option<PackEntry> {
        if b.len() < ENTRY_LEN || b[1] & !FLAG_ZSTD != 0 {
            return None;
        }
        let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Some(PackEntry {
            kind: BlobKind::from_u8(b[0])?,
            compressed: b[1] & FLAG_ZSTD != 0,
            id: BlobId(b[2..34].try_into().expect("32 bytes")),
            offset: u(34),
            length: u(38),
            raw_len: u(42),
        })
    }

    /// Associated data binding a sealed blob to its kind and id (a swapped blob fails to open).
    pub fn aad(kind: BlobKind, id: &BlobId) -> [u8; 33] {
        let mut a = [0u8; 33];
        a[0] = kind as u8;
        a[1..].copy_from_slice(&id.0);
        a
    }
}

/// Object name of a pack.
pub fn pack_key(id: &PackId) -> String {
    let h = id.to_hex();
    format!("data/{}/{}", &h[..2], h)
}

/// Parses a pack id back out of its object name.
pub fn pack_id_from_key(key: &str) -> Option<PackId> {
    key.strip_prefix("data/")?.rsplit('/').next()?.parse().ok()
}

/// Accumulates sealed blobs of one kind until the pack is big enough to upload.
pub struct PackWriter {
    kind: BlobKind,
    /// Bytes reserved up front for each pack, so the buffer never doubles-and-copies.
    reserve: usize,
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    /// Content hash of `bytes`.
    pub id: PackId,
    /// The whole pack file.
    pub bytes: Vec<u8>,
    /// Blobs inside.
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    /// An empty pack for blobs of `kind`.
    pub fn new(kind: BlobKind) -> Self {
        Self::with_capacity(kind, 0)
    }

    /// A pack writer that reserves `reserve` bytes when a pack starts.
    pub fn with_capacity(kind: BlobKind, reserve: usize) -> Self {
        PackWriter {
            kind,
            reserve,
            buf: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Blobs so far.
    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    /// No blobs yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Compresses-or-not was decided by the caller; seals `payload` straight into the pack.
    pub fn add_plain(
        &mut self,
        key: &MasterKey,
        id: BlobId,
        payload: &[u8],
        raw_len: u32,
        compressed: bool,
    ) {
        if self.buf.capacity() == 0 {
            self.buf.reserve(self.reserve);
        }
        let offset = u32::try_from(self.buf.len()).expect("packs stay far below 4 GiB");
        let aad = PackEntry::aad(self.kind, &id);
        lifeboat_crypto::seal_into(key.aead(), &aad, payload, &mut self.buf);
        let length = self.buf.len() as u32 - offset;
        self.entries.push(PackEntry {
            kind: self.kind,
            compressed,
            id,
            offset,
            length,
            raw_len,
        });
    }

    /// Appends a blob that is already sealed (prune and copy between repositories sharing
    /// a key move blobs without re-encrypting them; the AAD binds kind and id, not position).
    pub fn add_sealed(&mut self, id: BlobId, sealed: &[u8], raw_len: u32, compressed: bool) {
        if self.buf.capacity() == 0 {
            self.buf.reserve(self.reserve);
        }
        let offset = u32::try_from(self.buf.len()).expect("packs stay far below 4 GiB");
        self.buf.extend_from_slice(sealed);
        self.entries.push(PackEntry {
            kind: self.kind,
            compressed,
            id,
            offset,
            length: sealed.len() as u32,
            raw_len,
        });
    }

    /// Writes the trailer and footer; the writer is left empty for the next pack.
    pub fn finish(&mut self, key: &MasterKey) -> FinishedPack {
        let mut bytes = std::mem::take(&mut self.buf);
        let entries = std::mem::take(&mut self.entries);
        let mut trailer = Vec::with_capacity(4 + entries.len() * ENTRY_LEN);
        trailer.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in &entries {
            e.encode(&mut trailer);
        }
        let sealed = lifeboat_crypto::seal(key.aead(), TRAILER_AAD, &trailer);
        bytes.extend_from_slice(&sealed);
        bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&PACK_VERSION.to_le_bytes());
        bytes.extend_from_slice(MAGIC);
        let id = PackId(*blake3::hash(&bytes).as_bytes());
        FinishedPack { id, bytes, entries }
    }
}

/// Why a pack's trailer could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrailerError {
    /// Footer magic or length wrong.
    #[error("footer is malformed: {0}")]
    Malformed(String),
    /// Written by a newer lifeboat.
    #[error("pack format version {0} is not supported")]
    Version(u32),
    /// Trailer failed authentication.
    #[error("trailer failed authentication")]
    Auth,
    /// The tail fetched did not include the whole trailer; fetch this many bytes from the end.
    #[error("need {0} tail bytes")]
    NeedMore(usize),
}

impl From<AuthError> for TrailerError {
    fn from(_: AuthError) -> Self {
        TrailerError::Auth
    }
}

/// Parses the trailer from the last bytes of a pack of total length `pack_len`.
pub fn parse_trailer(
    key: &MasterKey,
    tail: &[u8],
    pack_len: u64,
) -> Result<Vec<PackEntry>, TrailerError> {
    if tail.len() < FOOTER_LEN {
        return Err(TrailerError::Malformed(
            "pack shorter than its footer".into(),
        ));
    }
    let footer = &tail[tail.len() - FOOTER_LEN..];
    if &footer[8..12] != MAGIC {
        return Err(TrailerError::Malformed("bad magic".into()));
    }
    let version = u32::from_le_bytes(footer[4..8].try_into().expect("4 bytes"));
    if version != PACK_VERSION {
        return Err(TrailerError::Version(version));
    }
    let sealed_len = u32::from_le_bytes(footer[0..4].try_into().expect("4 bytes")) as usize;
    let need = sealed_len + FOOTER_LEN;
    if need as u64 > pack_len {
        return Err(TrailerError::Malformed(format!(
            "trailer length {sealed_len} exceeds pack size"
        )));
    }
    if tail.len() < need {
        return Err(TrailerError::NeedMore(need));
    }
    let sealed = &tail[tail.len() - need..tail.len() - FOOTER_LEN];
    let plain = lifeboat_crypto::open(key.aead(), TRAILER_AAD, sealed)?;
    let count = plain
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    let count = count.ok_or_else(|| TrailerError::Malformed("empty trailer".into()))?;
    if plain.len() != 4 + count * ENTRY_LEN {
        return Err(TrailerError::Malformed(
            "trailer length does not match its count".into(),
        ));
    }
    let data_end = pack_len - need as u64;
    plain[4..]
        .chunks_exact(ENTRY_LEN)
        .map(|b| {
            let e =
                PackEntry::decode(b).ok_or_else(|| TrailerError::Malformed("bad entry".into()))?;
            if e.offset as u64 + e.length as u64 > data_end {
                return Err(TrailerError::Malformed(format!(
                    "blob {} extends past the data area",
                    e.id.short()
                )));
            }
            Ok(e)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip_and_flip_detection() {
        let key = MasterKey::generate();
        let mut w = PackWriter::new(BlobKind::Data);
        for i in 0..5u8 {
            let plain = vec![i; 100 + i as usize];
            let id = key.blob_id(&plain);
            w.add_plain(&key, id, &plain, plain.len() as u32, false);
        }
        let p = w.finish(&key);
        assert!(w.is_empty());
        assert_eq!(p.id, PackId(*blake3::hash(&p.bytes).as_bytes()));
        let got = parse_trailer(&key, &p.bytes, p.bytes.len() as u64).unwrap();
        assert_eq!(got, p.entries);
        let e = got[3];
        let blob = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
        assert_eq!(
            lifeboat_crypto::open(key.aead(), &PackEntry::aad(e.kind, &e.id), blob).unwrap(),
            vec![3u8; 103]
        );
        // Short tail asks for more.
        let tail = &p.bytes[p.bytes.len() - 20..];
        assert!(matches!(
            parse_trailer(&key, tail, p.bytes.len() as u64),
            Err(TrailerError::NeedMore(_))
        ));
        // Any flipped byte in trailer or footer is caught.
        let trailer_start = p.bytes.len() - FOOTER_LEN - (4 + 5 * ENTRY_LEN + 40);
        for i in trailer_start..p.bytes.len() {
            let mut bad = p.bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                parse_trailer(&key, &bad, bad.len() as u64).is_err(),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn keys_round_trip() {
        let id = PackId([0xab; 32]);
        assert_eq!(pack_id_from_key(&pack_key(&id)), Some(id));
        assert_eq!(pack_id_from_key("index/abc"), None);
    }
}
