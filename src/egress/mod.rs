//! The Web API egress: the upstream calls Slack's Web API through the gateway, naming the
//! workspace (and user) with the identity headers it received, and never holds a token.
//!
//! `GET|POST /api/{method}` on `egress.listen`, a listener of its own:
//! 1. `Proxy-Authorization: Bearer {egress.token}` when a token is set;
//! 2. the method name, checked on the raw path segment (words of `[A-Za-z0-9_]` joined by
//!    single dots), before anything decodes it;
//! 3. the identity headers → the installation, resolved and refreshed by the same code as
//!    forwarding ([`crate::proxy::resolve_installation`], [`crate::oauth::rotation`]);
//! 4. rate limits: a method Slack answered 429 for a workspace is held there until its
//!    `Retry-After` passes ([`crate::slack::ratelimit`]); a call that would wait past
//!    `egress.max_wait` gets 429 at once;
//! 5. the call to `{slack.api_url}/{method}`: same HTTP method, the query kept, the body and
//!    its `Content-Type` as they came (kept whole up to [`KEEP_BYTES`] so that a 429'd call
//!    can be sent again, streamed beyond), `Authorization: Bearer {token}` (the caller's
//!    replaced); Slack's status, headers and body come back as they are, streamed.
//!
//! Every refusal is Slack-shaped JSON (`{"ok": false, "error": ...}`), so SDKs raise their
//! usual errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Frame, Incoming};
use subtle::ConstantTimeEq;

use crate::gateway::{Gateway, Live};
use crate::http::Body;
use crate::proxy::resolve_installation;
use crate::slack::payload::Identity;
use crate::slack::ratelimit::retry_after;
use crate::store::Installation;

/// The largest request body the egress takes (Slack's own limit for uploads through the Web
/// API is far larger, but files go to the upload URL, not through here).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Bodies up to this size are read whole and kept, so a call Slack answers 429 is sent again
/// after the hold; larger ones stream to Slack as they arrive, and a 429 on one comes back
/// to the caller as Slack sent it (the hold still applies to later calls).
pub const KEEP_BYTES: usize = 1024 * 1024;
/// Which token the caller wants: `X-Slack-Token-Type: user` for the user's.
const TOKEN_TYPE: &str = "x-slack-token-type";

/// Handles one call on the egress listener.
pub async fn handle(gw: &Arc<Gateway>, req: Request<Incoming>) -> Response<Body> {
    let live = gw.live();
    match call(gw, &live, req).await {
        Ok(r) => r,
        Err(refused) => {
            // The gateway's own refusals, under no method name (the caller's may be invalid).
            gw.metrics.egress_call("-", refused.0.as_u16());
            refused.into_response()
        }
    }
}

/// A refusal of the gateway's own: a status and Slack's error code.
#[derive(Debug)]
struct Refused(StatusCode, String);

fn refusal(status: StatusCode, error: &str) -> Refused {
    Refused(status, error.to_owned())
}

impl Refused {
    /// Slack-shaped: `{"ok": false, "error": ...}`, so SDKs raise their usual errors.
    fn into_response(self) -> Response<Body> {
        let Refused(status, error) = self;
        let mut r = crate::http::json(status, &serde_json::json!({"ok": false, "error": error}));
        let h = r.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                h.insert(
                    header::PROXY_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                h.insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
            }
            _ => {}
        }
        r
    }
}

