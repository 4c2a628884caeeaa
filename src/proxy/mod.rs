//! Verified forwarding: a POST to one of `upstream.slack_paths`, top to bottom.
//!
//! ```text
//! read_body ─► verify_signature ─► parse ─► answer_locally? ─► resolve_installation
//!     413          401 (reason)      400/415   challenge, ssl_check        │
//!                                                                 apply_lifecycle (uninstall, revoke)
//!                                                                          │
//!                                           respond ◄─ forward ◄─ rewrite_headers
//!                                      (as the upstream said)  502/504
//! ```
//!
//! Each stage is a plain `async fn`; [`ProxyError`] carries what went wrong and
//! [`ProxyError::status`] is the one place that maps it to an HTTP status. Clients get a short
//! reason; the log gets the detail. Nothing is forwarded unless every stage before `forward`
//! succeeded.
//!
//! Two transports run these stages: hyper ([`handle`]) and the fast lane ([`crate::lane`]),
//! which reads Slack's plain requests off the socket itself and calls the stages it shares
//! with [`handle`] (`judge_head`, `reserve_body`, `decide`, the header rewrite, the upstream
//! outcome, `refuse`): crate-visible for that reason. Nothing here imports the lane.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;

use crate::gateway::{Gateway, Live};
use crate::http::headers;
use crate::http::{empty, json, text, unix_now, Body};
use crate::oauth::rotation;
use crate::slack::payload::{self, Action, Identity, Parsed, PayloadError};
use crate::slack::signature::{check_headers, SignatureError};
use crate::store::{self, Installation, RecordKind, StoreError, TeamRef};
use crate::upstream::UpstreamConn;

