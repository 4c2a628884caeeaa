//! Listeners: accept loops, per-connection HTTP/1 serving, limits and graceful shutdown.
//!
//! [`serve`] takes an already-bound listener (tests bind port 0) and a shutdown signal. On
//! shutdown it stops accepting, then lets open connections finish their in-flight requests for
//! up to the grace period; keep-alive connections are closed after their current request.

use std::convert::Infallible;

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::gateway::Gateway;
use crate::http::headers::Client;
use crate::http::Body;
use crate::lane::{Rewind, Served, Shutdown, MAX_HEAD_BYTES};
use crate::proxy::Conn;
use crate::upstream::UpstreamConn;
use crate::write_timeout::WriteTimeout;

/// A client must finish the TLS handshake within this time.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a closing connection's orderly shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors, say) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Which listener: decides the router and the scheme reported to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
    /// The Web API egress ([`crate::egress`]).
    Egress,
}

/// Serves `listener` until `shutdown` flips, then drains for at most `grace`, serving at most
/// `max_connections` connections at once (`server.max_connections`, lowered to what fits in
/// the open-files limit: [`crate::open_files`]).
pub async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    which: Listener,
    mut shutdown: Shutdown,
    grace: Duration,
    max_connections: usize,
) {
    let graceful = GracefulShutdown::new();
    // The connection cap is fixed for the listener's life (server.max_connections is
    // restart-only); the per-connection limits follow the live config.
    let limit = Arc::new(Semaphore::new(max_connections));
    let draining = shutdown.clone();
    let stopped = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => break,
            p = limit.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Under TLS, so that the TLS layer's writes (the handshake's and close_notify too)
        // are bounded like the lane's and hyper's.
        let stream = WriteTimeout::new(stream, gw.live().config.server.write_timeout);
        let tls = match which {
            Listener::Public => gw.tls(),
            Listener::Admin | Listener::Egress => None,
        };
        let gw = gw.clone();
        let builder = connection_builder(&gw);
        let watcher = graceful.watcher();
        let draining = draining.clone();
        tokio::spawn(async move {
            let conn = Connection {
                gw,
                builder,
                watcher,
                draining,
                peer,
                which,
            };
            match tls {
                None => conn.serve(stream, "http").await,
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => conn.serve(stream, "https").await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; closing remaining connections"),
    }
}

/// HTTP/1 settings for a new connection, from the live config.
fn connection_builder(gw: &Gateway) -> http1::Builder {
    let live = gw.live();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(live.config.server.header_read_timeout)
        .max_headers(live.config.server.max_headers)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES)
        // One write per response (the head and a small body copied together) rather than a
        // vectored one: cheaper for the small answers Slack gets, and what TLS wants anyway.
        .writev(false);
    builder
}

/// One accepted connection and what serving it needs.
struct Connection {
    gw: Arc<Gateway>,
    builder: http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    /// Flips when the listener shuts down: the fast lane's signal to stop after the
    /// current request (hyper's is the watcher).
    draining: Shutdown,
    peer: SocketAddr,
    which: Listener,
}

impl Connection {
    /// Serves the connection's requests until it closes or the listener drains: Slack's
    /// plain requests on the public listener in the fast lane, everything from the first
    /// other request on with hyper.
    async fn serve<I>(self, io: I, scheme: &'static str)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            gw,
            builder,
            watcher,
            mut draining,
            peer,
            which,
        } = self;
        let conn = Conn {
            client: Client::new(peer, scheme),
            upstream: UpstreamConn::new(),
        };
        use tokio::io::AsyncWriteExt as _;
        let mut io = io;
        let read = match which {
            Listener::Public => {
                match crate::lane::serve(&gw, &mut io, &conn.client, &mut draining).await {
                    Served::Closed => {
                        // An orderly close (TLS sends its close_notify), bounded: the peer
                        // may be gone or not reading.
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, io.shutdown()).await;
                        return;
                    }
                    Served::HandOver(read) => read,
                }
            }
            Listener::Admin | Listener::Egress => Bytes::new(),
        };
        let shared = Arc::new((gw, conn));
        let svc = service_fn(move |req| {
            let shared = shared.clone();
            async move {
                let (gw, conn) = &*shared;
                Ok::<_, Infallible>(route(gw, req, conn, which).await)
            }
        });
        let conn = builder.serve_connection(TokioIo::new(Rewind::new(read, io)), svc);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

