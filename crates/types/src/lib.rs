//! Identifier and unit types shared by every Lifeboat crate.
//!
//! Distinct id types keep a pack id from being passed where a blob id is expected; one
//! vocabulary (LSN, term/fencing token, node id, clock, error class) is shared by the journal,
//! coordination, failover, the repository and the service.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod cancel;
pub mod class;
pub mod clock;
mod lsn;
mod term;

pub use cancel::CancelToken;
pub use class::{Classify, ErrorClass};
pub use clock::{Clock, ManualClock, SystemClock};
pub use lsn::Lsn;
pub use term::{FencingToken, NodeId, Term};

/// A hex id could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid id {input:?}: expected 64 hex characters")]
pub struct ParseIdError {
    /// The rejected input.
    pub input: String,
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub [u8; 32]);

        // Byte-lexicographic order, compared as four big-endian words: the index sorts and
        // searches millions of ids, and a `memcmp` call per comparison dominated prune.
        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                let words = |b: &[u8; 32]| {
                    let w = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
                    [w(0), w(8), w(16), w(24)]
                };
                words(&self.0).cmp(&words(&other.0))
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl $name {
            /// Full lower-case hex form, as used in object names.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// First 8 hex characters, the form shown to humans.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError { input: s.to_owned() })?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// Keyed BLAKE3 of a blob's plaintext; keyed so an id cannot confirm guessed content.
    BlobId
);
id_type!(
    /// BLAKE3 of a pack file's bytes as stored; doubles as its object name.
    PackId
);
id_type!(
    /// Random id of a snapshot object.
    SnapshotId
);
id_type!(
    /// BLAKE3 of an index file's bytes as stored.
    IndexId
);
id_type!(
    /// Random id of a key slot.
    KeyId
);

/// Formats a byte count with binary units, for humans.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_hex_and_json() {
        let id = BlobId([7u8; 32]);
        let parsed: BlobId = id.to_hex().parse().unwrap();
        assert_eq!(parsed, id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), id);
        assert!("zz".parse::<BlobId>().is_err());
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.00 GiB");
    }
}

#[cfg(test)]
mod order_tests {
    use super::BlobId;

    #[test]
    fn id_order_is_byte_lexicographic() {
        let mut seed = 7u64;
        let mut ids: Vec<BlobId> = (0..500)
            .map(|i| {
                let mut b = [0u8; 32];
                for (j, x) in b.iter_mut().enumerate() {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Many shared prefixes, so later words decide too.
                    *x = if j < 20 && i % 3 == 0 {
                        0
                    } else {
                        (seed >> 56) as u8
                    };
                }
                BlobId(b)
            })
            .collect();
        let mut by_bytes = ids.clone();
        by_bytes.sort_by_key(|id| id.0);
        ids.sort();
        assert_eq!(ids, by_bytes);
    }
}
