//! Slack request signatures (<https://api.slack.com/authentication/verifying-requests-from-slack>).
//!
//! `X-Slack-Signature` must equal `v0=` + hex(HMAC-SHA256(secret, "v0:{ts}:{body}")) and
//! `X-Slack-Request-Timestamp` must be within [`MAX_CLOCK_SKEW_SECS`] of now. The comparison is
//! constant-time (the MAC is verified by `hmac`, which uses `subtle`). Several secrets may be
//! tried so a regenerated signing secret can roll out.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// How far a request's timestamp may be from now, in seconds (Slack's documented 5 minutes).
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Why a request's signature was refused. The `as_str` form is the reason sent to the client
/// and the label of the `signature_failures` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureError {
    MissingTimestamp,
    MissingSignature,
    InvalidTimestamp,
    StaleTimestamp,
    MalformedSignature,
    Mismatch,
    /// A valid signature seen before inside the window: an exact replay.
    Replayed,
}

impl SignatureError {
    pub const ALL: [SignatureError; 7] = [
        SignatureError::MissingTimestamp,
        SignatureError::MissingSignature,
        SignatureError::InvalidTimestamp,
        SignatureError::StaleTimestamp,
        SignatureError::MalformedSignature,
        SignatureError::Mismatch,
        SignatureError::Replayed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignatureError::MissingTimestamp => "missing_timestamp",
            SignatureError::MissingSignature => "missing_signature",
            SignatureError::InvalidTimestamp => "invalid_timestamp",
            SignatureError::StaleTimestamp => "stale_timestamp",
            SignatureError::MalformedSignature => "malformed_signature",
            SignatureError::Mismatch => "signature_mismatch",
            SignatureError::Replayed => "replayed_request",
        }
    }
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request whose signature checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Which secret matched (0 is the current one).
    pub secret_index: usize,
    /// The request's timestamp, Unix seconds.
    pub timestamp: u64,
    /// The signature's MAC, which identifies the exact request (for replay protection).
    pub mac: [u8; 32],
}

/// The signing secrets, keyed once (the HMAC's inner and outer pads are computed when the
/// config is loaded, not per request), current first.
#[derive(Clone)]
pub struct SigningKeys {
    keys: Vec<hmac::Hmac<Sha256>>,
}

impl SigningKeys {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let keys = secrets
            .into_iter()
            .map(|s| {
                <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(s.expose().as_bytes())
                    .expect("HMAC takes keys of any length")
            })
            .collect();
        SigningKeys { keys }
    }

    /// Checks a request's signature headers against its raw body.
    ///
    /// `timestamp` and `signature` are the raw header values (absent → `None`); `now` is Unix
    /// seconds.
    pub fn verify(
        &self,
        timestamp: Option<&[u8]>,
        signature: Option<&[u8]>,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, SignatureError> {
        check(&self.keys, timestamp, signature, body, now)
    }
}

/// Never shows key material.
impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeys({} keys)", self.keys.len())
    }
}

/// Checks a request's signature headers against its raw body with `secrets` (keyed on the
/// spot; the proxy uses [`SigningKeys`]).
///
/// `timestamp` and `signature` are the raw header values (absent → `None`); `now` is Unix
/// seconds.
pub fn verify<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    timestamp: Option<&[u8]>,
    signature: Option<&[u8]>,
    body: &[u8],
    now: u64,
) -> Result<Verified, SignatureError> {
    SigningKeys::new(secrets).verify(timestamp, signature, body, now)
}

/// What the signature headers alone tell, before any body is read: both present, the
/// timestamp well-formed and within the window, the signature well-formed. A request that
/// fails this can never verify, whatever its body. Returns the timestamp and the expected MAC.
pub fn check_headers(
    timestamp: Option<&[u8]>,
    signature: Option<&[u8]>,
    now: u64,
) -> Result<(u64, [u8; 32]), SignatureError> {
    let ts = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    let sig = signature.ok_or(SignatureError::MissingSignature)?;
    let ts_str = std::str::from_utf8(ts).map_err(|_| SignatureError::InvalidTimestamp)?;
    if ts_str.is_empty() || ts_str.len() > 12 || !ts_str.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::InvalidTimestamp);
    }
    let ts_num: u64 = ts_str
        .parse()
        .map_err(|_| SignatureError::InvalidTimestamp)?;
    if ts_num.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
        return Err(SignatureError::StaleTimestamp);
    }
    let hex_part = sig
        .strip_prefix(b"v0=")
        .ok_or(SignatureError::MalformedSignature)?;
    let mut expected = [0u8; 32];
    // Exactly 64 digits (the decoder would also take a `0x` prefix).
    if hex_part.len() != 64 {
        return Err(SignatureError::MalformedSignature);
    }
    hex::decode_to_slice(hex_part, &mut expected)
        .map_err(|_| SignatureError::MalformedSignature)?;
    Ok((ts_num, expected))
}

