//! The admin listener: health, readiness, metrics, reload, the installations API and queued
//! delivery's dead letters (`/admin/deliveries`).
//!
//! Loopback by default. When `admin.token` is set, everything except `/healthz`, `/readyz` and
//! `/metrics` needs `Authorization: Bearer {token}` (compared in constant time). Tokens are
//! never part of an answer: installations are summarized with `has_bot_token` and the like.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::gateway::Gateway;
use crate::http::{json, text, Body};
use crate::store::{group_by_team, StoredRecord, TeamRecords, TeamRef};

/// Handles one admin request.
pub async fn handle(gw: &Arc<Gateway>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => {
            if gw.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining")
            } else if let Some(why) = gw.store.unavailable() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("store unavailable: {}: {why}", gw.store.describe()),
                )
            } else {
                text(StatusCode::OK, "ready")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut r = text(
                StatusCode::OK,
                gw.metrics.render(&gw.store).trim_end().to_owned(),
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => {
            if !authorized(gw, &req) {
                let mut r = text(StatusCode::UNAUTHORIZED, "admin token required");
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
            match (&method, path.as_str()) {
                (&Method::POST, "/-/reload") => match crate::reload::reload(gw) {
                    Ok(()) => json(StatusCode::OK, &serde_json::json!({"ok": true})),
                    Err(e) => json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &serde_json::json!({"ok": false, "error": e.to_string()}),
                    ),
                },
                (_, p) if p == "/admin/installations" || p.starts_with("/admin/installations/") => {
                    installations(gw, &method, p).await
                }
                (_, p) if p == "/admin/deliveries" || p.starts_with("/admin/deliveries/") => {
                    deliveries(gw, &method, p, req.uri().query()).await
                }
                _ => text(StatusCode::NOT_FOUND, "not found"),
            }
        }
    }
}

/// True when no admin token is set, or the request carries it.
fn authorized(gw: &Gateway, req: &Request<Incoming>) -> bool {
    let live = gw.live();
    let Some(token) = &live.config.admin.token else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token);
    bool::from(given.as_bytes().ct_eq(token.expose().as_bytes()))
}

/// What the admin API shows of an installation: everything but the tokens.
#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub id: String,
    pub app_id: Option<String>,
    pub enterprise_id: Option<String>,
    pub enterprise_name: Option<String>,
    pub enterprise_url: Option<String>,
    pub team_id: Option<String>,
    pub team_name: Option<String>,
    pub is_enterprise_install: bool,
    pub bot_id: Option<String>,
    pub bot_user_id: Option<String>,
    pub bot_scopes: Option<String>,
    pub has_bot_token: bool,
    pub bot_token_expires_at: Option<i64>,
    pub installer_user_id: String,
    pub user_ids_with_tokens: Vec<String>,
    pub installed_at: f64,
}

/// Groups a store listing into one summary per team or org.
pub fn summarize(records: Vec<StoredRecord>) -> Vec<Summary> {
    group_by_team(records)
        .into_iter()
        .filter_map(|(team, TeamRecords { bot, latest, users })| {
            let users: Vec<String> = users
                .into_iter()
                .filter(|(_, i)| i.user_token.is_some())
                .map(|(u, _)| u)
                .collect();
            let base = bot.clone().or(latest.clone())?;
            Some(Summary {
                id: team.admin_id(),
                app_id: base.app_id.clone(),
                enterprise_id: base.enterprise_id.clone(),
                enterprise_name: base.enterprise_name.clone(),
                enterprise_url: base.enterprise_url.clone(),
                team_id: base.team_id.clone(),
                team_name: base.team_name.clone(),
                is_enterprise_install: base.is_enterprise_install,
                bot_id: bot.as_ref().and_then(|b| b.bot_id.clone()),
                bot_user_id: bot.as_ref().and_then(|b| b.bot_user_id.clone()),
                bot_scopes: bot.as_ref().and_then(|b| b.bot_scopes.clone()),
                has_bot_token: bot.as_ref().is_some_and(|b| b.bot_token.is_some()),
                bot_token_expires_at: bot.as_ref().and_then(|b| b.bot_token_expires_at),
                installer_user_id: latest.as_ref().unwrap_or(&base).user_id.clone(),
                user_ids_with_tokens: users,
                installed_at: latest.as_ref().unwrap_or(&base).installed_at,
            })
        })
        .collect()
}

