//! Authenticated encryption of every stored object, and keyed blob ids.
//!
//! XChaCha20-Poly1305 with a fresh random 192-bit nonce per object: many processes write to one
//! repository with no shared counter, and at 2^-96 collision odds after 2^48 objects random
//! nonces are safe (96-bit GCM nonces are not). See `docs/repository-format.md` §Crypto.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use lifeboat_types::BlobId;
use rand::RngCore;

/// Bytes added to every sealed object: nonce + tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Authentication failed: wrong key, or the bytes were changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("authentication failed (wrong key or damaged bytes)")]
pub struct AuthError;

/// The repository's secret material, never stored unwrapped.
#[derive(Clone)]
pub struct MasterKey {
    /// Encrypts every object.
    pub(crate) encrypt: [u8; 32],
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
        let mut k = MasterKey {
            encrypt: [0; 32],
            id: [0; 32],
        };
        rand::rngs::OsRng.fill_bytes(&mut k.encrypt);
        rand::rngs::OsRng.fill_bytes(&mut k.id);
        k
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
        out[..32].copy_from_slice(&self.encrypt);
        out[32..].copy_from_slice(&self.id);
        out
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 64 {
            return None;
        }
        let mut k = MasterKey {
            encrypt: [0; 32],
            id: [0; 32],
        };
        k.encrypt.copy_from_slice(&b[..32]);
        k.id.copy_from_slice(&b[32..]);
        Some(k)
    }

    /// Keyed BLAKE3 of plaintext: the content address of a blob.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id, data).as_bytes())
    }

    /// Encrypts `plain` bound to `aad`; output is `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        seal_with(&self.encrypt, plain, aad)
    }

    /// Appends `nonce ‖ ciphertext ‖ tag` of `plain` to `out` without an intermediate buffer.
    pub fn seal_into(&self, out: &mut Vec<u8>, plain: &[u8], aad: &[u8]) {
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&self.encrypt));
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[start..])
            .expect("XChaCha20-Poly1305 accepts messages up to 256 GiB; objects are far smaller");
        out.extend_from_slice(&tag);
    }

    /// Reverses [`MasterKey::seal`].
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, AuthError> {
        open_with(&self.encrypt, sealed, aad)
    }
}

/// Seals with an explicit 32-byte key (also used to wrap the master key in key slots).
pub(crate) fn seal_with(key: &[u8; 32], plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[NONCE_LEN..])
        .expect("XChaCha20-Poly1305 accepts messages up to 256 GiB; objects are far smaller");
    out.extend_from_slice(&tag);
    out
}

/// Opens a `nonce ‖ ciphertext ‖ tag` object.
pub(crate) fn open_with(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, AuthError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(AuthError);
    }
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut out = body.to_vec();
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            aad,
            &mut out,
            Tag::from_slice(tag),
        )
        .map_err(|_| AuthError)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let k = MasterKey::generate();
        let sealed = k.seal(b"hello", b"aad");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(k.open(&sealed, b"aad").unwrap(), b"hello");
        assert_eq!(k.open(&sealed, b"other"), Err(AuthError));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(
                k.open(&bad, b"aad"),
                Err(AuthError),
                "flip at {i} undetected"
            );
        }
        assert_eq!(k.open(&sealed[..10], b"aad"), Err(AuthError));
        let mut buf = b"prefix".to_vec();
        k.seal_into(&mut buf, b"hello", b"aad");
        assert_eq!(k.open(&buf[6..], b"aad").unwrap(), b"hello");
        let other = MasterKey::generate();
        assert_eq!(other.open(&sealed, b"aad"), Err(AuthError));
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x").0, *blake3::hash(b"x").as_bytes());
    }
}
