//! One slot: keeps one Socket Mode connection serving, replacing it without a gap.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::envelope::Shared;
use super::socket::{self, Failure, Signal, Socket};
use super::Settings;

/// How long a non-transient refusal (`link_disabled`, `invalid_auth`) waits before the next
/// attempt.
const TERMINAL_RETRY: Duration = Duration::from_secs(300);
/// The first wait after a failed attempt, doubled after each until [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A running slot.
pub(super) struct Slot {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// How many slots of one generation have opened their first connection.
#[derive(Default)]
pub(super) struct Opened {
    count: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Opened {
    fn one(&self) {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until `n` slots have opened a connection, for at most `limit`.
    pub(super) async fn wait_for(&self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }
}

impl Slot {
    pub(super) fn start(shared: Arc<Shared>, settings: Arc<Settings>) -> Slot {
        Self::start_counted(shared, settings, Arc::new(Opened::default()))
    }

    /// A slot that counts its first connection in `opened`.
    pub(super) fn start_counted(
        shared: Arc<Shared>,
        settings: Arc<Settings>,
        opened: Arc<Opened>,
    ) -> Slot {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(shared, settings, stopped, opened));
        Slot { stop, task }
    }

    /// Stops the slot: its connection is retired (closed once its envelopes in flight are
    /// answered). The task ends when that is done.
    pub(super) fn stop(self) -> JoinHandle<()> {
        let _ = self.stop.send(true);
        self.task
    }
}

async fn run(
    shared: Arc<Shared>,
    settings: Arc<Settings>,
    mut stop: watch::Receiver<bool>,
    opened: Arc<Opened>,
) {
    let mut backoff = Backoff::default();
    let mut current: Option<Socket> = None;
    let mut first = true;
    loop {
        let mut socket = match current.take() {
            Some(s) => s,
            None => match open(&shared, &settings, &mut backoff, &mut stop).await {
                Some(s) => s,
                None => return,
            },
        };
        if std::mem::take(&mut first) {
            opened.one();
        }
        let signal = tokio::select! {
            s = socket.signal() => s,
            _ = stopped(&mut stop) => {
                socket.retire().await;
                return;
            }
        };
        let reason = signal.reason();
        shared.gw.metrics.socket_reconnect(reason);
        match signal {
            Signal::Replace(_) => {
                tracing::info!(
                    reason,
                    "Socket Mode: opening a replacement before closing a connection"
                );
                // The old connection serves until the new one has said hello.
                let next = {
                    let opening = open(&shared, &settings, &mut backoff, &mut stop);
                    tokio::pin!(opening);
                    let mut old_alive = true;
                    loop {
                        tokio::select! {
                            s = &mut opening => break s,
                            s = socket.signal(), if old_alive => {
                                if let Signal::Closed(r) = s {
                                    shared.gw.metrics.socket_reconnect(r);
                                    old_alive = false;
                                }
                            }
                        }
                    }
                };
                tokio::spawn(socket.retire());
                match next {
                    Some(s) => current = Some(s),
                    None => return,
                }
            }
            Signal::Closed(_) => {
                tracing::warn!(reason, "Socket Mode: a connection was lost; reconnecting");
            }
            Signal::Terminal(_) => {
                tracing::error!(
                    reason,
                    "Socket Mode: Slack disabled this connection; trying again in 5 minutes"
                );
                tokio::spawn(socket.retire());
                if wait(TERMINAL_RETRY, &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Opens a connection, trying again until one serves; `None` once the slot is stopped.
async fn open(
    shared: &Arc<Shared>,
    settings: &Arc<Settings>,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
) -> Option<Socket> {
    loop {
        if *stop.borrow() {
            return None;
        }
        let attempt = tokio::select! {
            a = socket::open(shared, settings) => a,
            _ = stopped(stop) => return None,
        };
        let failure = match attempt {
            Ok(s) => {
                backoff.reset();
                return Some(s);
            }
            Err(f) => f,
        };
        shared.gw.metrics.socket_reconnect(failure.reason());
        let pause = match &failure {
            Failure::Terminal { code, .. } => {
                tracing::error!(
                    error = %code,
                    "Socket Mode: apps.connections.open refused the app token; trying again in 5 minutes"
                );
                TERMINAL_RETRY
            }
            &Failure::RateLimited(wait) => {
                tracing::warn!(
                    ?wait,
                    "Socket Mode: apps.connections.open rate-limited; waiting"
                );
                wait
            }
            Failure::Other(e) => {
                let pause = backoff.next();
                tracing::warn!(error = %e, ?pause, "Socket Mode: cannot open a connection; trying again");
                pause
            }
        };
        if wait(pause, stop).await {
            return None;
        }
    }
}

/// Sleeps for `d`; true when the slot was stopped meanwhile.
async fn wait(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stopped(stop) => {}
    }
    *stop.borrow()
}

/// Resolves once the slot is stopped (or its supervisor gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// 1 s, 2 s, 4 s … 30 s, each drawn between half and all of it.
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        d.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds_with_jitter() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        for (w, full) in waits.iter().zip([1, 2, 4, 8, 16, 30, 30, 30]) {
            let full = Duration::from_secs(full);
            assert!(*w >= full / 2 && *w <= full, "{w:?} for {full:?}");
        }
        b.reset();
        assert!(b.next() <= BACKOFF_MIN);
    }
}