async fn installations(gw: &Gateway, method: &Method, path: &str) -> Response<Body> {
    let live = gw.live();
    let app = &live.config.slack.client_id;
    let id = path
        .strip_prefix("/admin/installations")
        .unwrap_or("")
        .trim_start_matches('/');
    let records = match gw.store.list(app).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "admin: listing installations failed");
            return text(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
        }
    };
    let summaries = summarize(records);
    match (method, id) {
        (&Method::GET, "") => json(
            StatusCode::OK,
            &serde_json::to_value(&summaries).expect("serializable"),
        ),
        (&Method::GET, id) => match summaries.iter().find(|s| s.id == id) {
            Some(s) => json(
                StatusCode::OK,
                &serde_json::to_value(s).expect("serializable"),
            ),
            None => text(StatusCode::NOT_FOUND, format!("no installation {id}")),
        },
        (&Method::DELETE, id) if !id.is_empty() => {
            let Some(s) = summaries.iter().find(|s| s.id == id) else {
                return text(StatusCode::NOT_FOUND, format!("no installation {id}"));
            };
            let team = TeamRef::new(
                s.enterprise_id.as_deref(),
                s.team_id.as_deref(),
                s.is_enterprise_install,
            );
            match gw.store.delete_team(app, &team).await {
                Ok(n) => {
                    tracing::info!(id, records = n, "admin: installation deleted");
                    json(
                        StatusCode::OK,
                        &serde_json::json!({"deleted": id, "records": n}),
                    )
                }
                Err(e) => {
                    tracing::error!(error = %e, "admin: delete failed");
                    text(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
                }
            }
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET or DELETE"),
    }
}

/// A delivery as the admin API shows it (times in Unix seconds; no body).
#[derive(Serialize)]
struct DeliveryView<'a> {
    id: &'a str,
    event_id: &'a str,
    api_app_id: &'a str,
    team_id: Option<&'a str>,
    state: &'static str,
    attempts: u32,
    last_error: Option<&'a str>,
    received_at: u64,
    next_attempt_at: u64,
}

/// The most deliveries one listing shows.
const DELIVERIES_LISTED: usize = 1000;

/// `GET /admin/deliveries?state=`, `POST /admin/deliveries/{id}/retry`,
/// `POST /admin/deliveries/retry?state=dead`, `DELETE /admin/deliveries/{id}`.
async fn deliveries(
    gw: &Gateway,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<Body> {
    use crate::store::queue::{valid_id, DeliveryState};
    let Some(queue) = gw.store.deliveries() else {
        return text(StatusCode::NOT_FOUND, "this store keeps no delivery queue");
    };
    let state = match query_value(query, "state") {
        None => None,
        Some(s) => match DeliveryState::parse(&s) {
            Some(st) => Some(st),
            None => return text(StatusCode::BAD_REQUEST, "state must be pending or dead"),
        },
    };
    let rest = path.strip_prefix("/admin/deliveries").unwrap_or("");
    let failed = |e: crate::store::StoreError| {
        tracing::warn!(error = %e, "admin: the delivery queue failed");
        text(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
    };
    let now = crate::http::unix_ms();
    match (method, rest) {
        (&Method::GET, "" | "/") => match queue.list_deliveries(state, DELIVERIES_LISTED).await {
            Ok(list) => {
                let views: Vec<DeliveryView> = list
                    .iter()
                    .map(|d| DeliveryView {
                        id: &d.id,
                        event_id: &d.event_id,
                        api_app_id: &d.api_app_id,
                        team_id: d.team_id.as_deref(),
                        state: d.state.as_str(),
                        attempts: d.attempts,
                        last_error: d.last_error.as_deref(),
                        received_at: d.received_at / 1000,
                        next_attempt_at: d.next_attempt_at.div_ceil(1000),
                    })
                    .collect();
                json(StatusCode::OK, &serde_json::json!({ "deliveries": views }))
            }
            Err(e) => failed(e),
        },
        (&Method::POST, "/retry") => {
            if state != Some(DeliveryState::Dead) {
                return text(StatusCode::BAD_REQUEST, "use POST /admin/deliveries/retry?state=dead");
            }
            match queue.retry_dead(now).await {
                Ok(n) => {
                    gw.deliveries_due.notify_one();
                    json(StatusCode::OK, &serde_json::json!({ "ok": true, "retried": n }))
                }
                Err(e) => failed(e),
            }
        }
        (&Method::POST, r) if r.ends_with("/retry") => {
            let id = r.trim_start_matches('/').trim_end_matches("/retry");
            if !valid_id(id) {
                return text(StatusCode::NOT_FOUND, format!("no delivery {id}"));
            }
            match queue.retry_delivery(id, now).await {
                Ok(true) => {
                    gw.deliveries_due.notify_one();
                    json(StatusCode::OK, &serde_json::json!({ "ok": true, "id": id }))
                }
                Ok(false) => text(StatusCode::NOT_FOUND, format!("no delivery {id}")),
                Err(e) => failed(e),
            }
        }
        (&Method::DELETE, r) if r.len() > 1 => {
            let id = &r[1..];
            if !valid_id(id) {
                return text(StatusCode::NOT_FOUND, format!("no delivery {id}"));
            }
            match queue.drop_delivery(id).await {
                Ok(true) => json(StatusCode::OK, &serde_json::json!({ "ok": true, "id": id })),
                Ok(false) => text(StatusCode::NOT_FOUND, format!("no delivery {id}")),
                Err(e) => failed(e),
            }
        }
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /admin/deliveries, POST /admin/deliveries/{id}/retry, POST /admin/deliveries/retry?state=dead, DELETE /admin/deliveries/{id}",
        ),
    }
}

/// The first value of `name` in a query string.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
