//! Token rotation: refresh a token that expires within `token_rotation_refresh_before`
//! before it is used.
//!
//! Slack's refresh tokens are single-use, so two refreshes of one installation racing each
//! other lose one installation's tokens (the most reported rotation bug of the SDKs). Here
//! exactly one refresh per installation record is in flight: waiters queue on a per-record
//! lock and, once they hold it, re-read the store first, finding the token the winner saved.
//! The new tokens are persisted (flushed) before anyone uses them. If Slack answers
//! `invalid_refresh_token` (another replica won), the store is re-read before giving up.
//!
//! Across gateways sharing a store (PostgreSQL), the one holding the process lock also claims
//! a lease on the record in the store ([`crate::store::InstallationStore::claim_refresh`]):
//! one short `INSERT ... ON CONFLICT DO UPDATE ... WHERE` that succeeds for one gateway
//! until the lease lapses (the Slack call's timeout plus a margin) or is given back. The
//! Slack call is made holding no database connection or transaction (a row lock held over
//! it would pin a pooled connection per waiting gateway, and session advisory locks break
//! behind PgBouncer). After the claim the record is read again, so a gateway that claims
//! just after another wrote never spends the already spent refresh token. A gateway that
//! loses the claim keeps using the current token while it has not expired (the refresh
//! starts up to `token_rotation_refresh_before` early), and waits for the winner's write
//! only when it has.

use std::sync::Arc;

use crate::gateway::{Gateway, Live};
use crate::http::unix_now;
use crate::slack::api::ApiError;
use crate::store::{Installation, RecordKind, StoreError, TeamRef, Token};

/// Why a token could not be made fresh.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("token refresh failed: {0}")]
    Slack(#[from] ApiError),
    #[error("token refresh failed: {0}")]
    Store(#[from] StoreError),
    #[error("the installation was removed while its token was being refreshed")]
    Gone,
    #[error("another gateway is refreshing the expired token and has not finished in time")]
    Pending,
}

/// How long a refresh lease outlives the Slack call's own timeout.
const LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);
/// How often a gateway waiting on another's refresh looks for its result.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The token fields of one kind of record.
fn token_fields<'a>(
    inst: &'a Installation,
    kind: &RecordKind,
) -> (Option<&'a Token>, Option<&'a Token>, Option<i64>) {
    match kind {
        RecordKind::User(_) => (
            inst.user_token.as_ref(),
            inst.user_refresh_token.as_ref(),
            inst.user_token_expires_at,
        ),
        _ => (
            inst.bot_token.as_ref(),
            inst.bot_refresh_token.as_ref(),
            inst.bot_token_expires_at,
        ),
    }
}

/// True when the record's token rotates and expires within `before_secs`.
pub fn needs_refresh(inst: &Installation, kind: &RecordKind, before_secs: u64, now: u64) -> bool {
    let (token, refresh, expires_at) = token_fields(inst, kind);
    match (token, refresh, expires_at) {
        (Some(_), Some(_), Some(exp)) => exp <= now as i64 + before_secs as i64,
        _ => false,
    }
}

/// Returns `inst` with a fresh token of `kind`, refreshing (once, for everyone) if needed.
/// The record is the one stored for `inst`'s own team.
pub async fn ensure_fresh(
    gw: &Gateway,
    live: &Live,
    app: &str,
    kind: RecordKind,
    inst: Arc<Installation>,
) -> Result<Arc<Installation>, RotationError> {
    let before = live.config.oauth.token_rotation_refresh_before.as_secs();
    if !needs_refresh(&inst, &kind, before, unix_now()) {
        return Ok(inst);
    }
    // Boxed: the refresh path (a Slack API call) is rare and its future is large; keeping it
    // out of line keeps every request's future small.
    let team = inst.team_ref();
    Box::pin(refresh(gw, live, app, &team, kind, &inst, before))
        .await
        .map(Arc::new)
}

