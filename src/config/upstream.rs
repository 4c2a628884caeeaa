//! `[upstream]`: where requests are forwarded, its timeouts, which paths are Slack's, and the
//! names of the headers the gateway injects (each valid, not one the gateway sets itself, and
//! distinct within the headers one request gets).

use std::time::Duration;

use http::HeaderName;
use serde::Serialize;
use url::Url;

use super::cx::{ser_duration, ser_header, Cx, Injected, R};
use super::error::ConfigError;
use super::raw::{self, Str};

/// Slack waits 3 s for an answer; the default leaves the gateway time to say 504 first.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(2500);
/// How long an idle upstream connection is reused: below app servers' own keep-alive timeouts
/// (gunicorn 2 s, uvicorn and Node 5 s), so the gateway rarely writes a request onto a
/// connection the app is closing (that request would get a 502: it is never sent twice).
pub const DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// False: forwarded requests carry the identity headers but never a token (the app calls
    /// Slack through the egress instead).
    pub inject_tokens: bool,
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

impl Cx<'_> {
    /// `[upstream]`.
    pub(super) fn upstream(&mut self, u: &raw::RawUpstream) -> R<UpstreamConfig> {
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

        Ok(UpstreamConfig {
            url,
            timeout,
            keepalive_timeout,
            slack_paths,
            inject_user_token: u.inject_user_token.unwrap_or(false),
            inject_tokens: u.inject_tokens.unwrap_or(true),
            headers,
        })
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
}
