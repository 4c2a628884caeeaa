//! Configuration: `gateway.toml` → [`Config`].
//!
//! Two stages, as in ripgrep: [`raw`] mirrors the file (unknown keys are errors), then
//! [`Config::from_toml`] expands `${VAR}` / `${VAR:-default}`, reads `*_file` secrets, parses
//! durations and URLs and checks the cross-key rules. Only the validated [`Config`] leaves this
//! module. Every error names the key, and the line where the file has one.
//!
//! Relative paths (storage, TLS files, secret files, templates) are resolved against the folder
//! of the config file, so the gateway behaves the same whatever directory it is started from.

pub mod raw;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use serde::Serialize;
use url::Url;

use crate::secret::Secret;
use raw::{RawConfig, Str};

/// Largest body accepted when `server.max_body_bytes` is not set (Slack's own limit is far
/// below this: events are a few KB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Request body bytes all requests together may hold in memory when
/// `server.max_body_bytes_in_flight` is not set.
pub const DEFAULT_MAX_BODY_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;
/// Slack waits 3 s for an answer; the default leaves the gateway time to say 504 first.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(2500);
/// How long an idle upstream connection is reused: below app servers' own keep-alive timeouts
/// (gunicorn 2 s, uvicorn and Node 5 s), so the gateway rarely writes a request onto a
/// connection the app is closing (that request would get a 502: it is never sent twice).
pub const DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an OAuth `state` stays valid.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(600);
/// How long before expiry a rotating token is refreshed.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(2 * 3600);
/// Time allowed for in-flight requests after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Timeout of a call to Slack's Web API (`oauth.v2.access`, `auth.test`, refresh).
pub const DEFAULT_SLACK_API_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send its request headers within this time (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose answers the client takes no byte of for this long is closed.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once on each listener; more wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Request headers accepted per request (more get 431).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// How long a Sign in with Slack session lasts.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a config could not be used. The `Display` form is the one line the CLI prints.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}{}: {key}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: String,
        key: String,
        line: Option<usize>,
        message: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The validated configuration. Cheap to clone behind an `Arc`; swapped whole on reload.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub slack: SlackConfig,
    pub oauth: OAuthConfig,
    pub signin: SigninConfig,
    pub upstream: UpstreamConfig,
    pub storage: StorageConfig,
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

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub tls: Option<TlsConfig>,
    pub max_body_bytes: usize,
    /// Request body bytes all requests together may hold in memory; past it, 503.
    pub max_body_bytes_in_flight: usize,
    pub replay_protection: bool,
    pub admin_listen: SocketAddr,
    pub trusted_proxies: Vec<IpAddr>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    #[serde(serialize_with = "ser_duration")]
    pub shutdown_grace: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub header_read_timeout: Duration,
    /// How long a client has to send a request's body once its head has arrived.
    #[serde(serialize_with = "ser_duration")]
    pub body_read_timeout: Duration,
    /// How long a write to a client may make no progress (the client takes no byte of its
    /// answers) before the connection is closed.
    #[serde(serialize_with = "ser_duration")]
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub max_headers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

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

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    pub url: Url,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// An idle connection to the upstream is reused only within this time of its last answer.
    #[serde(serialize_with = "ser_duration")]
    pub keepalive_timeout: Duration,
    pub slack_paths: Vec<String>,
    pub inject_user_token: bool,
    pub headers: InjectedHeaders,
}

/// Names of the headers the gateway injects. Whatever the names, inbound copies are removed
/// first (see [`crate::http::headers`]).
#[derive(Debug, Clone, Serialize)]
pub struct InjectedHeaders {
    #[serde(serialize_with = "ser_header")]
    pub bot_token: HeaderName,
    #[serde(serialize_with = "ser_header")]
    pub bot_id: HeaderName,
    #[serde(serialize_with = "ser_header")]
    pub bot_user_id: HeaderName,
    #[serde(serialize_with = "ser_header")]
    pub team_id: HeaderName,
    #[serde(serialize_with = "ser_header")]
    pub enterprise_id: HeaderName,
    #[serde(serialize_with = "ser_header")]
    pub enterprise_install: HeaderName,
    #[serde(serialize_with = "ser_header")]
    pub user_token: HeaderName,
    #[serde(serialize_with = "ser_header")]
    pub user_id: HeaderName,
    #[serde(serialize_with = "ser_header")]
    pub user_email: HeaderName,
    #[serde(serialize_with = "ser_header")]
    pub user_name: HeaderName,
}

