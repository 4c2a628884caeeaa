//! The first stage of configuration: a mirror of `gateway.toml` as written.
//!
//! Every table denies unknown keys, so a typo in a security setting fails closed with the key
//! and line. Strings are kept [`Spanned`] so that validation errors can name the line too.
//! Nothing here is interpreted: `${VAR}` expansion, secret files, durations and URLs are the
//! business of [`super::Config::from_toml`] and the section files beside it.

use serde::Deserialize;
use toml::Spanned;

/// A string as written, with where it was written.
pub type Str = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub slack: RawSlack,
    #[serde(default)]
    pub oauth: RawOAuth,
    #[serde(default)]
    pub signin: RawSignin,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub egress: RawEgress,
    #[serde(default)]
    pub socket_mode: RawSocketMode,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub app: RawApp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSocketMode {
    pub enabled: Option<bool>,
    pub app_token: Option<Str>,
    pub app_token_file: Option<Str>,
    pub connections: Option<Spanned<i64>>,
    pub ping_interval: Option<Str>,
    pub ping_timeout: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    pub mode: Option<Str>,
    pub max_attempts: Option<Spanned<i64>>,
    pub retry_backoff: Option<Str>,
    pub retry_backoff_max: Option<Str>,
    pub concurrency: Option<Spanned<i64>>,
    pub dedupe_window: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    pub enabled: Option<bool>,
    pub listen: Option<Str>,
    pub token: Option<Str>,
    pub token_file: Option<Str>,
    pub max_wait: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Str>,
    pub public_url: Option<Str>,
    pub tls: Option<RawTls>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub max_body_bytes_in_flight: Option<Spanned<i64>>,
    pub replay_protection: Option<bool>,
    pub admin_listen: Option<Str>,
    pub trusted_proxies: Option<Vec<Str>>,
    pub workers: Option<Spanned<i64>>,
    pub shutdown_grace: Option<Str>,
    pub header_read_timeout: Option<Str>,
    pub body_read_timeout: Option<Str>,
    pub write_timeout: Option<Str>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_headers: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Str,
    pub key: Str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlack {
    pub client_id: Option<Str>,
    pub client_secret: Option<Str>,
    pub client_secret_file: Option<Str>,
    pub signing_secret: Option<Str>,
    pub signing_secret_file: Option<Str>,
    pub previous_signing_secrets: Option<Vec<Str>>,
    pub domain: Option<Str>,
    pub api_url: Option<Str>,
    pub authorize_url: Option<Str>,
    pub openid_authorize_url: Option<Str>,
    pub openid_jwks_url: Option<Str>,
    pub openid_issuer: Option<Str>,
    pub api_timeout: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth {
    pub scopes: Option<Vec<Str>>,
    pub user_scopes: Option<Vec<Str>>,
    pub redirect_uri: Option<Str>,
    pub team: Option<Str>,
    pub install_path: Option<Str>,
    pub redirect_path: Option<Str>,
    pub direct_install: Option<bool>,
    pub state_ttl: Option<Str>,
    pub success_url: Option<Str>,
    pub failure_url: Option<Str>,
    pub install_page_template: Option<Str>,
    pub success_page_template: Option<Str>,
    pub failure_page_template: Option<Str>,
    pub token_rotation_refresh_before: Option<Str>,
    pub accept_stateless_org_installs: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignin {
    pub enabled: Option<bool>,
    pub scopes: Option<Vec<Str>>,
    pub login_path: Option<Str>,
    pub callback_path: Option<Str>,
    pub logout_path: Option<Str>,
    pub redirect_uri: Option<Str>,
    pub cookie_secret: Option<Str>,
    pub cookie_secret_file: Option<Str>,
    pub session_ttl: Option<Str>,
    pub protect: Option<Vec<Str>>,
    pub allowed_teams: Option<Vec<Str>>,
    pub team: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<Str>,
    pub timeout: Option<Str>,
    pub keepalive_timeout: Option<Str>,
    pub slack_paths: Option<Vec<Str>>,
    pub inject_user_token: Option<bool>,
    pub inject_tokens: Option<bool>,
    pub headers: Option<RawHeaders>,
}

/// Names of the headers injected into forwarded requests.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    pub bot_token: Option<Str>,
    pub bot_id: Option<Str>,
    pub bot_user_id: Option<Str>,
    pub team_id: Option<Str>,
    pub enterprise_id: Option<Str>,
    pub enterprise_install: Option<Str>,
    pub user_token: Option<Str>,
    pub user_id: Option<Str>,
    pub user_email: Option<Str>,
    pub user_name: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub backend: Option<Str>,
    pub path: Option<Str>,
    pub url: Option<Str>,
    pub url_file: Option<Str>,
    pub pool_size: Option<Spanned<i64>>,
    pub schema: Option<Str>,
    pub encryption_key: Option<Str>,
    pub encryption_key_file: Option<Str>,
    pub previous_encryption_keys: Option<Vec<Str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token: Option<Str>,
    pub token_file: Option<Str>,
}

/// `[app]`: how the Slack app itself is set up, for `slack-gateway manifest`. Nothing here
/// changes what the gateway does with a request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub name: Option<Str>,
    pub description: Option<Str>,
    pub bot_events: Option<Vec<Str>>,
    pub commands: Option<Vec<Spanned<RawCommand>>>,
    pub token_rotation: Option<bool>,
    pub org_deploy: Option<bool>,
}

/// One `[[app.commands]]` entry: a slash command.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommand {
    pub command: Option<Str>,
    pub description: Option<Str>,
    pub usage_hint: Option<Str>,
}
