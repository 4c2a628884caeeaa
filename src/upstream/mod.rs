//! The gateway's connections to the upstream app: one per downstream connection.
//!
//! HTTP/1.1 serves one request at a time per connection, so each client connection of the
//! public listener lazily opens its own keep-alive connection to the upstream and reuses it for
//! every request it carries. Compared with a shared pool this needs no pool lock, no idle
//! list and no connect races, and a closed client connection closes its upstream connection
//! with it. A connection idle for longer than `upstream.keepalive_timeout` or closed by the
//! upstream is replaced by a new one; a request is retried only when hyper reports it was
//! never written, so nothing is sent twice. [`framing`] judges every response head the same
//! way for hyper's path and the fast lane.

pub mod framing;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use url::Url;

/// Where requests go, derived once per config from `upstream.url`.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// `host:port` to connect to (the port defaulted to 80).
    pub connect_to: String,
    /// The `Host` header sent upstream (the port only when `upstream.url` names one).
    pub host: HeaderValue,
    /// The path of `upstream.url` without its trailing slash; request paths are appended.
    pub path_prefix: String,
}

impl UpstreamTarget {
    /// The target for an `http://` URL; `None` when the URL has no host.
    pub fn new(url: &Url) -> Option<Self> {
        let host = url.host_str()?;
        let port = url.port_or_known_default().unwrap_or(80);
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        Some(UpstreamTarget {
            connect_to: format!("{host}:{port}"),
            host: HeaderValue::from_str(&host_header).ok()?,
            path_prefix: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// A new TCP connection to the upstream, with Nagle's algorithm off (requests and
    /// responses are written whole).
    pub async fn connect(&self) -> Result<tokio::net::TcpStream, UpstreamError> {
        let stream = tokio::net::TcpStream::connect(self.connect_to.as_str())
            .await
            .map_err(|source| UpstreamError::Connect {
                to: self.connect_to.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {to}: {source}")]
    Connect {
        to: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP/1 handshake with the upstream failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("{0}")]
    Protocol(#[source] hyper::Error),
    #[error("talking to the upstream: {0}")]
    Io(#[source] std::io::Error),
    #[error("{0}")]
    Response(&'static str),
}

impl From<framing::Refused> for UpstreamError {
    fn from(r: framing::Refused) -> Self {
        UpstreamError::Response(r.0)
    }
}

impl UpstreamError {
    /// The `upstream_errors_total` label.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Handshake(_)
            | UpstreamError::Protocol(_)
            | UpstreamError::Io(_)
            | UpstreamError::Response(_) => "protocol",
        }
    }
}

struct Idle {
    connect_to: String,
    sender: SendRequest<Full<Bytes>>,
    /// When the last response (its head) came back on it.
    used: Instant,
}

/// One downstream connection's upstream connection, opened on first use.
#[derive(Default)]
pub struct UpstreamConn {
    // Never held across an await: the sender is taken out for the request and put back.
    idle: Mutex<Option<Idle>>,
}

impl UpstreamConn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `req` (origin-form URI, `Host` set) and returns the upstream's response head;
    /// its body streams from the connection, which is reused once the body has been read if
    /// the next request comes within `keepalive` (`upstream.keepalive_timeout`). A head the
    /// gateway refuses ([`framing::check_head`]: a 101, a length beside a transfer
    /// coding, ...) is an error, and its connection is not used again.
    pub async fn send(
        &self,
        target: &UpstreamTarget,
        keepalive: Duration,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut req = req;
        let kept = self
            .idle
            .lock()
            .expect("upstream slot lock")
            .take()
            .filter(|i| {
                i.connect_to == target.connect_to
                    && !i.sender.is_closed()
                    && i.used.elapsed() < keepalive
            });
        if let Some(mut idle) = kept {
            // Waits for the previous response's body to be read to the end.
            if idle.sender.ready().await.is_ok() {
                match idle.sender.try_send_request(req).await {
                    Ok(resp) => return self.accept(idle.connect_to, idle.sender, resp),
                    Err(mut e) => match e.take_message() {
                        // Never written (the upstream closed the idle connection): a new one.
                        Some(unsent) => req = unsent,
                        None => return Err(UpstreamError::Protocol(e.into_error())),
                    },
                }
            }
        }
        let mut sender = connect(target).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Protocol)?;
        self.accept(target.connect_to.clone(), sender, resp)
    }

    /// The response, its connection kept for the next request; or, for a head the gateway
    /// refuses, the error, the connection dropped (with what is left of the response on it).
    fn accept(
        &self,
        connect_to: String,
        sender: SendRequest<Full<Bytes>>,
        resp: Response<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        framing::check_head(resp.status(), resp.headers())?;
        self.put_back(connect_to, sender);
        Ok(resp)
    }

    /// Keeps the connection for the next request, idle from now.
    fn put_back(&self, connect_to: String, sender: SendRequest<Full<Bytes>>) {
        *self.idle.lock().expect("upstream slot lock") = Some(Idle {
            connect_to,
            sender,
            used: Instant::now(),
        });
    }
}

/// Opens a connection (every resolved address in turn) and starts its HTTP/1 driver task,
/// which ends when the connection closes or its sender is dropped.
async fn connect(target: &UpstreamTarget) -> Result<SendRequest<Full<Bytes>>, UpstreamError> {
    let stream = target.connect().await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_url() {
        let t = UpstreamTarget::new(&Url::parse("http://127.0.0.1:8080").unwrap()).unwrap();
        assert_eq!(t.connect_to, "127.0.0.1:8080");
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path_prefix, "");

        let t = UpstreamTarget::new(&Url::parse("http://app/base/").unwrap()).unwrap();
        assert_eq!(t.connect_to, "app:80");
        assert_eq!(t.host, "app");
        assert_eq!(t.path_prefix, "/base");

        let t = UpstreamTarget::new(&Url::parse("http://[::1]:9000/x").unwrap()).unwrap();
        assert_eq!(t.connect_to, "[::1]:9000");
        assert_eq!(t.host, "[::1]:9000");
        assert_eq!(t.path_prefix, "/x");
    }
}
