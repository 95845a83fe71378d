//! The repository's keys and keyed blob ids. Objects are sealed with the shared
//! [`lifeboat_crypto`] helper (XChaCha20-Poly1305, random 192-bit nonce, `nonce ‖ ciphertext ‖
//! tag`) under [`MasterKey::aead`]; see `docs/repository-format.md` §Crypto.

use lifeboat_crypto::AeadKey;
use lifeboat_types::BlobId;
use rand::RngCore;

/// Authentication failed: wrong key, or the bytes were changed.
pub use lifeboat_crypto::AuthError;
/// Bytes added to every sealed object: nonce + tag.
pub use lifeboat_crypto::SEAL_OVERHEAD;

/// The repository's secret material, never stored unwrapped.
#[derive(Clone)]
pub struct MasterKey {
    /// Encrypts every object.
    pub(crate) encrypt: AeadKey,
    /// Keys BLAKE3 for blob ids.
    pub(crate) id: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh random key for a new repository.
    pub fn generate() -> Self {
        let mut id = [0; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        MasterKey {
            encrypt: AeadKey::generate(),
            id,
        }
    }

    /// The key every stored object is sealed with (`lifeboat_crypto::seal(key.aead(), ..)`).
    pub(crate) fn aead(&self) -> &AeadKey {
        &self.encrypt
    }

    /// A new key sharing this one's blob-id key: a related repository gives the same data the
    /// same blob ids (so `copy` moves only what is missing), under its own encryption key.
    pub fn related(&self) -> Self {
        let mut k = Self::generate();
        k.id = self.id;
        k
    }

    /// True if both keys give the same data the same blob ids.
    pub fn same_blob_ids(&self, other: &MasterKey) -> bool {
        // Compare digests, not the secrets themselves, so timing reveals nothing about them.
        blake3::hash(&self.id) == blake3::hash(&other.id)
    }

    /// 64 bytes: encryption key then id key (the wrapped form inside key slots).
    pub(crate) fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(self.encrypt.as_bytes());
        out[32..].copy_from_slice(&self.id);
        out
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 64 {
            return None;
        }
        let mut encrypt = [0; 32];
        encrypt.copy_from_slice(&b[..32]);
        let mut id = [0; 32];
        id.copy_from_slice(&b[32..]);
        Some(MasterKey {
            encrypt: AeadKey::from_bytes(encrypt),
            id,
        })
    }

    /// Keyed BLAKE3 of plaintext: the content address of a blob.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id, data).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_seal_under_the_encryption_key_and_survive_the_slot_form() {
        let k = MasterKey::generate();
        let sealed = lifeboat_crypto::seal(k.aead(), b"aad", b"hello");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        let back = MasterKey::from_bytes(&k.to_bytes()).unwrap();
        assert_eq!(
            lifeboat_crypto::open(back.aead(), b"aad", &sealed).unwrap(),
            b"hello"
        );
        assert_eq!(
            lifeboat_crypto::open(MasterKey::generate().aead(), b"aad", &sealed),
            Err(AuthError)
        );
        assert!(back.same_blob_ids(&k));
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x").0, *blake3::hash(b"x").as_bytes());
    }

    /// Bytes sealed by an independent XChaCha20-Poly1305 implementation (key `[7; 32]`,
    /// nonce `0..24`, AAD `index`): objects written before the shared helper still open.
    #[test]
    fn opens_a_fixed_vector() {
        let sealed = hex::decode(
            "000102030405060708090a0b0c0d0e0f1011121314151617c47ecde098733ad105a1e83f83868fda\
             3ab54c78660cc65d9733c84737d8ce3e3ef0e1d1f4",
        )
        .unwrap();
        assert_eq!(
            lifeboat_crypto::open(&AeadKey::from_bytes([7; 32]), b"index", &sealed).unwrap(),
            b"lifeboat fixed vector"
        );
    }
}
