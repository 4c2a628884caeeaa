//! The fast lane: Slack's plain requests served straight off the socket.
//!
//! hyper serves a request through general machinery: the request body and the upstream's
//! response body each cross a channel between tasks, every upstream connection has a task of
//! its own that the request is handed to, and every head is parsed into a map and encoded
//! again. For what Slack actually sends — a `POST` to one of `upstream.slack_paths` over
//! HTTP/1.1 with a plain `Content-Length` body — the lane does it in the connection's own
//! task: it parses the head with httparse (hyper's own parser), runs the same pipeline as the
//! hyper path ([`crate::proxy`]'s `decide`), writes the upstream request from the head's own header
//! lines (judged by the same hygiene rules, [`crate::http::headers::fate`]; no header map is built
//! unless a trusted proxy's forwarding headers need extending) on this client connection's
//! own upstream connection, and relays the response head (hop-by-hop headers removed) and
//! body bytes as they come, framing included.
//!
//! Anything else — another path or method, `Transfer-Encoding` or `Expect` on the request,
//! HTTP/1.0, `Upgrade`, no `Host` or two (refused with 400 there), a head httparse refuses,
//! more headers than `server.max_headers` — is handed to hyper together with the bytes read
//! so far ([`Rewind`]), and hyper serves the connection from then on exactly as it would
//! have. The lane is never more lenient than hyper: it takes only what is unambiguous. A
//! declared body over `server.max_body_bytes` the lane refuses itself (413), reading what the
//! client still sends of it before closing. The upstream's response head is judged as on
//! hyper's path ([`crate::upstream::framing`]): what is refused there is a 502 here too.

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

use crate::gateway::{Gateway, Live};
use crate::http::headers::{fate, Client, Fate};
use crate::http::Body;
use crate::metrics::Route;
use crate::proxy::{
    decide, injected, judge_head, prepare_upstream_request, refuse, reserve_body,
    rewrite_and_inject, upstream_outcome, ProxyError, Resolved, Signed, Step,
};
use crate::upstream::framing::{self, parse_length, Framing, FramingHeaders};
use crate::upstream::{UpstreamError, UpstreamTarget};

/// A shutdown signal: flips to `true` once. The lane reads it between requests; the server
/// gives each connection a receiver of its listener's.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// Largest request head (request line and headers) accepted, by the lane and by hyper; larger
/// ones get 431 (from hyper, which the lane hands them to).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Request headers the lane parses; a request with more goes to hyper, whose limit is
/// `server.max_headers`.
const MAX_REQUEST_HEADERS: usize = 64;
/// Response headers accepted from the upstream (hyper's client default).
const MAX_RESPONSE_HEADERS: usize = 100;
/// Largest upstream response head (hyper's client default buffer limit).
const MAX_RESPONSE_HEAD: usize = 400 * 1024;
/// Reads ask for at least this much room.
const READ_SIZE: usize = 8 * 1024;
/// A body's buffer grows by at most this much per read.
const BODY_READ_STEP: usize = 64 * 1024;
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
    Lane {
        gw,
        io,
        client,
        shutdown,
        buf: BytesMut::with_capacity(READ_SIZE),
        out: Vec::new(),
        fields: Vec::new(),
        upstream: None,
        close: false,
        head_timer: LazyTimer::new(),
        upstream_timer: LazyTimer::new(),
    }
    .run()
    .await
}

/// One client connection in the lane.
struct Lane<'a, I> {
    gw: &'a Arc<Gateway>,
    io: &'a mut I,
    client: &'a Client,
    shutdown: &'a mut Shutdown,
    /// Bytes read from the client and not used yet.
    buf: BytesMut,
    /// The write buffer: an upstream request's head, then a response for the client.
    out: Vec<u8>,
    /// The header lines of the current request's head (kept for the connection's life: no
    /// allocation per request).
    fields: Vec<Field>,
    /// This client connection's own upstream connection, while it is open and idle.
    upstream: Option<Upstream>,
    /// The connection closes after the current response.
    close: bool,
    /// `server.header_read_timeout` for each head, then `server.body_read_timeout` for a
    /// body that did not come with it.
    head_timer: LazyTimer,
    /// `upstream.timeout`, for each exchange with the upstream.
    upstream_timer: LazyTimer,
}

/// A request head the lane takes. Its header lines are in the lane's `fields`.
struct Head {
    /// The head as it arrived.
    bytes: Bytes,
    /// The request target (origin form).
    target: Span,
    content_length: usize,
    /// The client asked for the connection to close after this request.
    close: bool,
    /// Header hygiene on this head needs the general rewrite ([`rewrite_and_inject`]
    /// on a map): a trusted proxy's forwarding headers, which are extended. `None`: the head
    /// goes upstream as its own header lines, less those hygiene drops.
    general: Option<http::request::Parts>,
}

impl Head {
    fn get(&self, span: Span) -> &[u8] {
        &self.bytes[span.range()]
    }

