//! `[signin]`: Sign in with Slack: its paths, redirect URI, cookie secret, sessions and the
//! page prefixes it protects.

use std::time::Duration;

use serde::Serialize;
use url::Url;

use super::cx::{check_redirect_uri, join_url, ser_duration, Cx, R};
use super::raw::{self, Str};
use crate::secret::Secret;

/// How long a Sign in with Slack session lasts.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Serialize)]
pub struct SigninConfig {
    pub enabled: bool,
    pub scopes: Vec<String>,
    pub login_path: String,
    pub callback_path: String,
    pub logout_path: String,
    pub redirect_uri: Url,
    pub cookie_secret: Option<Secret>,
    #[serde(serialize_with = "ser_duration")]
    pub session_ttl: Duration,
    pub protect: Vec<String>,
    pub allowed_teams: Vec<String>,
    pub team: Option<String>,
}

impl Cx<'_> {
    /// `[signin]`; the redirect URI is derived from `public_url` (set at `public_url_at`) unless
    /// the file sets it, and the team hint is the install flow's `team` unless set here.
    pub(super) fn signin(
        &mut self,
        g: &raw::RawSignin,
        public_url: &Url,
        public_url_at: Option<&Str>,
        team: &Option<String>,
    ) -> R<SigninConfig> {
        let signin_enabled = g.enabled.unwrap_or(false);
        let signin_scopes = match &g.scopes {
            None => vec!["openid".into(), "email".into(), "profile".into()],
            Some(_) => self.strings("signin.scopes", &g.scopes)?,
        };
        let login_path = self.http_path("signin.login_path", &g.login_path, "/slack/login")?;
        let callback_path = self.http_path(
            "signin.callback_path",
            &g.callback_path,
            "/slack/login/callback",
        )?;
        let logout_path = self.http_path("signin.logout_path", &g.logout_path, "/slack/logout")?;
        let signin_redirect_uri = match self.url("signin.redirect_uri", &g.redirect_uri)? {
            Some(u) => u,
            None => join_url(public_url, &callback_path),
        };
        if signin_enabled {
            check_redirect_uri(
                self,
                "signin.redirect_uri",
                g.redirect_uri.as_ref().or(public_url_at),
                &signin_redirect_uri,
            )?;
        }
        let cookie_secret = self.secret(
            "signin.cookie_secret",
            &g.cookie_secret,
            &g.cookie_secret_file,
        )?;
        if signin_enabled {
            match &cookie_secret {
                Some(c) if c.expose().len() >= 32 => {}
                _ => {
                    return Err(self.err(
                        "signin.cookie_secret",
                        g.cookie_secret.as_ref(),
                        "must be set to at least 32 bytes when signin.enabled = true",
                    ))
                }
            }
        }
        let session_ttl =
            self.duration("signin.session_ttl", &g.session_ttl, DEFAULT_SESSION_TTL)?;
        let mut protect = Vec::new();
        for p in g.protect.iter().flatten() {
            let value = self.http_path("signin.protect", &Some(p.clone()), "/")?;
            protect.push(value);
        }
        let allowed_teams = self.strings("signin.allowed_teams", &g.allowed_teams)?;
        // Sign-in takes the install flow's team hint unless it sets its own ("" for none).
        let signin_team = match &g.team {
            Some(_) => self
                .string("signin.team", &g.team)?
                .filter(|t| !t.is_empty()),
            None => team.clone(),
        };

        Ok(SigninConfig {
            enabled: signin_enabled,
            scopes: signin_scopes,
            login_path,
            callback_path,
            logout_path,
            redirect_uri: signin_redirect_uri,
            cookie_secret,
            session_ttl,
            protect,
            allowed_teams,
            team: signin_team,
        })
    }
}
