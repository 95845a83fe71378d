//! Key slots: the master key wrapped by Argon2id-derived keys, one slot per password or key file.
//!
//! Changing a password rewrites one small slot; data is never re-encrypted.

use argon2::{Algorithm, Argon2, Params, Version};
use jiff::Timestamp;
use lifeboat_types::KeyId;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use lifeboat_crypto::AeadKey;

/// Format version of key slot objects.
pub const KEY_FORMAT_VERSION: u32 = 1;
const KEY_AAD: &[u8] = b"lifeboat key slot v1";

/// Argon2id cost parameters, stored in each slot so they can be raised later.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes: about 0.3 s here, far beyond GPU-friendly budgets.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Least memory accepted for a new slot (8 MiB): still memory-hard, and cheap enough
    /// for small hosts and for tests that create many repositories.
    pub const MIN_MEMORY_KIB: u32 = 8 * 1024;
    /// Most memory accepted (4 GiB), so a typo cannot make every open exhaust RAM.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    /// Least passes accepted.
    pub const MIN_ITERATIONS: u32 = 1;
    /// Most passes accepted, so a typo cannot make every open take minutes.
    pub const MAX_ITERATIONS: u32 = 64;

    /// Validated custom cost for new slots (e.g. for low-memory hosts), one lane.
    pub fn custom(memory_kib: u32, iterations: u32) -> Result<Self, String> {
        if !(Self::MIN_MEMORY_KIB..=Self::MAX_MEMORY_KIB).contains(&memory_kib) {
            return Err(format!(
                "KDF memory must be between {} and {} MiB, not {} KiB",
                Self::MIN_MEMORY_KIB / 1024,
                Self::MAX_MEMORY_KIB / 1024,
                memory_kib
            ));
        }
        if !(Self::MIN_ITERATIONS..=Self::MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "KDF iterations must be between {} and {}, not {iterations}",
                Self::MIN_ITERATIONS,
                Self::MAX_ITERATIONS
            ));
        }
        Ok(KdfParams {
            memory_kib,
            iterations,
            parallelism: 1,
        })
    }

    /// Cheap parameters below the floor, for the library's own unit tests only (callers must
    /// pass them explicitly; no environment variable selects them).
    pub fn insecure_for_tests() -> Self {
        KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn derive(&self, secret: &[u8], salt: &[u8]) -> Result<[u8; 32], String> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| format!("invalid KDF parameters in key slot: {e}"))?;
        let mut out = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(secret, salt, &mut out)
            .map_err(|e| format!("key derivation failed: {e}"))?;
        Ok(out)
    }
}

/// A key slot as stored under `keys/<id>` (plaintext JSON: it holds only wrapped material).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlot {
    /// Slot format version.
    pub version: u32,
    /// When the slot was added.
    pub created: Timestamp,
    /// Who added it (host name).
    pub host: String,
    /// Who added it (user name).
    pub username: String,
    /// Free-form label (e.g. "ops laptop").
    #[serde(default)]
    pub label: String,
    /// Always "argon2id".
    pub kdf: String,
    /// KDF cost.
    pub params: KdfParams,
    /// Hex salt (32 bytes).
    pub salt: String,
    /// Hex of `nonce ‖ sealed master key ‖ tag`.
    pub wrapped: String,
}

impl KeySlot {
    /// Wraps `master` under `secret` (a password or a key file's bytes).
    pub fn wrap(
        master: &MasterKey,
        secret: &[u8],
        params: KdfParams,
        label: &str,
    ) -> Result<(KeyId, KeySlot), String> {
        let mut salt = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let kek = params.derive(secret, &salt)?;
        let wrapped = lifeboat_crypto::seal(&AeadKey::from_bytes(kek), KEY_AAD, &master.to_bytes());
        let mut id = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let slot = KeySlot {
            version: KEY_FORMAT_VERSION,
            created: Timestamp::now(),
            host: crate::host_name(),
            username: crate::user_name(),
            label: label.to_owned(),
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            wrapped: hex::encode(wrapped),
        };
        Ok((KeyId(id), slot))
    }

    /// Unwraps the master key; `None` means the secret is wrong (or the slot damaged).
    pub fn unwrap_key(&self, secret: &[u8]) -> Result<Option<MasterKey>, String> {
        if self.kdf != "argon2id" {
            return Err(format!("unknown KDF {:?} in key slot", self.kdf));
        }
        let salt = hex::decode(&self.salt).map_err(|_| "key slot salt is not hex".to_string())?;
        let wrapped = hex::decode(&self.wrapped).map_err(|_| "key slot is not hex".to_string())?;
        let kek = self.params.derive(secret, &salt)?;
        Ok(
            lifeboat_crypto::open(&AeadKey::from_bytes(kek), KEY_AAD, &wrapped)
                .ok()
                .and_then(|b| MasterKey::from_bytes(&b)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_with_right_and_wrong_secret() {
        let mk = MasterKey::generate();
        let (_, slot) = KeySlot::wrap(&mk, b"pw", KdfParams::insecure_for_tests(), "").unwrap();
        let got = slot
            .unwrap_key(b"pw")
            .unwrap()
            .expect("right password opens");
        assert_eq!(got.to_bytes(), mk.to_bytes());
        assert!(slot.unwrap_key(b"wrong").unwrap().is_none());
    }

    #[test]
    fn custom_params_are_bounded() {
        let p = KdfParams::custom(8 * 1024, 1).unwrap();
        assert_eq!((p.memory_kib, p.iterations, p.parallelism), (8192, 1, 1));
        assert!(KdfParams::custom(4 * 1024, 3).is_err());
        assert!(KdfParams::custom(8 * 1024 * 1024, 3).is_err());
        assert!(KdfParams::custom(64 * 1024, 0).is_err());
        assert!(KdfParams::custom(64 * 1024, 65).is_err());
    }
}