async fn call(
    gw: &Arc<Gateway>,
    live: &Arc<Live>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Refused> {
    let cfg = &live.config;
    if let Some(token) = &cfg.egress.token {
        let sent = req
            .headers()
            .get(header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(sent.as_bytes().ct_eq(token.expose().as_bytes())) {
            return Err(refusal(StatusCode::UNAUTHORIZED, "proxy_auth_required"));
        }
    }
    let method_name = req
        .uri()
        .path()
        .strip_prefix("/api/")
        .filter(|m| valid_method(m))
        .map(str::to_owned)
        .ok_or_else(|| refusal(StatusCode::BAD_REQUEST, "invalid_method"))?;
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ));
    }
    let (identity, want_user) = identity(live, req.headers())?;
    let resolved = resolve_installation(gw, live, identity, want_user)
        .await
        .map_err(|e| {
            tracing::warn!(method = %method_name, error = %e, "egress: cannot resolve the installation");
            refusal(e.status(), &e.client_reason())
        })?;
    let (token, inst) = if want_user {
        let Some(user) = resolved.user else {
            return Err(match resolved.bot {
                None => refusal(StatusCode::NOT_FOUND, "not_installed"),
                Some(_) => refusal(StatusCode::FORBIDDEN, "no_user_token"),
            });
        };
        match user.user_token.clone() {
            Some(t) => (t, user),
            None => return Err(refusal(StatusCode::FORBIDDEN, "no_user_token")),
        }
    } else {
        let Some(bot) = resolved.bot else {
            return Err(refusal(StatusCode::NOT_FOUND, "not_installed"));
        };
        match bot.bot_token.clone() {
            Some(t) => (t, bot),
            None => return Err(refusal(StatusCode::NOT_FOUND, "not_installed")),
        }
    };
    let (parts, body) = req.into_parts();
    let body = read_body(body, declared_length(&parts.headers)).await?;
    let outbound = Outbound {
        method: parts.method,
        url: slack_url(live, &method_name, parts.uri.query()),
        content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
        body: Some(body),
        token: token.expose().to_owned(),
    };
    let answer = send_holding(gw, live, &inst, &method_name, outbound).await;
    gw.metrics
        .egress_call(&method_name, answer.status().as_u16());
    Ok(answer)
}

/// What goes to Slack, kept so that a call Slack rate-limited can be sent again.
struct Outbound {
    method: Method,
    url: String,
    content_type: Option<HeaderValue>,
    /// `None` once a streamed body has been sent.
    body: Option<Payload>,
    token: String,
}

/// The caller's body: kept whole when small (it can then be sent again after a 429), or
/// streamed to Slack as it arrives.
enum Payload {
    Kept(Bytes),
    Streamed(reqwest::Body),
}

impl Outbound {
    /// The body for one attempt; `None` when a streamed body was already sent.
    fn body(&mut self) -> Option<reqwest::Body> {
        match self.body.take()? {
            Payload::Kept(b) => {
                self.body = Some(Payload::Kept(b.clone()));
                Some(b.into())
            }
            Payload::Streamed(b) => Some(b),
        }
    }

    /// Whether a 429'd call can be sent again (its body was kept).
    fn can_resend(&self) -> bool {
        matches!(self.body, Some(Payload::Kept(_)))
    }
}

