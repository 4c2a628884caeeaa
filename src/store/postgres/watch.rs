//! Keeping a replica's read cache true to the database, and knowing whether it is reachable.
//!
//! Every write to `installations` appends its keys to `changes` and sends them with NOTIFY on
//! the schema's channel, in the writing transaction. Each replica holds one connection of its
//! own outside the pool that LISTENs on that channel and forgets each key it hears of. A LISTEN
//! connection can go quiet without an error (a proxy or NAT drops it), so the same connection
//! also polls `changes` every [`POLL_EVERY`] as a backstop: a key the NOTIFY missed is
//! forgotten on the next poll, so a change is in force on every replica within about a second
//! either way. A failed poll means the connection is gone: the replica reconnects and drops
//! its whole cache once it is back, since changes made meanwhile were heard by nobody.
//!
//! The same loop keeps the store's health for `/readyz` and the bot count for metrics, and
//! sweeps what expires (replay signatures, old change rows).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connect::tls;
use super::Shared;

/// How often `changes` is polled.
pub(super) const POLL_EVERY: Duration = Duration::from_millis(250);
/// How far back a poll looks: longer than any commit takes to become visible.
const POLL_WINDOW: Duration = Duration::from_secs(10);
/// How long a poll may take before the connection counts as lost.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// Housekeeping (bot count, expired signatures, old change rows) every this often.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);

/// Runs forever: connect, listen and poll; on any failure mark the store unavailable, wait a
/// moment and start over.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match watch(&shared).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(reason) => {
                shared.set_down(Some(reason));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One LISTEN connection's life; returns why it ended.
async fn watch(shared: &Arc<Shared>) -> Result<(), String> {
    let (client, mut conn) = tokio::time::timeout(
        super::connect::CONNECT_TIMEOUT,
        shared.pg.connect(tls(&shared.pg)),
    )
    .await
    .map_err(|_| format!("cannot reach {}: timed out", shared.hosts))?
    .map_err(|e| {
        format!(
            "cannot reach {}: {}",
            shared.hosts,
            crate::store::error_chain(&e)
        )
    })?;
    // The connection's messages: notifications go to `notes`, the end to `ended`.
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        while let Some(m) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if notes_tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let _driver = AbortOnDrop(driver);
    let lost = |e: tokio_postgres::Error| {
        format!(
            "lost the connection to {}: {}",
            shared.hosts,
            crate::store::error_chain(&e)
        )
    };
    client
        .batch_execute(&format!("LISTEN \"{}\"", shared.sql.channel))
        .await
        .map_err(lost)?;
    let poll = client
        .prepare(&shared.sql.poll_changes)
        .await
        .map_err(lost)?;
    let window = POLL_WINDOW.as_millis() as i64;
    // Listening, and the changes so far are known: whatever the cache holds may be stale (a
    // change while the connection was down was heard by nobody), so it goes whole.
    let mut seen: HashMap<i64, Instant> = HashMap::new();
    for row in client.query(&poll, &[&window]).await.map_err(lost)? {
        seen.insert(row.get(0), Instant::now());
    }
    shared.cache.invalidate::<&[u8]>(None);
    shared.set_down(None);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = Instant::now();
    loop {
        tokio::select! {
            note = notes.recv() => match note {
                Some(payload) => forget(shared, &payload),
                None => return Err(format!("lost the connection to {}", shared.hosts)),
            },
            _ = tick.tick() => {
                let rows = tokio::time::timeout(POLL_TIMEOUT, client.query(&poll, &[&window]))
                    .await
                    .map_err(|_| format!("lost the connection to {}: no answer within {}s", shared.hosts, POLL_TIMEOUT.as_secs()))?
                    .map_err(lost)?;
                let now = Instant::now();
                let mut missed = Vec::new();
                for row in rows {
                    let id: i64 = row.get(0);
                    if seen.insert(id, now).is_none() {
                        missed.push(row.get::<_, String>(1));
                    }
                }
                if !missed.is_empty() {
                    shared.cache.invalidate(Some(&missed));
                }
                seen.retain(|_, at| now.duration_since(*at) < POLL_WINDOW * 2);
                shared.set_down(None);
                if housekeeping.elapsed() >= HOUSEKEEPING_EVERY {
                    housekeeping = Instant::now();
                    if let Err(e) = housekeep(shared, &client).await {
                        tracing::debug!(error = %e, "PostgreSQL housekeeping failed; retried later");
                    }
                }
            }
        }
    }
}

/// Forgets the keys a NOTIFY names (`*`: every key).
fn forget(shared: &Shared, payload: &str) {
    if payload == "*" {
        shared.cache.invalidate::<&[u8]>(None);
    } else {
        let keys: Vec<&str> = payload.split('\n').filter(|k| !k.is_empty()).collect();
        shared.cache.invalidate(Some(&keys));
    }
}

/// The bot count, and what has expired: replay signatures and old change rows.
async fn housekeep(
    shared: &Shared,
    client: &tokio_postgres::Client,
) -> Result<(), tokio_postgres::Error> {
    let bots: i64 = client.query_one(&shared.sql.count_bots, &[]).await?.get(0);
    shared.bots.store(bots.max(0) as u64, Ordering::Relaxed);
    let now = crate::http::unix_now() as i64;
    client
        .execute(&shared.sql.forget_signatures, &[&now])
        .await?;
    client.execute(&shared.sql.prune_changes, &[]).await?;
    Ok(())
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
