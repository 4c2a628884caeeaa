//! A record as the durable backends keep it: the installation in a versioned JSON envelope
//! ([`super::Envelope`]), its tokens sealed for its key when `storage.encryption_key` is set.
//! sled and PostgreSQL store the same bytes, so a record reads the same in either.

use super::sealing::{self, KeyRing};
use super::{Envelope, Installation, StoreError, RECORD_VERSION};

/// Encodes and decodes records, sealing their tokens when a key ring is set.
pub(crate) struct Codec {
    pub ring: Option<KeyRing>,
}

impl Codec {
    /// A record as stored: tokens sealed for `key` when sealing is on.
    pub fn encode(&self, key: &str, inst: &Installation) -> Vec<u8> {
        match &self.ring {
            Some(ring) => encode(&sealing::seal_record(ring, key, inst.clone())),
            None => encode(inst),
        }
    }

    /// A stored record, opened; `true` when it should be resealed.
    pub fn decode(&self, key: &str, bytes: &[u8]) -> Result<(Installation, bool), StoreError> {
        let inst = decode(key, bytes)?;
        match &self.ring {
            Some(ring) => sealing::open_record(ring, key, inst),
            None => Ok((inst, false)),
        }
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Installation, StoreError> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    if env.v != RECORD_VERSION {
        return Err(StoreError::Corrupt {
            key: key.to_owned(),
            reason: format!(
                "record version {} is newer than this gateway ({RECORD_VERSION})",
                env.v
            ),
        });
    }
    Ok(env.installation)
}

fn encode(inst: &Installation) -> Vec<u8> {
    serde_json::to_vec(&Envelope {
        v: RECORD_VERSION,
        installation: inst.clone(),
    })
    .expect("an installation always serializes")
}