fn check(
    keys: &[hmac::Hmac<Sha256>],
    timestamp: Option<&[u8]>,
    signature: Option<&[u8]>,
    body: &[u8],
    now: u64,
) -> Result<Verified, SignatureError> {
    let (ts_num, expected) = check_headers(timestamp, signature, now)?;
    let ts = timestamp.unwrap_or_default();
    for (i, key) in keys.iter().enumerate() {
        let mut mac = key.clone();
        mac.update(b"v0:");
        mac.update(ts);
        mac.update(b":");
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() {
            return Ok(Verified {
                secret_index: i,
                timestamp: ts_num,
                mac: expected,
            });
        }
    }
    Err(SignatureError::Mismatch)
}

/// The header of the request's timestamp, as Slack names it.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// The header of the request's signature, as Slack names it.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";

/// The `X-Slack-Signature` value for `body` at `timestamp`: what Slack would send. Used by the
/// tests, the bench tooling and anyone writing a client for the gateway.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's documented example:
    // https://api.slack.com/authentication/verifying-requests-from-slack#a_recipe_for_security
    const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const DOC_TS: u64 = 1531420618;
    const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const DOC_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn check(
        secrets: &[&str],
        ts: Option<&str>,
        sig: Option<&str>,
        body: &str,
        now: u64,
    ) -> Result<usize, SignatureError> {
        let s: Vec<Secret> = secrets.iter().map(|s| Secret::from(*s)).collect();
        verify(
            &s,
            ts.map(str::as_bytes),
            sig.map(str::as_bytes),
            body.as_bytes(),
            now,
        )
        .map(|v| v.secret_index)
    }

    #[test]
    fn slack_documented_example_verifies() {
        assert_eq!(sign(DOC_SECRET, DOC_TS, DOC_BODY.as_bytes()), DOC_SIG);
        assert_eq!(
            check(
                &[DOC_SECRET],
                Some("1531420618"),
                Some(DOC_SIG),
                DOC_BODY,
                DOC_TS + 10
            ),
            Ok(0)
        );
    }

    #[test]
    fn previous_secret_is_accepted_with_its_index() {
        assert_eq!(
            check(
                &["new-secret", DOC_SECRET],
                Some("1531420618"),
                Some(DOC_SIG),
                DOC_BODY,
                DOC_TS
            ),
            Ok(1)
        );
    }

    #[test]
    fn every_failure_has_its_reason() {
        let ts = Some("1531420618");
        let sig = Some(DOC_SIG);
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            u64,
            SignatureError,
        );
        let cases: [Case; 9] = [
            (
                None,
                sig,
                DOC_BODY,
                DOC_TS,
                SignatureError::MissingTimestamp,
            ),
            (ts, None, DOC_BODY, DOC_TS, SignatureError::MissingSignature),
            (
                Some("abc"),
                sig,
                DOC_BODY,
                DOC_TS,
                SignatureError::InvalidTimestamp,
            ),
            (
                Some("-1531420618"),
                sig,
                DOC_BODY,
                DOC_TS,
                SignatureError::InvalidTimestamp,
            ),
            (
                Some("99999999999999999999"),
                sig,
                DOC_BODY,
                DOC_TS,
                SignatureError::InvalidTimestamp,
            ),
            (
                ts,
                sig,
                DOC_BODY,
                DOC_TS + 301,
                SignatureError::StaleTimestamp,
            ),
            (
                ts,
                sig,
                DOC_BODY,
                DOC_TS - 301,
                SignatureError::StaleTimestamp,
            ),
            (
                ts,
                Some("a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
                DOC_BODY,
                DOC_TS,
                SignatureError::MalformedSignature,
            ),
            (ts, sig, "token=tampered", DOC_TS, SignatureError::Mismatch),
        ];
        for (ts, sig, body, now, want) in cases {
            assert_eq!(
                check(&[DOC_SECRET], ts, sig, body, now),
                Err(want),
                "{ts:?} {sig:?} {now}"
            );
        }
        assert_eq!(
            check(&[DOC_SECRET], ts, Some("v0=zz"), DOC_BODY, DOC_TS),
            Err(SignatureError::MalformedSignature)
        );
        assert_eq!(
            check(&["wrong"], ts, sig, DOC_BODY, DOC_TS),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn window_edges_are_inclusive() {
        assert!(check(
            &[DOC_SECRET],
            Some("1531420618"),
            Some(DOC_SIG),
            DOC_BODY,
            DOC_TS + 300
        )
        .is_ok());
        assert!(check(
            &[DOC_SECRET],
            Some("1531420618"),
            Some(DOC_SIG),
            DOC_BODY,
            DOC_TS - 300
        )
        .is_ok());
    }
}
