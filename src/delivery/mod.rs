//! Queued delivery's second half: the worker that sends accepted events to the upstream
//! ([`crate::proxy::queued`] stores them). It runs in every gateway whose store keeps a queue,
//! whatever `delivery.mode` says now, so that events queued before a switch back to direct
//! mode are still delivered.
//!
//! Each turn it claims what is due, up to `delivery.concurrency` attempts in flight, each
//! leased for `upstream.timeout` + 10 s (a gateway killed mid-attempt lets go when the lease
//! ends, and any gateway sharing the store takes the event over). An attempt is the request
//! Slack sent, signed afresh (its original signature may be older than an app accepts),
//! through the same stages as direct forwarding from the installation on
//! ([`crate::proxy::handle_authenticated`]), with `X-Gateway-Delivery-Attempt`. A 2xx ends it;
//! anything else is tried again after `retry_backoff`, doubling with jitter up to
//! `retry_backoff_max`, until `max_attempts`; then it is kept as a dead letter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use rand::Rng;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::DeliveryConfig;
use crate::gateway::Gateway;
use crate::http::unix_ms;
use crate::proxy::{self, ConnPool};
use crate::slack::signature;
use crate::store::queue::{AfterFailure, Delivery};

/// How often the queue is looked at when nothing wakes the worker (another replica's events,
/// retries coming due).
const POLL: Duration = Duration::from_millis(200);
/// How long past `upstream.timeout` a claimed delivery stays leased.
const LEASE_GRACE: Duration = Duration::from_secs(10);
/// How often the queue's gauges are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// How often remembered dedupe keys past their window are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// What Slack's HTTP mode sends as its user agent.
const SLACK_USER_AGENT: &str = "Slackbot 1.0 (+https://api.slack.com/robots)";

/// Starts the worker; it ends once `stop` is set and the attempts in flight have ended.
pub fn spawn(gw: Arc<Gateway>, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(run(gw, stop))
}

/// Attempts in flight.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    ended: Notify,
}

async fn run(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    if gw.store.deliveries().is_none() {
        return;
    }
    let inflight = Arc::new(InFlight::default());
    let pool = Arc::new(ConnPool::new(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        0,
    ))));
    let mut stats_at = Instant::now();
    let mut sweep_at = Instant::now();
    let mut failing = false;
    loop {
        let queue = gw.store.deliveries().expect("checked above");
        let live = gw.live();
        let limit = live
            .config
            .delivery
            .concurrency
            .saturating_sub(inflight.count.load(Ordering::SeqCst));
        let mut full = false;
        if limit > 0 {
            let now = unix_ms();
            let lease = live.config.upstream.timeout + LEASE_GRACE;
            let lease_until = now.saturating_add(lease.as_millis() as u64);
            match queue.claim(now, limit, lease_until).await {
                Ok(batch) => {
                    failing = false;
                    full = batch.len() == limit;
                    for d in batch {
                        inflight.count.fetch_add(1, Ordering::SeqCst);
                        let (gw, pool, inflight) = (gw.clone(), pool.clone(), inflight.clone());
                        tokio::spawn(async move {
                            attempt(&gw, &pool, d).await;
                            inflight.count.fetch_sub(1, Ordering::SeqCst);
                            inflight.ended.notify_one();
                        });
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "queued delivery: cannot read the queue; trying again");
                    }
                    failing = true;
                }
            }
        }
        if stats_at.elapsed() >= STATS_EVERY {
            stats_at = Instant::now();
            if let Ok(s) = queue.queue_stats().await {
                let age = s.oldest_pending.map_or(Duration::ZERO, |t| {
                    Duration::from_millis(unix_ms().saturating_sub(t))
                });
                gw.metrics.delivery_queue(s.pending, s.dead, age);
            }
        }
        if sweep_at.elapsed() >= SWEEP_EVERY {
            sweep_at = Instant::now();
            if let Err(e) = queue.sweep_dedupe(unix_ms()).await {
                tracing::debug!(error = %e, "queued delivery: dedupe sweep failed");
            }
        }
        if full {
            // More may be due: claim again at once, unless every slot is taken.
            if inflight.count.load(Ordering::SeqCst) < live.config.delivery.concurrency {
                continue;
            }
        }
        tokio::select! {
            _ = gw.deliveries_due.notified() => {}
            _ = inflight.ended.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    // Attempts in flight get their `upstream.timeout`; what does not end is leased, and
    // delivered again once the lease ends.
    let deadline = Instant::now() + gw.live().config.upstream.timeout + Duration::from_secs(1);
    while inflight.count.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline.into(), inflight.ended.notified()).await;
    }
}

