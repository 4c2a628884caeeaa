//! The fast lane: Slack's plain requests served straight off the socket.
//!
//! hyper serves a request through general machinery: the request body and the upstream's
//! response body each cross a channel between tasks, every upstream connection has a task of
//! its own that the request is handed to, and every head is parsed into a map and encoded
//! again. For what Slack actually sends — a `POST` to one of `upstream.slack_paths` over
//! HTTP/1.1 with a plain `Content-Length` body — the lane does it in the connection's own
//! task: it parses the head with httparse (hyper's own parser), runs the same pipeline as the
//! hyper path ([`super::decide`]), writes the upstream request on this client connection's own
//! upstream connection, and relays the response head (hop-by-hop headers removed) and body
//! bytes as they come, framing included.
//!
//! Anything else — another path or method, `Transfer-Encoding` or `Expect` on the request,
//! HTTP/1.0, `Upgrade`, a head httparse refuses, more headers than `server.max_headers`, a
//! declared body over `server.max_body_bytes` — is handed to hyper together with the bytes
//! read so far ([`Rewind`]), and hyper serves the connection from then on exactly as it would
//! have. The lane is never more lenient than hyper: it takes only what is unambiguous.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::headers::Client;
use super::upstream::{UpstreamError, UpstreamTarget};
use super::{decide, prepare_upstream_request, refuse, upstream_outcome, Step};
use crate::gateway::{Gateway, Live};
use crate::http::Body;
use crate::metrics::Route;
use crate::server::{Shutdown, MAX_HEAD_BYTES};

/// Request headers the lane parses; a request with more goes to hyper, whose limit is
/// `server.max_headers`.
const MAX_REQUEST_HEADERS: usize = 64;
/// Response headers accepted from the upstream (hyper's client default).
const MAX_RESPONSE_HEADERS: usize = 100;
/// Largest upstream response head (hyper's client default buffer limit).
const MAX_RESPONSE_HEAD: usize = 400 * 1024;
/// Reads ask for at least this much room.
const READ_SIZE: usize = 8 * 1024;
/// A response body up to this size goes out in the same write as its head.
const COALESCE: usize = 16 * 1024;
/// Room for the headers the pipeline adds (forwarding, identity, tokens).
const ADDED_HEADERS: usize = 12;

/// How the lane left a connection.
pub enum Served {
    /// Closed: by the client, after an error, a timeout or a shutdown.
    Closed,
    /// Not a request for the lane: hyper serves the connection from here, starting with
    /// these bytes.
    HandOver(Bytes),
}

/// Serves the client connection `io` while its requests are the lane's.
pub async fn serve<I>(
    gw: &Arc<Gateway>,
    io: &mut I,
    client: &Client,
    shutdown: &mut Shutdown,
) -> Served
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut upstream: Option<Upstream> = None;
    let mut out = Vec::new();
    loop {
        let (head, live) = match read_head(gw, io, &mut buf, shutdown).await {
            Next::Slack(head, live) => (head, live),
            Next::Closed => return Served::Closed,
            Next::Other(bytes) => return Served::HandOver(bytes),
        };
        let started = Instant::now();
        let Head {
            parts,
            content_length,
            mut close,
        } = head;
        while buf.len() < content_length {
            buf.reserve(content_length - buf.len());
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Served::Closed,
                Ok(_) => {}
            }
        }
        let body = buf.split_to(content_length).freeze();
        close |= *shutdown.borrow();

        let step = decide(gw, &live, parts, body, client).await;
        let status = match step {
            Ok(Step::Forward(parts, body)) => {
                let relayed = Exchange {
                    gw,
                    live: &live,
                    slot: &mut upstream,
                    out: &mut out,
                    started,
                }
                .forward(io, parts, body, &mut close)
                .await;
                match relayed {
                    Relayed::Done(status) => status,
                    Relayed::Failed(e) => {
                        respond(gw, io, refuse(gw, client.addr, e), close, &mut out, started).await
                    }
                    Relayed::Broken => return Served::Closed,
                }
            }
            Ok(Step::Answer(r)) => respond(gw, io, r, close, &mut out, started).await,
            Err(e) => respond(gw, io, refuse(gw, client.addr, e), close, &mut out, started).await,
        };
        if status == 0 || close || *shutdown.borrow() {
            return Served::Closed;
        }
    }
}

