//! Lifeboat's one authenticated-encryption helper, shared by the repository and the journal
//! archive so there is a single argument order and a single byte format.
//!
//! XChaCha20-Poly1305 with a fresh random 192-bit nonce per message: many processes write with
//! no shared counter, and at 2^-96 collision odds after 2^48 messages random nonces are safe
//! (96-bit GCM nonces are not). Sealed layout: `nonce (24) ‖ ciphertext ‖ tag (16)`.
//!
//! Every function takes the key, then the associated data, then the message.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// Bytes of the random nonce that starts every sealed message.
pub const NONCE_LEN: usize = 24;
/// Bytes of the Poly1305 tag that ends every sealed message.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message has beyond its plaintext (nonce + tag).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Authentication failed: wrong key, wrong associated data, or changed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed (wrong key or damaged bytes)")]
pub struct AuthError;

/// A 256-bit XChaCha20-Poly1305 key; a distinct type so a key is never passed as data.
#[derive(Clone)]
pub struct AeadKey([u8; 32]);

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(..)")
    }
}

impl AeadKey {
    /// Wraps raw key bytes (from a key slot, a key file, a secret manager).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        AeadKey(bytes)
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        AeadKey(k)
    }

    /// The raw bytes, for wrapping the key or writing it to a key file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.0))
    }
}

/// Encrypts `plaintext` bound to `aad`; returns `nonce ‖ ciphertext ‖ tag`.
pub fn seal(key: &AeadKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    seal_into(key, aad, plaintext, &mut out);
    out
}

/// Appends `nonce ‖ ciphertext ‖ tag` to `out`, encrypting in place there: the plaintext is
/// copied once, into `out` (a 16 MiB pack is sealed blob by blob with no second buffer).
pub fn seal_into(key: &AeadKey, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    out.reserve(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let tag = key
        .cipher()
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[start..])
        .expect("XChaCha20-Poly1305 accepts messages up to 256 GiB; ours are far smaller");
    out.extend_from_slice(&tag);
}

/// Decrypts and authenticates `nonce ‖ ciphertext ‖ tag` sealed for `aad`.
pub fn open(key: &AeadKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(AuthError);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut out = body.to_vec();
    key.cipher()
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

    /// Sealed by an independent XChaCha20-Poly1305 implementation (Python, checked against
    /// the draft-irtf-cfrg-xchacha A.3.1 vector), and opened by the repository's previous
    /// wrapper: the byte format is unchanged.
    const FIXED: &str = "000102030405060708090a0b0c0d0e0f1011121314151617c47ecde098733ad105a1e8\
                         3f83868fda3ab54c78660cc65d9733c84737d8ce3e3ef0e1d1f4";

    #[test]
    fn opens_a_fixed_vector() {
        let sealed = hex::decode(FIXED).unwrap();
        let key = AeadKey::from_bytes([7; 32]);
        assert_eq!(
            open(&key, b"index", &sealed).unwrap(),
            b"lifeboat fixed vector"
        );
        assert_eq!(open(&key, b"indeX", &sealed), Err(AuthError));
    }

    #[test]
    fn round_trip_and_layout() {
        let key = AeadKey::generate();
        let sealed = seal(&key, b"aad", b"hello");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(open(&key, b"aad", &sealed).unwrap(), b"hello");
        let empty = seal(&key, b"", b"");
        assert_eq!(open(&key, b"", &empty).unwrap(), b"");
        assert_ne!(
            seal(&key, b"aad", b"hello"),
            sealed,
            "fresh nonce every time"
        );
    }

    #[test]
    fn wrong_key_wrong_aad_and_changed_bytes_fail() {
        let key = AeadKey::generate();
        let sealed = seal(&key, b"aad", b"hello");
        assert_eq!(open(&AeadKey::generate(), b"aad", &sealed), Err(AuthError));
        assert_eq!(open(&key, b"other", &sealed), Err(AuthError));
        // The footgun this crate removes: message and AAD swapped.
        assert_eq!(open(&key, b"hello", &sealed), Err(AuthError));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(open(&key, b"aad", &bad), Err(AuthError), "flip at {i}");
        }
        assert_eq!(
            open(&key, b"aad", &sealed[..SEAL_OVERHEAD - 1]),
            Err(AuthError)
        );
        assert_eq!(
            open(&key, b"aad", &sealed[..sealed.len() - 1]),
            Err(AuthError)
        );
    }

    #[test]
    fn seal_into_appends_the_same_format() {
        let key = AeadKey::generate();
        let mut buf = b"prefix".to_vec();
        seal_into(&key, b"aad", b"hello", &mut buf);
        assert_eq!(&buf[..6], b"prefix");
        assert_eq!(buf.len(), 6 + 5 + SEAL_OVERHEAD);
        assert_eq!(open(&key, b"aad", &buf[6..]).unwrap(), b"hello");
    }
}
