//! Queued delivery's first half (`delivery.mode = "queued"`): a verified Events API callback
//! is stored durably and answered 200 at once; the delivery worker
//! ([`crate::delivery`]) sends it to the upstream later, through the same stages with
//! [`Origin::Queue`].

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;

use super::{apply_lifecycle, resolve_in_time, ProxyError, Step};
use crate::gateway::{Gateway, Live};
use crate::http::headers::Client;
use crate::http::{empty, unix_ms};
use crate::slack::payload::{Action, Identity};
use crate::store::queue::{Delivery, Sender};
use crate::store::StoreError;

/// The attempt number (1-based) of a queued delivery; direct forwarding never sends it, and
/// strips any copy a client sends.
pub const DELIVERY_ATTEMPT: http::HeaderName =
    http::HeaderName::from_static("x-gateway-delivery-attempt");

/// Where a request comes to the stages after the signature from.
#[derive(Clone, Copy)]
pub enum Origin<'a> {
    /// From Slack, over HTTP or Socket Mode, to `target` (its path and query): lifecycle
    /// events act, and with queued delivery an event callback is stored and answered at once.
    Slack {
        target: &'a [u8],
        content_type: Option<&'a [u8]>,
        sender: Option<&'a (dyn Fn() -> Sender + Sync)>,
    },
    /// From the delivery queue: accepted, and acted on, already.
    Queue,
}

/// An event callback being accepted.
pub(super) struct Accepted<'a> {
    pub(super) action: &'a Action,
    pub(super) identity: Identity,
    pub(super) body: &'a Bytes,
    pub(super) target: &'a [u8],
    pub(super) content_type: Option<&'a [u8]>,
    pub(super) sender: Option<&'a (dyn Fn() -> Sender + Sync)>,
}

/// The ids an event callback carries.
#[derive(Deserialize)]
struct Ids {
    event_id: Option<String>,
    api_app_id: Option<String>,
}

/// Stores the event (unless its `(api_app_id, event_id)` was accepted within
/// `delivery.dedupe_window`) and answers 200 with an empty body. `app_uninstalled` and
/// `tokens_revoked` act first, as they would before forwarding. A store that cannot take it
/// is a 503, so Slack sends it again.
pub(super) async fn accept(
    gw: &Arc<Gateway>,
    live: &Arc<Live>,
    a: Accepted<'_>,
) -> Result<Step, ProxyError> {
    let queue = gw.store.deliveries().ok_or_else(|| {
        ProxyError::Store(StoreError::Unavailable(
            "this store keeps no delivery queue".into(),
        ))
    })?;
    let team_id = a.identity.team_id.clone();
    let ids: Ids = serde_json::from_slice(a.body).unwrap_or(Ids {
        event_id: None,
        api_app_id: None,
    });
    let now = unix_ms();
    let mut d = Delivery::new(
        String::new(),
        ids.api_app_id.unwrap_or_default(),
        team_id,
        String::from_utf8_lossy(a.target).into_owned(),
        a.content_type
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_else(|| "application/json".to_owned()),
        a.body.clone(),
        now,
    );
    if let Some(sender) = a.sender {
        d.sender = sender();
    }
    // Without an event id there is nothing to dedupe by: the delivery's own id stands in.
    d.event_id = ids.event_id.unwrap_or_else(|| d.id.clone());
    let timeout = live.config.upstream.timeout;
    let in_time = |e| {
        ProxyError::Store(StoreError::Unavailable(format!(
            "the event was not stored within upstream.timeout ({timeout:?}): {e}"
        )))
    };
    if matches!(a.action, Action::Uninstalled | Action::TokensRevoked { .. }) {
        // A duplicate must not act again: a reinstall since the first would be undone.
        let duplicate = tokio::time::timeout(timeout, queue.is_duplicate(&d, now))
            .await
            .map_err(|_| in_time("no answer"))??;
        if duplicate {
            gw.metrics.delivery_accepted("duplicate");
            return Ok(Step::Answer(empty(StatusCode::OK)));
        }
        let resolved = resolve_in_time(gw, live, a.identity).await?;
        Box::pin(apply_lifecycle(gw, live, a.action, &resolved)).await?;
    }
    let window = u64::try_from(live.config.delivery.dedupe_window.as_millis()).unwrap_or(u64::MAX);
    let dedupe_until = now.saturating_add(window);
    let stored = tokio::time::timeout(timeout, queue.enqueue(&d, now, dedupe_until))
        .await
        .map_err(|_| in_time("no answer"))??;
    if stored {
        tracing::debug!(delivery = %d.id, event = %d.event_id, "event queued");
        gw.metrics.delivery_accepted("queued");
        gw.deliveries_due.notify_one();
    } else {
        tracing::info!(event = %d.event_id, app = %d.api_app_id, "event accepted before: not queued again");
        gw.metrics.delivery_accepted("duplicate");
    }
    Ok(Step::Answer(empty(StatusCode::OK)))
}

/// The sender of a request with these header lines, from `client`: its headers as they came,
/// but for the signature (a delivery is signed afresh) and the length (the body's own is set).
pub(crate) fn sender<'h>(
    lines: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    client: &Client,
) -> Sender {
    use crate::slack::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
    let headers = lines
        .into_iter()
        .filter(|(name, _)| {
            ![SIGNATURE_HEADER, TIMESTAMP_HEADER, "content-length"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        })
        .filter_map(|(name, value)| {
            Some((
                std::str::from_utf8(name).ok()?.to_ascii_lowercase(),
                std::str::from_utf8(value).ok()?.to_owned(),
            ))
        })
        .collect();
    Sender {
        peer: client.addr.to_string(),
        scheme: client.scheme.to_owned(),
        headers,
    }
}

/// [`sender`] of a header map.
pub(crate) fn sender_of(headers: &http::HeaderMap, client: &Client) -> Sender {
    sender(
        headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
        client,
    )
}