/// A request head the lane takes.
struct Head {
    parts: http::request::Parts,
    content_length: usize,
    /// The client asked for the connection to close after this request.
    close: bool,
}

// Unboxed on purpose: returned once per request and taken apart at once; a box would be an
// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// The head, and the config it was read under (the pipeline's, too).
    Slack(Head, Arc<Live>),
    Closed,
    Other(Bytes),
}

/// Reads until a complete head is buffered, within `server.header_read_timeout`; an idle
/// connection closes when the listener shuts down. The head is judged by the config live
/// when it arrived, so a reload applies to the next request of an open connection.
async fn read_head<I>(gw: &Gateway, io: &mut I, buf: &mut BytesMut, shutdown: &mut Shutdown) -> Next
where
    I: AsyncRead + Unpin,
{
    let deadline = tokio::time::Instant::now() + gw.live().config.server.header_read_timeout;
    loop {
        if !buf.is_empty() {
            let live = gw.live();
            match parse_head(buf, &live) {
                Parse::Partial if buf.len() >= MAX_HEAD_BYTES => {
                    // Too large: hyper refuses it (431).
                    return Next::Other(buf.split().freeze());
                }
                Parse::Partial => {}
                Parse::Slack(head) => return Next::Slack(head, live),
                Parse::Other => return Next::Other(buf.split().freeze()),
            }
        } else if *shutdown.borrow() {
            return Next::Closed;
        }
        if buf.capacity() - buf.len() < READ_SIZE / 2 {
            buf.reserve(READ_SIZE);
        }
        // Under load the bytes are usually there already: try once before arming a timer.
        let n = match poll_once(io.read_buf(buf)).await {
            Some(r) => r,
            None => tokio::select! {
                biased;
                r = tokio::time::timeout_at(deadline, io.read_buf(buf)) => match r {
                    Ok(r) => r,
                    Err(_) => return Next::Closed,
                },
                _ = shutdown.changed(), if buf.is_empty() => return Next::Closed,
            },
        };
        match n {
            Ok(0) | Err(_) => return Next::Closed,
            Ok(_) => {}
        }
    }
}

/// Polls `fut` once: its output, or `None` when it would wait.
async fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

#[allow(clippy::large_enum_variant)]
enum Parse {
    Partial,
    Slack(Head),
    Other,
}

/// Parses the buffered head. On `Slack` the head has been split off `buf`.
fn parse_head(buf: &mut BytesMut, live: &Live) -> Parse {
    let mut raw = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::Other,
    };
    let target = req.path.unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    if req.method != Some("POST")
        || req.version != Some(1)
        || !target.starts_with('/')
        || !live.config.upstream.slack_paths.iter().any(|p| p == path)
        || req.headers.len() > live.config.server.max_headers
    {
        return Parse::Other;
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let mut spans = [((0, 0), (0, 0)); MAX_REQUEST_HEADERS];
    let mut content_length = None;
    let mut close = false;
    for (h, slot) in req.headers.iter().zip(spans.iter_mut()) {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match (content_length, parse_length(h.value)) {
                (None, Some(n)) => content_length = Some(n),
                _ => return Parse::Other,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parse::Other;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(h.value, b"close");
        }
        *slot = (span(name), span(h.value));
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > live.config.server.max_body_bytes {
        // hyper's path answers 413 through the same pipeline.
        return Parse::Other;
    }
    let count = req.headers.len();
    let target = span(target.as_bytes());

    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count + ADDED_HEADERS);
    for &(name, value) in &spans[..count] {
        let Ok(name) = HeaderName::from_bytes(&head[name.0..name.0 + name.1]) else {
            return give_back(buf, head);
        };
        // httparse accepted the value, which is what HeaderValue requires (visible ASCII,
        // spaces, tabs, obs-text); checked again all the same.
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(value.0..value.0 + value.1))
        else {
            return give_back(buf, head);
        };
        headers.append(name, value);
    }
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1)) else {
        return give_back(buf, head);
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::POST;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Parse::Slack(Head {
        parts,
        content_length,
        close,
    })
}

/// Puts a split-off head back in front of the buffer, for hyper.
fn give_back(buf: &mut BytesMut, head: Bytes) -> Parse {
    let mut all = BytesMut::with_capacity(head.len() + buf.len());
    all.extend_from_slice(&head);
    all.extend_from_slice(buf);
    *buf = all;
    Parse::Other
}

