//! The exchange with the upstream: the client connection's own upstream connection
//! ([`Upstream`]: kept while idle and open, else a new one), the request written in one
//! vectored write where the socket takes it, and the response head read, judged (as on
//! hyper's path, [`crate::upstream::framing`]) and rewritten for the client
//! ([`ResponseHead`]: status, framing, whether the connection can carry another request).

use std::io::{self, IoSlice};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http::header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{put_date, put_header, put_status_line, READ_SIZE};
use crate::upstream::framing::{self, Framing, FramingHeaders};
use crate::upstream::{UpstreamError, UpstreamTarget};

/// Response headers accepted from the upstream (hyper's client default).
const MAX_RESPONSE_HEADERS: usize = 100;
/// Largest upstream response head (hyper's client default buffer limit).
const MAX_RESPONSE_HEAD: usize = 400 * 1024;

/// One client connection's connection to the upstream.
pub(super) struct Upstream {
    stream: TcpStream,
    connect_to: String,
    /// When its last response ended.
    pub(super) used: Instant,
    pub(super) buf: BytesMut,
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

    pub(super) async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 2 {
            self.buf.reserve(READ_SIZE);
        }
        self.stream.read_buf(&mut self.buf).await
    }
}

/// What the client connection needs to know of a response head.
pub(super) struct ResponseHead {
    pub(super) status: u16,
    pub(super) framing: Framing,
    /// The upstream connection can carry another request after this response.
    pub(super) reusable: bool,
}

/// Writes the request whose head is in `out` (on the idle connection when it is still good,
/// else on a new one) and reads the response head, rewritten for the client into `out`.
pub(super) async fn exchange(
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

#[cfg(test)]
mod tests {
    use super::*;

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
