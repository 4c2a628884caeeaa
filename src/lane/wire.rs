//! What the lane's parts share: the writers of HTTP/1.1 lines (status and request lines,
//! headers, `Content-Length`, `Date`) into the lane's byte buffers, the write that sends a
//! buffer whole, and the size every read asks room for. Imports nothing of the lane.

use std::io;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Reads ask for at least this much room.
pub(super) const READ_SIZE: usize = 8 * 1024;

/// An HTTP/1.1 status line: the client always gets HTTP/1.1, whatever the upstream spoke.
pub(super) fn put_status_line(out: &mut Vec<u8>, code: &str, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(code.as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// An HTTP/1.1 request line for the upstream: `method`, `upstream.url`'s path prefix, the
/// client's path and query.
pub(super) fn put_request_line(out: &mut Vec<u8>, method: &str, prefix: &str, target: &[u8]) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

pub(super) fn put_content_length(out: &mut Vec<u8>, len: usize) {
    put_header(
        out,
        b"content-length",
        itoa::Buffer::new().format(len).as_bytes(),
    );
}

pub(super) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    // The separators pushed rather than copied: a copy is a call for every two bytes.
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.push(b':');
    out.push(b' ');
    out.extend_from_slice(value);
    out.push(b'\r');
    out.push(b'\n');
}

/// A `Date` header (RFC 9110 §6.6.1: a proxy adds one where the origin sent none), formatted
/// once a second.
pub(super) fn put_date(out: &mut Vec<u8>) {
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

pub(super) async fn write_out<I: AsyncWrite + Unpin>(io: &mut I, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}