/// A `Content-Length` value: digits only, as RFC 9110 has it.
fn parse_length(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// True when the comma-separated header value lists `token` (case-insensitively).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// What became of a forwarded request.
enum Relayed {
    /// The upstream's response went to the client whole, with this status.
    Done(u16),
    /// Nothing was relayed: the client gets this error.
    Failed(super::ProxyError),
    /// The response broke off midway (either side): the client connection has to close.
    Broken,
}

/// What forwarding one request needs from its connection.
struct Exchange<'a> {
    gw: &'a Gateway,
    live: &'a Live,
    /// This client connection's upstream connection, when one is open and idle.
    slot: &'a mut Option<Upstream>,
    /// The connection's write buffer: the request head, then the response head.
    out: &'a mut Vec<u8>,
    started: Instant,
}

impl Exchange<'_> {
    /// Stages 8c and 9: sends the request on this connection's upstream connection and
    /// relays the answer as it comes.
    async fn forward<I>(
        self,
        io: &mut I,
        mut parts: http::request::Parts,
        body: Bytes,
        close: &mut bool,
    ) -> Relayed
    where
        I: AsyncWrite + Unpin,
    {
        let Exchange {
            gw,
            live,
            slot,
            out,
            started,
        } = self;
        if let Err(e) = prepare_upstream_request(live, &mut parts, body.len()) {
            return Relayed::Failed(e);
        }
        encode_request(out, &parts, body.len());
        drop(parts);
        let timeout = live.config.upstream.timeout;
        let sent = tokio::time::timeout(
            timeout,
            exchange(
                slot,
                &live.upstream,
                live.config.upstream.keepalive_timeout,
                out,
                &body,
            ),
        )
        .await;
        drop(body);
        let (mut up, resp) = match upstream_outcome(gw, timeout, sent) {
            Ok(r) => r,
            Err(e) => return Relayed::Failed(e),
        };
        gw.metrics
            .observe_request(Route::Slack, resp.status, started.elapsed());
        if resp.framing == Framing::UntilClose {
            *close = true;
        }
        if *close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        match relay_body(io, &mut up, resp.framing, out).await {
            Ok(()) => {
                if resp.reusable && up.buf.is_empty() {
                    up.used = Instant::now();
                    *slot = Some(up);
                }
                Relayed::Done(resp.status)
            }
            Err(_) => Relayed::Broken,
        }
    }
}