    /// The headers the pipeline reads.
    fn signed<'a>(&'a self, fields: &[Field]) -> Signed<'a> {
        let mut signed = Signed::default();
        for f in fields {
            signed.note(self.get(f.name), self.get(f.value));
        }
        signed
    }
}

/// Where something is in a head (at most [`MAX_HEAD_BYTES`] long).
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    at: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.at as usize..(self.at + self.len) as usize
    }
}

/// One header line of a request head, and what hygiene does with it.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: Span,
    value: Span,
    fate: Fate,
}

// Unboxed on purpose: returned once per request and taken apart at once; a box would be an
// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// The head, and the config it was read under (the pipeline's, too).
    Slack(Head, Arc<Live>),
    Closed,
    Other(Bytes),
    /// A head (split off) declaring a body over `server.max_body_bytes`, and its length.
    TooLarge(usize, Arc<Live>),
}

/// How reading a request body ended.
enum BodyRead {
    Whole(Bytes),
    /// The client closed or the read failed: nobody to answer.
    Gone,
    /// Not all there within `server.body_read_timeout`.
    Late,
}

/// What became of a forwarded request.
enum Relayed {
    /// The upstream's response went to the client whole.
    Done,
    /// Nothing was relayed: the client gets this error.
    Failed(ProxyError),
    /// The response broke off midway (either side): the client connection has to close.
    Broken,
}

