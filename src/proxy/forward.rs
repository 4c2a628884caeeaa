//! Stages 8c and 9, forwarding: the request goes to the upstream on the client connection's
//! own upstream connection, and its answer comes back as it is; browser requests (Sign in with
//! Slack's protected pages) leave through here too, never a Slack path.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;

use super::body::{read_body, reserve_body};
use super::error::{error_chain, ProxyError};
use crate::gateway::{Gateway, Live};
use crate::http::headers;
use crate::http::{text, Body};
use crate::upstream::UpstreamConn;

/// What the requests of one client connection share, whichever listener accepted it: the
/// pipeline's own plain value, so no flow knows the transport.
pub struct Conn {
    /// The client's address and scheme, as the forwarding headers report them.
    pub client: headers::Client,
    /// This connection's own connection to the upstream, opened on first use.
    pub upstream: UpstreamConn,
}

/// Connections kept for requests that come from no client connection of their own (Socket
/// Mode envelopes, queued deliveries): each request takes one, and gives it back once it has
/// read the upstream's answer to the end, so the next request reuses its upstream connection.
pub struct ConnPool {
    client: headers::Client,
    idle: std::sync::Mutex<Vec<Conn>>,
}

impl ConnPool {
    /// Connections kept at most.
    const MAX_IDLE: usize = 64;

    /// A pool whose requests come from `client`, as the forwarding headers report it.
    pub fn new(client: std::net::SocketAddr) -> Self {
        ConnPool {
            client: headers::Client::new(client, "https"),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn take(&self) -> Conn {
        let kept = self.idle.lock().expect("pool lock").pop();
        kept.unwrap_or_else(|| Conn {
            client: self.client.clone(),
            upstream: UpstreamConn::new(),
        })
    }

    /// Gives back a connection whose last answer was read to the end.
    pub fn put_back(&self, conn: Conn) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < Self::MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// Sets one header, as [`owned_value`] makes it.
pub(super) fn put(headers: &mut http::HeaderMap, name: &http::HeaderName, value: String) {
    if let Some(v) = owned_value(value) {
        headers.insert(name.clone(), v);
    }
}

/// A header value that takes over the string's buffer (no copy). A value that cannot be a
/// header (never the case for Slack ids) is `None`: left out rather than sent mangled.
pub(super) fn owned_value(value: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
}

/// Stages 8c and 9: send to the upstream and relay its answer as it is.
pub(super) async fn forward(
    gw: &Gateway,
    live: &Live,
    conn: &Conn,
    mut parts: http::request::Parts,
    body: Bytes,
) -> Result<Response<Body>, ProxyError> {
    let target = &live.upstream;
    prepare_upstream_request(live, &mut parts, body.len())?;
    let req = Request::from_parts(parts, Full::new(body));
    let timeout = live.config.upstream.timeout;
    let sent = tokio::time::timeout(
        timeout,
        conn.upstream
            .send(target, live.config.upstream.keepalive_timeout, req),
    )
    .await;
    let resp = upstream_outcome(gw, timeout, sent.ok())?;
    let (mut parts, body) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, crate::http::relayed(body)))
}

/// Stage 8c for both transports: the request target the upstream sees (`upstream.url`'s path
/// prefix, origin form), its `Host`, and a `Content-Length` only when it is the body's.
pub(crate) fn prepare_upstream_request(
    live: &Live,
    parts: &mut http::request::Parts,
    body_len: usize,
) -> Result<(), ProxyError> {
    let target = &live.upstream;
    if !target.path_prefix.is_empty() {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = format!("{}{}", target.path_prefix, path_and_query)
            .parse()
            .map_err(|e: http::uri::InvalidUri| ProxyError::UpstreamUnavailable(e.to_string()))?;
    } else if parts.uri.scheme().is_some() {
        // An absolute-form request target: only its path and query go upstream.
        let pq = parts.uri.path_and_query().cloned();
        parts.uri = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    parts.headers.insert(header::HOST, target.host.clone());
    // The client's Content-Length goes on when it is the body's. hyper and the lane already
    // see to that (they refuse a body that differs from it, keep one copy of a repeated value
    // and drop it beside chunked framing); the check keeps the forwarder from relying on it.
    // Otherwise the sender sets the length of the body it sends.
    let length_matches = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        == Some(body_len);
    if !length_matches {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    parts.version = http::Version::HTTP_11;
    Ok(())
}

/// An exchange with the upstream bounded by `upstream.timeout` (`None`: timed out), as a
/// stage's result: a timeout is a 504, anything else that went wrong a 502; both are counted.
/// Generic over what the exchange yields: hyper's response, or the lane's connection and
/// response head.
pub(crate) fn upstream_outcome<T>(
    gw: &Gateway,
    timeout: std::time::Duration,
    sent: Option<Result<T, crate::upstream::UpstreamError>>,
) -> Result<T, ProxyError> {
    match sent {
        None => {
            gw.metrics.upstream_error("timeout");
            Err(ProxyError::UpstreamTimeout(timeout))
        }
        Some(Err(e)) => {
            gw.metrics.upstream_error(e.kind());
            Err(ProxyError::UpstreamUnavailable(error_chain(&e)))
        }
        Some(Ok(r)) => Ok(r),
    }
}

/// Forwards a browser request to the upstream (Sign in with Slack's protected paths): body
/// bounded, headers cleaned as for Slack requests, the gateway's own cookies removed, and
/// `identity` injected.
pub async fn forward_browser(
    gw: &Arc<Gateway>,
    live: &Arc<Live>,
    req: Request<Incoming>,
    conn: &Conn,
    drop_cookies: &[&str],
    identity: &[(http::HeaderName, String)],
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    // Only the verified route forwards Slack's paths, in any spelling: an app's Slack
    // handler must never run on a request the gateway did not verify.
    let key = crate::http::path::path_key(parts.uri.path());
    let slack_paths = &live.config.upstream.slack_paths;
    if slack_paths
        .iter()
        .any(|s| crate::http::path::key_covers(&crate::http::path::path_key(s), &key))
    {
        tracing::info!(peer = %conn.client.addr, path = parts.uri.path(), "a spelling of a Slack path is not forwarded as a browser request");
        return text(StatusCode::NOT_FOUND, "not found");
    }
    // The path as it was matched, not as it was spelt.
    if let Some(uri) = normalized_uri(&parts.uri) {
        parts.uri = uri;
    }
    let result = async {
        let max = live.config.server.max_body_bytes;
        let mut permit = reserve_body(gw, live, 0)?;
        let body = read_body(body, &parts.headers, &live.config.server, max, &mut permit).await?;
        headers::rewrite_request(
            &mut parts.headers,
            &live.strip,
            &conn.client,
            &live.config.server.trusted_proxies,
        );
        headers::remove_cookies(&mut parts.headers, drop_cookies);
        for (name, value) in identity {
            put(&mut parts.headers, name, value.clone());
        }
        forward(gw, live, conn, parts, body).await
    }
    .await;
    result.unwrap_or_else(|e| {
        tracing::info!(peer = %conn.client.addr, error = %e, "browser request not forwarded");
        e.into_response()
    })
}

/// `uri` with its path normalised ([`crate::http::path::normalize_path`]); `None` when it already is.
pub(super) fn normalized_uri(uri: &Uri) -> Option<Uri> {
    let path = crate::http::path::normalize_path(uri.path());
    if path == uri.path() {
        return None;
    }
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.into_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}