/// Writes the gateway's own answer; returns its status, or 0 when the client is gone.
async fn respond<I>(
    gw: &Gateway,
    io: &mut I,
    resp: Response<Body>,
    close: bool,
    out: &mut Vec<u8>,
    started: Instant,
) -> u16
where
    I: AsyncWrite + Unpin,
{
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    gw.metrics
        .observe_request(Route::Slack, status, started.elapsed());
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH {
            put_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let mut n = itoa::Buffer::new();
    put_header(out, b"content-length", n.format(body.len()).as_bytes());
    put_date(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    match write_out(io, out).await {
        Ok(()) => status,
        Err(_) => 0,
    }
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Date` header (RFC 9110 §6.6.1: a proxy adds one where the origin sent none), formatted
/// once a second.
fn put_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        put_header(out, b"date", text.as_bytes());
    });
}

async fn write_out<I: AsyncWrite + Unpin>(io: &mut I, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// The upstream request head: request line, the prepared headers, a `Content-Length` when the
/// client's was not kept.
fn encode_request(out: &mut Vec<u8>, parts: &http::request::Parts, body_len: usize) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::CONTENT_LENGTH) {
        let mut n = itoa::Buffer::new();
        put_header(out, b"content-length", n.format(body_len).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// One client connection's connection to the upstream.
struct Upstream {
    stream: TcpStream,
    connect_to: String,
    /// When its last response ended.
    used: Instant,
    buf: BytesMut,
}

impl Upstream {
    async fn connect(target: &UpstreamTarget) -> Result<Self, UpstreamError> {
        let stream = TcpStream::connect(target.connect_to.as_str())
            .await
            .map_err(|source| UpstreamError::Connect {
                to: target.connect_to.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Upstream {
            stream,
            connect_to: target.connect_to.clone(),
            used: Instant::now(),
            buf: BytesMut::with_capacity(READ_SIZE),
        })
    }

    /// An idle connection is still good when nothing arrived on it since its last response:
    /// no end of stream, no error, no stray bytes. Costs no system call unless the reactor
    /// saw it readable.
    fn idle_and_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => matches!(
                self.stream.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 2 {
            self.buf.reserve(READ_SIZE);
        }
        self.stream.read_buf(&mut self.buf).await
    }
}

/// What the client connection needs to know of a response head.
struct ResponseHead {
    status: u16,
    framing: Framing,
    /// The upstream connection can carry another request after this response.
    reusable: bool,
}

/// Where a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes the request whose head is in `out` (on the idle connection when it is still good,
/// else on a new one) and reads the response head, rewritten for the client into `out`.
async fn exchange(
    slot: &mut Option<Upstream>,
    target: &UpstreamTarget,
    keepalive: Duration,
    out: &mut Vec<u8>,
    body: &[u8],
) -> Result<(Upstream, ResponseHead), UpstreamError> {
    let kept = slot.take().filter(|u| {
        u.connect_to == target.connect_to && u.used.elapsed() < keepalive && u.idle_and_open()
    });
    let mut up = match kept {
        Some(up) => up,
        None => Upstream::connect(target).await?,
    };
    write_request(&mut up.stream, out, body)
        .await
        .map_err(UpstreamError::Io)?;
    loop {
        if !up.buf.is_empty() {
            match rewrite_response_head(&up.buf, out)? {
                Some(Interim(len)) => {
                    up.buf.advance(len);
                    continue;
                }
                None if up.buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(UpstreamError::Response("response head too large"))
                }
                None => {}
                Some(Final(resp, len)) => {
                    up.buf.advance(len);
                    return Ok((up, resp));
                }
            }
        }
        if up.read_more().await.map_err(UpstreamError::Io)? == 0 {
            return Err(UpstreamError::Response(
                "connection closed before the response head",
            ));
        }
    }
}

async fn write_request(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> io::Result<()> {
    let total = head.len() + body.len();
    let mut done = 0;
    while done < total {
        let n = if done < head.len() {
            let parts = [IoSlice::new(&head[done..]), IoSlice::new(body)];
            stream.write_vectored(&parts).await?
        } else {
            stream.write(&body[done - head.len()..]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

enum HeadRead {
    /// A 1xx head of this length, to skip.
    Interim(usize),
    /// The response head, and its length in the upstream's bytes.
    Final(ResponseHead, usize),
}
use HeadRead::{Final, Interim};

/// Hop-by-hop response headers (RFC 9110 §7.6.1). `Transfer-Encoding` is not among them
/// here: the body is relayed with its framing as it is, so its header goes with it.
const HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"upgrade",
];

/// Parses the buffered response head and writes it into `out` for the client (without the
/// blank line that ends it): status line as HTTP/1.1, hop-by-hop headers (and those
/// `Connection` names) removed, a `Date` added when missing. `None` while incomplete.
fn rewrite_response_head(buf: &[u8], out: &mut Vec<u8>) -> Result<Option<HeadRead>, UpstreamError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpstreamError::Response("malformed response head")),
    };
    let status = resp.code.unwrap_or(0);
    if status == 101 {
        return Err(UpstreamError::Response(
            "unexpected 101 Switching Protocols",
        ));
    }
    if (100..200).contains(&status) {
        return Ok(Some(Interim(len)));
    }
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = resp.version != Some(1);
    let mut listed: Vec<&[u8]> = Vec::new();
    let mut has_date = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(h.value)
                .ok_or(UpstreamError::Response("invalid Content-Length"))?
                as u64;
            if length.is_some_and(|l| l != n) {
                return Err(UpstreamError::Response("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked only when it is the final coding (RFC 9112 §6.3).
            let last = h.value.split(|&b| b == b',').next_back().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.is_empty() {
                    listed.push(token);
                }
            }
        } else if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        }
    }
    let framing = match (status, chunked, length) {
        (204 | 304, _, _) => Framing::Empty,
        (_, Some(true), _) => Framing::Chunked,
        (_, Some(false), _) => Framing::UntilClose,
        (_, None, Some(n)) => Framing::Length(n),
        (_, None, None) => Framing::UntilClose,
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(n.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let dropped = HOP_BY_HOP.iter().any(|n| name.eq_ignore_ascii_case(n))
            || listed.iter().any(|n| name.eq_ignore_ascii_case(n))
            // Framing is the transfer coding's when there is one (RFC 9112 §6.3).
            || (chunked.is_some() && name.eq_ignore_ascii_case(b"content-length"));
        if !dropped {
            put_header(out, name, h.value);
        }
    }
    if !has_date {
        put_date(out);
    }
    let reusable = !close && framing != Framing::UntilClose;
    Ok(Some(Final(
        ResponseHead {
            status,
            framing,
            reusable,
        },
        len,
    )))
}

/// Relays the body after the head already in `out`, with its own framing as it is. A body
/// that is small and already here goes in the same write as the head.
async fn relay_body<I>(
    io: &mut I,
    up: &mut Upstream,
    framing: Framing,
    out: &mut Vec<u8>,
) -> io::Result<()>
where
    I: AsyncWrite + Unpin,
{
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunks = ChunkedEnd::default();
    let mut head = Some(out);
    loop {
        let buffered = &up.buf[..];
        let (take, done) = match framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let take = (buffered.len() as u64).min(left);
                (take as usize, take == left)
            }
            Framing::Chunked => chunks.scan(buffered)?,
            Framing::UntilClose => (buffered.len(), false),
        };
        match head.take() {
            Some(out) if take <= COALESCE => {
                out.extend_from_slice(&buffered[..take]);
                io.write_all(out).await?;
            }
            Some(out) => {
                io.write_all(out).await?;
                io.write_all(&buffered[..take]).await?;
            }
            None => io.write_all(&buffered[..take]).await?,
        }
        up.buf.advance(take);
        if let Framing::Length(_) = framing {
            left -= take as u64;
        }
        if done {
            return io.flush().await;
        }
        if up.read_more().await? == 0 {
            return match framing {
                Framing::UntilClose => io.flush().await,
                _ => Err(io::ErrorKind::UnexpectedEof.into()),
            };
        }
    }
}

/// Finds the end of a chunked body (RFC 9112 §7.1) in the bytes as they come.
#[derive(Debug, Default)]
struct ChunkedEnd {
    state: Chunk,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
}

impl ChunkedEnd {
    /// Scans `bytes`: how many belong to the body, and whether the body ended there.
    fn scan(&mut self, bytes: &[u8]) -> io::Result<(usize, bool)> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed chunked body");
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                Chunk::Data => {
                    let take = (bytes.len() - i).min(self.size as usize);
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = Chunk::DataCr;
                    }
                    continue;
                }
                Chunk::Size => match (b as char).to_digit(16) {
                    Some(d) if self.digits < 16 => {
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                    }
                    None if self.digits > 0 && matches!(b, b';' | b' ' | b'\t') => {
                        self.state = Chunk::Extension
                    }
                    None if self.digits > 0 && b == b'\r' => self.state = Chunk::SizeLf,
                    _ => return Err(bad()),
                },
                Chunk::Extension => {
                    if b == b'\r' {
                        self.state = Chunk::SizeLf;
                    } else if b == b'\n' {
                        return Err(bad());
                    }
                }
                Chunk::SizeLf if b == b'\n' => {
                    self.state = if self.size == 0 {
                        Chunk::TrailerStart
                    } else {
                        Chunk::Data
                    };
                }
                Chunk::DataCr if b == b'\r' => self.state = Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => {
                    self.state = Chunk::Size;
                    self.digits = 0;
                }
                Chunk::TrailerStart if b == b'\r' => self.state = Chunk::EndLf,
                Chunk::TrailerStart => self.state = Chunk::Trailer,
                Chunk::Trailer if b == b'\r' => self.state = Chunk::TrailerLf,
                Chunk::Trailer => {}
                Chunk::TrailerLf if b == b'\n' => self.state = Chunk::TrailerStart,
                Chunk::EndLf if b == b'\n' => return Ok((i + 1, true)),
                _ => return Err(bad()),
            }
            i += 1;
        }
        Ok((i, false))
    }
}

/// An I/O object that first yields `prefix`, then reads from `inner`: how a connection the
/// lane has read from is handed to hyper.
pub struct Rewind<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    pub fn new(prefix: Bytes, inner: I) -> Self {
        Rewind { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
