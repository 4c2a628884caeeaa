//! `[oauth]`: the install flow's scopes, paths, redirect URI, pages and token rotation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use url::Url;

use super::cx::{check_redirect_uri, join_url, ser_duration, Cx, R};
use super::raw::{self, Str};

/// How long an OAuth `state` stays valid.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(600);
/// How long before expiry a rotating token is refreshed.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(2 * 3600);

#[derive(Debug, Clone, Serialize)]
pub struct OAuthConfig {
    pub scopes: Vec<String>,
    pub user_scopes: Vec<String>,
    pub redirect_uri: Url,
    pub team: Option<String>,
    pub install_path: String,
    pub redirect_path: String,
    pub direct_install: bool,
    #[serde(serialize_with = "ser_duration")]
    pub state_ttl: Duration,
    pub success_url: Option<Url>,
    pub failure_url: Option<Url>,
    pub install_page_template: Option<PathBuf>,
    pub success_page_template: Option<PathBuf>,
    pub failure_page_template: Option<PathBuf>,
    #[serde(serialize_with = "ser_duration")]
    pub token_rotation_refresh_before: Duration,
    pub accept_stateless_org_installs: bool,
}

impl Cx<'_> {
    /// `[oauth]`; the redirect URI is derived from `public_url` (set at `public_url_at`) unless
    /// the file sets it.
    pub(super) fn oauth(
        &mut self,
        o: &raw::RawOAuth,
        public_url: &Url,
        public_url_at: Option<&Str>,
    ) -> R<OAuthConfig> {
        let scopes = self.strings("oauth.scopes", &o.scopes)?;
        let user_scopes = self.strings("oauth.user_scopes", &o.user_scopes)?;
        let install_path =
            self.http_path("oauth.install_path", &o.install_path, "/slack/install")?;
        let redirect_path = self.http_path(
            "oauth.redirect_path",
            &o.redirect_path,
            "/slack/oauth_redirect",
        )?;
        // Written or derived, the redirect URI goes into every authorize URL, so
        // `oauth.v2.access` gets it too (Slack requires the same value in both).
        let redirect_uri = match self.url("oauth.redirect_uri", &o.redirect_uri)? {
            Some(u) => u,
            None => join_url(public_url, &redirect_path),
        };
        check_redirect_uri(
            self,
            "oauth.redirect_uri",
            o.redirect_uri.as_ref().or(public_url_at),
            &redirect_uri,
        )?;
        let team = self
            .string("oauth.team", &o.team)?
            .filter(|t| !t.is_empty());
        let state_ttl = self.duration("oauth.state_ttl", &o.state_ttl, DEFAULT_STATE_TTL)?;
        let success_url = self.url("oauth.success_url", &o.success_url)?;
        let failure_url = self.url("oauth.failure_url", &o.failure_url)?;
        let install_page_template =
            self.template("oauth.install_page_template", &o.install_page_template)?;
        let success_page_template =
            self.template("oauth.success_page_template", &o.success_page_template)?;
        let failure_page_template =
            self.template("oauth.failure_page_template", &o.failure_page_template)?;
        let token_rotation_refresh_before = self.duration(
            "oauth.token_rotation_refresh_before",
            &o.token_rotation_refresh_before,
            DEFAULT_REFRESH_BEFORE,
        )?;

        Ok(OAuthConfig {
            scopes,
            user_scopes,
            redirect_uri,
            team,
            install_path,
            redirect_path,
            direct_install: o.direct_install.unwrap_or(false),
            state_ttl,
            success_url,
            failure_url,
            install_page_template,
            success_page_template,
            failure_page_template,
            token_rotation_refresh_before,
            accept_stateless_org_installs: o.accept_stateless_org_installs.unwrap_or(false),
        })
    }
}
