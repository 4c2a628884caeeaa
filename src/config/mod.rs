//! Configuration: `gateway.toml` → [`Config`].
//!
//! Two stages, as in ripgrep: [`raw`] mirrors the file (unknown keys are errors), then
//! [`Config::from_toml`] expands `${VAR}` / `${VAR:-default}`, reads `*_file` secrets, parses
//! durations and URLs and checks the cross-key rules. Only the validated [`Config`] leaves this
//! module. Every error names the key, and the line where the file has one.
//!
//! Relative paths (storage, TLS files, secret files, templates) are resolved against the folder
//! of the config file, so the gateway behaves the same whatever directory it is started from.
//!
//! This file owns [`Config`], its entry points and the rules that span sections (one owner per
//! path, protected prefixes clear of Slack's paths, at least one kind of scope). Each section
//! is validated in its own file: `server.rs` (with `[admin]`), `slack.rs`, `oauth.rs`,
//! `signin.rs`, `upstream.rs`, `storage.rs`, `app.rs`. They share the validation context in
//! `cx.rs` (value readers, error constructors, serde helpers), which takes `${VAR}` expansion
//! and secret files from `expand.rs`; [`ConfigError`] lives in `error.rs`. The section files
//! import `cx.rs`, never this file; this file imports them and re-exports their types.

mod app;
mod cx;
mod egress;
mod error;
mod expand;
mod later;
mod oauth;
pub mod raw;
mod server;
mod signin;
mod slack;
mod storage;
mod upstream;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::secret::Secret;
pub use app::{
    AppConfig, SlashCommand, DEFAULT_APP_NAME, LIFECYCLE_EVENTS, MAX_APP_DESCRIPTION, MAX_APP_NAME,
    MAX_BOT_EVENTS, MAX_COMMAND,
};
pub(crate) use cx::join_url;
use cx::{Cx, R};
pub use egress::EgressConfig;
pub use error::ConfigError;
pub use later::{DeliveryConfig, DeliveryMode, SocketModeConfig};
pub use oauth::{OAuthConfig, DEFAULT_REFRESH_BEFORE, DEFAULT_STATE_TTL};
use raw::RawConfig;
pub use server::{
    AdminConfig, ServerConfig, TlsConfig, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES_IN_FLIGHT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADERS, DEFAULT_SHUTDOWN_GRACE, DEFAULT_WRITE_TIMEOUT,
};
pub use signin::{SigninConfig, DEFAULT_SESSION_TTL};
pub use slack::{SlackConfig, DEFAULT_SLACK_API_TIMEOUT};
pub use storage::{Backend, DatabaseUrl, PostgresConfig, StorageConfig};
pub use upstream::{
    InjectedHeaders, UpstreamConfig, DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT, DEFAULT_UPSTREAM_TIMEOUT,
};

/// The validated configuration. Cheap to clone behind an `Arc`; swapped whole on reload.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub slack: SlackConfig,
    pub oauth: OAuthConfig,
    pub signin: SigninConfig,
    pub upstream: UpstreamConfig,
    pub storage: StorageConfig,
    pub egress: EgressConfig,
    pub socket_mode: SocketModeConfig,
    pub delivery: DeliveryConfig,
    pub admin: AdminConfig,
    /// How the Slack app is set up: read by `slack-gateway manifest` only.
    pub app: AppConfig,
    /// Secret keys whose value came from a `${VAR:-default}` fallback: development
    /// placeholders that the gateway warns about at start.
    #[serde(skip)]
    pub placeholder_secrets: Vec<String>,
    /// Files the config refers to (secret files, templates, TLS): watched for reload.
    #[serde(skip)]
    pub referenced_files: Vec<PathBuf>,
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, path, &|name| std::env::var(name).ok())
    }

    /// Validates `text` as if read from `path`, looking environment variables up with `env`.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut cx = Cx {
            text,
            path: path.display().to_string(),
            base,
            env,
            placeholders: Vec::new(),
            files: Vec::new(),
            injected: Vec::new(),
        };
        cx.validate(raw)
    }

    /// The effective config as TOML, secrets redacted (what `slack-gateway check` prints).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Every Slack secret that verifies a request: the current one first.
    pub fn signing_secrets(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.slack.signing_secret)
            .chain(self.slack.previous_signing_secrets.iter())
    }
}

