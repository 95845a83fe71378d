//! Archive object encryption: the shared [`lifeboat_crypto`] AEAD (XChaCha20-Poly1305, random
//! 24-byte nonce) with the object's key (name) as associated data, so a swapped or renamed
//! object fails to open, inside a small versioned envelope.
//!
//! Sealed layout: `"LBAE"` (4) · version `1` (1) · nonce (24) · ciphertext ‖ tag (16).

use std::path::Path;

use lifeboat_crypto::{AeadKey, SEAL_OVERHEAD};

use super::error::{ArchiveError, ArchiveResult};

/// Magic of a sealed object.
const SEALED_MAGIC: [u8; 4] = *b"LBAE";
/// Sealed format version.
const SEALED_VERSION: u8 = 1;
/// Bytes of the envelope before the helper's `nonce ‖ ciphertext ‖ tag`.
const ENVELOPE_LEN: usize = 4 + 1;
/// Plaintext of the key check value stored in `archive.json`.
const KEY_CHECK_PLAINTEXT: &[u8] = b"lifeboat journal archive key check v1";
/// Associated data of the key check value.
const KEY_CHECK_AAD: &[u8] = b"archive.json#key_check";

/// A 256-bit key that encrypts and authenticates every object of an archive.
#[derive(Clone)]
pub struct ArchiveKey(AeadKey);

impl std::fmt::Debug for ArchiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArchiveKey(..)")
    }
}

impl ArchiveKey {
    /// Wraps raw key bytes (e.g. from a secret manager).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ArchiveKey(AeadKey::from_bytes(bytes))
    }

    /// A fresh random key, for new archives and tests.
    pub fn generate() -> Self {
        ArchiveKey(AeadKey::generate())
    }

    /// Reads a key file: 64 hex characters (surrounding whitespace ignored) or 32 raw bytes.
    pub fn from_file(path: impl AsRef<Path>) -> ArchiveResult<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| ArchiveError::io(path, e))?;
        let bad = |reason: &str| ArchiveError::BadKeyFile {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let t = text.trim();
            if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                let mut k = [0u8; 32];
                hex::decode_to_slice(t, &mut k).map_err(|_| bad("invalid hex"))?;
                return Ok(ArchiveKey::from_bytes(k));
            }
        }
        if bytes.len() == 32 {
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes);
            return Ok(ArchiveKey::from_bytes(k));
        }
        Err(bad(&format!(
            "expected 64 hex characters or 32 raw bytes, found {} bytes",
            bytes.len()
        )))
    }

    /// The key as 64 lowercase hex characters, for writing a key file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Encrypts `plain` for the object named `aad`.
    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENVELOPE_LEN + SEAL_OVERHEAD + plain.len());
        out.extend_from_slice(&SEALED_MAGIC);
        out.push(SEALED_VERSION);
        lifeboat_crypto::seal_into(&self.0, aad, plain, &mut out);
        out
    }

    /// Decrypts and authenticates an object named `aad`; the error says what failed.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < ENVELOPE_LEN + SEAL_OVERHEAD {
            return Err(format!(
                "encrypted object is {} bytes, shorter than its header and tag",
                sealed.len()
            ));
        }
        if sealed[..4] != SEALED_MAGIC {
            return Err("not an encrypted archive object (bad magic)".into());
        }
        if sealed[4] != SEALED_VERSION {
            return Err(format!("unsupported encryption version {}", sealed[4]));
        }
        lifeboat_crypto::open(&self.0, aad, &sealed[ENVELOPE_LEN..]).map_err(|_| {
            "authentication failed (the object was modified, truncated, or stored under \
                 another name)"
                .to_owned()
        })
    }

    /// A value stored in `archive.json` that only this key opens.
    pub(crate) fn key_check(&self) -> Vec<u8> {
        self.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)
    }

    /// Whether `check` (from [`ArchiveKey::key_check`]) was made with this key.
    pub(crate) fn matches(&self, check: &[u8]) -> bool {
        self.open(KEY_CHECK_AAD, check).as_deref() == Ok(KEY_CHECK_PLAINTEXT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let k = ArchiveKey::generate();
        let sealed = k.seal(b"a", b"hello");
        assert_eq!(k.open(b"a", &sealed).unwrap(), b"hello");
        assert!(k.open(b"b", &sealed).is_err(), "name is bound");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(k.open(b"a", &flipped).is_err());
        assert!(ArchiveKey::generate().open(b"a", &sealed).is_err());
        assert!(k.matches(&k.key_check()));
        assert!(!ArchiveKey::generate().matches(&k.key_check()));
    }

    /// Bytes sealed by an independent XChaCha20-Poly1305 implementation (key `[7; 32]`,
    /// nonce `0..24`): archives written before the shared helper still open.
    #[test]
    fn opens_a_fixed_vector() {
        let sealed = hex::decode(
            "4c42414501000102030405060708090a0b0c0d0e0f1011121314151617c47ecde098733ad105a1e8\
             3f83868fda3ab54c7866de2fcfdf09e9a560f42ce5f9deee3061",
        )
        .unwrap();
        let k = ArchiveKey::from_bytes([7; 32]);
        assert_eq!(
            k.open(b"segments/x.seg.enc", &sealed).unwrap(),
            b"lifeboat fixed vector"
        );
    }
}