/// The caller's `Content-Length`, when it sent one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads up to [`KEEP_BYTES`] of the body; a larger one is streamed on from there, capped at
/// [`MAX_BODY_BYTES`] (a declared length over it is refused before anything is sent).
async fn read_body(mut body: Incoming, declared: Option<u64>) -> Result<Payload, Refused> {
    let too_large = || refusal(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut kept = BytesMut::new();
    while kept.len() <= KEEP_BYTES {
        match body.frame().await {
            None => return Ok(Payload::Kept(kept.freeze())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    kept.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return Err(refusal(StatusCode::BAD_REQUEST, "invalid_body")),
        }
    }
    if kept.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    let rest = Limited::new(body, MAX_BODY_BYTES - kept.len());
    Ok(Payload::Streamed(reqwest::Body::wrap(Prefixed {
        prefix: Some(kept.freeze()),
        rest,
    })))
}

/// What was read already, then the rest of the caller's body as it arrives.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Limited<Incoming>,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// Whether sending failed because the caller's streamed body went past [`MAX_BODY_BYTES`].
fn over_limit(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Sends the call, waiting out this workspace's hold on the method first, and again after
/// each 429, for at most `egress.max_wait` in all.
async fn send_holding(
    gw: &Gateway,
    live: &Live,
    inst: &Installation,
    method: &str,
    mut out: Outbound,
) -> Response<Body> {
    let team = inst.admin_id();
    let max_wait = live.config.egress.max_wait;
    let started = Instant::now();
    loop {
        if let Some(wait) = gw.egress_holds.remaining(&team, method, Instant::now()) {
            let waited = started.elapsed();
            if waited + wait > max_wait {
                return ratelimited(wait);
            }
            tracing::debug!(team = %team, method, ?wait, "egress: held by Slack's rate limit");
            tokio::time::sleep(wait).await;
            gw.metrics.egress_hold(method, wait);
            continue;
        }
        let answer = match send(gw, live, &mut out).await {
            Ok(a) => a,
            Err(e) if over_limit(&e) => {
                return refusal(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large").into_response();
            }
            Err(e) => {
                tracing::warn!(method, error = %e, "egress: Slack unreachable");
                return refusal(StatusCode::BAD_GATEWAY, "slack_unreachable").into_response();
            }
        };
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after(answer.headers().get(header::RETRY_AFTER));
            gw.egress_holds.hold(&team, method, Instant::now() + wait);
            tracing::info!(team = %team, method, ?wait, "egress: Slack rate-limited a method; holding it");
            if started.elapsed() + wait > max_wait || !out.can_resend() {
                return answer;
            }
            // Sent again once the hold has passed (the check above waits it out).
            continue;
        }
        return answer;
    }
}

/// 429 `ratelimited` with the wait left, in whole seconds rounded up.
fn ratelimited(wait: Duration) -> Response<Body> {
    let mut r = refusal(StatusCode::TOO_MANY_REQUESTS, "ratelimited").into_response();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// One call to Slack; its answer as it comes (hop-by-hop headers aside), streamed back.
async fn send(
    gw: &Gateway,
    live: &Live,
    out: &mut Outbound,
) -> Result<Response<Body>, reqwest::Error> {
    let body = out.body().unwrap_or_default();
    let mut req = gw
        .api
        .http()
        .request(out.method.clone(), &out.url)
        .timeout(live.config.slack.api_timeout)
        .bearer_auth(&out.token)
        .body(body);
    if let Some(ct) = &out.content_type {
        req = req.header(header::CONTENT_TYPE, ct.clone());
    }
    let answer: Response<reqwest::Body> = req.send().await?.into();
    let (mut parts, body) = answer.into_parts();
    crate::http::headers::remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, crate::http::from_slack(body)))
}

/// `{slack.api_url}/{method}`, with the caller's query.
fn slack_url(live: &Live, method: &str, query: Option<&str>) -> String {
    let base = live.config.slack.api_url.as_str().trim_end_matches('/');
    match query {
        Some(q) if !q.is_empty() => format!("{base}/{method}?{q}"),
        _ => format!("{base}/{method}"),
    }
}

/// Words of `[A-Za-z0-9_]` joined by single dots: `chat.postMessage`, `admin.users.list`.
/// Checked on the raw segment, so `%2e`, `..` and `a/b` are refused before anything decodes.
pub fn valid_method(m: &str) -> bool {
    m.len() <= 128
        && m.split('.')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// The caller's identity headers (named as the gateway injects them), and whether it wants
/// the user's token.
fn identity(live: &Live, headers: &HeaderMap) -> Result<(Identity, bool), Refused> {
    let names = &live.config.upstream.headers;
    let get = |name: &header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let team_id = get(&names.team_id);
    let enterprise_id = get(&names.enterprise_id);
    if team_id.is_none() && enterprise_id.is_none() {
        return Err(refusal(StatusCode::BAD_REQUEST, "missing_identity"));
    }
    let is_enterprise_install = get(&names.enterprise_install)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || (team_id.is_none() && enterprise_id.is_some());
    let want_user = headers
        .get(TOKEN_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("user"));
    let user_id = get(&names.user_id);
    if want_user && user_id.is_none() {
        return Err(refusal(StatusCode::BAD_REQUEST, "missing_identity"));
    }
    Ok((
        Identity {
            enterprise_id,
            team_id,
            user_id,
            is_enterprise_install,
        },
        want_user,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_checked_raw() {
        for ok in [
            "chat.postMessage",
            "auth.test",
            "admin.users.list",
            "api_test",
        ] {
            assert!(valid_method(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a.",
            "a/b",
            "%2e",
            "chat%2EpostMessage",
            "a b",
            "a-b",
        ] {
            assert!(!valid_method(bad), "{bad}");
        }
        assert!(!valid_method(&"a".repeat(129)));
    }

    #[test]
    fn a_wait_is_given_in_whole_seconds_rounded_up() {
        let r = ratelimited(Duration::from_millis(2100));
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert_eq!(
            ratelimited(Duration::from_secs(4)).headers()[header::RETRY_AFTER],
            "4"
        );
    }
}
