//! The Sign in with Slack half of the fake Slack: an OpenID provider with RSA keys generated
//! at test time.
//!
//! - `GET /openid/connect/authorize`: a page whose "Allow" link returns to `redirect_uri` with
//!   a code bound to the request's `nonce`;
//! - `POST /api/openid.connect.token`: client credentials checked, codes single-use, expiring
//!   and bound to their `redirect_uri`; answers an RS256 id_token;
//! - `GET /openid/connect/keys`: the JWKS.
//!
//! [`Tamper`] makes the next id_token wrong in one chosen way, to test the gateway's checks.

#![allow(dead_code)]

use std::collections::HashMap;

use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use serde_json::{json, Value};

/// One way to make the next id_token wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum Tamper {
    /// Signed by a key that is not in the JWKS, under a published kid.
    ForgedSignature,
    /// Signed by a key whose kid the JWKS does not list.
    UnknownKid,
    WrongAudience,
    WrongIssuer,
    /// Expired ten minutes ago.
    Expired,
    WrongNonce,
    /// `alg: none`, no signature.
    AlgNone,
}

/// Who signs in.
#[derive(Clone, Debug)]
pub struct OidcUser {
    pub user_id: String,
    pub team_id: String,
    pub email: String,
    pub name: String,
}

impl Default for OidcUser {
    fn default() -> Self {
        OidcUser {
            user_id: "U0ALICE".into(),
            team_id: "T0SIGNIN".into(),
            email: "alice@example.com".into(),
            name: "Alice".into(),
        }
    }
}

struct OidcCode {
    redirect_uri: String,
    nonce: String,
    user: OidcUser,
    issued_at: i64,
    used: bool,
}

pub struct OidcState {
    /// Published keys, newest last.
    keys: Vec<(String, KeyPair)>,
    /// A key never published, for forgeries.
    rogue: KeyPair,
    codes: HashMap<String, OidcCode>,
    pub next_user: OidcUser,
    pub tamper: Option<Tamper>,
    pub issuer: String,
    pub jwks_fetches: usize,
}

impl OidcState {
    pub fn new(issuer: String) -> Self {
        OidcState {
            keys: vec![("kid-1".into(), KeyPair::generate(KeySize::Rsa2048).unwrap())],
            rogue: KeyPair::generate(KeySize::Rsa2048).unwrap(),
            codes: HashMap::new(),
            next_user: OidcUser::default(),
            tamper: None,
            issuer,
            jwks_fetches: 0,
        }
    }

    /// Publishes a new key and signs with it from now on (the old one stays published).
    pub fn rotate_key(&mut self) -> String {
        let kid = format!("kid-{}", self.keys.len() + 1);
        self.keys
            .push((kid.clone(), KeyPair::generate(KeySize::Rsa2048).unwrap()));
        kid
    }

    pub fn issue_code(&mut self, redirect_uri: &str, nonce: &str, now: i64) -> String {
        let code = format!(
            "oidc-code-{}-{}",
            self.codes.len() + 1,
            super::fake_slack::rand_suffix()
        );
        self.codes.insert(
            code.clone(),
            OidcCode {
                redirect_uri: redirect_uri.into(),
                nonce: nonce.into(),
                user: self.next_user.clone(),
                issued_at: now,
                used: false,
            },
        );
        code
    }

    pub fn jwks(&mut self) -> Value {
        self.jwks_fetches += 1;
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|(kid, kp)| {
                let c = PublicKeyComponents::<Vec<u8>>::from(kp.public_key());
                json!({"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            })
            .collect();
        json!({ "keys": keys })
    }

    /// `openid.connect.token` for `code`: the answer, or Slack's error code.
    pub fn token(
        &mut self,
        code: &str,
        redirect_uri: Option<&str>,
        client_id: &str,
        now: i64,
    ) -> Result<Value, &'static str> {
        let entry = self.codes.get_mut(code).ok_or("invalid_code")?;
        if entry.used || now - entry.issued_at > super::fake_slack::CODE_TTL_SECS {
            return Err("invalid_code");
        }
        if redirect_uri != Some(entry.redirect_uri.as_str()) {
            return Err("bad_redirect_uri");
        }
        entry.used = true;
        let (user, nonce) = (entry.user.clone(), entry.nonce.clone());
        let tamper = self.tamper.take();
        let mut claims = json!({
            "iss": self.issuer,
            "sub": user.user_id,
            "aud": client_id,
            "exp": now + 300,
            "iat": now,
            "auth_time": now,
            "nonce": nonce,
            "https://slack.com/user_id": user.user_id,
            "https://slack.com/team_id": user.team_id,
            "email": user.email,
            "email_verified": true,
            "name": user.name,
            "https://slack.com/team_name": "Sign-in Team",
        });
        match tamper {
            Some(Tamper::WrongAudience) => claims["aud"] = json!("999.999"),
            Some(Tamper::WrongIssuer) => claims["iss"] = json!("https://evil.example.com"),
            Some(Tamper::Expired) => claims["exp"] = json!(now - 600),
            Some(Tamper::WrongNonce) => claims["nonce"] = json!("not-the-nonce"),
            _ => {}
        }
        let (kid, key) = self.keys.last().unwrap();
        let id_token = match tamper {
            Some(Tamper::ForgedSignature) => sign(&claims, kid, &self.rogue),
            Some(Tamper::UnknownKid) => sign(&claims, "kid-unpublished", &self.rogue),
            Some(Tamper::AlgNone) => {
                let header = b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes());
                format!("{header}.{}.", b64(claims.to_string().as_bytes()))
            }
            _ => sign(&claims, kid, key),
        };
        Ok(
            json!({"ok": true, "access_token": "xoxp-oidc-access", "token_type": "Bearer", "id_token": id_token}),
        )
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn sign(claims: &Value, kid: &str, key: &KeyPair) -> String {
    let header = b64(json!({"alg": "RS256", "typ": "JWT", "kid": kid})
        .to_string()
        .as_bytes());
    let payload = b64(claims.to_string().as_bytes());
    let input = format!("{header}.{payload}");
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", b64(&sig))
}