impl InjectedHeaders {
    /// Every injected name, for stripping inbound copies.
    pub fn all(&self) -> [&HeaderName; 10] {
        [
            &self.bot_token,
            &self.bot_id,
            &self.bot_user_id,
            &self.team_id,
            &self.enterprise_id,
            &self.enterprise_install,
            &self.user_token,
            &self.user_id,
            &self.user_email,
            &self.user_name,
        ]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub encryption_key: Option<Secret>,
    pub previous_encryption_keys: Vec<Secret>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    pub token: Option<Secret>,
}

/// Events the gateway itself needs: it deletes installations on them (see [`crate::proxy`]).
/// Both are subscribable Events API events that need no scope.
pub const LIFECYCLE_EVENTS: [&str; 2] = ["app_uninstalled", "tokens_revoked"];

/// Longest app name Slack accepts in a manifest (`display_information.name`).
pub const MAX_APP_NAME: usize = 35;
/// Longest short description Slack accepts (`display_information.description`).
pub const MAX_APP_DESCRIPTION: usize = 140;
/// Longest slash command, leading `/` included.
pub const MAX_COMMAND: usize = 32;
/// Most event types Slack accepts in `bot_events`.
pub const MAX_BOT_EVENTS: usize = 100;
/// The app name when `app.name` is not set.
pub const DEFAULT_APP_NAME: &str = "slack-gateway app";

/// `[app]`: the Slack app's own settings, from which `slack-gateway manifest` writes an app
/// manifest. The gateway itself never reads them.
#[derive(Debug, Clone, Serialize)]
pub struct AppConfig {
    pub name: String,
    pub description: Option<String>,
    /// Explicit `bot_events`; `None` lets the manifest derive them from the bot scopes.
    pub bot_events: Option<Vec<String>>,
    pub commands: Vec<SlashCommand>,
    pub token_rotation: bool,
    pub org_deploy: bool,
}

/// A slash command of the app (`[[app.commands]]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlashCommand {
    pub command: String,
    pub description: String,
    pub usage_hint: Option<String>,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&duration_text(*d))
}

/// A duration as a config file writes it, in the largest unit that holds it whole ("2500ms",
/// "10s", "10m", "24h"): what `check` prints can be read back.
fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 || d.subsec_nanos() % 1_000_000 != 0 {
        return humantime::format_duration(d).to_string();
    }
    match ms {
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

fn ser_header<S: serde::Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
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

/// The validation context: the text (for line numbers), where the file is, and what was seen.
struct Cx<'a> {
    text: &'a str,
    path: String,
    base: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
    placeholders: Vec<String>,
    files: Vec<PathBuf>,
    /// The injected header names so far.
    injected: Vec<Injected>,
}

/// An injected header's name as configured.
struct Injected {
    key: String,
    /// Lowercase, `_` as `-`.
    folded: String,
    /// Where the file sets it (`None`: the default name).
    line: Option<usize>,
}

type R<T> = Result<T, ConfigError>;

