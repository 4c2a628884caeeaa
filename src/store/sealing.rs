//! Tokens sealed at rest (`storage.encryption_key`).
//!
//! Each token field of a stored record is sealed on its own with XChaCha20-Poly1305
//! ([`crate::seal`]); the associated data is the record's key and the field's name, so a
//! sealed token copied into another team's record (or another field) does not open. A sealed
//! value is written `sealed:v1:{key id}:{nonce+ciphertext}`; the key id is the first four
//! bytes of SHA-256 of the key, so keys can rotate: the current key seals, previous keys
//! (`storage.previous_encryption_keys`) still open, and `slack-gateway installations reseal`
//! rewrites every record under the current key. A plaintext token (written before sealing
//! was turned on) is still read, and resealed the same way.

use base64::Engine;
use sha2::Digest;

use super::{Installation, StoreError, Token};
use crate::seal::Sealer;
use crate::secret::Secret;

const PREFIX: &str = "sealed:v1:";

/// The current key and the previous ones, by key id.
pub struct KeyRing {
    current: (String, Sealer),
    previous: Vec<(String, Sealer)>,
}

fn key_id(key: &[u8; 32]) -> String {
    hex::encode(&sha2::Sha256::digest(key)[..4])
}

fn decode_key(k: &Secret) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(k.expose().trim())
        .map_err(|e| e.to_string())?;
    bytes.try_into().map_err(|_| "must be 32 bytes".to_owned())
}

impl KeyRing {
    /// A key ring from the configured keys (validated as 32 bytes of base64 at load).
    pub fn new(current: &Secret, previous: &[Secret]) -> Result<Self, String> {
        let key = decode_key(current)?;
        let mut prev = Vec::new();
        for p in previous {
            let k = decode_key(p)?;
            prev.push((key_id(&k), Sealer::from_key(&k)));
        }
        Ok(KeyRing {
            current: (key_id(&key), Sealer::from_key(&key)),
            previous: prev,
        })
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.current.0
    }

    fn seal(&self, aad: &str, token: &Token) -> Token {
        let (id, sealer) = &self.current;
        Token::new(format!(
            "{PREFIX}{id}:{}",
            sealer.seal(aad, token.expose().as_bytes())
        ))
    }

    /// Opens one value; `Ok((token, needs_reseal))`.
    fn open(&self, aad: &str, value: &Token) -> Result<(Token, bool), String> {
        let Some(rest) = value.expose().strip_prefix(PREFIX) else {
            return Ok((value.clone(), true));
        };
        let (id, sealed) = rest.split_once(':').ok_or("malformed sealed value")?;
        let sealer = std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|(kid, _)| kid == id)
            .map(|(_, s)| s)
            .ok_or_else(|| format!("sealed with key {id}, which is not configured"))?;
        let plain = sealer
            .open(aad, sealed)
            .ok_or("does not open: tampered, or moved from another record")?;
        let token = String::from_utf8(plain).map_err(|_| "not text")?;
        Ok((Token::new(token), id != self.current.0))
    }
}

type Field = fn(&mut Installation) -> &mut Option<Token>;

const FIELDS: [(&str, Field); 4] = [
    ("bot_token", |i| &mut i.bot_token),
    ("bot_refresh_token", |i| &mut i.bot_refresh_token),
    ("user_token", |i| &mut i.user_token),
    ("user_refresh_token", |i| &mut i.user_refresh_token),
];

/// `inst` with every token sealed for the record `key`.
pub fn seal_record(ring: &KeyRing, key: &str, mut inst: Installation) -> Installation {
    for (name, field) in FIELDS {
        if let Some(t) = field(&mut inst).as_ref() {
            let sealed = ring.seal(&format!("{key}#{name}"), t);
            *field(&mut inst) = Some(sealed);
        }
    }
    inst
}

/// `inst` with every token opened; `needs_reseal` when any was plaintext or under an old key.
pub fn open_record(
    ring: &KeyRing,
    key: &str,
    mut inst: Installation,
) -> Result<(Installation, bool), StoreError> {
    let mut stale = false;
    for (name, field) in FIELDS {
        if let Some(t) = field(&mut inst).as_ref() {
            let (plain, old) =
                ring.open(&format!("{key}#{name}"), t)
                    .map_err(|reason| StoreError::Corrupt {
                        key: key.to_owned(),
                        reason: format!("{name}: {reason}"),
                    })?;
            stale |= old;
            *field(&mut inst) = Some(plain);
        }
    }
    Ok((inst, stale))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Secret {
        Secret::new(base64::engine::general_purpose::STANDARD.encode([b; 32]))
    }

    fn inst() -> Installation {
        Installation {
            team_id: Some("T1".into()),
            bot_token: Some(Token::new("xoxb-secret")),
            user_token: Some(Token::new("xoxp-secret")),
            ..Default::default()
        }
    }

    #[test]
    fn tokens_are_sealed_and_open_only_in_their_record() {
        let ring = KeyRing::new(&key(1), &[]).unwrap();
        let sealed = seal_record(&ring, "inst/a/-/T1/bot", inst());
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(!text.contains("xoxb-") && !text.contains("xoxp-"), "{text}");
        let (opened, stale) = open_record(&ring, "inst/a/-/T1/bot", sealed.clone()).unwrap();
        assert_eq!(opened, inst());
        assert!(!stale);
        let moved = open_record(&ring, "inst/a/-/T2/bot", sealed);
        assert!(
            matches!(moved, Err(StoreError::Corrupt { .. })),
            "a record moved to another team does not open"
        );
    }

    #[test]
    fn previous_keys_open_and_ask_for_a_reseal() {
        let old = KeyRing::new(&key(1), &[]).unwrap();
        let sealed = seal_record(&old, "k", inst());
        let rotated = KeyRing::new(&key(2), &[key(1)]).unwrap();
        let (opened, stale) = open_record(&rotated, "k", sealed.clone()).unwrap();
        assert_eq!(opened, inst());
        assert!(stale, "sealed with an old key");
        let only_new = KeyRing::new(&key(2), &[]).unwrap();
        let e = open_record(&only_new, "k", sealed).unwrap_err().to_string();
        assert!(e.contains("not configured"), "{e}");
        let (_, stale) = open_record(&rotated, "k", inst()).unwrap();
        assert!(stale, "plaintext is read and asks for a reseal");
    }
}
