//! The id_token of Sign in with Slack, verified properly.
//!
//! A token is accepted only when its RS256 signature verifies against a key from Slack's JWKS
//! (`slack.openid_jwks_url`, cached, fetched again when a token names a `kid` the cache does
//! not have), its `iss` is `slack.openid_issuer`, its `aud` is our client_id, it has not
//! expired (60 s of clock skew allowed) and its `nonce` is the one this browser's login
//! started with. Any other algorithm, `none` included, is refused.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Clock skew tolerated on `exp`.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Why an id_token was refused. `reason()` is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the id_token is not a well-formed JWT")]
    Malformed,
    #[error("the id_token is signed with an unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("the id_token names a key Slack does not publish")]
    UnknownKey,
    #[error("the id_token's signature does not verify")]
    InvalidSignature,
    #[error("the id_token was issued by someone else")]
    InvalidIssuer,
    #[error("the id_token is for another app")]
    InvalidAudience,
    #[error("the id_token has expired")]
    Expired,
    #[error("the id_token's nonce is not this login's")]
    InvalidNonce,
    #[error("cannot fetch Slack's signing keys: {0}")]
    Jwks(String),
}

impl OidcError {
    pub fn reason(&self) -> &'static str {
        match self {
            OidcError::Malformed => "malformed_id_token",
            OidcError::UnsupportedAlgorithm => "unsupported_algorithm",
            OidcError::UnknownKey => "unknown_key",
            OidcError::InvalidSignature => "invalid_signature",
            OidcError::InvalidIssuer => "invalid_issuer",
            OidcError::InvalidAudience => "invalid_audience",
            OidcError::Expired => "expired_token",
            OidcError::InvalidNonce => "invalid_nonce",
            OidcError::Jwks(_) => "slack_unreachable",
        }
    }
}

/// The claims the gateway uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct IdClaims {
    pub sub: String,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "https://slack.com/user_id", default)]
    pub user_id: Option<String>,
    #[serde(rename = "https://slack.com/team_id", default)]
    pub team_id: Option<String>,
    #[serde(rename = "https://slack.com/enterprise_id", default)]
    pub enterprise_id: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: String,
    n: Option<String>,
    e: Option<String>,
}

/// RSA modulus and exponent (base64url) by `kid`.
type KeySet = HashMap<String, (String, String)>;

/// Slack's published keys, per JWKS URL.
#[derive(Default)]
pub struct JwksCache {
    inner: tokio::sync::Mutex<(String, KeySet)>,
}

impl JwksCache {
    /// The key `kid` from `url`, fetching the set again if it is not known.
    async fn key(
        &self,
        http: &reqwest::Client,
        url: &str,
        kid: &str,
        timeout: Duration,
    ) -> Result<DecodingKey, OidcError> {
        // One fetch at a time; waiters find the result in the cache.
        let mut cache = self.inner.lock().await;
        if cache.0 != url {
            *cache = (url.to_owned(), HashMap::new());
        }
        if !cache.1.contains_key(kid) {
            cache.1 = fetch(http, url, timeout).await?;
        }
        let (n, e) = cache.1.get(kid).ok_or(OidcError::UnknownKey)?;
        DecodingKey::from_rsa_components(n, e).map_err(|_| OidcError::UnknownKey)
    }
}

async fn fetch(http: &reqwest::Client, url: &str, timeout: Duration) -> Result<KeySet, OidcError> {
    let resp = http.get(url).timeout(timeout).send().await.map_err(|e| {
        OidcError::Jwks(if e.is_timeout() {
            "timed out".into()
        } else {
            e.to_string()
        })
    })?;
    if !resp.status().is_success() {
        return Err(OidcError::Jwks(format!("HTTP {}", resp.status())));
    }
    let set: Jwks = resp
        .json()
        .await
        .map_err(|e| OidcError::Jwks(e.to_string()))?;
    Ok(set
        .keys
        .into_iter()
        .filter(|k| k.kty == "RSA")
        .filter_map(|k| Some((k.kid?, (k.n?, k.e?))))
        .collect())
}

/// What an id_token must match.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub jwks_url: &'a str,
    pub timeout: Duration,
}

/// Verifies `token` and returns its claims.
pub async fn verify(
    cache: &JwksCache,
    http: &reqwest::Client,
    token: &str,
    want: &Expected<'_>,
) -> Result<IdClaims, OidcError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| OidcError::Malformed)?;
    if header.alg != Algorithm::RS256 {
        return Err(OidcError::UnsupportedAlgorithm);
    }
    let kid = header.kid.ok_or(OidcError::UnknownKey)?;
    let key = cache.key(http, want.jwks_url, &kid, want.timeout).await?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[want.issuer]);
    v.set_audience(&[want.client_id]);
    v.leeway = CLOCK_SKEW_SECS;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<IdClaims>(token, &key, &v).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => OidcError::InvalidSignature,
        ErrorKind::InvalidIssuer => OidcError::InvalidIssuer,
        ErrorKind::InvalidAudience => OidcError::InvalidAudience,
        ErrorKind::ExpiredSignature => OidcError::Expired,
        ErrorKind::InvalidAlgorithm => OidcError::UnsupportedAlgorithm,
        _ => OidcError::Malformed,
    })?;
    let claims = data.claims;
    let nonce_ok = claims
        .nonce
        .as_deref()
        .is_some_and(|n| bool::from(n.as_bytes().ct_eq(want.nonce.as_bytes())));
    if !nonce_ok {
        return Err(OidcError::InvalidNonce);
    }
    Ok(claims)
}
