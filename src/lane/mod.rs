//! The fast lane: Slack's plain requests served straight off the socket.
//!
//! hyper serves a request through general machinery: the request body and the upstream's
//! response body each cross a channel between tasks, every upstream connection has a task of
//! its own that the request is handed to, and every head is parsed into a map and encoded
//! again. For what Slack actually sends — a `POST` to one of `upstream.slack_paths` over
//! HTTP/1.1 with a plain `Content-Length` body — the lane does it in the connection's own
//! task: it parses the head with httparse (hyper's own parser), runs the same pipeline as the
//! hyper path ([`crate::proxy`]'s `decide`), writes the upstream request from the head's own
//! header lines (judged by the same hygiene rules, [`crate::http::headers::fate`]; no header
//! map is built unless a trusted proxy's forwarding headers need extending) on this client
//! connection's own upstream connection, and relays the response head (hop-by-hop headers
//! removed) and body bytes as they come, framing included.
//!
//! Anything else — another path or method, `Transfer-Encoding` or `Expect` on the request,
//! HTTP/1.0, `Upgrade`, no `Host` or two (refused with 400 there), a head httparse refuses,
//! more headers than `server.max_headers` — is handed to hyper together with the bytes read
//! so far ([`Rewind`]), and hyper serves the connection from then on exactly as it would
//! have. The lane is never more lenient than hyper: it takes only what is unambiguous. A
//! declared body over `server.max_body_bytes` the lane refuses itself (413), reading what the
//! client still sends of it before closing. The upstream's response head is judged as on
//! hyper's path ([`crate::upstream::framing`]): what is refused there is a 502 here too.
//!
//! The connection loop is here ([`serve`]): read a head, judge it, read the body, decide,
//! forward, respond. Its parts: `head` (parsing a request head, writing the upstream's),
//! `exchange` (the upstream connection and its response head), `relay` (the body back to
//! the client), `rewind` (the hand-over to hyper), `timer` and `wire` (the clocks and line
//! writers they share). [`crate::server`] calls the lane; the lane calls the pipeline's
//! stages ([`crate::proxy`]) and the floors below it, never the server.

mod exchange;
mod head;
mod relay;
mod rewind;
mod timer;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::gateway::{BodyPermit, Gateway, Live};
use crate::http::headers::Client;
use crate::http::Body;
use crate::metrics::Route;
use crate::proxy::{
    decide, judge_head, prepare_upstream_request, refuse, reserve_body, rewrite_and_inject,
    upstream_outcome, ProxyError, Resolved, Step,
};
use exchange::{exchange, Upstream};
use head::{encode_lines, encode_request, head_may_end, parse_head, Field, Head, Parse};
use relay::relay_body;
use timer::{poll_once, LazyTimer};
use wire::{put_content_length, put_date, put_header, put_status_line, write_out, READ_SIZE};

pub use head::MAX_HEAD_BYTES;
pub use rewind::Rewind;

/// A shutdown signal: flips to `true` once. The lane reads it between requests; the server
/// gives each connection a receiver of its listener's.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// A body's buffer grows by at most this much per read.
const BODY_READ_STEP: usize = 64 * 1024;

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
    /// The bodies in flight would pass `server.max_body_bytes_in_flight`.
    Busy,
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
            // within the budget all bodies share, charged as its bytes arrive (a head alone,
            // whatever length it declares, holds none of it).
            let judged = judge_head(&live, head.signed(&self.fields), Some(head.content_length))
                .and_then(|_| reserve_body(gw, &live, 0));
            let mut permit = match judged {
                Ok(permit) => permit,
                Err(e) => {
                    self.refuse_unread(head.content_length, e, &live).await;
                    return Served::Closed;
                }
            };
            let timeout = live.config.server.body_read_timeout;
            let body = match self
                .read_body(head.content_length, timeout, &mut permit)
                .await
            {
                BodyRead::Whole(body) => body,
                BodyRead::Gone => return Served::Closed,
                BodyRead::Late => {
                    let e = ProxyError::BodyTimeout(timeout);
                    self.respond(refuse(gw, client.addr, e), started).await;
                    return Served::Closed;
                }
                BodyRead::Busy => {
                    self.refuse_unread(head.content_length, ProxyError::Busy, &live)
                        .await;
                    return Served::Closed;
                }
            };
            let fields = &self.fields;
            let sender = || crate::proxy::queued_sender(head.lines(fields), client);
            let signed = crate::proxy::Signed {
                sender: Some(&sender),
                ..head.signed(fields)
            };
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
    async fn read_body(
        &mut self,
        len: usize,
        timeout: Duration,
        permit: &mut BodyPermit<'_>,
    ) -> BodyRead {
        // The body's bytes in memory are charged to the budget all bodies share.
        if !permit.grow_to(self.buf.len().min(len)) {
            return BodyRead::Busy;
        }
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
                if !permit.grow_to(self.buf.len().min(len)) {
                    return BodyRead::Busy;
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