/// The slow path of [`ensure_fresh`]: one refresh per record at a time.
async fn refresh(
    gw: &Gateway,
    live: &Live,
    app: &str,
    team: &TeamRef,
    kind: RecordKind,
    inst: &Installation,
    before: u64,
) -> Result<Installation, RotationError> {
    let cfg = &live.config;
    let key = (app.to_owned(), team.clone(), kind.clone());
    let lock = gw.rotator.lock_for(&key);
    let result = async {
        let _held = lock.lock().await;
        // Whoever held the lock before us may have refreshed already.
        let current = read(gw, app, team, &kind).await?.ok_or(RotationError::Gone)?;
        if !needs_refresh(&current, &kind, before, unix_now()) {
            return Ok(current);
        }
        // Refreshed by the request we waited on: use its token, do not refresh again (a
        // token lifetime shorter than the refresh window would otherwise refresh for every
        // waiter).
        if token_fields(&current, &kind).0 != token_fields(inst, &kind).0
            && !needs_refresh(&current, &kind, 0, unix_now())
        {
            return Ok(current);
        }
        if token_fields(&current, &kind).1.is_none() {
            return Ok(current);
        }
        // Across gateways: one claims the refresh, the others use or wait for its result.
        let record = crate::store::record_key(app, team, &kind)?;
        let lease = cfg.slack.api_timeout + LEASE_MARGIN;
        match gw.store.claim_refresh(&record, lease).await {
            Ok(true) => {}
            Ok(false) => {
                gw.metrics.token_refresh("other_gateway");
                if !needs_refresh(&current, &kind, 0, unix_now()) {
                    return Ok(current);
                }
                return wait_for_other(gw, app, team, &kind, &current, lease).await;
            }
            Err(e) => {
                if !needs_refresh(&current, &kind, 0, unix_now()) {
                    tracing::warn!(team = %team.admin_id(), error = %e, "cannot claim the token refresh; using the current token until it expires");
                    return Ok(current);
                }
                return Err(e.into());
            }
        }
        let result = refresh_claimed(gw, live, app, team, &kind, before).await;
        if let Err(e) = gw.store.release_refresh(&record).await {
            tracing::debug!(error = %e, "cannot give back the refresh lease; it lapses by itself");
        }
        result
    }
    .await;
    gw.rotator.release(&key, lock);
    result
}

/// Waits for another gateway's refresh of an expired token to be written, for at most `lease`.
async fn wait_for_other(
    gw: &Gateway,
    app: &str,
    team: &TeamRef,
    kind: &RecordKind,
    current: &Installation,
    lease: std::time::Duration,
) -> Result<Installation, RotationError> {
    let deadline = tokio::time::Instant::now() + lease;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(WAIT_POLL).await;
        let now = read(gw, app, team, kind)
            .await?
            .ok_or(RotationError::Gone)?;
        if token_fields(&now, kind).0 != token_fields(current, kind).0
            && !needs_refresh(&now, kind, 0, unix_now())
        {
            return Ok(now);
        }
    }
    Err(RotationError::Pending)
}

