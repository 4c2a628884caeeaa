//! Sealing: XChaCha20-Poly1305 with a random 192-bit nonce per value, for the sign-in cookies
//! and for tokens at rest.
//!
//! The associated data names what a value is for (a cookie's name, a record's key and field),
//! so a value sealed for one place does not open in another. A value that was tampered with,
//! cut short or sealed with another key does not open at all.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Digest;

const NONCE_LEN: usize = 24;

/// Seals and opens values.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// A sealer keyed by SHA-256 of `secret` (for secrets of any length, like
    /// `signin.cookie_secret`).
    pub fn new(secret: &[u8]) -> Self {
        Self::from_key(&sha2::Sha256::digest(secret).into())
    }

    /// A sealer with exactly this 256-bit key.
    pub fn from_key(key: &[u8; 32]) -> Self {
        Sealer {
            cipher: XChaCha20Poly1305::new_from_slice(key).expect("a 32-byte key"),
        }
    }

    /// `plaintext` sealed for `name` (the associated data), URL-safe base64.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        use rand::RngCore;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: name.as_bytes(),
                },
            )
            .expect("encryption of a short value cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// The plaintext of a value sealed for `name`, or `None` if it does not open.
    pub fn open(&self, name: &str, sealed: &str) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .ok()?;
        if raw.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: name.as_bytes(),
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_as_sealed() {
        let s = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let v = s.seal("session", b"hello");
        assert_eq!(s.open("session", &v).as_deref(), Some(&b"hello"[..]));
        assert_ne!(s.seal("session", b"hello"), v, "fresh nonce each time");
        assert_eq!(s.open("other-cookie", &v), None, "bound to the cookie name");
        let other = Sealer::new(b"another secret, also 32 bytes long!");
        assert_eq!(other.open("session", &v), None, "bound to the secret");
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&v)
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(s.open("session", &tampered), None, "tampering is detected");
        assert_eq!(s.open("session", "not base64 !"), None);
        assert_eq!(s.open("session", ""), None);
        assert_eq!(s.open("session", &v[..10]), None);
    }
}