async fn route(
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    conn: &Conn,
    which: Listener,
) -> Response<Body> {
    if let Some(refused) = host_refusal(&req, which) {
        return refused;
    }
    match which {
        Listener::Public => route_public(gw, req, conn).await,
        // Boxed, like every route but the Slack one: the connection's future is as large as
        // its largest route, and only the Slack route is hot.
        Listener::Admin => Box::pin(crate::admin::handle(gw, req)).await,
        Listener::Egress => Box::pin(crate::egress::handle(gw, req)).await,
    }
}

/// A request with more than one `Host`, or none, is 400, before any route sees it (the fast
/// lane hands such heads over to be refused here), as SPEC has it for the public listener;
/// RFC 9112 §3.2 asks the same of HTTP/1.1. The admin listener lets an HTTP/1.0 request
/// come without `Host`, which that version did not require: some load balancers' health
/// checks still send bare HTTP/1.0 requests. The connection closes after the refusal: a
/// client that gets `Host` wrong may frame its requests wrong too.
fn host_refusal(req: &Request<Incoming>, which: Listener) -> Option<Response<Body>> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let reason = match (hosts.next(), hosts.next()) {
        (Some(_), None) => return None,
        (None, _) if which == Listener::Admin && req.version() < http::Version::HTTP_11 => {
            return None
        }
        (None, _) => "missing Host header",
        (Some(_), Some(_)) => "more than one Host header",
    };
    let mut r = crate::http::text(http::StatusCode::BAD_REQUEST, reason);
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    Some(r)
}

async fn route_public(gw: &Arc<Gateway>, req: Request<Incoming>, conn: &Conn) -> Response<Body> {
    use crate::metrics::Route;
    let started = Instant::now();
    let live = gw.live();
    let path = req.uri().path();
    let cfg = &live.config;
    let (route, resp) = if cfg.upstream.slack_paths.iter().any(|p| p == path) {
        (
            Route::Slack,
            crate::proxy::handle(gw, &live, req, conn).await,
        )
    } else if cfg.signin.enabled && path == cfg.signin.login_path {
        (
            Route::Signin,
            Box::pin(crate::signin::login(gw, &live, req)).await,
        )
    } else if cfg.signin.enabled && path == cfg.signin.callback_path {
        (
            Route::Signin,
            Box::pin(crate::signin::callback(gw, &live, req)).await,
        )
    } else if cfg.signin.enabled && path == cfg.signin.logout_path {
        (Route::Signin, crate::signin::logout(&live, &req))
    } else if path == cfg.oauth.install_path {
        (
            Route::Install,
            Box::pin(crate::oauth::install(gw, &live, req)).await,
        )
    } else if path == cfg.oauth.redirect_path {
        (
            Route::OAuthRedirect,
            Box::pin(crate::oauth::callback(gw, &live, req)).await,
        )
    } else if cfg.signin.enabled && crate::signin::is_protected(&live, path) {
        let resp = match crate::signin::protected(&live, &req) {
            crate::signin::Access::Answer(r) => r,
            crate::signin::Access::Forward {
                headers,
                drop_cookies,
            } => {
                Box::pin(crate::proxy::forward_browser(
                    gw,
                    &live,
                    req,
                    conn,
                    drop_cookies,
                    &headers,
                ))
                .await
            }
        };
        (Route::Protected, resp)
    } else {
        (
            Route::NotFound,
            crate::http::text(http::StatusCode::NOT_FOUND, "not found"),
        )
    };
    gw.metrics
        .observe_request(route, resp.status().as_u16(), started.elapsed());
    resp
}
