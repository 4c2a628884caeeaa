//! `[slack]`: the app's credentials and signing secrets, and Slack's URLs (derived from
//! `slack.domain` unless set one by one).

use std::time::Duration;

use serde::Serialize;
use url::Url;

use super::cx::{ser_duration, Cx, R};
use super::raw::{self, Str};
use crate::secret::Secret;

/// Timeout of a call to Slack's Web API (`oauth.v2.access`, `auth.test`, refresh).
pub const DEFAULT_SLACK_API_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct SlackConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub signing_secret: Secret,
    pub previous_signing_secrets: Vec<Secret>,
    pub domain: String,
    pub api_url: Url,
    pub authorize_url: Url,
    pub openid_authorize_url: Url,
    pub openid_jwks_url: Url,
    pub openid_issuer: String,
    #[serde(serialize_with = "ser_duration")]
    pub api_timeout: Duration,
}

impl Cx<'_> {
    /// `[slack]`.
    pub(super) fn slack(&mut self, k: &raw::RawSlack) -> R<SlackConfig> {
        let client_id = self.string_or("slack.client_id", &k.client_id, "")?;
        if client_id.contains(['/', '\0']) {
            return Err(self.err(
                "slack.client_id",
                k.client_id.as_ref(),
                "must not contain `/`",
            ));
        }
        let client_secret = self
            .secret(
                "slack.client_secret",
                &k.client_secret,
                &k.client_secret_file,
            )?
            .unwrap_or_default();
        let signing_secret = self
            .secret(
                "slack.signing_secret",
                &k.signing_secret,
                &k.signing_secret_file,
            )?
            .unwrap_or_default();
        if signing_secret.is_empty() {
            return Err(self.err(
                "slack.signing_secret",
                k.signing_secret.as_ref(),
                "must be set (Slack app settings → Basic Information → Signing Secret)",
            ));
        }
        let mut previous_signing_secrets = Vec::new();
        for p in k.previous_signing_secrets.iter().flatten() {
            let v = self.expand("slack.previous_signing_secrets", p)?.0;
            if !v.is_empty() {
                previous_signing_secrets.push(Secret::new(v));
            }
        }
        let domain = self.string_or("slack.domain", &k.domain, "slack.com")?;
        if domain.is_empty() || domain.contains(['/', ':', ' ']) {
            return Err(self.err(
                "slack.domain",
                k.domain.as_ref(),
                "must be a host name like \"slack.com\"",
            ));
        }
        let derived = |p: &str| Url::parse(&format!("https://{domain}{p}"));
        let derived_or = |cx: &mut Self, key: &str, s: &Option<Str>, p: &str| -> R<Url> {
            match cx.url(key, s)? {
                Some(u) => Ok(u),
                None => {
                    derived(p).map_err(|e| cx.err("slack.domain", k.domain.as_ref(), e.to_string()))
                }
            }
        };
        let api_url = derived_or(self, "slack.api_url", &k.api_url, "/api")?;
        let authorize_url = derived_or(
            self,
            "slack.authorize_url",
            &k.authorize_url,
            "/oauth/v2/authorize",
        )?;
        let openid_authorize_url = derived_or(
            self,
            "slack.openid_authorize_url",
            &k.openid_authorize_url,
            "/openid/connect/authorize",
        )?;
        let openid_jwks_url = derived_or(
            self,
            "slack.openid_jwks_url",
            &k.openid_jwks_url,
            "/openid/connect/keys",
        )?;
        let openid_issuer = self.string_or(
            "slack.openid_issuer",
            &k.openid_issuer,
            &format!("https://{domain}"),
        )?;
        let api_timeout = self.duration(
            "slack.api_timeout",
            &k.api_timeout,
            DEFAULT_SLACK_API_TIMEOUT,
        )?;

        Ok(SlackConfig {
            client_id,
            client_secret,
            signing_secret,
            previous_signing_secrets,
            domain,
            api_url,
            authorize_url,
            openid_authorize_url,
            openid_jwks_url,
            openid_issuer,
            api_timeout,
        })
    }
}
