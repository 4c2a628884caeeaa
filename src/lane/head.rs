//! Reading a request head and writing it upstream: the lane's head parser (httparse, then
//! the lane's own tests of what it takes: a `POST` to a Slack path over HTTP/1.1, one
//! `Host`, at most one plain `Content-Length`, nothing hyper would refuse or read
//! differently), the head's header lines as spans of the bytes that came ([`Head`],
//! [`Field`]), and the upstream request head written from those lines ([`encode_lines`]) or
//! from a rewritten map ([`encode_request`]). A head the lane does not take is left for hyper.

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use super::wire::{put_content_length, put_header, put_request_line};
use crate::gateway::Live;
use crate::http::headers::{fate, Client, Fate};
use crate::proxy::{injected, Resolved, Signed};
use crate::upstream::framing::parse_length;

/// Largest request head (request line and headers) accepted, by the lane and by hyper; larger
/// ones get 431 (from hyper, which the lane hands them to).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Request headers the lane parses; a request with more goes to hyper, whose limit is
/// `server.max_headers`.
const MAX_REQUEST_HEADERS: usize = 64;
/// Room for the headers the pipeline adds (forwarding, identity, tokens).
const ADDED_HEADERS: usize = 12;

/// A request head the lane takes. Its header lines are in the lane's `fields`.
pub(super) struct Head {
    /// The head as it arrived.
    bytes: Bytes,
    /// The request target (origin form).
    target: Span,
    pub(super) content_length: usize,
    /// The client asked for the connection to close after this request.
    pub(super) close: bool,
    /// Header hygiene on this head needs the general rewrite
    /// ([`crate::proxy::rewrite_and_inject`] on a map): a trusted proxy's forwarding headers,
    /// which are extended. `None`: the head goes upstream as its own header lines, less those
    /// hygiene drops.
    pub(super) general: Option<http::request::Parts>,
}

impl Head {
    fn get(&self, span: Span) -> &[u8] {
        &self.bytes[span.range()]
    }

    /// Every header line, as (name, value).
    pub(super) fn lines<'a>(
        &'a self,
        fields: &'a [Field],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        fields.iter().map(|f| (self.get(f.name), self.get(f.value)))
    }

    /// The headers the pipeline reads.
    pub(super) fn signed<'a>(&'a self, fields: &[Field]) -> Signed<'a> {
        let mut signed = Signed {
            target: Some(self.get(self.target)),
            ..Signed::default()
        };
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
pub(super) struct Field {
    name: Span,
    value: Span,
    fate: Fate,
}

/// Whether `buf` may hold a complete head, given that its first `searched` bytes held no
/// end: an empty line (CRLF CRLF, or bare LFs, which httparse accepts too) ending after them.
pub(super) fn head_may_end(buf: &[u8], searched: usize) -> bool {
    let tail = buf.get(searched.saturating_sub(3)..).unwrap_or_default();
    memchr::memchr_iter(b'\n', tail)
        .any(|i| matches!(&tail[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

#[allow(clippy::large_enum_variant)]
pub(super) enum Parse {
    Partial,
    Slack(Head),
    Other,
    /// The declared body is over `server.max_body_bytes`; the head has been split off.
    TooLarge(usize),
}

/// Parses the buffered head into `fields`. On `Slack` the head has been split off `buf`.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    live: &Live,
    client: &Client,
    fields: &mut Vec<Field>,
) -> Parse {
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

/// Stages 8b and 8c on the head's own lines: the request line with `upstream.url`'s path
/// prefix, the upstream's `Host`, every header line hygiene keeps (as [`fate`] judges names,
/// less those a `Connection` header names), the forwarding headers, the injected ones and the
/// body's `Content-Length`. What [`crate::proxy::rewrite_and_inject`] and
/// [`crate::proxy::prepare_upstream_request`] make of the same head, written without building
/// a map.
pub(super) fn encode_lines(
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
pub(super) fn encode_request(out: &mut Vec<u8>, parts: &http::request::Parts, body_len: usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
