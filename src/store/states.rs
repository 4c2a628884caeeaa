//! Self-verifying OAuth `state`s: starting a flow stores nothing.
//!
//! ```text
//! state = base64url(nonce ‖ expires_at ‖ tag)            75 URL-safe characters
//!   nonce      32 random bytes (256 bits)
//!   expires_at u64, big-endian, Unix seconds (now + oauth.state_ttl)
//!   tag        HMAC-SHA256(key, nonce ‖ expires_at), first 16 bytes
//!   key        HMAC-SHA256(slack.client_secret, LABEL ‖ flow ‖ 0 ‖ slack.client_id)
//! ```
//!
//! A state is ours when its tag checks: nobody without `slack.client_secret` can make one, nor
//! change its expiry. Every gateway with the same config checks the states of the others (no
//! per-process key), and the flow in the key keeps install and sign-in states apart. What
//! makes a state single-use is a used-marker the callback writes with an atomic
//! insert-if-absent ([`InstallationStore::mark_state_used`]), kept until the state's expiry
//! plus [`MARKER_GRACE_SECS`] and then swept ([`sweep_loop`]). So an anonymous client that
//! starts any number of flows makes the gateway store nothing; a marker needs a callback
//! carrying a state the gateway issued, one marker per state at most.
//!
//! A reload that changes `slack.client_secret` (or `client_id`) changes the key: flows started
//! before it fail with `invalid_state` and the user starts again.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::{InstallationStore, StoreError};

/// Domain separation of the state key from every other use of `client_secret`.
const LABEL: &[u8] = b"slack-gateway oauth-state v1\0";
const NONCE_LEN: usize = 32;
const TAG_LEN: usize = 16;
const RAW_LEN: usize = NONCE_LEN + 8 + TAG_LEN;
/// Characters of an encoded state (unpadded base64).
const ENCODED_LEN: usize = (RAW_LEN * 4).div_ceil(3);

/// A used-marker outlives its state's expiry by this much, so a gateway whose clock is behind
/// another's (replicas sharing one database) still finds it while it takes the state as fresh.
pub const MARKER_GRACE_SECS: u64 = 60;
/// How often expired markers are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Markers removed per store call: a large backlog is swept in several calls, so no one call
/// holds the store for long.
pub const SWEEP_BATCH: usize = 10_000;

/// Which flow a state belongs to; part of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Install,
    Signin,
}

impl Flow {
    fn label(self) -> &'static [u8] {
        match self {
            Flow::Install => b"install",
            Flow::Signin => b"signin",
        }
    }
}

/// Issues and checks the states of one flow.
#[derive(Clone)]
pub struct StateKey {
    mac: hmac::Hmac<Sha256>,
}

impl StateKey {
    /// The key of `flow`'s states for the app `client_id` with secret `client_secret`.
    pub fn new(client_id: &str, client_secret: &str, flow: Flow) -> Self {
        let mut derive = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(client_secret.as_bytes())
            .expect("HMAC takes any key length");
        derive.update(LABEL);
        derive.update(flow.label());
        derive.update(b"\0");
        derive.update(client_id.as_bytes());
        let key = derive.finalize().into_bytes();
        StateKey {
            mac: <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&key)
                .expect("HMAC takes any key length"),
        }
    }

    fn tag(&self, nonce: &[u8], expires_at: &[u8; 8]) -> hmac::Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(nonce);
        mac.update(expires_at);
        mac
    }

    /// A fresh state valid until `expires_at` (Unix seconds).
    pub fn issue(&self, expires_at: u64) -> String {
        use rand::RngCore;
        let mut raw = [0u8; RAW_LEN];
        rand::rng().fill_bytes(&mut raw[..NONCE_LEN]);
        let exp = expires_at.to_be_bytes();
        raw[NONCE_LEN..NONCE_LEN + 8].copy_from_slice(&exp);
        let tag = self.tag(&raw[..NONCE_LEN], &exp).finalize().into_bytes();
        raw[NONCE_LEN + 8..].copy_from_slice(&tag[..TAG_LEN]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// A state this key issued; `None` for anything else (forged, altered, cut short, issued
    /// under another secret or for another flow).
    pub fn verify(&self, state: &str) -> Option<Issued> {
        // The exact encoded length first: nothing longer is even decoded.
        if state.len() != ENCODED_LEN {
            return None;
        }
        let mut raw = [0u8; RAW_LEN];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(state, &mut raw)
            .ok()?;
        if n != RAW_LEN {
            return None;
        }
        let exp: [u8; 8] = raw[NONCE_LEN..NONCE_LEN + 8].try_into().expect("8 bytes");
        self.tag(&raw[..NONCE_LEN], &exp)
            .verify_truncated_left(&raw[NONCE_LEN + 8..])
            .ok()?;
        Some(Issued {
            expires_at: u64::from_be_bytes(exp),
            nonce: raw[..NONCE_LEN].try_into().expect("32 bytes"),
        })
    }
}

/// A state that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Unix seconds.
    pub expires_at: u64,
    nonce: [u8; NONCE_LEN],
}

