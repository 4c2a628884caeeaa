//! The connection loop's clocks: a timer kept for the connection's life ([`LazyTimer`]), and
//! a single poll that tries a read before any timer is armed ([`poll_once`]).

use std::pin::Pin;
use std::task::Poll;

/// A timer kept for the connection's life and moved only when it would fire too late.
/// Each request's deadline is later than the one before, so the timer fires early (at an
/// old deadline), finds time left and moves on: one timer-wheel operation per timeout period
/// instead of two per request (registered, then cancelled) for a fresh timer each time.
pub(super) struct LazyTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl LazyTimer {
    pub(super) fn new() -> Self {
        LazyTimer {
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
        }
    }

    /// `fut`'s output, or `None` once `deadline` has passed.
    pub(super) async fn within<F: std::future::Future>(
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

/// Polls `fut` once: its output, or `None` when it would wait.
pub(super) async fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}
