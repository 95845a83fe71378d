//! The `StateMachine` trait the PITR manager folds operations into, and the versioned payload
//! envelope operations are stored in.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Envelope version byte: first byte of every operation payload.
pub const ENVELOPE_VERSION: u8 = 1;
/// Codec byte for `postcard` (compact, non-self-describing serde binary format).
pub const CODEC_POSTCARD: u8 = 1;

/// Application state rebuilt by replaying operations onto a snapshot: what PITR recovers.
///
/// # Contract
/// `apply` must be deterministic (same state + same op ⇒ same result; iterate `BTreeMap`s, not
/// `HashMap`s) and total: an op that makes no sense for the current state (deleting a missing
/// object) must be handled, never panic, because the log is replayed as written.
/// `snapshot`/`restore` must round-trip: `restore(&s.snapshot())? == s`.
pub trait StateMachine: Default + Send + Sync + 'static {
    /// One logged change.
    type Op: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Folds one operation into the state.
    fn apply(&mut self, op: &Self::Op);

    /// Serialises the whole state for a base backup.
    fn snapshot(&self) -> Vec<u8>;

    /// Rebuilds a state from [`StateMachine::snapshot`] bytes.
    fn restore(bytes: &[u8]) -> std::result::Result<Self, String>;
}

/// Encodes an operation: `[ENVELOPE_VERSION, CODEC_POSTCARD, postcard bytes…]`.
pub fn encode_op<O: Serialize>(op: &O) -> Result<Vec<u8>> {
    let mut out = vec![ENVELOPE_VERSION, CODEC_POSTCARD];
    postcard::to_io(op, &mut out).map_err(|e| Error::Encode {
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes an operation payload written by [`encode_op`]; `lsn` names it in errors.
pub fn decode_op<O: DeserializeOwned>(payload: &[u8], lsn: crate::RawLsn) -> Result<O> {
    let bad = |reason: String| Error::Codec {
        what: format!("operation at LSN {lsn}"),
        reason,
    };
    match payload {
        [ENVELOPE_VERSION, CODEC_POSTCARD, body @ ..] => {
            postcard::from_bytes(body).map_err(|e| bad(e.to_string()))
        }
        [v, c, ..] => Err(bad(format!(
            "unsupported envelope version {v} / codec {c} (this build reads version \
             {ENVELOPE_VERSION}, codec {CODEC_POSTCARD})"
        ))),
        _ => Err(bad("payload shorter than the 2-byte envelope".into())),
    }
}

/// Serialises a serde state with postcard: a ready-made [`StateMachine::snapshot`].
pub fn postcard_snapshot<T: Serialize>(state: &T) -> Vec<u8> {
    postcard::to_stdvec(state).expect("serialising an in-memory value to a Vec cannot fail")
}

/// Inverse of [`postcard_snapshot`]: a ready-made [`StateMachine::restore`].
pub fn postcard_restore<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip_and_errors() {
        let op = (7u32, "topic".to_string());
        let bytes = encode_op(&op).unwrap();
        assert_eq!(&bytes[..2], &[1, 1]);
        assert_eq!(decode_op::<(u32, String)>(&bytes, 3).unwrap(), op);
        let mut v2 = bytes.clone();
        v2[0] = 2;
        let e = decode_op::<(u32, String)>(&v2, 3).unwrap_err().to_string();
        assert!(e.contains("LSN 3") && e.contains("version 2"), "{e}");
        assert!(decode_op::<(u32, String)>(&[1], 4).is_err());
        assert!(decode_op::<(u32, String)>(&bytes[..4], 5).is_err());
    }
}