impl Issued {
    /// What its used-marker is keyed by: the nonce, which the tag binds to the expiry. Not
    /// the state's text, which another spelling of the same bytes could change.
    pub fn marker_id(&self) -> String {
        hex::encode(self.nonce)
    }
}

/// The state keys of the live config (rebuilt with it on reload).
#[derive(Clone)]
pub struct StateKeys {
    pub install: StateKey,
    pub signin: StateKey,
}

impl StateKeys {
    pub fn new(client_id: &str, client_secret: &str) -> Self {
        StateKeys {
            install: StateKey::new(client_id, client_secret, Flow::Install),
            signin: StateKey::new(client_id, client_secret, Flow::Signin),
        }
    }
}

/// A callback's state, checked and (when it can still be used) consumed: `Some(expires_at)`
/// for a state `key` issued that had not been used and is consumed now, or that has expired
/// (the caller says `expired_state`; an expired state is never marked, as nothing can use it);
/// `None` for a state we did not issue or one already used (`invalid_state`). `marker_prefix`
/// keeps the flows' markers apart in the store.
pub async fn consume(
    store: &dyn InstallationStore,
    key: &StateKey,
    marker_prefix: &str,
    state: &str,
    now: u64,
) -> Result<Option<u64>, StoreError> {
    let Some(issued) = key.verify(state) else {
        return Ok(None);
    };
    let expires_at = issued.expires_at;
    if expires_at < now {
        return Ok(Some(expires_at));
    }
    let keep_until = expires_at.saturating_add(MARKER_GRACE_SECS);
    let first = store
        .mark_state_used(
            &format!("{marker_prefix}{}", issued.marker_id()),
            keep_until,
        )
        .await?;
    Ok(first.then_some(expires_at))
}

/// Sweeps every marker past its keep-until time, [`SWEEP_BATCH`] at a time; returns how many
/// went.
pub async fn sweep(store: &dyn InstallationStore, now: u64) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let n = store.sweep_used_states(now, SWEEP_BATCH).await?;
        total += n;
        if n < SWEEP_BATCH {
            return Ok(total);
        }
        // Let the request path in between batches.
        tokio::task::yield_now().await;
    }
}

/// Sweeps expired markers every [`SWEEP_EVERY`] until aborted.
pub async fn sweep_loop(store: Arc<dyn InstallationStore>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match sweep(store.as_ref(), crate::http::unix_now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(swept = n, "expired OAuth state markers swept"),
            Err(e) => tracing::warn!(error = %e, "sweeping OAuth state markers failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(raw: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    fn unb64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    }

    #[test]
    fn state_flood_states_verify_only_under_their_key_and_flow() {
        let k = StateKey::new("111.222", "secret", Flow::Install);
        let s = k.issue(1_900_000_000);
        assert_eq!(s.len(), ENCODED_LEN);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(k.verify(&s).map(|i| i.expires_at), Some(1_900_000_000));
        assert_ne!(k.issue(1_900_000_000), s, "a fresh nonce each time");
        for other in [
            StateKey::new("111.222", "another secret", Flow::Install),
            StateKey::new("111.333", "secret", Flow::Install),
            StateKey::new("111.222", "secret", Flow::Signin),
        ] {
            assert_eq!(other.verify(&s), None);
        }
    }

    #[test]
    fn state_flood_altered_states_do_not_verify() {
        let k = StateKey::new("111.222", "secret", Flow::Install);
        let s = k.issue(1_900_000_000);
        let raw = unb64(&s);
        // Every single bit flipped, in the nonce, the expiry or the tag.
        for i in 0..raw.len() * 8 {
            let mut r = raw.clone();
            r[i / 8] ^= 1 << (i % 8);
            assert_eq!(k.verify(&b64(&r)), None, "bit {i}");
        }
        // A later expiry with the old tag.
        let mut r = raw.clone();
        r[NONCE_LEN..NONCE_LEN + 8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(k.verify(&b64(&r)), None);
        // Cut short, extended, re-encoded with padding or the standard alphabet, garbage.
        assert_eq!(k.verify(&s[..74]), None);
        assert_eq!(k.verify(&format!("{s}A")), None);
        assert_eq!(
            k.verify(&base64::engine::general_purpose::URL_SAFE.encode(&raw)),
            None
        );
        assert_eq!(k.verify(&b64(&raw[..RAW_LEN - 1])), None);
        assert_eq!(k.verify(""), None);
        assert_eq!(k.verify(&"!".repeat(75)), None);
        assert_eq!(k.verify("forged"), None);
        // The last character carries 2 spare bits: another spelling of the same bytes is
        // refused (and would have the same marker anyway).
        let last = s.as_bytes()[ENCODED_LEN - 1];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let pos = alphabet.iter().position(|&c| c == last).unwrap();
        for spare in 1..4 {
            let mut other = s.clone().into_bytes();
            other[ENCODED_LEN - 1] = alphabet[pos ^ spare];
            assert_eq!(k.verify(std::str::from_utf8(&other).unwrap()), None);
        }
    }
}