impl Cx<'_> {
    /// Validates the sections in the order of the file's tables, each rule that spans sections
    /// once the sections it needs are read: the first error found is the one reported.
    fn validate(&mut self, raw: RawConfig) -> R<Config> {
        let server = self.server(&raw.server)?;
        let slack = self.slack(&raw.slack)?;
        let public_url_at = raw.server.public_url.as_ref();
        let oauth = self.oauth(&raw.oauth, &server.public_url, public_url_at)?;
        let signin = self.signin(&raw.signin, &server.public_url, public_url_at, &oauth.team)?;

        if oauth.scopes.is_empty() && oauth.user_scopes.is_empty() && !signin.enabled {
            return Err(self.err(
                "oauth.scopes",
                raw.oauth.scopes.as_ref().and_then(|v| v.first()),
                "set at least one of oauth.scopes / oauth.user_scopes (or enable [signin] alone)",
            ));
        }

        let upstream = self.upstream(&raw.upstream)?;
        self.one_owner_per_path(&oauth, &signin, &upstream)?;
        self.protect_clear_of_slack_paths(&raw.signin, &signin, &upstream)?;
        let storage = self.storage(&raw.storage)?;
        let egress = self.egress(&raw.egress)?;
        let socket_mode = self.socket_mode(&raw.socket_mode)?;
        let delivery = self.delivery(&raw.delivery)?;
        let admin = self.admin(
            &raw.admin,
            server.admin_listen,
            raw.server.admin_listen.as_ref(),
        )?;
        let app = self.app(&raw.app, &oauth.scopes, &upstream.slack_paths)?;

        Ok(Config {
            server,
            slack,
            oauth,
            signin,
            upstream,
            storage,
            egress,
            socket_mode,
            delivery,
            admin,
            app,
            placeholder_secrets: std::mem::take(&mut self.placeholders),
            referenced_files: std::mem::take(&mut self.files),
        })
    }

    /// Paths must not collide: each request must have one owner.
    fn one_owner_per_path(
        &self,
        oauth: &OAuthConfig,
        signin: &SigninConfig,
        upstream: &UpstreamConfig,
    ) -> R<()> {
        let mut owned: Vec<(&str, &str)> = vec![
            ("oauth.install_path", &oauth.install_path),
            ("oauth.redirect_path", &oauth.redirect_path),
        ];
        for p in &upstream.slack_paths {
            owned.push(("upstream.slack_paths", p));
        }
        if signin.enabled {
            owned.push(("signin.login_path", &signin.login_path));
            owned.push(("signin.callback_path", &signin.callback_path));
            owned.push(("signin.logout_path", &signin.logout_path));
        }
        for (i, (ka, pa)) in owned.iter().enumerate() {
            for (kb, pb) in &owned[i + 1..] {
                if pa == pb {
                    return Err(ConfigError::Invalid {
                        path: self.path.clone(),
                        key: (*kb).to_owned(),
                        line: None,
                        message: format!("path `{pb}` is also {ka}; every path needs one owner"),
                    });
                }
            }
        }
        Ok(())
    }

    /// A protected prefix must not cover a Slack path, nor lie under one, in any spelling:
    /// Slack's requests are verified, never signed in, and a browser request must never
    /// reach the app's Slack handler.
    fn protect_clear_of_slack_paths(
        &self,
        g: &raw::RawSignin,
        signin: &SigninConfig,
        upstream: &UpstreamConfig,
    ) -> R<()> {
        let (protect, slack_paths) = (&signin.protect, &upstream.slack_paths);
        for (p, at) in protect.iter().zip(g.protect.iter().flatten()) {
            let pk = crate::http::path::path_key(p);
            let clash = slack_paths.iter().find(|s| {
                let sk = crate::http::path::path_key(s);
                crate::http::path::key_covers(&pk, &sk) || crate::http::path::key_covers(&sk, &pk)
            });
            if let Some(s) = clash {
                return Err(self.err(
                    "signin.protect",
                    Some(at),
                    format!(
                        "`{p}` overlaps upstream.slack_paths `{s}`: Slack's requests are \
                         verified by their signature, never by a sign-in; protect the app's own \
                         page prefixes instead (e.g. \"/app\")"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_redacted_toml())
    }
}

/// A hash of the config file and every file it references (what a reload compares); `None` if the config is
/// unreadable.
pub fn fingerprint(config_path: &Path, referenced: &[PathBuf]) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(config_path).ok()?.hash(&mut h);
    for f in referenced {
        f.hash(&mut h);
        std::fs::read(f).ok().hash(&mut h);
    }
    Some(h.finish())
}

#[cfg(test)]
mod tests;
