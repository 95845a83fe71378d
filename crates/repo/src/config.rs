//! The repository config object: format version, chunker parameters and secret, compression.
//!
//! Stored as `"LBRC" ‖ u32 version ‖ sealed(JSON)`: the version is readable before any key is,
//! so an old lifeboat says "upgrade" instead of "wrong password".

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};

/// Repository format version this build writes and reads.
pub const REPO_VERSION: u32 = 1;
/// Object name of the config.
pub const CONFIG_KEY: &str = "config";
const MAGIC: &[u8; 4] = b"LBRC";

/// Settings fixed at `init` (copyable to a related repository so both dedup alike).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RepoConfig {
    /// Format version (duplicated inside the sealed part, bound by the AAD).
    pub version: u32,
    /// Random repository id (hex).
    pub id: String,
    /// When `init` ran.
    pub created: Timestamp,
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// 32-byte hex secret the gear table is derived from.
    pub chunker_key: String,
    /// zstd level for blobs.
    pub compression_level: i32,
    /// Target pack size.
    pub pack_size_bytes: u32,
}

impl RepoConfig {
    /// A fresh config with defaults and new secrets.
    pub fn generate() -> Self {
        RepoConfig {
            version: REPO_VERSION,
            id: hex::encode(rand::random::<[u8; 16]>()),
            created: Timestamp::now(),
            chunker: ChunkerParams::default(),
            chunker_key: hex::encode(rand::random::<[u8; 32]>()),
            compression_level: 3,
            pack_size_bytes: 16 * 1024 * 1024,
        }
    }

    /// The chunker secret as bytes.
    pub fn chunker_key_bytes(&self) -> Result<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.chunker_key, &mut out)
            .map_err(|_| Error::corrupt(CONFIG_KEY, "chunker key is not 32 hex bytes"))?;
        Ok(out)
    }

    /// Encodes and seals the config.
    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        let mut out = header(self.version).to_vec();
        let sealed = lifeboat_crypto::seal(
            key.aead(),
            &aad(&out),
            &serde_json::to_vec(self).expect("config serializes"),
        );
        out.extend_from_slice(&sealed);
        out
    }

    /// Reads the plaintext version word; fails early on unknown formats.
    pub fn peek_version(stored: &[u8]) -> Result<u32> {
        if stored.len() < 8 || &stored[..4] != MAGIC {
            return Err(Error::corrupt(
                CONFIG_KEY,
                "not a lifeboat repository config (bad magic)",
            ));
        }
        let version = u32::from_le_bytes(stored[4..8].try_into().expect("4 bytes"));
        if version != REPO_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "repository".into(),
                found: version,
                supported: REPO_VERSION,
            });
        }
        Ok(version)
    }

    /// Opens the config with the master key.
    pub fn open(key: &MasterKey, stored: &[u8]) -> Result<RepoConfig> {
        Self::peek_version(stored)?;
        let plain = lifeboat_crypto::open(key.aead(), &aad(&stored[..8]), &stored[8..])
            .map_err(|_| Error::corrupt(CONFIG_KEY, "config failed authentication"))?;
        let cfg: RepoConfig = serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(CONFIG_KEY, format!("config does not decode: {e}")))?;
        cfg.chunker
            .validate()
            .map_err(|e| Error::corrupt(CONFIG_KEY, e))?;
        Ok(cfg)
    }
}

fn header(version: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(MAGIC);
    h[4..].copy_from_slice(&version.to_le_bytes());
    h
}

fn aad(header: &[u8]) -> Vec<u8> {
    let mut a = b"lifeboat config ".to_vec();
    a.extend_from_slice(header);
    a
}
