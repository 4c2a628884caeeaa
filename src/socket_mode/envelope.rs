//! One envelope: rendered as the request HTTP mode would send, signed for the app, forwarded
//! through the pipeline, acked when the upstream answered 2xx. An envelope id forwarded in the
//! last 5 minutes is acked and not forwarded again; one in flight is not forwarded twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Limited};
use tokio::sync::{mpsc, Notify};

use crate::gateway::Gateway;
use crate::proxy::{self, ConnPool};
use crate::slack::signature;
use crate::slack::socket::{ack, Envelope, EnvelopeKind};

/// How long an envelope id forwarded successfully is remembered.
const SEEN_FOR: Duration = Duration::from_secs(300);
/// The largest app answer read for an ack's payload.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// What Slack's HTTP mode sends as its user agent.
const SLACK_USER_AGENT: &str = "Slackbot 1.0 (+https://api.slack.com/robots)";

/// What every connection of the supervisor shares.
pub(crate) struct Shared {
    pub(super) gw: Arc<Gateway>,
    pub(super) tls: Arc<rustls::ClientConfig>,
    seen: Seen,
}

impl Shared {
    pub(super) fn new(gw: Arc<Gateway>) -> Self {
        Shared {
            gw,
            tls: Arc::new(client_tls()),
            seen: Seen::default(),
        }
    }
}

/// TLS for `wss://`: aws-lc-rs, the system's roots through the platform verifier.
fn client_tls() -> rustls::ClientConfig {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_platform_verifier()
        .expect("the platform verifier loads")
        .with_no_client_auth()
}

/// Envelope ids being forwarded, or forwarded successfully within [`SEEN_FOR`].
#[derive(Default)]
struct Seen {
    ids: Mutex<HashMap<String, Option<Instant>>>,
}

enum Begin {
    New,
    InFlight,
    Done,
}

impl Seen {
    fn begin(&self, id: &str) -> Begin {
        let mut ids = self.ids.lock().expect("seen lock");
        let now = Instant::now();
        match ids.get(id) {
            Some(None) => return Begin::InFlight,
            Some(Some(at)) if now.duration_since(*at) < SEEN_FOR => return Begin::Done,
            _ => {}
        }
        if ids.len() >= 1024 && ids.len().is_power_of_two() {
            ids.retain(|_, at| at.is_none_or(|at| now.duration_since(at) < SEEN_FOR));
        }
        ids.insert(id.to_owned(), None);
        Begin::New
    }

    /// Forwarded successfully (remembered), or not (forgotten: Slack sends it again).
    fn finish(&self, id: &str, ok: bool) {
        let mut ids = self.ids.lock().expect("seen lock");
        if ok {
            ids.insert(id.to_owned(), Some(Instant::now()));
        } else {
            ids.remove(id);
        }
    }
}

/// Envelopes of one connection still being handled.
#[derive(Default)]
pub(super) struct InFlight {
    count: AtomicUsize,
    pub(super) done: Notify,
}

impl InFlight {
    pub(super) fn start(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    pub(super) fn idle(&self) -> bool {
        self.count.load(Ordering::SeqCst) == 0
    }
}

/// Held by an envelope's task; its drop counts the envelope done.
pub(super) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.done.notify_one();
    }
}

/// Handles one envelope; its ack (if any) goes to `acks`, the connection it arrived on.
pub(super) async fn handle(
    shared: Arc<Shared>,
    env: Envelope,
    acks: mpsc::UnboundedSender<String>,
    upstreams: Arc<ConnPool>,
    _inflight: InFlightGuard,
) {
    let metrics = &shared.gw.metrics;
    let kind = env.kind.label();
    match shared.seen.begin(&env.id) {
        Begin::New => {}
        Begin::Done => {
            tracing::debug!(envelope = %env.id, "Socket Mode: envelope already forwarded; acked again");
            let _ = acks.send(ack(&env.id, None));
            metrics.socket_envelope(kind, "duplicate");
            return;
        }
        Begin::InFlight => {
            tracing::debug!(envelope = %env.id, "Socket Mode: envelope already in flight");
            metrics.socket_envelope(kind, "duplicate");
            return;
        }
    }
    let ok = forward(&shared, &env, &acks, &upstreams).await;
    shared.seen.finish(&env.id, ok.is_ok());
    metrics.socket_envelope(kind, ok.unwrap_or("failed"));
}

/// Forwards and acks; the result label, or `Err` when Slack should send it again.
async fn forward(
    shared: &Shared,
    env: &Envelope,
    acks: &mpsc::UnboundedSender<String>,
    upstreams: &ConnPool,
) -> Result<&'static str, ()> {
    let gw = &shared.gw;
    let rendered = match env.http_body() {
        Ok(Some(r)) => r,
        Ok(None) => {
            let EnvelopeKind::Other(t) = &env.kind else {
                unreachable!("every forwarded type has a body")
            };
            tracing::info!(r#type = %t, "Socket Mode: envelope type not forwarded; acked");
            let _ = acks.send(ack(&env.id, None));
            return Ok("ignored");
        }
        Err(e) => {
            // It would never render: acked, so that Slack does not send it again and again.
            tracing::warn!(envelope = %env.id, error = %e, "Socket Mode: envelope not forwarded; acked");
            let _ = acks.send(ack(&env.id, None));
            return Ok("invalid");
        }
    };
    let (body, content_type) = rendered;
    let live = gw.live();
    let path = live
        .config
        .upstream
        .slack_paths
        .first()
        .map_or("/slack/events", String::as_str);
    let timestamp = crate::http::unix_now();
    let signed = signature::sign(live.config.slack.signing_secret.expose(), timestamp, &body);
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::USER_AGENT, SLACK_USER_AGENT)
        .header(signature::TIMESTAMP_HEADER, timestamp)
        .header(signature::SIGNATURE_HEADER, signed);
    if env.retry_attempt > 0 {
        req = req.header("x-slack-retry-num", env.retry_attempt);
        if let Some(v) = env
            .retry_reason
            .as_deref()
            .and_then(|r| HeaderValue::from_str(r).ok())
        {
            req = req.header("x-slack-retry-reason", v);
        }
    }
    let (parts, ()) = req
        .body(())
        .expect("the head is built from valid parts")
        .into_parts();
    let started = Instant::now();
    let timeout = live.config.upstream.timeout;
    let conn = upstreams.take();
    let answer = proxy::handle_authenticated(gw, &live, parts, body, &conn, None).await;
    let resp = match answer {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(envelope = %env.id, error = %e, "Socket Mode: envelope not forwarded; not acked, so Slack sends it again");
            return Err(());
        }
    };
    let status = resp.status();
    if !status.is_success() {
        tracing::warn!(envelope = %env.id, %status, "Socket Mode: the app did not take the envelope; not acked, so Slack sends it again");
        return Err(());
    }
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let left = timeout.saturating_sub(started.elapsed());
    let answer = tokio::time::timeout(
        left,
        Limited::new(resp.into_body(), MAX_ANSWER_BYTES).collect(),
    )
    .await;
    let payload = match answer {
        Ok(Ok(b)) => {
            // Read to its end: the upstream connection can serve the next envelope.
            upstreams.put_back(conn);
            env.response_payload(content_type.as_deref(), &b.to_bytes())
        }
        _ => {
            tracing::warn!(envelope = %env.id, "Socket Mode: the app's answer could not be read; acked without it");
            None
        }
    };
    let _ = acks.send(ack(&env.id, payload.as_deref()));
    Ok("acked")
}
