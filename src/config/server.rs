//! `[server]` and `[admin]`: the listeners (public and admin), their limits and timeouts,
//! TLS, and the admin API's token, which a non-loopback admin listener requires.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use url::Url;

use super::cx::{ser_duration, Cx, R};
use super::raw::{self, Str};
use crate::secret::Secret;

/// Largest body accepted when `server.max_body_bytes` is not set (Slack's own limit is far
/// below this: events are a few KB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Request body bytes all requests together may hold in memory when
/// `server.max_body_bytes_in_flight` is not set.
pub const DEFAULT_MAX_BODY_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;
/// Time allowed for in-flight requests after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A client must send its request headers within this time (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose answers the client takes no byte of for this long is closed.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once on each listener; more wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Request headers accepted per request (more get 431).
pub const DEFAULT_MAX_HEADERS: usize = 100;

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
pub struct AdminConfig {
    pub token: Option<Secret>,
}

impl Cx<'_> {
    /// `[server]`.
    pub(super) fn server(&mut self, s: &raw::RawServer) -> R<ServerConfig> {
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

        Ok(ServerConfig {
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
        })
    }

    /// `[admin]`; `admin_listen_at` is where the file sets `server.admin_listen`.
    pub(super) fn admin(
        &mut self,
        a: &raw::RawAdmin,
        admin_listen: SocketAddr,
        admin_listen_at: Option<&Str>,
    ) -> R<AdminConfig> {
        let admin_token = self
            .secret("admin.token", &a.token, &a.token_file)?
            .filter(|t| !t.is_empty());
        if !admin_listen.ip().is_loopback() && admin_token.is_none() {
            return Err(self.err(
                "server.admin_listen",
                admin_listen_at,
                "is not a loopback address: set admin.token so the admin API is not open to the network",
            ));
        }

        Ok(AdminConfig { token: admin_token })
    }
}
