//! Stage 1, the request body: what the head alone can tell (signature headers that can never
//! verify, a body over the limit) is refused before any of it is read; the rest is read within
//! `server.max_body_bytes`, `server.body_read_timeout` and the budget all bodies in flight
//! share (`server.max_body_bytes_in_flight`).

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::error::ProxyError;
use crate::gateway::{BodyPermit, Gateway, Live};
use crate::http::unix_now;
use crate::slack::payload;
use crate::slack::signature::{check_headers, SignatureError};

/// Slack's signature headers.
use crate::slack::signature::{SIGNATURE_HEADER as SIGNATURE, TIMESTAMP_HEADER as TIMESTAMP};

/// The request headers the pipeline reads, wherever the transport keeps them (the first
/// of each name, as [`http::HeaderMap::get`] has it): from a header map ([`Signed::of`]) or
/// noted line by line from a raw head ([`Signed::note`]).
#[derive(Clone, Copy, Default)]
pub(crate) struct Signed<'a> {
    /// Who sent it, built only when queued delivery stores it.
    pub(crate) sender: Option<&'a (dyn Fn() -> crate::store::queue::Sender + Sync)>,
    pub(crate) content_type: Option<&'a [u8]>,
    pub(crate) timestamp: Option<&'a [u8]>,
    pub(crate) signature: Option<&'a [u8]>,
    /// The request target (path and query) it came to: where queued delivery sends it.
    pub(crate) target: Option<&'a [u8]>,
}

impl<'a> Signed<'a> {
    pub(crate) fn of(headers: &'a http::HeaderMap) -> Self {
        let get = |name| headers.get(name).map(HeaderValue::as_bytes);
        Signed {
            content_type: get(header::CONTENT_TYPE.as_str()),
            timestamp: get(TIMESTAMP),
            signature: get(SIGNATURE),
            target: None,
            sender: None,
        }
    }

    /// Takes note of one header, when it is one the pipeline reads and the first of its name.
    pub(crate) fn note(&mut self, name: &[u8], value: &'a [u8]) {
        let slot = if name.eq_ignore_ascii_case(b"content-type") {
            &mut self.content_type
        } else if name.eq_ignore_ascii_case(TIMESTAMP.as_bytes()) {
            &mut self.timestamp
        } else if name.eq_ignore_ascii_case(SIGNATURE.as_bytes()) {
            &mut self.signature
        } else {
            return;
        };
        slot.get_or_insert(value);
    }
}

/// The largest body a request without valid signature headers may have: Slack's one
/// unsigned request, `ssl_check`, is a short form (`ssl_check=1&token=...`).
pub const UNSIGNED_BODY_MAX_BYTES: usize = 4096;

/// What the head alone said about a Slack request ([`judge_head`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadVerdict {
    /// The most body bytes to read.
    pub(crate) max_body: usize,
    /// Why the signature headers can never verify, for a small form let through because it
    /// may be Slack's `ssl_check`.
    unsigned: Option<SignatureError>,
}

impl HeadVerdict {
    /// An unsigned request's body over [`UNSIGNED_BODY_MAX_BYTES`] is no `ssl_check`: its
    /// refusal is the signature's.
    pub(crate) fn refusal_of(self, e: ProxyError) -> ProxyError {
        match (e, self.unsigned) {
            (ProxyError::BodyTooLarge(_), Some(reason)) => ProxyError::Signature(reason),
            (e, _) => e,
        }
    }
}

/// Stage 1a, from the head alone: a request whose signature headers can never verify
/// (missing, malformed, a timestamp outside the window) is refused before its body is read
/// or any memory is spent on it. Only a small form may pass without them, as it may be
/// Slack's unsigned `ssl_check` (answered by [`decide`], never forwarded).
pub(crate) fn judge_head(
    live: &Live,
    signed: Signed<'_>,
    declared: Option<usize>,
) -> Result<HeadVerdict, ProxyError> {
    let max_body = live.config.server.max_body_bytes;
    let Err(reason) = check_headers(signed.timestamp, signed.signature, unix_now()) else {
        return Ok(HeadVerdict {
            max_body,
            unsigned: None,
        });
    };
    let form = signed.content_type.is_some()
        && payload::content_kind(signed.content_type, b"") == Some(payload::ContentKind::Form);
    if form && declared.is_none_or(|n| n <= UNSIGNED_BODY_MAX_BYTES) {
        return Ok(HeadVerdict {
            max_body: max_body.min(UNSIGNED_BODY_MAX_BYTES),
            unsigned: Some(reason),
        });
    }
    Err(ProxyError::Signature(reason))
}

/// The declared `Content-Length`, when there is one and it is a number.
pub(super) fn declared_length(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| crate::upstream::framing::parse_length(v.as_bytes()))
}

/// Stage 1b: `bytes` of the budget all requests' bodies share
/// (`server.max_body_bytes_in_flight`), or 503. The permit is held until the body is dropped.
pub(crate) fn reserve_body<'g>(
    gw: &'g Gateway,
    live: &Live,
    bytes: usize,
) -> Result<BodyPermit<'g>, ProxyError> {
    gw.bodies
        .reserve(bytes, live.config.server.max_body_bytes_in_flight)
        .ok_or(ProxyError::Busy)
}

/// Stage 1: the body, bounded by `max` and the shared budget (`permit` grows with it), and
/// received within `server.body_read_timeout`.
///
/// A body over the limit is answered 413 with `Connection: close`; what the client still
/// sends of it is read and dropped meanwhile, for at most `server.body_read_timeout`, so that
/// a client still writing it reads the answer rather than a reset (as the lane does for a
/// declared length). Not when the client waits for `100 Continue` before sending a body
/// refused on its declared length: reading it would ask for it.
pub(super) async fn read_body(
    body: Incoming,
    headers: &http::HeaderMap,
    server: &crate::config::ServerConfig,
    max: usize,
    permit: &mut BodyPermit<'_>,
) -> Result<Bytes, ProxyError> {
    let timeout = server.body_read_timeout;
    if declared_length(headers).is_some_and(|len| len > max) {
        if !headers.contains_key(header::EXPECT) {
            tokio::spawn(drain_body(body, timeout));
        }
        return Err(ProxyError::BodyTooLarge(max));
    }
    let mut body = body;
    let read = tokio::time::timeout(timeout, collect_body(&mut body, max, permit))
        .await
        .unwrap_or(Err(ProxyError::BodyTimeout(timeout)));
    if let Err(ProxyError::BodyTooLarge(_) | ProxyError::Busy) = read {
        tokio::spawn(drain_body(body, timeout));
    }
    read
}

/// Reads and drops the rest of `body`, for at most `within`.
pub(super) async fn drain_body(mut body: Incoming, within: std::time::Duration) {
    let _ = tokio::time::timeout(within, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

pub(super) async fn collect_body(
    body: &mut Incoming,
    max: usize,
    permit: &mut BodyPermit<'_>,
) -> Result<Bytes, ProxyError> {
    // A body that arrives in one piece (most do: it came with its head) is kept as it is;
    // only a body in several pieces is copied into one buffer.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::BodyRead(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing Slack signs
        };
        total += data.len();
        if total > max {
            return Err(ProxyError::BodyTooLarge(max));
        }
        if !permit.grow_to(total) {
            return Err(ProxyError::Busy);
        }
        match (&mut first, &mut joined) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(total);
                buf.extend_from_slice(f);
                buf.extend_from_slice(&data);
                first = None;
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}
