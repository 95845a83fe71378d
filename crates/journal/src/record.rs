//! The on-disk record: a fixed 72-byte header, the payload, zero padding to 8 bytes.
//!
//! Layout (little endian): `magic "LBJR"` (4) · `version` (1) · `type` (1) · `reserved = 0` (2) ·
//! `payload_len` u32 · `crc32c` u32 · `lsn` u64 · `timestamp_nanos` i64 · `term` u64 ·
//! `prev_hash` (32 bytes). The CRC32C covers the segment salt, the header with the CRC field zeroed
//! and the payload. The record hash (chained into the next record) is SHA-256 of the header
//! (with its CRC) and the payload.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::RawLsn;

/// Record magic: stale or foreign bytes almost never start with it.
pub const RECORD_MAGIC: [u8; 4] = *b"LBJR";
/// Record format version written by this code.
pub const RECORD_VERSION: u8 = 1;
/// Size of the fixed record header.
pub const HEADER_LEN: usize = 72;
/// Records start on this alignment so the length word never straddles a sector.
pub const ALIGN: usize = 8;
/// Largest payload accepted, so a corrupted length cannot ask for gigabytes.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;
/// Record type for an application payload.
pub const RECORD_DATA: u8 = 1;

/// SHA-256 digest linking each record to its predecessor.
pub type Hash = [u8; 32];

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Record type (`RECORD_DATA` for application payloads).
    pub rec_type: u8,
    /// Log sequence number.
    pub lsn: RawLsn,
    /// Wall-clock time of the append, unix nanoseconds.
    pub timestamp_nanos: i64,
    /// Writer term / fencing token.
    pub term: u64,
    /// SHA-256 of the previous record (zeros before the first record).
    pub prev_hash: Hash,
    /// Application bytes (a slice of the segment buffer when read by the reader: no copy).
    pub payload: Bytes,
    /// SHA-256 of this record, the next record's `prev_hash`.
    pub hash: Hash,
}

/// Why bytes failed to decode as the expected record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Only zeros where a record header should be: the end of written data.
    #[error("no record (zeroed space)")]
    Empty,
    /// The buffer ends before the record does: a torn or short write.
    #[error("torn record: needs {needed} bytes, only {available} present")]
    Torn {
        /// Bytes the record needs (header, or header + padded payload).
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The header does not start with the record magic.
    #[error("bad record magic {found:02x?}")]
    BadMagic {
        /// First four bytes found.
        found: [u8; 4],
    },
    /// Unknown version or non-zero reserved bits.
    #[error("unsupported record version {version} / reserved {reserved}")]
    Unsupported {
        /// Version byte.
        version: u8,
        /// Reserved field.
        reserved: u16,
    },
    /// Length field above the maximum.
    #[error("record length {0} exceeds the maximum")]
    BadLength(u32),
    /// The CRC does not match (bit rot, torn write, or stale bytes under another salt).
    #[error("bad CRC32C: stored {stored:08x}, computed {computed:08x}")]
    BadCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// Padding after the payload is not zero.
    #[error("non-zero padding after the payload")]
    BadPadding,
    /// The record is intact but does not follow its predecessor.
    #[error("hash chain broken: record's prev_hash {found} does not match the previous record's hash {expected}")]
    ChainMismatch {
        /// Hash of the previous record (hex).
        expected: String,
        /// `prev_hash` stored in this record (hex).
        found: String,
    },
    /// The record is intact but carries the wrong LSN.
    #[error("expected LSN {expected}, found {found}")]
    LsnMismatch {
        /// LSN expected at this position.
        expected: RawLsn,
        /// LSN stored.
        found: RawLsn,
    },
}

impl RecordError {
    /// True when the failure looks like an incomplete write (may be a torn tail), as opposed
    /// to an intact record that is in the wrong place.
    pub fn is_tear_like(&self) -> bool {
        !matches!(
            self,
            RecordError::ChainMismatch { .. } | RecordError::LsnMismatch { .. }
        )
    }
}