/// The refresh itself, by the gateway holding the claim: the record read again (a gateway
/// that held the claim before may have written), Slack called, the result written.
async fn refresh_claimed(
    gw: &Gateway,
    live: &Live,
    app: &str,
    team: &TeamRef,
    kind: &RecordKind,
    before: u64,
) -> Result<Installation, RotationError> {
    let cfg = &live.config;
    let kind = kind.clone();
    {
        let current = read(gw, app, team, &kind)
            .await?
            .ok_or(RotationError::Gone)?;
        if !needs_refresh(&current, &kind, before, unix_now()) {
            return Ok(current);
        }
        let (_, Some(refresh_token), _) = token_fields(&current, &kind) else {
            return Ok(current);
        };
        let answer = gw
            .api
            .refresh(
                &cfg.slack.api_url,
                cfg.slack.api_timeout,
                &cfg.slack.client_id,
                &cfg.slack.client_secret,
                refresh_token.expose(),
            )
            .await;
        match answer {
            Ok(access) => {
                let now = unix_now() as i64;
                let mut updated = current.clone();
                let new_token = access.access_token.map(|t| Token::new(t.into_inner()));
                let new_refresh = access.refresh_token.map(|t| Token::new(t.into_inner()));
                let new_expiry = access.expires_in.map(|s| now + s);
                match &kind {
                    RecordKind::User(_) => {
                        updated.user_token = new_token.or(updated.user_token);
                        updated.user_refresh_token = new_refresh.or(updated.user_refresh_token);
                        updated.user_token_expires_at = new_expiry;
                    }
                    _ => {
                        updated.bot_token = new_token.or(updated.bot_token);
                        updated.bot_refresh_token = new_refresh.or(updated.bot_refresh_token);
                        updated.bot_token_expires_at = new_expiry;
                    }
                }
                // Persisted (flushed) before anyone uses it: the old refresh token is spent.
                gw.store.update_record(app, team, &kind, &updated).await?;
                gw.metrics.token_refresh("success");
                tracing::info!(team = %team.admin_id(), kind = ?kind_name(&kind), "token refreshed");
                Ok(updated)
            }
            Err(ApiError::Slack(code)) if code == "invalid_refresh_token" => {
                // Another process may have spent the refresh token: its result is in the store.
                let reread = read(gw, app, team, &kind)
                    .await?
                    .ok_or(RotationError::Gone)?;
                let (_, reread_refresh, _) = token_fields(&reread, &kind);
                if reread_refresh != Some(refresh_token)
                    && !needs_refresh(&reread, &kind, 0, unix_now())
                {
                    gw.metrics.token_refresh("lost_race_recovered");
                    return Ok(reread);
                }
                gw.metrics.token_refresh("invalid_refresh_token");
                if !needs_refresh(&current, &kind, 0, unix_now()) {
                    tracing::warn!(team = %team.admin_id(), "refresh token refused by Slack; using the current token until it expires");
                    return Ok(current);
                }
                Err(RotationError::Slack(ApiError::Slack(code)))
            }
            Err(e) => {
                gw.metrics.token_refresh("error");
                // A token that has not expired yet still works: use it and retry next time.
                if !needs_refresh(&current, &kind, 0, unix_now()) {
                    tracing::warn!(team = %team.admin_id(), error = %e, "token refresh failed; using the current token until it expires");
                    return Ok(current);
                }
                Err(RotationError::Slack(e))
            }
        }
    }
}

fn kind_name(kind: &RecordKind) -> &'static str {
    match kind {
        RecordKind::User(_) => "user",
        _ => "bot",
    }
}

async fn read(
    gw: &Gateway,
    app: &str,
    team: &TeamRef,
    kind: &RecordKind,
) -> Result<Option<Installation>, StoreError> {
    match kind {
        RecordKind::User(uid) => gw.store.find_user(app, team, uid).await,
        RecordKind::Latest => gw.store.find_latest(app, team).await,
        RecordKind::Bot => gw.store.find_bot(app, team).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_window() {
        let mut i = Installation {
            bot_token: Some(Token::new("xoxe.xoxb-1")),
            bot_refresh_token: Some(Token::new("xoxe-1-r")),
            bot_token_expires_at: Some(10_000),
            ..Default::default()
        };
        assert!(!needs_refresh(&i, &RecordKind::Bot, 100, 9_000));
        assert!(
            needs_refresh(&i, &RecordKind::Bot, 1_000, 9_000),
            "inside the window"
        );
        assert!(needs_refresh(&i, &RecordKind::Bot, 0, 10_000), "expired");
        assert!(
            !needs_refresh(&i, &RecordKind::User("U1".into()), 1_000_000, 9_000),
            "no user token"
        );
        i.bot_refresh_token = None;
        assert!(
            !needs_refresh(&i, &RecordKind::Bot, 1_000_000, 9_000),
            "tokens that do not rotate never refresh"
        );
    }
}