impl Cx<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    fn err(&self, key: &str, at: Option<&Str>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.to_owned(),
            line: at.map(|s| self.line(s.span().start)),
            message: message.into(),
        }
    }

    fn err_at(&self, key: &str, offset: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.to_owned(),
            line: Some(self.line(offset)),
            message: message.into(),
        }
    }

    /// Expands `${VAR}` and `${VAR:-default}`; records whether a default was used.
    fn expand(&mut self, key: &str, s: &Str) -> R<(String, bool)> {
        let input = s.get_ref();
        let mut out = String::with_capacity(input.len());
        let mut used_default = false;
        let mut rest = input.as_str();
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                return Err(self.err(key, Some(s), "unterminated `${` (write `${NAME}`)"));
            };
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid_name = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid_name {
                return Err(self.err(
                    key,
                    Some(s),
                    format!("`${{{expr}}}` is not a valid environment variable reference"),
                ));
            }
            match ((self.env)(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => {
                    used_default = true;
                    out.push_str(d)
                }
                (None, None) => {
                    return Err(self.err(
                        key,
                        Some(s),
                        format!("environment variable {name} is not set (write `${{{name}:-default}}` for a default)"),
                    ))
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok((out, used_default))
    }

    fn string(&mut self, key: &str, s: &Option<Str>) -> R<Option<String>> {
        match s {
            None => Ok(None),
            Some(s) => Ok(Some(self.expand(key, s)?.0)),
        }
    }

    fn string_or(&mut self, key: &str, s: &Option<Str>, default: &str) -> R<String> {
        Ok(self.string(key, s)?.unwrap_or_else(|| default.to_owned()))
    }

    fn strings(&mut self, key: &str, v: &Option<Vec<Str>>) -> R<Vec<String>> {
        let mut out = Vec::new();
        for s in v.iter().flatten() {
            let value = self.expand(key, s)?.0;
            if value.trim().is_empty() {
                return Err(self.err(key, Some(s), "empty entries are not allowed"));
            }
            out.push(value);
        }
        Ok(out)
    }

    fn path(&mut self, key: &str, s: &Option<Str>) -> R<Option<PathBuf>> {
        Ok(self.string(key, s)?.map(|p| self.base.join(p)))
    }

    /// A secret given inline or as `{key}_file`; both at once is an error.
    fn secret(&mut self, key: &str, inline: &Option<Str>, file: &Option<Str>) -> R<Option<Secret>> {
        match (inline, file) {
            (Some(s), Some(_)) => Err(self.err(
                key,
                Some(s),
                format!("set either {key} or {key}_file, not both"),
            )),
            (Some(s), None) => {
                let (value, used_default) = self.expand(key, s)?;
                if used_default {
                    self.placeholders.push(key.to_owned());
                }
                Ok(Some(Secret::new(value)))
            }
            (None, Some(f)) => {
                let file_key = format!("{key}_file");
                let rel = self.expand(&file_key, f)?.0;
                let p = self.base.join(rel);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    self.err(
                        &file_key,
                        Some(f),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                warn_loose_permissions(&p);
                self.files.push(p);
                Ok(Some(Secret::new(text.trim_end_matches(['\n', '\r']))))
            }
            (None, None) => Ok(None),
        }
    }

    fn duration(&mut self, key: &str, s: &Option<Str>, default: Duration) -> R<Duration> {
        let Some(raw) = s else { return Ok(default) };
        let text = self.expand(key, raw)?.0;
        let d = humantime::parse_duration(text.trim()).map_err(|e| {
            self.err(
                key,
                Some(raw),
                format!("`{text}` is not a duration ({e}); write e.g. \"10m\" or \"2500ms\""),
            )
        })?;
        if d.is_zero() {
            return Err(self.err(key, Some(raw), "must be longer than zero"));
        }
        Ok(d)
    }

    /// A positive whole number up to `max`.
    fn count(
        &self,
        key: &str,
        v: &Option<toml::Spanned<i64>>,
        default: usize,
        max: i64,
    ) -> R<usize> {
        match v {
            None => Ok(default),
            Some(n) if (1..=max).contains(n.get_ref()) => Ok(*n.get_ref() as usize),
            Some(n) => {
                Err(self.err_at(key, n.span().start, format!("must be between 1 and {max}")))
            }
        }
    }

    fn url(&mut self, key: &str, s: &Option<Str>) -> R<Option<Url>> {
        let Some(raw) = s else { return Ok(None) };
        let text = self.expand(key, raw)?.0;
        let u = Url::parse(&text)
            .map_err(|e| self.err(key, Some(raw), format!("`{text}` is not a URL ({e})")))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(self.err(
                key,
                Some(raw),
                format!("`{text}` must be an http(s) URL with a host"),
            ));
        }
        Ok(Some(u))
    }

    fn socket(&mut self, key: &str, s: &Option<Str>, default: &str) -> R<SocketAddr> {
        let text = self.string_or(key, s, default)?;
        text.parse().map_err(|_| {
            self.err(
                key,
                s.as_ref(),
                format!("`{text}` is not an address like \"127.0.0.1:3000\""),
            )
        })
    }

    fn http_path(&mut self, key: &str, s: &Option<Str>, default: &str) -> R<String> {
        let p = self.string_or(key, s, default)?;
        if !p.starts_with('/') || p.starts_with("//") || p.contains(['?', '#', ' ']) {
            return Err(self.err(
                key,
                s.as_ref(),
                format!("`{p}` must be a path starting with `/`"),
            ));
        }
        Ok(p)
    }

    /// An injected header's name: valid, and not one whose value the gateway sets or that
    /// describes the connection (compared as upstream stacks compare names: case-insensitively,
    /// `_` as `-`). Noted for [`Cx::distinct_injected`].
    fn header(&mut self, key: &str, s: &Option<Str>, default: &'static str) -> R<HeaderName> {
        let name = self.string_or(key, s, default)?;
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            self.err(
                key,
                s.as_ref(),
                format!("`{name}` is not a valid header name"),
            )
        })?;
        if crate::http::headers::set_by_gateway(&header) {
            return Err(self.err(
                key,
                s.as_ref(),
                format!(
                    "`{name}` is a header the gateway sets or removes itself (Host, \
                     Content-Length, Expect, X-Forwarded-For/Proto/Host, Forwarded, hop-by-hop \
                     headers)"
                ),
            ));
        }
        let line = s.as_ref().map(|s| self.line(s.span().start));
        self.injected.push(Injected {
            key: key.to_owned(),
            folded: crate::http::headers::fold(header.as_str()),
            line,
        });
        Ok(header)
    }

    /// The headers injected into one request need names of their own: two that fold to the
    /// same name would reach the app as one. The error names the key the file sets (a default
    /// name clashing with a configured one is the configured one's doing).
    fn distinct_injected(&self, route: &[&str]) -> R<()> {
        let of_route: Vec<&Injected> = route
            .iter()
            .filter_map(|k| {
                self.injected
                    .iter()
                    .find(|i| i.key.strip_prefix("upstream.headers") == Some(k))
            })
            .collect();
        for (n, a) in of_route.iter().enumerate() {
            for b in &of_route[n + 1..] {
                if a.folded == b.folded {
                    let (blamed, other) = if b.line.is_some() { (b, a) } else { (a, b) };
                    return Err(ConfigError::Invalid {
                        path: self.path.clone(),
                        key: blamed.key.clone(),
                        line: blamed.line,
                        message: format!(
                            "`{}` is also {}; the headers injected into one request each need \
                             their own name",
                            blamed.folded, other.key
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn validate(&mut self, raw: RawConfig) -> R<Config> {
        // [server]
        let s = &raw.server;
        let listen = self.socket("server.listen", &s.listen, "127.0.0.1:3000")?;
        let admin_listen = self.socket("server.admin_listen", &s.admin_listen, "127.0.0.1:9090")?;
        let public_url = match self.url("server.public_url", &s.public_url)? {
            Some(u) => u,
            None => {
                let host = if listen.ip().is_unspecified() {
                    "localhost".to_owned()
                } else {
                    match listen.ip() {
                        IpAddr::V6(ip) => format!("[{ip}]"),
                        ip => ip.to_string(),
                    }
                };
                let scheme = if s.tls.is_some() { "https" } else { "http" };
                Url::parse(&format!("{scheme}://{host}:{}", listen.port())).expect("valid url")
            }
        };
        let tls = match &s.tls {
            None => None,
            Some(t) => {
                let cert = self
                    .path("server.tls.cert", &Some(t.cert.clone()))?
                    .unwrap_or_default();
                let key = self
                    .path("server.tls.key", &Some(t.key.clone()))?
                    .unwrap_or_default();
                self.files.push(cert.clone());
                self.files.push(key.clone());
                Some(TlsConfig { cert, key })
            }
        };
        let max_body_bytes = match &s.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(v) if *v.get_ref() > 0 => *v.get_ref() as usize,
            Some(v) => {
                return Err(self.err_at(
                    "server.max_body_bytes",
                    v.span().start,
                    "must be a positive number of bytes",
                ))
            }
        };
        let max_body_bytes_in_flight = match &s.max_body_bytes_in_flight {
            None => DEFAULT_MAX_BODY_BYTES_IN_FLIGHT.max(max_body_bytes),
            Some(v) if *v.get_ref() >= max_body_bytes as i64 => *v.get_ref() as usize,
            Some(v) => {
                return Err(self.err_at(
                    "server.max_body_bytes_in_flight",
                    v.span().start,
                    format!(
                        "must be at least server.max_body_bytes ({max_body_bytes}): one \
                         request's body must fit"
                    ),
                ))
            }
        };
        let mut trusted_proxies = Vec::new();
        for p in s.trusted_proxies.iter().flatten() {
            let text = self.expand("server.trusted_proxies", p)?.0;
            let ip: IpAddr = text.parse().map_err(|_| {
                self.err(
                    "server.trusted_proxies",
                    Some(p),
                    format!("`{text}` is not an IP address"),
                )
            })?;
            trusted_proxies.push(ip);
        }
        let workers = match &s.workers {
            None => 0,
            Some(v) if (0..=1024).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                return Err(self.err_at(
                    "server.workers",
                    v.span().start,
                    "must be between 0 (one per core) and 1024",
                ))
            }
        };
        let shutdown_grace = self.duration(
            "server.shutdown_grace",
            &s.shutdown_grace,
            DEFAULT_SHUTDOWN_GRACE,
        )?;
        let header_read_timeout = self.duration(
            "server.header_read_timeout",
            &s.header_read_timeout,
            DEFAULT_HEADER_READ_TIMEOUT,
        )?;
        let body_read_timeout = self.duration(
            "server.body_read_timeout",
            &s.body_read_timeout,
            DEFAULT_BODY_READ_TIMEOUT,
        )?;
        let write_timeout = self.duration(
            "server.write_timeout",
            &s.write_timeout,
            DEFAULT_WRITE_TIMEOUT,
        )?;
        let max_connections = self.count(
            "server.max_connections",
            &s.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            1_000_000,
        )?;
        let max_headers = self.count(
            "server.max_headers",
            &s.max_headers,
            DEFAULT_MAX_HEADERS,
            10_000,
        )?;

        // [slack]
        let k = &raw.slack;
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

        // [oauth]
        let o = &raw.oauth;
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
            None => join_url(&public_url, &redirect_path),
        };
        check_redirect_uri(
            self,
            "oauth.redirect_uri",
            o.redirect_uri.as_ref().or(s.public_url.as_ref()),
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

        // [signin]
        let g = &raw.signin;
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
            None => join_url(&public_url, &callback_path),
        };
        if signin_enabled {
            check_redirect_uri(
                self,
                "signin.redirect_uri",
                g.redirect_uri.as_ref().or(s.public_url.as_ref()),
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

        if scopes.is_empty() && user_scopes.is_empty() && !signin_enabled {
            return Err(self.err(
                "oauth.scopes",
                o.scopes.as_ref().and_then(|v| v.first()),
                "set at least one of oauth.scopes / oauth.user_scopes (or enable [signin] alone)",
            ));
        }

        // [upstream]
        let u = &raw.upstream;
        let url = self
            .url("upstream.url", &u.url)?
            .unwrap_or_else(|| Url::parse("http://127.0.0.1:8080").expect("valid url"));
        if url.scheme() != "http" {
            return Err(self.err(
                "upstream.url",
                u.url.as_ref(),
                "must be an http:// URL (the upstream runs beside the gateway)",
            ));
        }
        let timeout = self.duration("upstream.timeout", &u.timeout, DEFAULT_UPSTREAM_TIMEOUT)?;
        let keepalive_timeout = self.duration(
            "upstream.keepalive_timeout",
            &u.keepalive_timeout,
            DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT,
        )?;
        let slack_paths = match &u.slack_paths {
            None => vec!["/slack/events".to_owned()],
            Some(v) => {
                let mut out = Vec::new();
                for p in v {
                    out.push(self.http_path("upstream.slack_paths", &Some(p.clone()), "/")?);
                }
                out
            }
        };
        let h = u.headers.as_ref();
        let none = None;
        let pick = |f: fn(&raw::RawHeaders) -> &Option<Str>| h.map(f).unwrap_or(&none);
        let headers = InjectedHeaders {
            bot_token: self.header(
                "upstream.headers.bot_token",
                pick(|h| &h.bot_token),
                "x-slack-bot-token",
            )?,
            bot_id: self.header(
                "upstream.headers.bot_id",
                pick(|h| &h.bot_id),
                "x-slack-bot-id",
            )?,
            bot_user_id: self.header(
                "upstream.headers.bot_user_id",
                pick(|h| &h.bot_user_id),
                "x-slack-bot-user-id",
            )?,
            team_id: self.header(
                "upstream.headers.team_id",
                pick(|h| &h.team_id),
                "x-slack-team-id",
            )?,
            enterprise_id: self.header(
                "upstream.headers.enterprise_id",
                pick(|h| &h.enterprise_id),
                "x-slack-enterprise-id",
            )?,
            enterprise_install: self.header(
                "upstream.headers.enterprise_install",
                pick(|h| &h.enterprise_install),
                "x-slack-enterprise-install",
            )?,
            user_token: self.header(
                "upstream.headers.user_token",
                pick(|h| &h.user_token),
                "x-slack-user-token",
            )?,
            user_id: self.header(
                "upstream.headers.user_id",
                pick(|h| &h.user_id),
                "x-slack-user-id",
            )?,
            user_email: self.header(
                "upstream.headers.user_email",
                pick(|h| &h.user_email),
                "x-slack-user-email",
            )?,
            user_name: self.header(
                "upstream.headers.user_name",
                pick(|h| &h.user_name),
                "x-slack-user-name",
            )?,
        };
        // Slack's requests get the installation's headers, signed-in browser requests the
        // user's: a name may serve one of each, never two of either.
        self.distinct_injected(&[
            ".bot_token",
            ".bot_id",
            ".bot_user_id",
            ".team_id",
            ".enterprise_id",
            ".enterprise_install",
            ".user_token",
        ])?;
        self.distinct_injected(&[".user_id", ".team_id", ".user_email", ".user_name"])?;

        // Paths must not collide: each request must have one owner.
        let mut owned: Vec<(&str, &str)> = vec![
            ("oauth.install_path", &install_path),
            ("oauth.redirect_path", &redirect_path),
        ];
        for p in &slack_paths {
            owned.push(("upstream.slack_paths", p));
        }
        if signin_enabled {
            owned.push(("signin.login_path", &login_path));
            owned.push(("signin.callback_path", &callback_path));
            owned.push(("signin.logout_path", &logout_path));
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

        // A protected prefix must not cover a Slack path, nor lie under one, in any spelling:
        // Slack's requests are verified, never signed in, and a browser request must never
        // reach the app's Slack handler.
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

        // [storage]
        let st = &raw.storage;
        let storage_path = self
            .path("storage.path", &st.path)?
            .unwrap_or_else(|| self.base.join("data"));
        let encryption_key = self.secret(
            "storage.encryption_key",
            &st.encryption_key,
            &st.encryption_key_file,
        )?;
        let mut previous_encryption_keys = Vec::new();
        for p in st.previous_encryption_keys.iter().flatten() {
            previous_encryption_keys.push(Secret::new(
                self.expand("storage.previous_encryption_keys", p)?.0,
            ));
        }
        for (key, k) in encryption_key
            .iter()
            .map(|k| ("storage.encryption_key", k))
            .chain(
                previous_encryption_keys
                    .iter()
                    .map(|k| ("storage.previous_encryption_keys", k)),
            )
        {
            use base64::Engine;
            let ok = base64::engine::general_purpose::STANDARD
                .decode(k.expose().trim())
                .map(|b| b.len() == 32)
                .unwrap_or(false);
            if !ok {
                return Err(self.err(
                    key,
                    st.encryption_key.as_ref(),
                    "must be 32 bytes, base64-encoded (`openssl rand -base64 32`)",
                ));
            }
        }

        // [admin]
        let a = &raw.admin;
        let admin_token = self
            .secret("admin.token", &a.token, &a.token_file)?
            .filter(|t| !t.is_empty());
        if !admin_listen.ip().is_loopback() && admin_token.is_none() {
            return Err(self.err(
                "server.admin_listen",
                s.admin_listen.as_ref(),
                "is not a loopback address: set admin.token so the admin API is not open to the network",
            ));
        }

        // [app]
        let app = self.app(&raw.app, &scopes, &slack_paths)?;

        Ok(Config {
            server: ServerConfig {
                listen,
                public_url,
                tls,
                max_body_bytes,
                max_body_bytes_in_flight,
                replay_protection: s.replay_protection.unwrap_or(true),
                admin_listen,
                trusted_proxies,
                workers,
                shutdown_grace,
                header_read_timeout,
                body_read_timeout,
                write_timeout,
                max_connections,
                max_headers,
            },
            slack: SlackConfig {
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
            },
            oauth: OAuthConfig {
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
            },
            signin: SigninConfig {
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
            },
            upstream: UpstreamConfig {
                url,
                timeout,
                keepalive_timeout,
                slack_paths,
                inject_user_token: u.inject_user_token.unwrap_or(false),
                headers,
            },
            storage: StorageConfig {
                path: storage_path,
                encryption_key,
                previous_encryption_keys,
            },
            admin: AdminConfig { token: admin_token },
            app,
            placeholder_secrets: std::mem::take(&mut self.placeholders),
            referenced_files: std::mem::take(&mut self.files),
        })
    }

    /// `[app]`, checked against Slack's manifest limits and against the scopes and paths it
    /// needs, so that `slack-gateway manifest` never prints a manifest Slack refuses.
    fn app(&mut self, a: &raw::RawApp, scopes: &[String], slack_paths: &[String]) -> R<AppConfig> {
        let name = self.string_or("app.name", &a.name, DEFAULT_APP_NAME)?;
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_APP_NAME {
            return Err(self.err(
                "app.name",
                a.name.as_ref(),
                format!("must be 1 to {MAX_APP_NAME} characters (Slack's limit for an app name)"),
            ));
        }
        let description = self
            .string("app.description", &a.description)?
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_APP_DESCRIPTION)
        {
            return Err(self.err(
                "app.description",
                a.description.as_ref(),
                format!("must be at most {MAX_APP_DESCRIPTION} characters (Slack's limit for a short description)"),
            ));
        }

        let bot_events = match &a.bot_events {
            None => None,
            Some(list) => {
                let events = self.strings("app.bot_events", &a.bot_events)?;
                for (e, at) in events.iter().zip(list) {
                    let valid = e.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.')
                    });
                    if !valid {
                        return Err(self.err(
                            "app.bot_events",
                            Some(at),
                            format!(
                                "`{e}` is not an event type like \"app_mention\" or \"message.im\""
                            ),
                        ));
                    }
                }
                let added = LIFECYCLE_EVENTS
                    .iter()
                    .filter(|l| !events.iter().any(|e| e == *l))
                    .count();
                if events.len() + added > MAX_BOT_EVENTS {
                    return Err(self.err(
                        "app.bot_events",
                        list.first(),
                        format!("at most {MAX_BOT_EVENTS} event types, app_uninstalled and tokens_revoked included (the manifest always subscribes to those)"),
                    ));
                }
                if !events.is_empty() && scopes.is_empty() {
                    return Err(self.err(
                        "app.bot_events",
                        list.first(),
                        "bot events need a bot user: set oauth.scopes",
                    ));
                }
                Some(events)
            }
        };

        let mut commands: Vec<SlashCommand> = Vec::new();
        for entry in a.commands.iter().flatten() {
            let at = entry.span().start;
            let c = entry.get_ref();
            let command = self
                .string("app.commands.command", &c.command)?
                .unwrap_or_default();
            let valid = command.starts_with('/')
                && command.len() > 1
                && command.chars().count() <= MAX_COMMAND
                && !command.chars().any(char::is_whitespace);
            if !valid {
                let message = format!(
                    "`{command}` must start with `/`, have no spaces and be at most {MAX_COMMAND} characters, like \"/deploy\""
                );
                return Err(match &c.command {
                    Some(s) => self.err("app.commands.command", Some(s), message),
                    None => {
                        self.err_at("app.commands.command", at, "must be set, like \"/deploy\"")
                    }
                });
            }
            if commands
                .iter()
                .any(|o| o.command.eq_ignore_ascii_case(&command))
            {
                return Err(self.err(
                    "app.commands.command",
                    c.command.as_ref(),
                    format!("`{command}` is listed twice"),
                ));
            }
            let description = self
                .string("app.commands.description", &c.description)?
                .map(|d| d.trim().to_owned())
                .unwrap_or_default();
            if description.is_empty() || description.chars().count() > 2000 {
                return Err(match &c.description {
                    Some(s) => self.err(
                        "app.commands.description",
                        Some(s),
                        format!("{command}: must be 1 to 2000 characters"),
                    ),
                    None => self.err_at(
                        "app.commands.description",
                        at,
                        format!("{command}: must be set (Slack shows it in the command menu)"),
                    ),
                });
            }
            let usage_hint = self
                .string("app.commands.usage_hint", &c.usage_hint)?
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty());
            if usage_hint
                .as_ref()
                .is_some_and(|h| h.chars().count() > 1000)
            {
                return Err(self.err(
                    "app.commands.usage_hint",
                    c.usage_hint.as_ref(),
                    format!("{command}: must be at most 1000 characters"),
                ));
            }
            commands.push(SlashCommand {
                command,
                description,
                usage_hint,
            });
        }
        if let Some(first) = a.commands.iter().flatten().next() {
            if !scopes.iter().any(|s| s == "commands") {
                return Err(self.err_at(
                    "app.commands",
                    first.span().start,
                    "slash commands need the `commands` bot scope: add it to oauth.scopes",
                ));
            }
            if slack_paths.is_empty() {
                return Err(self.err_at(
                    "app.commands",
                    first.span().start,
                    "slash commands need a request URL: set upstream.slack_paths",
                ));
            }
        }

        Ok(AppConfig {
            name,
            description,
            bot_events,
            commands,
            token_rotation: a.token_rotation.unwrap_or(false),
            org_deploy: a.org_deploy.unwrap_or(false),
        })
    }

    fn template(&mut self, key: &str, s: &Option<Str>) -> R<Option<PathBuf>> {
        let Some(p) = self.path(key, s)? else {
            return Ok(None);
        };
        if let Err(e) = std::fs::metadata(&p) {
            return Err(self.err(key, s.as_ref(), format!("cannot read {}: {e}", p.display())));
        }
        self.files.push(p.clone());
        Ok(Some(p))
    }
}

/// `base` with `path` as its path (any path of `base` is replaced by `path` appended to it).
pub(crate) fn join_url(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    let prefix = base.path().trim_end_matches('/');
    u.set_path(&format!("{prefix}{path}"));
    u.set_query(None);
    u
}

/// Redirect URIs must be https, except plain http on a loopback host (development).
fn check_redirect_uri(cx: &Cx<'_>, key: &str, at: Option<&Str>, u: &Url) -> R<()> {
    let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if u.scheme() == "https" || (u.scheme() == "http" && loopback) {
        Ok(())
    } else {
        Err(cx.err(
            key,
            at,
            format!(
                "`{u}` must be https:// (plain http is allowed for localhost and 127.0.0.1 only)"
            ),
        ))
    }
}

/// A secret file that others can read is worth a warning (not an error: some platforms mount
/// them 0644 inside a private volume).
fn warn_loose_permissions(p: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(p) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %p.display(), "secret file is readable by group or others; chmod 600 it");
            }
        }
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
