//! What the gateway accepts of an upstream response head, judged once for both transports:
//! the fast lane reads the head off the upstream connection with httparse, hyper's path gets
//! it from hyper's client ([`super`]).
//!
//! A response the client could not be given as it is, or whose body could end in two places,
//! is refused, and the client gets the gateway's 502 instead, with nothing of it relayed:
//!
//! - a status outside 100–999, or `101 Switching Protocols` (the gateway never asks for an
//!   upgrade, and a client handed a 101 would take the connection for another protocol's);
//! - a `Content-Length` that is not digits only, or two that differ;
//! - a `Content-Length` beside a `Transfer-Encoding`, which RFC 9112 §6.1 forbids a server
//!   to send and §6.3 says ought to be handled as an error: the two say different things
//!   about where the body ends (response splitting), so the upstream connection is not
//!   used again either.
//!
//! Other 1xx responses are interim: skipped, never shown to the client (hyper's client does
//! the same).

use http::{HeaderMap, StatusCode};

/// Why a response head was refused: the gateway answers 502 instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

/// Where a response body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Whether `status` ends the exchange: `Ok(false)` for an interim (1xx) response, to skip.
pub fn is_final(status: u16) -> Result<bool, Refused> {
    if !(100..=999).contains(&status) {
        return Err(Refused("invalid status code"));
    }
    if status == 101 {
        return Err(Refused("unexpected 101 Switching Protocols"));
    }
    Ok(status >= 200)
}

/// The headers of one response head that say where its body ends, noted line by line.
#[derive(Debug, Default)]
pub struct FramingHeaders {
    length: Option<u64>,
    /// Whether the last `Transfer-Encoding` line ends in `chunked`; `None` without one.
    chunked: Option<bool>,
}

impl FramingHeaders {
    /// Takes note of one header line; an error for a `Content-Length` that is not digits
    /// only, or that differs from an earlier one.
    #[inline]
    pub fn note(&mut self, name: &[u8], value: &[u8]) -> Result<(), Refused> {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value).ok_or(Refused("invalid Content-Length"))? as u64;
            if self.length.is_some_and(|l| l != n) {
                return Err(Refused("conflicting Content-Length"));
            }
            self.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked only when it is the final coding (RFC 9112 §6.3).
            let last = value.split(|&b| b == b',').next_back().unwrap_or(b"");
            self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
        Ok(())
    }

    /// The body's framing for a final response of `status`; an error for a length beside a
    /// transfer coding.
    pub fn framing(&self, status: u16) -> Result<Framing, Refused> {
        if self.chunked.is_some() && self.length.is_some() {
            return Err(Refused("Content-Length beside Transfer-Encoding"));
        }
        Ok(match (status, self.chunked, self.length) {
            (204 | 304, _, _) => Framing::Empty,
            (_, Some(true), _) => Framing::Chunked,
            (_, Some(false), _) | (_, None, None) => Framing::UntilClose,
            (_, None, Some(n)) => Framing::Length(n),
        })
    }
}

/// Judges a final response head read by hyper's client as the lane judges the heads it
/// reads: what hyper lets through and the lane refuses is refused here too.
pub fn check_head(status: StatusCode, headers: &HeaderMap) -> Result<(), Refused> {
    if !is_final(status.as_u16())? {
        // hyper's client skips interim responses itself; one that got here is no answer.
        return Err(Refused("interim response as the answer"));
    }
    let mut framing = FramingHeaders::default();
    for (name, value) in headers {
        framing.note(name.as_str().as_bytes(), value.as_bytes())?;
    }
    framing.framing(status.as_u16()).map(drop)
}

/// A `Content-Length` value: digits only, as RFC 9110 has it.
#[inline]
pub fn parse_length(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn judged(status: u16, headers: &[(&str, &str)]) -> Result<(), Refused> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        check_head(StatusCode::from_u16(status).unwrap(), &map)
    }

    #[test]
    fn hypers_heads_are_refused_where_the_lanes_would_be() {
        for (status, headers) in [
            (101, &[("upgrade", "websocket")][..]),
            (
                200,
                &[("content-length", "40"), ("transfer-encoding", "chunked")],
            ),
            (
                200,
                &[("transfer-encoding", "gzip"), ("content-length", "3")],
            ),
            (200, &[("content-length", "5, 5")]),
            (200, &[("content-length", "+5")]),
            (200, &[("content-length", "2"), ("content-length", "3")]),
            (
                204,
                &[("transfer-encoding", "chunked"), ("content-length", "0")],
            ),
            (103, &[]),
        ] {
            assert!(judged(status, headers).is_err(), "{status} {headers:?}");
        }
        for (status, headers) in [
            (200, &[("content-length", "40")][..]),
            (200, &[("content-length", "3"), ("content-length", "3")]),
            (200, &[("transfer-encoding", "chunked")]),
            (200, &[("transfer-encoding", "gzip, chunked")]),
            (200, &[]),
            (304, &[("content-length", "10")]),
        ] {
            assert!(judged(status, headers).is_ok(), "{status} {headers:?}");
        }
    }
}