impl<I> Lane<'_, I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    async fn run(mut self) -> Served {
        loop {
            let (head, live) = match self.read_head().await {
                Next::Slack(head, live) => (head, live),
                Next::Closed => return Served::Closed,
                Next::Other(bytes) => return Served::HandOver(bytes),
                Next::TooLarge(declared, live) => {
                    let e = ProxyError::BodyTooLarge(live.config.server.max_body_bytes);
                    self.refuse_unread(declared, e, &live).await;
                    return Served::Closed;
                }
            };
            let started = Instant::now();
            self.close = head.close;
            let (gw, client) = (self.gw, self.client);
            // What can never verify is refused from the head, and a body is read only
            // within the budget all bodies share.
            let judged = judge_head(&live, head.signed(&self.fields), Some(head.content_length))
                .and_then(|_| reserve_body(gw, &live, head.content_length));
            let _permit = match judged {
                Ok(permit) => permit,
                Err(e) => {
                    self.refuse_unread(head.content_length, e, &live).await;
                    return Served::Closed;
                }
            };
            let timeout = live.config.server.body_read_timeout;
            let body = match self.read_body(head.content_length, timeout).await {
                BodyRead::Whole(body) => body,
                BodyRead::Gone => return Served::Closed,
                BodyRead::Late => {
                    let e = ProxyError::BodyTimeout(timeout);
                    self.respond(refuse(gw, client.addr, e), started).await;
                    return Served::Closed;
                }
            };
            let signed = head.signed(&self.fields);
            let written = match decide(gw, &live, signed, &body).await {
                Ok(Step::Forward(resolved)) => {
                    match self.forward(&live, head, resolved, body, started).await {
                        Relayed::Done => true,
                        Relayed::Failed(e) => {
                            self.respond(refuse(gw, client.addr, e), started).await
                        }
                        Relayed::Broken => false,
                    }
                }
                Ok(Step::Answer(r)) => self.respond(r, started).await,
                Err(e) => self.respond(refuse(gw, client.addr, e), started).await,
            };
            if !written || self.close {
                return Served::Closed;
            }
        }
    }

    /// True when the response being written is the connection's last. Read again for each
    /// response: the listener may have begun draining while the request was with the
    /// pipeline or the upstream.
    fn closing(&mut self) -> bool {
        self.close |= *self.shutdown.borrow();
        self.close
    }

    /// Reads until a complete head is buffered, within `server.header_read_timeout`; an
    /// idle connection closes when the listener shuts down. The head is judged by the config
    /// live when it arrived, so a reload applies to the next request of an open connection.
    async fn read_head(&mut self) -> Next {
        let deadline =
            tokio::time::Instant::now() + self.gw.live().config.server.header_read_timeout;
        // Bytes already known not to end the head: after a first parse, each read is
        // searched once for an empty line before the head is parsed again (re-parsing the
        // whole head for every byte of a head that arrives a byte at a time would cost
        // quadratic time).
        let mut searched = None;
        loop {
            let parse = match searched {
                None => !self.buf.is_empty(),
                Some(n) => head_may_end(&self.buf, n),
            };
            if parse {
                let live = self.gw.live();
                match parse_head(&mut self.buf, &live, self.client, &mut self.fields) {
                    Parse::Partial => {}
                    Parse::Slack(head) => return Next::Slack(head, live),
                    Parse::TooLarge(declared) => return Next::TooLarge(declared, live),
                    Parse::Other => return Next::Other(self.buf.split().freeze()),
                }
            }
            if self.buf.len() >= MAX_HEAD_BYTES {
                // Too large: hyper refuses it (431).
                return Next::Other(self.buf.split().freeze());
            }
            if self.buf.is_empty() && *self.shutdown.borrow() {
                return Next::Closed;
            }
            if !self.buf.is_empty() {
                searched = Some(self.buf.len());
            }
            if self.buf.capacity() - self.buf.len() < READ_SIZE / 2 {
                self.buf.reserve(READ_SIZE);
            }
            // Under load the bytes are usually there already: try once before arming a timer.
            let read = match poll_once(self.io.read_buf(&mut self.buf)).await {
                Some(r) => r,
                None => tokio::select! {
                    biased;
                    r = self.head_timer.within(deadline, self.io.read_buf(&mut self.buf)) => {
                        match r {
                            Some(r) => r,
                            None => return Next::Closed,
                        }
                    }
                    _ = self.shutdown.changed(), if self.buf.is_empty() => return Next::Closed,
                },
            };
            match read {
                Ok(0) | Err(_) => return Next::Closed,
                Ok(_) => {}
            }
        }
    }

    /// The body, `len` bytes (already checked against `server.max_body_bytes`), within
    /// `timeout` of now. The buffer grows with the bytes that arrive, not with what the head
    /// announced.
    async fn read_body(&mut self, len: usize, timeout: Duration) -> BodyRead {
        if self.buf.len() < len {
            // Most bodies come with their head and never get here.
            let deadline = tokio::time::Instant::now() + timeout;
            while self.buf.len() < len {
                self.buf.reserve((len - self.buf.len()).min(BODY_READ_STEP));
                let read = self.io.read_buf(&mut self.buf);
                match self.head_timer.within(deadline, read).await {
                    None => return BodyRead::Late,
                    Some(Ok(0) | Err(_)) => return BodyRead::Gone,
                    Some(Ok(_)) => {}
                }
            }
        }
        BodyRead::Whole(self.buf.split_to(len).freeze())
    }

    /// Stages 8c and 9: sends the request on this connection's upstream connection and
    /// relays the answer as it comes.
    async fn forward(
        &mut self,
        live: &Live,
        head: Head,
        resolved: Resolved,
        body: Bytes,
        started: Instant,
    ) -> Relayed {
        match head.general {
            None => encode_lines(
                &mut self.out,
                live,
                &head,
                &self.fields,
                self.client,
                resolved,
            ),
            Some(mut parts) => {
                rewrite_and_inject(live, &mut parts.headers, self.client, resolved);
                if let Err(e) = prepare_upstream_request(live, &mut parts, body.len()) {
                    return Relayed::Failed(e);
                }
                encode_request(&mut self.out, &parts, body.len());
            }
        }
        // Let the other connections' ready requests be read and checked first, so the
        // upstream requests of one batch go out together: written one at a time, each would
        // wake the upstream while the gateway still has work (more context switches, a
        // slower whole when both share a CPU).
        tokio::task::yield_now().await;
        let timeout = live.config.upstream.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let sent = self
            .upstream_timer
            .within(
                deadline,
                exchange(
                    &mut self.upstream,
                    &live.upstream,
                    live.config.upstream.keepalive_timeout,
                    &mut self.out,
                    &body,
                ),
            )
            .await;
        drop(body);
        let (mut up, resp) = match upstream_outcome(self.gw, timeout, sent) {
            Ok(r) => r,
            Err(e) => return Relayed::Failed(e),
        };
        self.gw
            .metrics
            .observe_request(Route::Slack, resp.status, started.elapsed());
        if self.closing() {
            self.out.extend_from_slice(b"connection: close\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        match relay_body(self.io, &mut up, resp.framing, &mut self.out).await {
            Ok(()) => {
                if resp.reusable && up.buf.is_empty() {
                    up.used = Instant::now();
                    self.upstream = Some(up);
                }
                Relayed::Done
            }
            Err(_) => Relayed::Broken,
        }
    }

    /// Refuses a request from its head alone (a body over `server.max_body_bytes`, signature
    /// headers that can never verify, no room in the body budget), then reads and drops what
    /// the client still sends of its body (at most its declared length, within
    /// `server.body_read_timeout`) before the connection closes: closed with the body unread,
    /// the connection would be reset under a client still writing it, which would then lose
    /// the answer.
    async fn refuse_unread(&mut self, declared: usize, e: ProxyError, live: &Live) {
        let started = Instant::now();
        self.close = true;
        if !self
            .respond(refuse(self.gw, self.client.addr, e), started)
            .await
        {
            return;
        }
        let _ = self.io.shutdown().await;
        let mut left = declared.saturating_sub(self.buf.len());
        let deadline = tokio::time::Instant::now() + live.config.server.body_read_timeout;
        while left > 0 {
            self.buf.clear();
            self.buf.reserve(BODY_READ_STEP);
            let read = self.io.read_buf(&mut self.buf);
            match self.head_timer.within(deadline, read).await {
                Some(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    }

    /// Writes the gateway's own answer; false when the client is gone.
    async fn respond(&mut self, resp: Response<Body>, started: Instant) -> bool {
        let (parts, body) = resp.into_parts();
        self.gw
            .metrics
            .observe_request(Route::Slack, parts.status.as_u16(), started.elapsed());
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        // The gateway's own answers carry a Connection header only to say close (a body
        // that came too late): written once, below.
        self.close |= parts.headers.contains_key(header::CONNECTION);
        let close = self.closing();
        let out = &mut self.out;
        out.clear();
        put_status_line(
            out,
            parts.status.as_str(),
            parts.status.canonical_reason().unwrap_or(""),
        );
        for (name, value) in &parts.headers {
            if name != header::CONTENT_LENGTH && name != header::CONNECTION {
                put_header(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        put_content_length(out, body.len());
        put_date(out);
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        write_out(self.io, out).await.is_ok()
    }
}

/// Whether `buf` may hold a complete head, given that its first `searched` bytes held no
/// end: an empty line (CRLF CRLF, or bare LFs, which httparse accepts too) ending after them.
fn head_may_end(buf: &[u8], searched: usize) -> bool {
    let tail = buf.get(searched.saturating_sub(3)..).unwrap_or_default();
    memchr::memchr_iter(b'\n', tail)
        .any(|i| matches!(&tail[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
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
    /// The declared body is over `server.max_body_bytes`; the head has been split off.
    TooLarge(usize),
}

/// Parses the buffered head into `fields`. On `Slack` the head has been split off `buf`.
fn parse_head(buf: &mut BytesMut, live: &Live, client: &Client, fields: &mut Vec<Field>) -> Parse {
    let mut raw = [const { std::mem::MaybeUninit::uninit() }; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::Other,
    };
    let target = req.path.unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    if len > MAX_HEAD_BYTES
        || req.method != Some("POST")
        || req.version != Some(1)
        || !target.starts_with('/')
        || !live.config.upstream.slack_paths.iter().any(|p| p == path)
        || req.headers.len() > live.config.server.max_headers
    {
        return Parse::Other;
    }
    let base = buf.as_ptr() as usize;
    // Within the head, which is at most MAX_HEAD_BYTES long.
    let span = |s: &[u8]| Span {
        at: (s.as_ptr() as usize - base) as u32,
        len: s.len() as u32,
    };
    let trusted = client.is_trusted(&live.config.server.trusted_proxies);
    let mut general = false;
    let mut content_length = None;
    let mut close = false;
    let mut hosts = 0;
    fields.clear();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let mut fate = fate(name, &live.strip);
        if name.eq_ignore_ascii_case(b"content-length") {
            match (content_length, parse_length(h.value)) {
                (None, Some(n)) => content_length = Some(n),
                _ => return Parse::Other,
            }
            // The lane writes its own, from the body it read.
            fate = Fate::Drop;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parse::Other;
        } else if fate == Fate::Connection {
            close |= has_token(h.value, b"close");
        } else if fate == Fate::Host {
            hosts += 1;
        } else if fate == Fate::Forwarded && trusted {
            general = true;
        }
        fields.push(Field {
            name: span(name),
            value: span(h.value),
            fate,
        });
    }
    if hosts != 1 {
        // No Host, or two: hyper's path refuses it (400), before any route runs.
        return Parse::Other;
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > live.config.server.max_body_bytes {
        buf.advance(len);
        return Parse::TooLarge(content_length);
    }
    let mut target = span(target.as_bytes());
    let bytes = buf.split_to(len).freeze();
    // A target hyper's `Uri` refuses is hyper's to refuse. What goes upstream is what `Uri`
    // keeps of it, as on hyper's path: the path and query, without a `#fragment`.
    match Uri::from_maybe_shared(bytes.slice(target.range())) {
        Ok(uri) => {
            let kept = uri.path_and_query().map_or(0, |p| p.as_str().len());
            target.len = target.len.min(kept as u32);
        }
        Err(_) => return give_back(buf, bytes),
    }
    let general = if general {
        match general_parts(&bytes, target, fields) {
            Some(parts) => Some(parts),
            None => return give_back(buf, bytes),
        }
    } else {
        None
    };
    Parse::Slack(Head {
        bytes,
        target,
        content_length,
        close,
        general,
    })
}

/// The head as a request's parts, for the general rewrite.
fn general_parts(bytes: &Bytes, target: Span, fields: &[Field]) -> Option<http::request::Parts> {
    let slice = |s: Span| bytes.slice(s.range());
    let mut headers = HeaderMap::with_capacity(fields.len() + ADDED_HEADERS);
    for f in fields {
        let name = HeaderName::from_bytes(&slice(f.name)).ok()?;
        // httparse accepted the value, which is what HeaderValue requires (visible ASCII,
        // spaces, tabs, obs-text); checked again all the same.
        let value = HeaderValue::from_maybe_shared(slice(f.value)).ok()?;
        headers.append(name, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::POST;
    parts.uri = Uri::from_maybe_shared(slice(target)).ok()?;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Some(parts)
}

/// Puts a split-off head back in front of the buffer, for hyper.
fn give_back(buf: &mut BytesMut, head: Bytes) -> Parse {
    let mut all = BytesMut::with_capacity(head.len() + buf.len());
    all.extend_from_slice(&head);
    all.extend_from_slice(buf);
    *buf = all;
    Parse::Other
}

/// True when the comma-separated header value lists `token` (case-insensitively).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// An HTTP/1.1 status line: the client always gets HTTP/1.1, whatever the upstream spoke.
fn put_status_line(out: &mut Vec<u8>, code: &str, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(code.as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// An HTTP/1.1 request line for the upstream: `method`, `upstream.url`'s path prefix, the
/// client's path and query.
fn put_request_line(out: &mut Vec<u8>, method: &str, prefix: &str, target: &[u8]) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

fn put_content_length(out: &mut Vec<u8>, len: usize) {
    put_header(
        out,
        b"content-length",
        itoa::Buffer::new().format(len).as_bytes(),
    );
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    // The separators pushed rather than copied: a copy is a call for every two bytes.
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.push(b':');
    out.push(b' ');
    out.extend_from_slice(value);
    out.push(b'\r');
    out.push(b'\n');
}

/// A timer kept for the connection's life and moved only when it would fire too late.
/// Each request's deadline is later than the one before, so the timer fires early (at an
/// old deadline), finds time left and moves on: one timer-wheel operation per timeout period
/// instead of two per request (registered, then cancelled) for a fresh timer each time.
struct LazyTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl LazyTimer {
    fn new() -> Self {
        LazyTimer {
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
        }
    }

    /// `fut`'s output, or `None` once `deadline` has passed.
    async fn within<F: std::future::Future>(
        &mut self,
        deadline: tokio::time::Instant,
        fut: F,
    ) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        if self.sleep.deadline() > deadline {
            self.sleep.as_mut().reset(deadline);
        }
        loop {
            tokio::select! {
                biased;
                out = &mut fut => return Some(out),
                () = self.sleep.as_mut() => {
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    self.sleep.as_mut().reset(deadline);
                }
            }
        }
    }
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

/// Stages 8b and 8c on the head's own lines: the request line with `upstream.url`'s path
/// prefix, the upstream's `Host`, every header line hygiene keeps (as [`fate`] judges names,
/// less those a `Connection` header names), the forwarding headers, the injected ones and the
/// body's `Content-Length`. What [`rewrite_and_inject`] and
/// [`prepare_upstream_request`] make of the same head, written without building a map.
fn encode_lines(
    out: &mut Vec<u8>,
    live: &Live,
    head: &Head,
    fields: &[Field],
    client: &Client,
    resolved: Resolved,
) {
    out.clear();
    put_request_line(
        out,
        "POST",
        &live.upstream.path_prefix,
        head.get(head.target),
    );
    put_header(out, b"host", live.upstream.host.as_bytes());
    // Most heads carry no `Connection` header: then no line needs checking against one.
    let has_connection = fields.iter().any(|f| f.fate == Fate::Connection);
    let listed = |name: &[u8]| {
        has_connection
            && fields
                .iter()
                .filter(|f| f.fate == Fate::Connection)
                .any(|c| has_token(head.get(c.value), name))
    };
    let mut host = None;
    for f in fields {
        let kept = match f.fate {
            Fate::Keep => true,
            Fate::Host => host.is_none(),
            Fate::Drop | Fate::Connection | Fate::Forwarded => false,
        };
        let name = head.get(f.name);
        if !kept || listed(name) {
            continue;
        }
        if f.fate == Fate::Host {
            host = Some(f.value);
        } else {
            put_header(out, name, head.get(f.value));
        }
    }
    let host = host.and_then(|v| HeaderValue::from_maybe_shared(head.bytes.slice(v.range())).ok());
    client.forwarding(host, |name, value| {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    });
    injected(live, resolved, |name, value| {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    });
    put_content_length(out, head.content_length);
    out.extend_from_slice(b"\r\n");
}

/// The upstream request head: request line, the prepared headers, a `Content-Length` when the
/// client's was not kept.
fn encode_request(out: &mut Vec<u8>, parts: &http::request::Parts, body_len: usize) {
    out.clear();
    // The path prefix is already in the target (prepare_upstream_request).
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    put_request_line(out, parts.method.as_str(), "", target.as_bytes());
    for (name, value) in &parts.headers {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::CONTENT_LENGTH) {
        put_content_length(out, body_len);
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
        let stream = target.connect().await?;
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

/// Whether a response header is hop-by-hop ([`crate::http::headers::HOP_BY_HOP`]) and so not
/// relayed. The body goes with its own framing, so the headers describing that framing,
/// `Transfer-Encoding` and `Trailer`, go with it.
fn is_hop_by_hop(name: &[u8]) -> bool {
    crate::http::headers::HOP_BY_HOP.iter().any(|h| {
        h != header::TRANSFER_ENCODING
            && h != header::TRAILER
            && name.eq_ignore_ascii_case(h.as_str().as_bytes())
    })
}
/// Parses the buffered response head and writes it into `out` for the client (without the
/// blank line that ends it): status line as HTTP/1.1, hop-by-hop headers (and those
/// `Connection` names) removed, a `Date` added when missing, a body that ends with the
/// connection announced as chunked. `None` while incomplete.
fn rewrite_response_head(buf: &[u8], out: &mut Vec<u8>) -> Result<Option<HeadRead>, UpstreamError> {
    // Left uninitialised, as for requests: the headers are read once, below.
    let mut raw = [const { std::mem::MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parser = httparse::ParserConfig::default();
    let len = match parser.parse_response_with_uninit_headers(&mut resp, buf, &mut raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpstreamError::Response("malformed response head")),
    };
    // What is refused, what is interim and where the body ends: judged as on hyper's path
    // ([`framing`]).
    let status = resp.code.unwrap_or(0);
    if !framing::is_final(status)? {
        return Ok(Some(Interim(len)));
    }
    let mut framing_headers = FramingHeaders::default();
    let mut close = resp.version != Some(1);
    let mut listed: Vec<&[u8]> = Vec::new();
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        framing_headers.note(name, h.value)?;
        if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.is_empty() {
                    listed.push(token);
                }
            }
        }
    }
    let framing = framing_headers.framing(status)?;
    out.clear();
    put_status_line(
        out,
        itoa::Buffer::new().format(status),
        resp.reason.unwrap_or(""),
    );
    let mut has_date = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let framing_header = name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding");
        let dropped = if framing_header {
            // The headers that frame the body stay with the body they frame, whatever
            // `Connection` says; a body that ends with the connection is re-framed as
            // chunked below.
            framing == Framing::UntilClose
        } else {
            is_hop_by_hop(name) || listed.iter().any(|n| name.eq_ignore_ascii_case(n))
        };
        if !dropped {
            has_date |= name.eq_ignore_ascii_case(b"date");
            put_header(out, name, h.value);
        }
    }
    if !has_date {
        put_date(out);
    }
    if framing == Framing::UntilClose {
        put_header(out, b"transfer-encoding", b"chunked");
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

/// Relays the body after the head already in `out`: with its own framing as it is, or, for a
/// body that ends with the upstream connection, as chunks (the client connection can stay
/// open, and a cut-off body cannot pass for a whole one). A body that is small and already
/// here goes in the same write as the head.
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
    let mut first = true;
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
        let piece = &buffered[..take];
        if framing == Framing::UntilClose {
            if !first {
                out.clear();
            }
            if !piece.is_empty() {
                put_chunk(out, piece);
            }
            io.write_all(out).await?;
        } else if first && take <= COALESCE {
            out.extend_from_slice(piece);
            io.write_all(out).await?;
        } else {
            if first {
                io.write_all(out).await?;
            }
            io.write_all(piece).await?;
        }
        first = false;
        up.buf.advance(take);
        if let Framing::Length(_) = framing {
            left -= take as u64;
        }
        if done {
            return io.flush().await;
        }
        // What is written goes out before waiting for more (TLS buffers otherwise).
        io.flush().await?;
        if up.read_more().await? == 0 {
            return match framing {
                Framing::UntilClose => {
                    io.write_all(b"0\r\n\r\n").await?;
                    io.flush().await
                }
                _ => Err(io::ErrorKind::UnexpectedEof.into()),
            };
        }
    }
}

/// Appends `data` as one chunk of a chunked body.
fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write as _;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Finds the end of a chunked body (RFC 9112 §7.1) in the bytes as they come, strictly: the
/// bytes are relayed as they are, so any leniency here (a bare LF, stray bytes after a size)
/// could let a client see the body end elsewhere and read the rest as another response.
/// Anything irregular is an error, and the client connection is closed.
#[derive(Debug, Default)]
struct ChunkedEnd {
    state: Chunk,
    size: u64,
    digits: u8,
    /// Bytes of chunk extensions and trailer fields so far.
    extra: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    #[default]
    Size,
    SizeSpace,
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

/// Most bytes of chunk extensions and trailer fields one body may carry (hyper allows 16 KiB
/// of extensions).
const MAX_CHUNK_EXTRA: usize = 16 * 1024;

impl ChunkedEnd {
    /// Scans `bytes`: how many belong to the body, and whether the body ended there.
    fn scan(&mut self, bytes: &[u8]) -> io::Result<(usize, bool)> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed chunked body");
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                Chunk::Data => {
                    let take = ((bytes.len() - i) as u64).min(self.size);
                    i += take as usize;
                    self.size -= take;
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
                    None if self.digits > 0 => self.after_size(b)?,
                    _ => return Err(bad()),
                },
                Chunk::SizeSpace => self.after_size(b)?,
                Chunk::Extension | Chunk::Trailer => match b {
                    b'\r' => {
                        self.state = if self.state == Chunk::Extension {
                            Chunk::SizeLf
                        } else {
                            Chunk::TrailerLf
                        }
                    }
                    b'\t' | b' '..=b'~' | 0x80.. => {
                        self.extra += 1;
                        if self.extra > MAX_CHUNK_EXTRA {
                            return Err(bad());
                        }
                    }
                    _ => return Err(bad()),
                },
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
                Chunk::TrailerStart if b != b'\n' => {
                    self.state = Chunk::Trailer;
                    continue; // the byte is the trailer line's: checked there
                }
                Chunk::TrailerLf if b == b'\n' => self.state = Chunk::TrailerStart,
                Chunk::EndLf if b == b'\n' => return Ok((i + 1, true)),
                _ => return Err(bad()),
            }
            i += 1;
        }
        Ok((i, false))
    }

    /// After a chunk size: spaces, then an extension or the end of the line.
    fn after_size(&mut self, b: u8) -> io::Result<()> {
        self.state = match b {
            b' ' | b'\t' => Chunk::SizeSpace,
            b';' => Chunk::Extension,
            b'\r' => Chunk::SizeLf,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed chunk size",
                ))
            }
        };
        Ok(())
    }
}

/// An I/O object that first yields `prefix`, then reads from `inner`: how a connection the
/// lane has read from is handed to hyper.
pub struct Rewind<I> {
    /// Dropped once read, so the lane's buffer is not kept for the connection's life.
    prefix: Option<Bytes>,
    inner: I,
}

impl<I> Rewind<I> {
    pub fn new(prefix: Bytes, inner: I) -> Self {
        let prefix = (!prefix.is_empty()).then_some(prefix);
        Rewind { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(prefix) = &mut self.prefix {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            prefix.advance(n);
            if prefix.is_empty() {
                self.prefix = None;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `body` cut into pieces at every position: the end is found at the same byte.
    fn chunked_end(body: &[u8]) -> io::Result<Option<usize>> {
        let whole = ChunkedEnd::default().scan(body)?;
        let whole = whole.1.then_some(whole.0);
        for cut in 1..body.len() {
            let mut scanner = ChunkedEnd::default();
            let (a, done) = scanner.scan(&body[..cut])?;
            let split = if done {
                Some(a)
            } else {
                assert_eq!(a, cut, "an unfinished scan takes every byte");
                let (b, done) = scanner.scan(&body[cut..])?;
                done.then_some(cut + b)
            };
            assert_eq!(split, whole, "cut at {cut}");
        }
        Ok(whole)
    }

    #[test]
    fn the_end_of_a_chunked_body_is_found_wherever_reads_split_it() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        assert_eq!(chunked_end(body).unwrap(), Some(body.len()));
        let trailers = b"a\r\n0123456789\r\n0\r\nx-sum: 1\r\nx-more: 2\r\n\r\n";
        assert_eq!(chunked_end(trailers).unwrap(), Some(trailers.len()));
        // Bytes after the end are not the body's.
        let mut extra = body.to_vec();
        extra.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            ChunkedEnd::default().scan(&extra).unwrap(),
            (body.len(), true)
        );
        // Unfinished: every byte taken, no end.
        assert_eq!(ChunkedEnd::default().scan(b"5\r\nhel").unwrap(), (6, false));
    }

    #[test]
    fn malformed_chunked_bodies_are_errors_not_panics() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX\r\n",
            b"5\nhello\r\n",
            b"ffffffffffffffff0\r\n",
            b"0\r\n\r\r",
            b"3;ext\n",
            // Bare LFs, which some clients take for line ends.
            b"0\r\nX: a\n\r\n",
            b"0\r\n\n",
            b"5\r\nhello\n",
            // Bytes after a size that are neither an extension nor the line's end.
            b"5 zz\r\n",
            b"5\x00\r\n",
            // Control characters in an extension or a trailer.
            b"5;a\x01\r\n",
            b"0\r\nX: \x7f\r\n\r\n",
        ] {
            assert!(
                ChunkedEnd::default().scan(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Extensions and trailers are bounded.
        let long = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_EXTRA + 1));
        assert!(ChunkedEnd::default().scan(long.as_bytes()).is_err());
        // Spaces before an extension or the line's end are allowed.
        let spaced = b"5 ;x\r\nhello\r\n0 \r\n\r\n";
        assert_eq!(chunked_end(spaced).unwrap(), Some(spaced.len()));
        // The largest size that fits is a size, not an overflow.
        let mut scanner = ChunkedEnd::default();
        assert_eq!(scanner.scan(b"ffffffffffffffff\r\n").unwrap(), (18, false));
    }

    #[test]
    fn a_head_is_parsed_only_once_an_empty_line_may_have_arrived() {
        let head = b"POST /slack/events HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(head_may_end(head, 0));
        assert!(!head_may_end(&head[..head.len() - 1], 0));
        // An end straddling what was searched before is still found.
        for searched in 0..head.len() {
            assert!(head_may_end(head, searched), "searched {searched}");
        }
        assert!(head_may_end(b"GET / HTTP/1.1\nHost: x\n\n", 20));
        assert!(!head_may_end(b"POST / HTTP/1.1\r\nA: b\r\n", 0));
    }

    #[test]
    fn content_lengths_are_digits_only() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"1499"), Some(1499));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"0x10",
            b"1,1",
            b"9999999999999999999",
        ] {
            assert_eq!(
                parse_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn connection_tokens_are_matched_whole_and_without_case() {
        assert!(has_token(b"close", b"close"));
        assert!(has_token(b"keep-alive, Close", b"close"));
        assert!(!has_token(b"closed", b"close"));
        assert!(!has_token(b"keep-alive", b"close"));
    }

    fn rewritten(head: &str) -> (String, ResponseHead, usize) {
        let mut out = Vec::new();
        match rewrite_response_head(head.as_bytes(), &mut out) {
            Ok(Some(Final(r, len))) => (String::from_utf8(out).unwrap(), r, len),
            _ => panic!("not a final head: {head:?}"),
        }
    }

    #[test]
    fn response_heads_lose_their_hop_by_hop_headers_and_gain_a_date() {
        let (out, r, len) = rewritten(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, x-private\r\n\
             X-Private: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
        );
        assert_eq!(len, 136);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"));
        assert!(out.contains("Content-Length: 2\r\n"));
        assert!(out.contains("date: "));
        for gone in ["Connection", "X-Private", "Keep-Alive"] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert_eq!(r.framing, Framing::Length(2));
        assert!(r.reusable);

        let (out, r, _) = rewritten(
            "HTTP/1.1 200 OK\r\nDate: Mon, 23 Nov 2026 21:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(out.contains("Date: Mon, 23 Nov 2026 21:00:00 GMT\r\n"));
        assert!(!out.contains("date: "), "one Date only");
        assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
        assert_eq!(r.framing, Framing::Chunked);
        assert!(r.reusable);

        // The chunked body goes with its trailers, so the Trailer header goes too; the other
        // hop-by-hop headers do not.
        let (out, _, _) = rewritten(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\nTE: trailers\r\n\
             Upgrade: h2c\r\nProxy-Connection: keep-alive\r\n\r\n",
        );
        assert!(out.contains("Trailer: x-sum\r\n"), "{out}");
        for gone in ["TE:", "Upgrade", "Proxy-Connection"] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }

        // Framing headers stay with their body whatever Connection names; a Date it names
        // is replaced.
        let (out, r, _) = rewritten(
            "HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding, Date\r\n\
             Date: Mon, 23 Nov 2026 21:00:00 GMT\r\nContent-Length: 5\r\n\r\n",
        );
        assert!(out.contains("Content-Length: 5\r\n"), "{out}");
        assert!(!out.contains("Date: Mon"), "{out}");
        assert!(out.contains("date: "), "{out}");
        assert_eq!(r.framing, Framing::Length(5));

        // A body that ends with the connection goes to the client chunked.
        let (out, r, _) =
            rewritten("HTTP/1.0 200 OK\r\nTransfer-Encoding: gzip\r\nX-App: 1\r\n\r\n");
        assert!(
            out.contains("X-App: 1\r\ntransfer-encoding: chunked\r\n")
                || out.ends_with("transfer-encoding: chunked\r\n"),
            "{out}"
        );
        assert!(!out.contains("gzip"), "{out}");
        assert_eq!(r.framing, Framing::UntilClose);
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let framing = |head: &str| {
            let (_, r, _) = rewritten(head);
            (r.framing, r.reusable)
        };
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\n\r\n"),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n"),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"),
            (Framing::Length(3), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n"),
            (Framing::Length(3), false)
        );
        let mut out = Vec::new();
        assert!(matches!(
            rewrite_response_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", &mut out),
            Ok(Some(Interim(25)))
        ));
        assert!(matches!(
            rewrite_response_head(b"HTTP/1.1 200 OK\r\nContent-", &mut out),
            Ok(None)
        ));
        for bad in [
            &b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            // A length beside a transfer coding, in either order, chunked or not.
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n",
            b"HTTX/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 099 Early\r\n\r\n",
            b"HTTP/1.1 000 Zero\r\n\r\n",
        ] {
            assert!(
                rewrite_response_head(bad, &mut out).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