/// Everything that can stop a Slack request, by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("method not allowed: Slack sends POST")]
    MethodNotAllowed,
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("request body not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("gateway busy: too many request body bytes in flight")]
    Busy,
    #[error("invalid signature: {0}")]
    Signature(SignatureError),
    #[error("{0}")]
    Payload(#[from] PayloadError),
    #[error("installation store failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Rotation(#[from] crate::oauth::rotation::RotationError),
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(std::time::Duration),
}

impl ProxyError {
    /// The one mapping from error to status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Signature(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Payload(PayloadError::UnsupportedContentType) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ProxyError::Payload(_) => StatusCode::BAD_REQUEST,
            ProxyError::Store(_) | ProxyError::Rotation(_) | ProxyError::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The short reason sent to the client: no internals, no secrets.
    pub fn client_reason(&self) -> String {
        match self {
            ProxyError::Store(_) => "installation store unavailable".to_owned(),
            ProxyError::Rotation(_) => "token refresh failed".to_owned(),
            ProxyError::UpstreamUnavailable(_) => "upstream unavailable".to_owned(),
            ProxyError::UpstreamTimeout(_) => "upstream timed out".to_owned(),
            ProxyError::Payload(PayloadError::MalformedJson(_)) => "malformed JSON body".to_owned(),
            ProxyError::Payload(PayloadError::MalformedPayload(_)) => {
                "malformed payload field".to_owned()
            }
            other => other.to_string(),
        }
    }

    fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut r = text(status, self.client_reason());
        match self {
            ProxyError::MethodNotAllowed => {
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            // The rest of the body may still come: the connection cannot carry another
            // request.
            ProxyError::BodyTimeout(_) | ProxyError::BodyTooLarge(_) => {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // Its body was never read.
            ProxyError::Busy => {
                r = closing(r);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        r
    }
}

/// What the requests of one client connection share, whichever listener accepted it: the
/// pipeline's own plain value, so no flow knows the transport.
pub struct Conn {
    /// The client's address and scheme, as the forwarding headers report them.
    pub client: headers::Client,
    /// This connection's own connection to the upstream, opened on first use.
    pub upstream: UpstreamConn,
}

/// The installation a request resolved to ([`decide`]'s verdict for a request to forward):
/// taken whole by the header rewrite ([`injected`]), whichever transport writes the head.
pub(crate) struct Resolved {
    identity: Identity,
    bot: Option<Arc<Installation>>,
    user: Option<Arc<Installation>>,
}

/// Handles a request to a Slack path served by hyper (the fast lane, [`crate::lane`], takes
/// the plain ones). Never panics on input; every refusal is a status.
pub async fn handle(
    gw: &Arc<Gateway>,
    live: &Arc<Live>,
    req: Request<Incoming>,
    conn: &Conn,
) -> Response<Body> {
    let result = async {
        if req.method() != Method::POST {
            return Err(ProxyError::MethodNotAllowed);
        }
        let (mut parts, body) = req.into_parts();
        let declared = declared_length(&parts.headers);
        let head = match judge_head(live, Signed::of(&parts.headers), declared) {
            Ok(head) => head,
            // The body is not kept: the connection closes after the answer, and what the
            // client still sends of the body is read and dropped meanwhile (see read_body).
            Err(e) => {
                if !parts.headers.contains_key(header::EXPECT) {
                    let timeout = live.config.server.body_read_timeout;
                    tokio::spawn(drain_body(body, timeout));
                }
                return Ok(closing(refuse(gw, conn.client.addr, e)));
            }
        };
        let mut permit = reserve_body(gw, live, declared.unwrap_or(0))?;
        let body = read_body(
            body,
            &parts.headers,
            &live.config.server,
            head.max_body,
            &mut permit,
        )
        .await
        .map_err(|e| head.refusal_of(e))?;
        match decide(gw, live, Signed::of(&parts.headers), &body).await? {
            Step::Answer(r) => Ok(r),
            Step::Forward(resolved) => {
                rewrite_and_inject(live, &mut parts.headers, &conn.client, resolved);
                forward(gw, live, conn, parts, body).await
            }
        }
    }
    .await;
    result.unwrap_or_else(|e| refuse(gw, conn.client.addr, e))
}

/// A refusal: counted, logged (the detail in the log, a short reason to the client) and
/// answered. Every transport refuses through it.
pub(crate) fn refuse(gw: &Gateway, peer: std::net::SocketAddr, e: ProxyError) -> Response<Body> {
    match &e {
        ProxyError::Signature(reason) => {
            gw.metrics.signature_failure(reason.as_str());
            tracing::info!(%peer, reason = reason.as_str(), "refused unsigned or badly signed request");
        }
        ProxyError::Store(_)
        | ProxyError::UpstreamUnavailable(_)
        | ProxyError::UpstreamTimeout(_) => {
            tracing::warn!(%peer, error = %e, "slack request failed");
        }
        _ => tracing::info!(%peer, error = %e, "refused slack request"),
    }
    e.into_response()
}

/// `r` with `Connection: close`: the request's body was not read, so the connection cannot
/// carry another request.
fn closing(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// What the pipeline decided for a request whose body has been read ([`decide`]).
pub(crate) enum Step {
    /// Answered by the gateway itself: a challenge, an `ssl_check`.
    Answer(Response<Body>),
    /// To the upstream, with the headers of this installation: the transport applies header
    /// hygiene and injection ([`headers::rewrite_request`] and [`injected`], or the lane's
    /// equivalent on raw header lines) to the head it keeps.
    Forward(Resolved),
}

/// Slack's signature headers.
const TIMESTAMP: &str = "x-slack-request-timestamp";
const SIGNATURE: &str = "x-slack-signature";

/// The request headers the pipeline reads, wherever the transport keeps them (the first
/// of each name, as [`http::HeaderMap::get`] has it): from a header map ([`Signed::of`]) or
/// noted line by line from a raw head ([`Signed::note`]).
#[derive(Clone, Copy, Default)]
pub(crate) struct Signed<'a> {
    content_type: Option<&'a [u8]>,
    timestamp: Option<&'a [u8]>,
    signature: Option<&'a [u8]>,
}

impl<'a> Signed<'a> {
    fn of(headers: &'a http::HeaderMap) -> Self {
        let get = |name| headers.get(name).map(HeaderValue::as_bytes);
        Signed {
            content_type: get(header::CONTENT_TYPE.as_str()),
            timestamp: get(TIMESTAMP),
            signature: get(SIGNATURE),
        }
    }

    /// Takes note of one header, when it is one the pipeline reads and the first of its name.
    pub(crate) fn note(&mut self, name: &[u8], value: &'a [u8]) {
        let slot = if name.eq_ignore_ascii_case(b"content-type") {
            &mut self.content_type
        } else if name.eq_ignore_ascii_case(TIMESTAMP.as_bytes()) {
            &mut self.timestamp
        } else if name.eq_ignore_ascii_case(SIGNATURE.as_bytes()) {
            &mut self.signature
        } else {
            return;
        };
        slot.get_or_insert(value);
    }
}

/// Stages 2 to 8a, the same for both transports: signature, parsing, local answers, the
/// installation, lifecycle events.
pub(crate) async fn decide(
    gw: &Arc<Gateway>,
    live: &Arc<Live>,
    signed: Signed<'_>,
    body: &Bytes,
) -> Result<Step, ProxyError> {
    let kind = payload::content_kind(signed.content_type, body);

    if let Err(reason) = verify_signature(gw, live, signed, body) {
        // Slack's one unsigned request (a form it declares as one); answered, never
        // forwarded.
        if signed.content_type.is_some() && payload::is_ssl_check(kind, body) {
            return Ok(Step::Answer(empty(StatusCode::OK)));
        }
        return Err(ProxyError::Signature(reason));
    }

    let Parsed {
        kind,
        action,
        identity,
    } = payload::parse(kind, body)?;
    match &action {
        Action::UrlVerification { challenge } => {
            return Ok(Step::Answer(json(
                StatusCode::OK,
                &serde_json::json!({ "challenge": challenge }),
            )));
        }
        Action::SslCheck => return Ok(Step::Answer(empty(StatusCode::OK))),
        _ => {}
    }

    let resolved = resolve_installation(gw, live, identity).await?;
    if matches!(action, Action::Uninstalled | Action::TokensRevoked { .. }) {
        // Boxed: rare, and its future would otherwise enlarge every request's.
        Box::pin(apply_lifecycle(gw, live, &action, &resolved)).await?;
    }
    tracing::debug!(%kind, team = ?resolved.identity.team_id, found = resolved.bot.is_some(), "forwarding");
    Ok(Step::Forward(resolved))
}

/// Stage 8b on a header map: hygiene, then injection. The lane uses it for a head it has
/// to build a map for (a trusted proxy's forwarding headers, which are extended).
pub(crate) fn rewrite_and_inject(
    live: &Live,
    headers: &mut http::HeaderMap,
    client: &headers::Client,
    resolved: Resolved,
) {
    headers::rewrite_request(
        headers,
        &live.strip,
        client,
        &live.config.server.trusted_proxies,
    );
    injected(live, resolved, |name, value| {
        headers.insert(name.clone(), value);
    });
}

/// The largest body a request without valid signature headers may have: Slack's one
/// unsigned request, `ssl_check`, is a short form (`ssl_check=1&token=...`).
pub const UNSIGNED_BODY_MAX_BYTES: usize = 4096;

/// What the head alone said about a Slack request ([`judge_head`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadVerdict {
    /// The most body bytes to read.
    max_body: usize,
    /// Why the signature headers can never verify, for a small form let through because it
    /// may be Slack's `ssl_check`.
    unsigned: Option<SignatureError>,
}

impl HeadVerdict {
    /// An unsigned request's body over [`UNSIGNED_BODY_MAX_BYTES`] is no `ssl_check`: its
    /// refusal is the signature's.
    fn refusal_of(self, e: ProxyError) -> ProxyError {
        match (e, self.unsigned) {
            (ProxyError::BodyTooLarge(_), Some(reason)) => ProxyError::Signature(reason),
            (e, _) => e,
        }
    }
}

/// Stage 1a, from the head alone: a request whose signature headers can never verify
/// (missing, malformed, a timestamp outside the window) is refused before its body is read
/// or any memory is spent on it. Only a small form may pass without them, as it may be
/// Slack's unsigned `ssl_check` (answered by [`decide`], never forwarded).
pub(crate) fn judge_head(
    live: &Live,
    signed: Signed<'_>,
    declared: Option<usize>,
) -> Result<HeadVerdict, ProxyError> {
    let max_body = live.config.server.max_body_bytes;
    let Err(reason) = check_headers(signed.timestamp, signed.signature, unix_now()) else {
        return Ok(HeadVerdict {
            max_body,
            unsigned: None,
        });
    };
    let form = signed.content_type.is_some()
        && payload::content_kind(signed.content_type, b"") == Some(payload::ContentKind::Form);
    if form && declared.is_none_or(|n| n <= UNSIGNED_BODY_MAX_BYTES) {
        return Ok(HeadVerdict {
            max_body: max_body.min(UNSIGNED_BODY_MAX_BYTES),
            unsigned: Some(reason),
        });
    }
    Err(ProxyError::Signature(reason))
}

/// The declared `Content-Length`, when there is one and it is a number.
fn declared_length(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Stage 1b: `bytes` of the budget all requests' bodies share
/// (`server.max_body_bytes_in_flight`), or 503. The permit is held until the body is dropped.
pub(crate) fn reserve_body<'g>(
    gw: &'g Gateway,
    live: &Live,
    bytes: usize,
) -> Result<crate::gateway::BodyPermit<'g>, ProxyError> {
    gw.bodies
        .reserve(bytes, live.config.server.max_body_bytes_in_flight)
        .ok_or(ProxyError::Busy)
}

/// Stage 1: the body, bounded by `max` and the shared budget (`permit` grows with it), and
/// received within `server.body_read_timeout`.
///
/// A body over the limit is answered 413 with `Connection: close`; what the client still
/// sends of it is read and dropped meanwhile, for at most `server.body_read_timeout`, so that
/// a client still writing it reads the answer rather than a reset (as the lane does for a
/// declared length). Not when the client waits for `100 Continue` before sending a body
/// refused on its declared length: reading it would ask for it.
async fn read_body(
    body: Incoming,
    headers: &http::HeaderMap,
    server: &crate::config::ServerConfig,
    max: usize,
    permit: &mut crate::gateway::BodyPermit<'_>,
) -> Result<Bytes, ProxyError> {
    let timeout = server.body_read_timeout;
    if declared_length(headers).is_some_and(|len| len > max) {
        if !headers.contains_key(header::EXPECT) {
            tokio::spawn(drain_body(body, timeout));
        }
        return Err(ProxyError::BodyTooLarge(max));
    }
    let mut body = body;
    let read = tokio::time::timeout(timeout, collect_body(&mut body, max, permit))
        .await
        .unwrap_or(Err(ProxyError::BodyTimeout(timeout)));
    if let Err(ProxyError::BodyTooLarge(_) | ProxyError::Busy) = read {
        tokio::spawn(drain_body(body, timeout));
    }
    read
}

/// Reads and drops the rest of `body`, for at most `within`.
async fn drain_body(mut body: Incoming, within: std::time::Duration) {
    let _ = tokio::time::timeout(within, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

async fn collect_body(
    body: &mut Incoming,
    max: usize,
    permit: &mut crate::gateway::BodyPermit<'_>,
) -> Result<Bytes, ProxyError> {
    // A body that arrives in one piece (most do: it came with its head) is kept as it is;
    // only a body in several pieces is copied into one buffer.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::BodyRead(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing Slack signs
        };
        total += data.len();
        if total > max {
            return Err(ProxyError::BodyTooLarge(max));
        }
        if !permit.grow_to(total) {
            return Err(ProxyError::Busy);
        }
        match (&mut first, &mut joined) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(total);
                buf.extend_from_slice(f);
                buf.extend_from_slice(&data);
                first = None;
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// Stage 2: the signature, against the current and previous signing secrets.
/// With `server.replay_protection`, an exact replay inside the window is refused too.
fn verify_signature(
    gw: &Gateway,
    live: &Live,
    signed: Signed<'_>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let now = unix_now();
    let verified = live
        .signing_keys
        .verify(signed.timestamp, signed.signature, body, now)?;
    if live.config.server.replay_protection
        && !gw
            .replay
            .first_sighting(verified.mac, verified.timestamp, now)
    {
        return Err(SignatureError::Replayed);
    }
    Ok(())
}

/// Stage 5: the installation for the payload's identity (the org's for org-wide installs).
async fn resolve_installation(
    gw: &Gateway,
    live: &Live,
    identity: Identity,
) -> Result<Resolved, ProxyError> {
    let app = &live.config.slack.client_id;
    let team = team_ref(&identity);
    // A request that names no workspace or org has no installation to look up.
    let named = team.enterprise_id.is_some() || team.team_id.is_some();
    let bot = if !named {
        None
    } else {
        match store::find_bot_for(gw.store.as_ref(), app, &team).await {
            Ok(b) => b,
            // An id that cannot be a key simply has no installation.
            Err(StoreError::InvalidId(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    let user = match (&identity.user_id, live.config.upstream.inject_user_token) {
        // Looked up with or without a bot: a user-only install (user scopes) has no bot record.
        (Some(uid), true) if named => {
            store::find_user_for(gw.store.as_ref(), app, &team, uid)
                .await
                .or_else(|e| match e {
                    // A user id that cannot be a key simply has no installation.
                    StoreError::InvalidId(_) => Ok(None),
                    e => Err(e),
                })?
        }
        _ => None,
    };
    // Stage 7: rotating tokens are refreshed before they are used.
    let bot = match bot {
        Some(b) => Some(rotation::ensure_fresh(gw, live, app, RecordKind::Bot, b).await?),
        None => None,
    };
    let user = match user {
        Some(u) => {
            let kind = RecordKind::User(u.user_id.clone());
            Some(rotation::ensure_fresh(gw, live, app, kind, u).await?)
        }
        None => None,
    };
    Ok(Resolved {
        identity,
        bot,
        user,
    })
}

fn team_ref(identity: &Identity) -> TeamRef {
    TeamRef::new(
        identity.enterprise_id.as_deref(),
        identity.team_id.as_deref(),
        identity.is_enterprise_install,
    )
}

/// Stage 6: `app_uninstalled` and `tokens_revoked` delete what they name, then forward.
async fn apply_lifecycle(
    gw: &Gateway,
    live: &Live,
    action: &Action,
    resolved: &Resolved,
) -> Result<(), ProxyError> {
    let app = &live.config.slack.client_id;
    let team = match &resolved.bot {
        // Delete where the installation actually lives (an org-wide one, say).
        Some(bot) => bot.team_ref(),
        None => team_ref(&resolved.identity),
    };
    match action {
        Action::Uninstalled => match gw.store.delete_team(app, &team).await {
            Ok(n) => {
                tracing::info!(team = %team.admin_id(), records = n, "app_uninstalled: installation deleted");
            }
            // Ids that cannot be keys have nothing stored.
            Err(StoreError::InvalidId(_)) => {}
            Err(e) => return Err(e.into()),
        },
        Action::TokensRevoked {
            user_ids,
            bot_user_ids,
        } => {
            // A user token lives under the workspace or, from an org-wide install, the org:
            // wherever the lookup would find it, whether or not there is a bot.
            let own = team_ref(&resolved.identity);
            let mut places = vec![team.clone()];
            for place in [Some(own.clone()), own.org()].into_iter().flatten() {
                if !places.contains(&place) {
                    places.push(place);
                }
            }
            for uid in user_ids {
                for place in &places {
                    match store::revoke_user_token(gw.store.as_ref(), app, place, uid).await {
                        Ok(_) | Err(StoreError::InvalidId(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            let bot_named = resolved.bot.as_ref().is_some_and(|b| {
                b.bot_user_id
                    .as_ref()
                    .is_none_or(|id| bot_user_ids.contains(id))
            });
            if !bot_user_ids.is_empty() && bot_named {
                store::revoke_bot_token(gw.store.as_ref(), app, &team).await?;
            }
            tracing::info!(team = %team.admin_id(), users = user_ids.len(), bots = bot_user_ids.len(), "tokens_revoked: tokens deleted");
        }
        _ => {}
    }
    Ok(())
}

/// Stage 8b: the injected headers, given to `set` after every inbound copy was removed.
/// Token values come from the installation's cached header values; the ids are moved, not
/// copied, into theirs. The lane writes them straight into its upstream request's head.
pub(crate) fn injected(
    live: &Live,
    r: Resolved,
    mut set: impl FnMut(&http::HeaderName, HeaderValue),
) {
    let names = &live.config.upstream.headers;
    let mut put = |name, value: String| {
        if let Some(v) = owned_value(value) {
            set(name, v);
        }
    };
    let id = r.identity;
    let enterprise_install = r
        .bot
        .as_ref()
        .map_or(id.is_enterprise_install, |b| b.is_enterprise_install);
    if let Some(t) = id.team_id {
        put(&names.team_id, t);
    }
    if let Some(e) = id.enterprise_id {
        put(&names.enterprise_id, e);
    }
    if let Some(bot) = &r.bot {
        if let Some(b) = &bot.bot_id {
            put(&names.bot_id, b.clone());
        }
        if let Some(b) = &bot.bot_user_id {
            put(&names.bot_user_id, b.clone());
        }
    }
    set(
        &names.enterprise_install,
        HeaderValue::from_static(if enterprise_install { "true" } else { "false" }),
    );
    if let Some(t) = r
        .bot
        .as_ref()
        .and_then(|b| b.bot_token.as_ref()?.header_value())
    {
        set(&names.bot_token, t.clone());
    }
    let user_token = r.user.as_ref().and_then(|u| u.user_token.as_ref());
    if let Some(t) = user_token.and_then(|t| t.header_value()) {
        set(&names.user_token, t.clone());
    }
}

/// Sets one header, as [`owned_value`] makes it.
fn put(headers: &mut http::HeaderMap, name: &http::HeaderName, value: String) {
    if let Some(v) = owned_value(value) {
        headers.insert(name.clone(), v);
    }
}

/// A header value that takes over the string's buffer (no copy). A value that cannot be a
/// header (never the case for Slack ids) is `None`: left out rather than sent mangled.
fn owned_value(value: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
}

/// Stages 8c and 9: send to the upstream and relay its answer as it is.
async fn forward(
    gw: &Gateway,
    live: &Live,
    conn: &Conn,
    mut parts: http::request::Parts,
    body: Bytes,
) -> Result<Response<Body>, ProxyError> {
    let target = &live.upstream;
    prepare_upstream_request(live, &mut parts, body.len())?;
    let req = Request::from_parts(parts, Full::new(body));
    let timeout = live.config.upstream.timeout;
    let sent = tokio::time::timeout(
        timeout,
        conn.upstream
            .send(target, live.config.upstream.keepalive_timeout, req),
    )
    .await;
    let resp = upstream_outcome(gw, timeout, sent.ok())?;
    let (mut parts, body) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Either::Right(body)))
}

/// Stage 8c for both transports: the request target the upstream sees (`upstream.url`'s path
/// prefix, origin form), its `Host`, and a `Content-Length` only when it is the body's.
pub(crate) fn prepare_upstream_request(
    live: &Live,
    parts: &mut http::request::Parts,
    body_len: usize,
) -> Result<(), ProxyError> {
    let target = &live.upstream;
    if !target.path_prefix.is_empty() {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = format!("{}{}", target.path_prefix, path_and_query)
            .parse()
            .map_err(|e: http::uri::InvalidUri| ProxyError::UpstreamUnavailable(e.to_string()))?;
    } else if parts.uri.scheme().is_some() {
        // An absolute-form request target: only its path and query go upstream.
        let pq = parts.uri.path_and_query().cloned();
        parts.uri = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    parts.headers.insert(header::HOST, target.host.clone());
    // The client's Content-Length goes on when it is the body's. hyper and the lane already
    // see to that (they refuse a body that differs from it, keep one copy of a repeated value
    // and drop it beside chunked framing); the check keeps the forwarder from relying on it.
    // Otherwise the sender sets the length of the body it sends.
    let length_matches = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        == Some(body_len);
    if !length_matches {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    parts.version = http::Version::HTTP_11;
    Ok(())
}

/// An exchange with the upstream bounded by `upstream.timeout` (`None`: timed out), as a
/// stage's result: a timeout is a 504, anything else that went wrong a 502; both are counted.
/// Generic over what the exchange yields: hyper's response, or the lane's connection and
/// response head.
pub(crate) fn upstream_outcome<T>(
    gw: &Gateway,
    timeout: std::time::Duration,
    sent: Option<Result<T, crate::upstream::UpstreamError>>,
) -> Result<T, ProxyError> {
    match sent {
        None => {
            gw.metrics.upstream_error("timeout");
            Err(ProxyError::UpstreamTimeout(timeout))
        }
        Some(Err(e)) => {
            gw.metrics.upstream_error(e.kind());
            Err(ProxyError::UpstreamUnavailable(error_chain(&e)))
        }
        Some(Ok(r)) => Ok(r),
    }
}

/// Forwards a browser request to the upstream (Sign in with Slack's protected paths): body
/// bounded, headers cleaned as for Slack requests, the gateway's own cookies removed, and
/// `identity` injected.
pub async fn forward_browser(
    gw: &Arc<Gateway>,
    live: &Arc<Live>,
    req: Request<Incoming>,
    conn: &Conn,
    drop_cookies: &[&str],
    identity: &[(http::HeaderName, String)],
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    // Only the verified route forwards Slack's paths, in any spelling: an app's Slack
    // handler must never run on a request the gateway did not verify.
    let key = crate::http::path::path_key(parts.uri.path());
    let slack_paths = &live.config.upstream.slack_paths;
    if slack_paths
        .iter()
        .any(|s| crate::http::path::key_covers(&crate::http::path::path_key(s), &key))
    {
        tracing::info!(peer = %conn.client.addr, path = parts.uri.path(), "a spelling of a Slack path is not forwarded as a browser request");
        return text(StatusCode::NOT_FOUND, "not found");
    }
    // The path as it was matched, not as it was spelt.
    if let Some(uri) = normalized_uri(&parts.uri) {
        parts.uri = uri;
    }
    let result = async {
        let max = live.config.server.max_body_bytes;
        let mut permit = reserve_body(gw, live, declared_length(&parts.headers).unwrap_or(0))?;
        let body = read_body(body, &parts.headers, &live.config.server, max, &mut permit).await?;
        headers::rewrite_request(
            &mut parts.headers,
            &live.strip,
            &conn.client,
            &live.config.server.trusted_proxies,
        );
        headers::remove_cookies(&mut parts.headers, drop_cookies);
        for (name, value) in identity {
            put(&mut parts.headers, name, value.clone());
        }
        forward(gw, live, conn, parts, body).await
    }
    .await;
    result.unwrap_or_else(|e| {
        tracing::info!(peer = %conn.client.addr, error = %e, "browser request not forwarded");
        e.into_response()
    })
}

/// `uri` with its path normalised ([`crate::http::path::normalize_path`]); `None` when it already is.
fn normalized_uri(uri: &Uri) -> Option<Uri> {
    let path = crate::http::path::normalize_path(uri.path());
    if path == uri.path() {
        return None;
    }
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.into_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// An error and its sources on one line, for logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_status() {
        let cases = [
            (ProxyError::MethodNotAllowed, 405),
            (ProxyError::BodyTooLarge(10), 413),
            (ProxyError::BodyRead("x".into()), 400),
            (ProxyError::Signature(SignatureError::Mismatch), 401),
            (
                ProxyError::Payload(PayloadError::UnsupportedContentType),
                415,
            ),
            (ProxyError::Payload(PayloadError::MalformedForm), 400),
            (
                ProxyError::Payload(PayloadError::MalformedJson("x".into())),
                400,
            ),
            (ProxyError::Store(StoreError::InvalidId("x".into())), 503),
            (ProxyError::UpstreamUnavailable("x".into()), 502),
            (
                ProxyError::UpstreamTimeout(std::time::Duration::from_secs(1)),
                504,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
        }
    }

    #[test]
    fn client_reasons_hide_internals() {
        let e = ProxyError::UpstreamUnavailable("tcp connect error: 127.0.0.1:8080 refused".into());
        assert_eq!(e.client_reason(), "upstream unavailable");
        assert_eq!(
            ProxyError::Signature(SignatureError::StaleTimestamp).client_reason(),
            "invalid signature: stale_timestamp"
        );
    }
}
