//! The delivery queue in PostgreSQL (migration 2): any replica claims any due delivery with
//! `FOR UPDATE SKIP LOCKED`, so each is attempted by one replica at a time; the claim moves
//! `next_attempt_at` to the lease's end, so a replica that dies lets go when its lease ends.
//! An accepted event and its dedupe key are written in one committed transaction before
//! Slack's 200.

use async_trait::async_trait;
use bytes::Bytes;
use tokio_postgres::Row;

use super::{db, PgStore};
use crate::store::queue::{AfterFailure, Delivery, DeliveryQueue, DeliveryState, QueueStats};
use crate::store::StoreError;

const COLUMNS: &str = "id, event_id, api_app_id, team_id, state, attempts, last_error, \
                       received_at, next_attempt_at, path, content_type, body, sender";

/// The queue's statements, with the schema spliced in.
pub(super) struct QueueSql {
    dedupe: String,
    insert: String,
    claim: String,
    delete: String,
    failed: String,
    list: String,
    list_state: String,
    retry: String,
    exists: String,
    seen: String,
    retry_dead: String,
    stats: String,
    sweep: String,
}

impl QueueSql {
    pub(super) fn new(schema: &str) -> Self {
        let s = |q: &str| q.replace("{s}", schema).replace("{cols}", COLUMNS);
        QueueSql {
            // A row back: accepted (a new key, or one past its window taken over).
            dedupe: s(
                "INSERT INTO {s}.delivery_dedupe (key, until) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET until = excluded.until
                 WHERE {s}.delivery_dedupe.until <= $3
                 RETURNING 1",
            ),
            insert: s("INSERT INTO {s}.deliveries ({cols})
                 VALUES ($1, $2, $3, $4, 'pending', 0, NULL, $5, $6, $7, $8, $9, $10)"),
            claim: s("UPDATE {s}.deliveries SET next_attempt_at = $3 WHERE id IN
                 (SELECT id FROM {s}.deliveries WHERE state = 'pending' AND next_attempt_at <= $1
                  ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING {cols}"),
            delete: s("DELETE FROM {s}.deliveries WHERE id = $1"),
            failed: s("UPDATE {s}.deliveries SET attempts = $2, last_error = $3,
                 state = $4, next_attempt_at = COALESCE($5, next_attempt_at) WHERE id = $1"),
            list: s("SELECT {cols} FROM {s}.deliveries ORDER BY id LIMIT $1"),
            list_state: s(
                "SELECT {cols} FROM {s}.deliveries WHERE state = $1 ORDER BY id LIMIT $2",
            ),
            // A pending one is left as it is (it may be being delivered): found, unchanged.
            retry: s(
                "UPDATE {s}.deliveries SET state = 'pending', next_attempt_at = $2,
                 attempts = 0 WHERE id = $1 AND state = 'dead'",
            ),
            exists: s("SELECT 1 FROM {s}.deliveries WHERE id = $1"),
            seen: s("SELECT 1 FROM {s}.delivery_dedupe WHERE key = $1 AND until > $2"),
            retry_dead: s(
                "UPDATE {s}.deliveries SET state = 'pending', next_attempt_at = $1,
                 attempts = 0 WHERE state = 'dead'",
            ),
            stats: s("SELECT count(*) FILTER (WHERE state = 'pending'),
                 count(*) FILTER (WHERE state = 'dead'),
                 min(received_at) FILTER (WHERE state = 'pending') FROM {s}.deliveries"),
            sweep: s("DELETE FROM {s}.delivery_dedupe WHERE key IN
                 (SELECT key FROM {s}.delivery_dedupe WHERE until <= $1 LIMIT 10000)"),
        }
    }
}

/// Milliseconds as PostgreSQL's `bigint` (saturating: no real time is past it).
fn ms(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn delivery(row: &Row) -> Result<Delivery, StoreError> {
    let id: String = row.get(0);
    let state: String = row.get(4);
    let state = DeliveryState::parse(&state).ok_or_else(|| StoreError::Corrupt {
        key: id.clone(),
        reason: format!("unknown state {state:?}"),
    })?;
    let attempts: i32 = row.get(5);
    let received_at: i64 = row.get(7);
    let next_attempt_at: i64 = row.get(8);
    let body: Vec<u8> = row.get(11);
    let sender: String = row.get(12);
    Ok(Delivery {
        id,
        event_id: row.get(1),
        api_app_id: row.get(2),
        team_id: row.get(3),
        state,
        attempts: attempts.max(0) as u32,
        last_error: row.get(6),
        received_at: received_at.max(0) as u64,
        next_attempt_at: next_attempt_at.max(0) as u64,
        path: row.get(9),
        content_type: row.get(10),
        sender: serde_json::from_str(&sender).unwrap_or_default(),
        body: Bytes::from(body),
    })
}

#[async_trait]
impl DeliveryQueue for PgStore {
    async fn enqueue(&self, d: &Delivery, now: u64, dedupe_until: u64) -> Result<bool, StoreError> {
        let q = &self.shared.queue_sql;
        self.op(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            let accepted = tx
                .query_opt(&q.dedupe, &[&d.dedupe_key(), &ms(dedupe_until), &ms(now)])
                .await
                .map_err(db)?
                .is_some();
            if !accepted {
                return Ok(false);
            }
            tx.execute(
                &q.insert,
                &[
                    &d.id,
                    &d.event_id,
                    &d.api_app_id,
                    &d.team_id,
                    &ms(d.received_at),
                    &ms(d.next_attempt_at),
                    &d.path,
                    &d.content_type,
                    &d.body.as_ref(),
                    &serde_json::to_string(&d.sender).expect("a sender serializes"),
                ],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(true)
        })
        .await
    }

    async fn is_duplicate(&self, d: &Delivery, now: u64) -> Result<bool, StoreError> {
        let rows = self
            .query(&self.shared.queue_sql.seen, &[&d.dedupe_key(), &ms(now)])
            .await?;
        Ok(!rows.is_empty())
    }

    async fn claim(
        &self,
        now: u64,
        limit: usize,
        lease_until: u64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &self.shared.queue_sql.claim,
                &[&ms(now), &limit, &ms(lease_until)],
            )
            .await?;
        let mut out = rows.iter().map(delivery).collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn delivered(&self, id: &str) -> Result<(), StoreError> {
        self.execute(&self.shared.queue_sql.delete, &[&id]).await?;
        Ok(())
    }

    async fn failed(
        &self,
        id: &str,
        attempts: u32,
        error: &str,
        after: AfterFailure,
    ) -> Result<(), StoreError> {
        let (state, next) = match after {
            AfterFailure::RetryAt(at) => ("pending", Some(ms(at))),
            AfterFailure::Dead => ("dead", None),
        };
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        self.execute(
            &self.shared.queue_sql.failed,
            &[&id, &attempts, &error, &state, &next],
        )
        .await?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let q = &self.shared.queue_sql;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match state {
            Some(s) => self.query(&q.list_state, &[&s.as_str(), &limit]).await?,
            None => self.query(&q.list, &[&limit]).await?,
        };
        rows.iter().map(delivery).collect()
    }

    async fn retry_delivery(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        let q = &self.shared.queue_sql;
        if self.execute(&q.retry, &[&id, &ms(now)]).await? > 0 {
            return Ok(true);
        }
        Ok(!self.query(&q.exists, &[&id]).await?.is_empty())
    }

    async fn retry_dead(&self, now: u64) -> Result<usize, StoreError> {
        let n = self
            .execute(&self.shared.queue_sql.retry_dead, &[&ms(now)])
            .await?;
        Ok(n as usize)
    }

    async fn drop_delivery(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.execute(&self.shared.queue_sql.delete, &[&id]).await?;
        Ok(n > 0)
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let rows = self.query(&self.shared.queue_sql.stats, &[]).await?;
        let Some(row) = rows.first() else {
            return Ok(QueueStats::default());
        };
        let pending: i64 = row.get(0);
        let dead: i64 = row.get(1);
        let oldest: Option<i64> = row.get(2);
        Ok(QueueStats {
            pending: pending.max(0) as u64,
            dead: dead.max(0) as u64,
            oldest_pending: oldest.map(|t| t.max(0) as u64),
        })
    }

    async fn sweep_dedupe(&self, now: u64) -> Result<usize, StoreError> {
        let n = self
            .execute(&self.shared.queue_sql.sweep, &[&ms(now)])
            .await?;
        Ok(n as usize)
    }
}