/// Rounds `n` up to the record alignment.
pub fn padded(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

fn crc(salt: u64, header: &[u8], payload: &[u8]) -> u32 {
    // Same as CRC32C(salt ‖ header with bytes 12..16 zeroed ‖ payload), without a copy.
    let c = crc32c::crc32c(&salt.to_le_bytes());
    let c = crc32c::crc32c_append(c, &header[..12]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    let c = crc32c::crc32c_append(c, &header[16..HEADER_LEN]);
    crc32c::crc32c_append(c, payload)
}

fn hash(header: &[u8], payload: &[u8]) -> Hash {
    let mut s = Sha256::new();
    s.update(&header[..HEADER_LEN]);
    s.update(payload);
    s.finalize().into()
}

/// Encodes a record (padded to `ALIGN`) and returns the bytes and the record's hash.
pub fn encode(
    salt: u64,
    rec_type: u8,
    lsn: RawLsn,
    timestamp_nanos: i64,
    term: u64,
    prev_hash: &Hash,
    payload: &[u8],
) -> (Vec<u8>, Hash) {
    assert!(payload.len() <= MAX_PAYLOAD, "caller checks MAX_PAYLOAD");
    let mut out = vec![0u8; padded(HEADER_LEN + payload.len())];
    out[0..4].copy_from_slice(&RECORD_MAGIC);
    out[4] = RECORD_VERSION;
    out[5] = rec_type;
    out[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[16..24].copy_from_slice(&lsn.to_le_bytes());
    out[24..32].copy_from_slice(&timestamp_nanos.to_le_bytes());
    out[32..40].copy_from_slice(&term.to_le_bytes());
    out[40..72].copy_from_slice(prev_hash);
    out[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
    let c = crc(salt, &out, payload);
    out[12..16].copy_from_slice(&c.to_le_bytes());
    let h = hash(&out, payload);
    (out, h)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes one record at the start of `buf` under `salt`; returns it and its padded size.
/// Checks framing and CRC only; chain and LSN checks are the caller's (see [`check_follows`]).
pub fn decode(salt: u64, buf: &[u8]) -> Result<(Record, usize), RecordError> {
    let (mut rec, len, used) = decode_frame(salt, buf)?;
    rec.payload = Bytes::copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + len]);
    Ok((rec, used))
}

/// [`decode`] without copying the payload: returns the record with an empty payload, the
/// payload length (it sits at `buf[HEADER_LEN..HEADER_LEN + len]`) and the padded size.
pub(crate) fn decode_frame(salt: u64, buf: &[u8]) -> Result<(Record, usize, usize), RecordError> {
    let head = &buf[..buf.len().min(HEADER_LEN)];
    if head.iter().all(|&b| b == 0) {
        return Err(RecordError::Empty);
    }
    if buf.len() < HEADER_LEN {
        return Err(RecordError::Torn {
            needed: HEADER_LEN,
            available: buf.len(),
        });
    }
    let magic: [u8; 4] = buf[0..4].try_into().expect("4 bytes");
    if magic != RECORD_MAGIC {
        return Err(RecordError::BadMagic { found: magic });
    }
    let reserved = u16::from_le_bytes([buf[6], buf[7]]);
    if buf[4] != RECORD_VERSION || reserved != 0 {
        return Err(RecordError::Unsupported {
            version: buf[4],
            reserved,
        });
    }
    let len32 = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    let len = len32 as usize;
    if len > MAX_PAYLOAD {
        return Err(RecordError::BadLength(len32));
    }
    let total = padded(HEADER_LEN + len);
    if buf.len() < total {
        return Err(RecordError::Torn {
            needed: total,
            available: buf.len(),
        });
    }
    let payload = &buf[HEADER_LEN..HEADER_LEN + len];
    let stored = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes"));
    let computed = crc(salt, buf, payload);
    if stored != computed {
        return Err(RecordError::BadCrc { stored, computed });
    }
    if buf[HEADER_LEN + len..total].iter().any(|&b| b != 0) {
        return Err(RecordError::BadPadding);
    }
    let rec = Record {
        rec_type: buf[5],
        lsn: u64_at(buf, 16),
        timestamp_nanos: u64_at(buf, 24) as i64,
        term: u64_at(buf, 32),
        prev_hash: buf[40..72].try_into().expect("32 bytes"),
        payload: Bytes::new(),
        hash: hash(buf, payload),
    };
    Ok((rec, len, total))
}

/// Checks that `rec` is the record expected after a predecessor with hash `prev` at `lsn`.
pub fn check_follows(rec: &Record, lsn: RawLsn, prev: &Hash) -> Result<(), RecordError> {
    if rec.lsn != lsn {
        return Err(RecordError::LsnMismatch {
            expected: lsn,
            found: rec.lsn,
        });
    }
    if &rec.prev_hash != prev {
        return Err(RecordError::ChainMismatch {
            expected: hex::encode(prev),
            found: hex::encode(rec.prev_hash),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: u64 = 0x1234_5678_9abc_def0;

    fn sample(len: usize) -> (Vec<u8>, Hash) {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        encode(
            SALT,
            RECORD_DATA,
            42,
            1_700_000_000_000_000_000,
            7,
            &[9u8; 32],
            &payload,
        )
    }

    #[test]
    fn round_trip() {
        for len in [0, 1, 7, 8, 9, 100, 4096] {
            let (bytes, h) = sample(len);
            assert_eq!(bytes.len() % ALIGN, 0);
            let (rec, used) = decode(SALT, &bytes).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(rec.lsn, 42);
            assert_eq!(rec.term, 7);
            assert_eq!(rec.timestamp_nanos, 1_700_000_000_000_000_000);
            assert_eq!(rec.prev_hash, [9u8; 32]);
            assert_eq!(rec.payload.len(), len);
            assert_eq!(rec.hash, h);
            check_follows(&rec, 42, &[9u8; 32]).unwrap();
            assert!(matches!(
                check_follows(&rec, 42, &[8u8; 32]),
                Err(RecordError::ChainMismatch { .. })
            ));
            assert!(matches!(
                check_follows(&rec, 43, &[9u8; 32]),
                Err(RecordError::LsnMismatch { .. })
            ));
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        for len in [0, 5, 64] {
            let (bytes, _) = sample(len);
            for bit in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    decode(SALT, &b).is_err(),
                    "flip of bit {bit} (len {len}) undetected"
                );
            }
        }
    }

    #[test]
    fn truncation_at_every_offset_is_torn() {
        let (bytes, _) = sample(37);
        assert_eq!(decode(SALT, &[]), Err(RecordError::Empty));
        for cut in 1..bytes.len() {
            let r = decode(SALT, &bytes[..cut]);
            assert!(
                matches!(r, Err(RecordError::Torn { .. })),
                "cut at {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn other_salt_is_rejected() {
        let (bytes, _) = sample(10);
        assert!(matches!(
            decode(SALT ^ 1, &bytes),
            Err(RecordError::BadCrc { .. })
        ));
    }
}
