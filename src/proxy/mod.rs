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
//! The stages live where their parts are: `body.rs` (stage 1: what the head alone tells, and
//! the bounded body), this file (signature, parsing, local answers, the installation,
//! lifecycle events, injection), `forward.rs` (stages 8c and 9, and browser requests) and
//! `error.rs` (what went wrong, and its status).
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

mod body;
mod error;
mod forward;
mod queued;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::DeliveryMode;
use crate::gateway::{Gateway, Live};
use crate::http::headers;
use crate::http::{empty, json, unix_now, Body};
use crate::oauth::rotation;
use crate::slack::payload::{self, Action, Identity, Parsed};
use crate::slack::signature::SignatureError;
use crate::store::{self, Installation, RecordKind, StoreError, TeamRef};

pub use body::UNSIGNED_BODY_MAX_BYTES;
use body::{declared_length, drain_body, read_body};
pub(crate) use body::{judge_head, reserve_body, Signed};
use error::closing;
pub use error::ProxyError;
use forward::{forward, owned_value};
pub use forward::{forward_browser, Conn, ConnPool};
pub(crate) use forward::{prepare_upstream_request, upstream_outcome};
pub(crate) use queued::sender as queued_sender;
pub use queued::Origin;

/// The installation a request resolved to ([`decide`]'s verdict for a request to forward):
/// taken whole by the header rewrite ([`injected`]), whichever transport writes the head.
pub(crate) struct Resolved {
    pub(crate) identity: Identity,
    pub(crate) bot: Option<Arc<Installation>>,
    pub(crate) user: Option<Arc<Installation>>,
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
        // Charged as the body's bytes arrive ([`read_body`]), not as its head declares.
        let mut permit = reserve_body(gw, live, 0)?;
        let read = read_body(
            body,
            &parts.headers,
            &live.config.server,
            head.max_body,
            &mut permit,
        )
        .await;
        let body = match read {
            Ok(body) => body,
            // An unsigned body too large for an ssl_check: refused as its signature, and,
            // as for 413, the rest of the body is dropped and the connection closes.
            Err(e @ ProxyError::BodyTooLarge(_)) => {
                return Ok(closing(refuse(gw, conn.client.addr, head.refusal_of(e))))
            }
            Err(e) => return Err(e),
        };
        let sender = || queued::sender_of(&parts.headers, &conn.client);
        let signed = Signed {
            target: parts.uri.path_and_query().map(|p| p.as_str().as_bytes()),
            sender: Some(&sender),
            ..Signed::of(&parts.headers)
        };
        match decide(gw, live, signed, &body).await? {
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

/// A request whose sender is known otherwise: Slack over a channel that authenticated it (a
/// Socket Mode WebSocket, opened with the app's token), or the delivery queue with what it
/// accepted. The stages of [`handle`] after the signature. `parts` carry the head the
/// upstream gets, HTTP mode's (signed for the app by whoever built it). Refusals are
/// returned, not answered: the caller has no HTTP client.
pub async fn handle_authenticated(
    gw: &Arc<Gateway>,
    live: &Arc<Live>,
    mut parts: http::request::Parts,
    body: Bytes,
    conn: &Conn,
    delivery_attempt: Option<u32>,
) -> Result<Response<Body>, ProxyError> {
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    let kind = payload::content_kind(content_type.map(HeaderValue::as_bytes), &body);
    let sender = || queued::sender_of(&parts.headers, &conn.client);
    let origin = match delivery_attempt {
        Some(_) => Origin::Queue,
        None => Origin::Slack {
            target: parts
                .uri
                .path_and_query()
                .map_or(b"/", |p| p.as_str().as_bytes()),
            content_type: content_type.map(HeaderValue::as_bytes),
            sender: Some(&sender),
        },
    };
    let step = decide_verified(gw, live, kind, &body, origin).await?;
    match step {
        Step::Answer(r) => Ok(r),
        Step::Forward(resolved) => {
            rewrite_and_inject(live, &mut parts.headers, &conn.client, resolved);
            if let Some(n) = delivery_attempt {
                parts
                    .headers
                    .insert(queued::DELIVERY_ATTEMPT, HeaderValue::from(n));
            }
            forward(gw, live, conn, parts, body).await
        }
    }
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

/// What the pipeline decided for a request whose body has been read ([`decide`]).
pub(crate) enum Step {
    /// Answered by the gateway itself: a challenge, an `ssl_check`.
    Answer(Response<Body>),
    /// To the upstream, with the headers of this installation: the transport applies header
    /// hygiene and injection ([`headers::rewrite_request`] and [`injected`], or the lane's
    /// equivalent on raw header lines) to the head it keeps.
    Forward(Resolved),
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

    if let Err(reason) = verify_signature(gw, live, signed, body).await {
        // Slack's one unsigned request (a form it declares as one); answered, never
        // forwarded.
        if signed.content_type.is_some() && payload::is_ssl_check(kind, body) {
            return Ok(Step::Answer(empty(StatusCode::OK)));
        }
        return Err(ProxyError::Signature(reason));
    }
    let origin = Origin::Slack {
        target: signed.target.unwrap_or(b"/"),
        content_type: signed.content_type,
        sender: signed.sender,
    };
    decide_verified(gw, live, kind, body, origin).await
}

/// Stages 3 to 8a, for a request whose sender is known: parsing, local answers, the
/// installation, lifecycle events.
async fn decide_verified(
    gw: &Arc<Gateway>,
    live: &Arc<Live>,
    kind: Option<payload::ContentKind>,
    body: &Bytes,
    origin: Origin<'_>,
) -> Result<Step, ProxyError> {
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
    if let Origin::Slack {
        target,
        content_type,
        sender,
    } = origin
    {
        if live.config.delivery.mode == DeliveryMode::Queued && kind == "event_callback" {
            let accepted = queued::Accepted {
                action: &action,
                identity,
                body,
                target,
                content_type,
                sender,
            };
            return queued::accept(gw, live, accepted).await;
        }
    }

    let resolved = resolve_in_time(gw, live, identity).await?;
    // Events from the queue were acted on when they were accepted: a reinstall since must not
    // be undone.
    let acts = matches!(origin, Origin::Slack { .. });
    if acts && matches!(action, Action::Uninstalled | Action::TokensRevoked { .. }) {
        // Boxed: rare, and its future would otherwise enlarge every request's.
        Box::pin(apply_lifecycle(gw, live, &action, &resolved)).await?;
    }
    tracing::debug!(%kind, team = ?resolved.identity.team_id, found = resolved.bot.is_some(), "forwarding");
    Ok(Step::Forward(resolved))
}

/// Stage 5 bounded by `upstream.timeout`: a store that does not answer (a database gone away)
/// is refused in time for Slack to retry; a cached installation never waits on it.
async fn resolve_in_time(
    gw: &Arc<Gateway>,
    live: &Arc<Live>,
    identity: Identity,
) -> Result<Resolved, ProxyError> {
    let timeout = live.config.upstream.timeout;
    tokio::time::timeout(
        timeout,
        resolve_installation(gw, live, identity, live.config.upstream.inject_user_token),
    )
    .await
    .map_err(|_| {
        ProxyError::Store(StoreError::Unavailable(format!(
            "no answer within upstream.timeout ({timeout:?})"
        )))
    })?
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

/// Stage 2: the signature, against the current and previous signing secrets.
/// With `server.replay_protection`, an exact replay inside the window is refused too (by
/// every gateway sharing the store, see [`crate::store::replay::ReplayGuard::admit`]).
async fn verify_signature(
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
        && !gw.replay.admit(verified.mac, verified.timestamp, now).await
    {
        return Err(SignatureError::Replayed);
    }
    Ok(())
}

/// Stage 5: the installation for the payload's identity (the org's for org-wide installs).
/// The same resolution serves the Web API egress ([`crate::egress`]), which asks for the
/// acting user's installation when the caller wants a user token (`want_user`); forwarding
/// asks for it with `upstream.inject_user_token`.
pub(crate) async fn resolve_installation(
    gw: &Gateway,
    live: &Live,
    identity: Identity,
    want_user: bool,
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
    let user = match (&identity.user_id, want_user) {
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
    // `upstream.inject_tokens = false`: the app holds no token (it calls Slack through the
    // egress).
    if !live.config.upstream.inject_tokens {
        return;
    }
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