/// Resolves once the worker is stopped (or the gateway gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One attempt of `d`, and what the queue records of it.
async fn attempt(gw: &Arc<Gateway>, pool: &ConnPool, d: Delivery) {
    let live = gw.live();
    let n = d.attempts + 1;
    let outcome = send(gw, &live, pool, &d, n).await;
    let Some(queue) = gw.store.deliveries() else {
        return;
    };
    let recorded = match outcome {
        Ok(()) => {
            gw.metrics.delivery_attempt("delivered");
            tracing::debug!(delivery = %d.id, attempt = n, "queued event delivered");
            queue.delivered(&d.id).await
        }
        Err(error) => {
            let cfg = &live.config.delivery;
            let after = if n as usize >= cfg.max_attempts {
                gw.metrics.delivery_attempt("dead");
                tracing::error!(delivery = %d.id, event = %d.event_id, attempts = n, error = %error, "queued event not delivered: kept as a dead letter");
                AfterFailure::Dead
            } else {
                gw.metrics.delivery_attempt("failed");
                let wait = backoff(cfg, n);
                tracing::warn!(delivery = %d.id, attempt = n, error = %error, ?wait, "queued event not delivered; trying again");
                AfterFailure::RetryAt(unix_ms().saturating_add(wait.as_millis() as u64))
            };
            queue.failed(&d.id, n, &error, after).await
        }
    };
    if let Err(e) = recorded {
        // The lease runs out and the event is attempted again: at least once still holds.
        tracing::warn!(delivery = %d.id, error = %e, "queued delivery: cannot record an attempt");
    }
}

/// Sends one attempt; `Err` says why it failed.
async fn send(
    gw: &Arc<Gateway>,
    live: &Arc<crate::gateway::Live>,
    pool: &ConnPool,
    d: &Delivery,
    n: u32,
) -> Result<(), String> {
    let timestamp = crate::http::unix_now();
    let signed = signature::sign(
        live.config.slack.signing_secret.expose(),
        timestamp,
        &d.body,
    );
    let mut req = Request::builder().method(Method::POST).uri(d.path.as_str());
    // The request's own headers as Slack sent them (what direct forwarding starts from); an
    // event stored without them gets HTTP mode's.
    if d.sender.headers.is_empty() {
        req = req.header(header::USER_AGENT, SLACK_USER_AGENT);
        if let Ok(ct) = HeaderValue::from_str(&d.content_type) {
            req = req.header(header::CONTENT_TYPE, ct);
        }
    }
    for (name, value) in &d.sender.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            req = req.header(n, v);
        }
    }
    let req = req
        .header(header::CONTENT_LENGTH, d.body.len())
        .header(signature::TIMESTAMP_HEADER, timestamp)
        .header(signature::SIGNATURE_HEADER, signed);
    let (parts, ()) = req
        .body(())
        .map_err(|e| format!("cannot rebuild the request: {e}"))?
        .into_parts();
    let started = Instant::now();
    // The forwarding headers describe the peer Slack's request came from, as directly.
    let mut conn = pool.take();
    let own = conn.client.clone();
    if let Ok(peer) = d.sender.peer.parse() {
        let scheme = if d.sender.scheme == "https" {
            "https"
        } else {
            "http"
        };
        conn.client = crate::http::headers::Client::new(peer, scheme);
    }
    let resp = proxy::handle_authenticated(gw, live, parts, d.body.clone(), &conn, Some(n))
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    // Read to the end within what is left of upstream.timeout, so the connection can serve
    // the next attempt.
    let left = live
        .config
        .upstream
        .timeout
        .saturating_sub(started.elapsed());
    let read = tokio::time::timeout(left, resp.into_body().collect()).await;
    if matches!(read, Ok(Ok(_))) {
        conn.client = own;
        pool.put_back(conn);
    }
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the upstream answered {status}"))
    }
}

/// The wait after failed attempt `n`: `retry_backoff` doubled per attempt before it, up to
/// `retry_backoff_max`, plus up to a quarter more of jitter (never past the maximum).
fn backoff(cfg: &DeliveryConfig, n: u32) -> Duration {
    let doubled = cfg
        .retry_backoff
        .saturating_mul(1u32 << n.saturating_sub(1).min(20));
    let base = doubled.min(cfg.retry_backoff_max);
    let jitter = base.mul_f64(rand::rng().random_range(0.0..0.25));
    (base + jitter).min(cfg.retry_backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeliveryMode;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let cfg = DeliveryConfig {
            mode: DeliveryMode::Queued,
            max_attempts: 8,
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(10),
            concurrency: 1,
            dedupe_window: Duration::from_secs(60),
        };
        for (n, base) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (30, 10)] {
            let w = backoff(&cfg, n);
            let base = Duration::from_secs(base);
            assert!(
                w >= base && w <= (base + base / 4).min(cfg.retry_backoff_max),
                "{n}: {w:?}"
            );
        }
    }
}
