//! Relaying the upstream's answer to the client: the body after its rewritten head, with
//! its own framing or (a body that ends with the connection) re-framed as chunks, small
//! bodies in the same write as the head; and the strict scanner that finds where a chunked
//! body ends ([`ChunkedEnd`]) so that nothing after it passes for part of it.

use std::io;

use bytes::Buf;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::exchange::Upstream;
use crate::upstream::framing::Framing;

/// A response body up to this size goes out in the same write as its head.
const COALESCE: usize = 16 * 1024;

/// Relays the body after the head already in `out`: with its own framing as it is, or, for a
/// body that ends with the upstream connection, as chunks (the client connection can stay
/// open, and a cut-off body cannot pass for a whole one). A body that is small and already
/// here goes in the same write as the head.
pub(super) async fn relay_body<I>(
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
}
