//! A write deadline on a client connection: a client that takes none of its answers is let go.
//!
//! A client that pipelines requests and never reads fills the socket's buffers in both
//! directions; from then on every write to it waits, and neither the fast lane nor hyper has a
//! timeout on a write, so the connection (and its `server.max_connections` slot) would be held
//! for as long as the client keeps it open. [`WriteTimeout`] wraps the client's TCP stream
//! (under TLS, when there is TLS), so the lane, hyper and the TLS layer all write through it:
//! when a write or flush cannot go on because the socket takes no more, a timer is armed, and
//! once no byte has been taken for `server.write_timeout` the write fails with
//! [`io::ErrorKind::TimedOut`]. Both paths end the connection on a write error, which frees
//! its slot. Any progress disarms the timer: a client that reads, however slowly, is not cut
//! off by it.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A client stream whose writes fail once they have made no progress for a while.
pub struct WriteTimeout<I> {
    inner: I,
    /// `server.write_timeout`, as it was when the connection was accepted.
    timeout: Duration,
    /// The stall timer: made on the first write that has to wait, and kept for the
    /// connection's life (reset, never made again).
    stall: Option<Pin<Box<Sleep>>>,
    /// The timer runs: a write or flush had to wait, and no byte has been taken since.
    armed: bool,
}

impl<I> WriteTimeout<I> {
    pub fn new(inner: I, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stall: None,
            armed: false,
        }
    }

    /// After a write: bytes taken end the stall, if any.
    fn wrote(&mut self, ready: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(ready, Poll::Ready(Ok(n)) if n > 0) {
            self.armed = false;
        }
        ready
    }

    /// After a write, flush or shutdown that has to wait: arms the timer if it is not running,
    /// and fails once it has run out.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !self.armed {
            sleep.as_mut().reset(Instant::now() + timeout);
            self.armed = true;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took no bytes for {:?} (server.write_timeout)",
                    self.timeout
                ),
            ))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.stalled(cx),
            ready => this.wrote(ready),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.stalled(cx),
            ready => this.wrote(ready),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    // A flush or shutdown that completes does not end a stall: only bytes taken do. (A TCP
    // stream's flush always completes; were it to end the stall, a caller that flushed
    // between two waiting writes would restart the timer each time.)
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.stalled(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.stalled(cx),
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A write that cannot go on fails with `TimedOut` once the timeout has passed.
    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_timeout() {
        let (a, _b) = tokio::io::duplex(64);
        let mut a = WriteTimeout::new(a, TIMEOUT);
        let started = Instant::now();
        let e = a.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
        // The timer stays run out: closing does not wait again.
        let e = a.write_all(&[0u8; 1]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    /// Each byte the reader takes gives the writer the whole timeout again.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_cut_off() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = WriteTimeout::new(a, TIMEOUT);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 16];
            loop {
                tokio::time::sleep(TIMEOUT / 2).await;
                match b.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got += n,
                }
            }
        });
        a.write_all(&[0u8; 1024]).await.unwrap();
        a.shutdown().await.unwrap();
        drop(a);
        assert_eq!(reader.await.unwrap(), 1024);
    }

    /// A stall that ended does not count against the next one.
    #[tokio::test(start_paused = true)]
    async fn the_timer_restarts_after_progress() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = WriteTimeout::new(a, TIMEOUT);
        let writer = tokio::spawn(async move {
            a.write_all(&[0u8; 128]).await?;
            // Idle for longer than the timeout, then stalled again.
            tokio::time::sleep(TIMEOUT * 3).await;
            a.write_all(&[0u8; 128]).await
        });
        tokio::time::sleep(TIMEOUT - Duration::from_secs(1)).await;
        let mut buf = [0u8; 128];
        b.read_exact(&mut buf).await.unwrap();
        let started = Instant::now();
        let e = writer.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // Three timeouts idle, then a whole timeout stalled: the idle time did not count.
        assert!(started.elapsed() >= TIMEOUT * 4, "{:?}", started.elapsed());
    }

    /// Flushes between waiting writes do not restart the timer (a TCP stream's flush always
    /// completes): only bytes taken do.
    #[tokio::test(start_paused = true)]
    async fn a_flush_does_not_restart_the_timer() {
        let (a, _b) = tokio::io::duplex(64);
        let mut a = WriteTimeout::new(a, TIMEOUT);
        a.write_all(&[0u8; 64]).await.unwrap();
        let started = Instant::now();
        let e = loop {
            match tokio::time::timeout(Duration::from_secs(1), a.write(&[0u8])).await {
                Err(_) => a.flush().await.unwrap(),
                Ok(r) => break r.unwrap_err(),
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() <= TIMEOUT, "{:?}", started.elapsed());
    }
}
