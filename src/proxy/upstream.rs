//! The gateway's connections to the upstream app: one per downstream connection, driven by
//! the downstream connection's own task.
//!
//! HTTP/1.1 serves one request at a time per connection, so each client connection of the
//! public listener lazily opens its own keep-alive connection to the upstream and reuses it for
//! every request it carries. Compared with a shared pool this needs no pool lock, no idle
//! list and no connect races, and a closed client connection closes its upstream connection
//! with it. A connection idle for longer than `upstream.keepalive_timeout` or closed by the
//! upstream is replaced by a new one; a request is retried only when hyper reports it was
//! never written, so nothing is sent twice.
//!
//! The upstream connection is not a task of its own: whoever is waiting on it polls it — the
//! request while its response head is awaited, then [`UpstreamBody`] while the response body
//! streams to the client, which puts the connection back for the next request when it is done.
//! A request and its response thus take one task and no hand-offs between tasks.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
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
}

impl UpstreamError {
    /// The `upstream_errors_total` label.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Handshake(_) | UpstreamError::Protocol(_) => "protocol",
        }
    }
}

/// hyper's side of one upstream connection: reads and writes when polled.
type Driver = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One open upstream connection.
struct Link {
    connect_to: String,
    sender: SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended.
    driver: Option<Pin<Box<Driver>>>,
    /// When it was last put back, idle.
    used: Instant,
}

impl Link {
    /// Lets the connection read and write whatever is ready. A connection that has ended is
    /// dropped at once: that hands any request it never wrote back to its sender.
    fn poll_driver(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver {
            if let Poll::Ready(result) = driver.as_mut().poll(cx) {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
                self.driver = None;
            }
        }
    }

    /// Awaits `fut` (a request's response) while driving the connection it depends on.
    async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        poll_fn(|cx| {
            self.poll_driver(cx);
            fut.as_mut().poll(cx)
        })
        .await
    }

    /// Waits until the connection can take a request (the previous response read to its end).
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            self.poll_driver(cx);
            self.sender.poll_ready(cx)
        })
        .await
        .is_ok()
    }
}

type Slot = Arc<Mutex<Option<Link>>>;

/// One downstream connection's upstream connection, opened on first use.
#[derive(Default)]
pub struct UpstreamConn {
    // Never held across an await: the link is taken out for a request and put back by the
    // response body once it has been read.
    idle: Slot,
}

impl UpstreamConn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `req` (origin-form URI, `Host` set) and returns the upstream's response head;
    /// its body streams from the connection, which is reused once the body has been read if
    /// the next request comes within `keepalive` (`upstream.keepalive_timeout`).
    pub async fn send(
        &self,
        target: &UpstreamTarget,
        keepalive: Duration,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut req = req;
        let kept = self
            .idle
            .lock()
            .expect("upstream slot lock")
            .take()
            .filter(|l| {
                l.connect_to == target.connect_to
                    && l.driver.is_some()
                    && !l.sender.is_closed()
                    && l.used.elapsed() < keepalive
            });
        if let Some(mut link) = kept {
            if link.ready().await {
                let sent = link.sender.try_send_request(req);
                match link.drive(sent).await {
                    Ok(resp) => return Ok(self.streaming(resp, link)),
                    Err(mut e) => match e.take_message() {
                        // Never written (the upstream closed the idle connection): a new one.
                        Some(unsent) => req = unsent,
                        None => return Err(UpstreamError::Protocol(e.into_error())),
                    },
                }
            }
        }
        let mut link = connect(target).await?;
        let sent = link.sender.send_request(req);
        let resp = link.drive(sent).await.map_err(UpstreamError::Protocol)?;
        Ok(self.streaming(resp, link))
    }

    /// The response, its body driving `link` until it has been read.
    fn streaming(&self, resp: Response<Incoming>, link: Link) -> Response<UpstreamBody> {
        resp.map(|inner| UpstreamBody {
            inner,
            link: Some(link),
            home: self.idle.clone(),
        })
    }
}

/// A response body from the upstream. Polling it drives the upstream connection; when it is
/// done (read to its end, or dropped) the connection goes back to its downstream connection's
/// slot. A body dropped half-read leaves hyper's connection unusable, which the next request
/// sees (`poll_ready` fails) and replaces.
pub struct UpstreamBody {
    inner: Incoming,
    link: Option<Link>,
    home: Slot,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(mut link) = self.link.take() {
            link.used = Instant::now();
            *self.home.lock().expect("upstream slot lock") = Some(link);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(link) = &mut this.link {
            link.poll_driver(cx);
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.release();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        self.release();
    }
}

/// Opens a connection (every resolved address in turn) and its HTTP/1 driver, which runs
/// only while a request or response body of this link is polled.
async fn connect(target: &UpstreamTarget) -> Result<Link, UpstreamError> {
    let stream = TcpStream::connect(target.connect_to.as_str())
        .await
        .map_err(|source| UpstreamError::Connect {
            to: target.connect_to.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let (sender, driver) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Handshake)?;
    Ok(Link {
        connect_to: target.connect_to.clone(),
        sender,
        driver: Some(Box::pin(driver)),
        used: Instant::now(),
    })
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
