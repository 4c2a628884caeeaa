//! The delivery queue in sled, beside the installations: four trees, written under one lock
//! (one process owns a sled folder, so a lock is all a claim needs).
//!
//! - `deliveries`: id → the record ([`Delivery::encode`]);
//! - `deliveries_due`: `next_attempt_at` (u64, big-endian) ‖ id → empty, pending ones only,
//!   so a claim is a range scan up to now;
//! - `delivery_dedupe`: `api_app_id` ␟ `event_id` → remembered until (u64, big-endian);
//! - `delivery_dedupe_by_expiry`: until ‖ key → empty, so the sweep is a range scan.
//!
//! An accepted event is flushed to disk before `enqueue` returns: Slack gets its 200 only
//! for what a crash cannot lose.

use std::sync::Arc;

use async_trait::async_trait;

use super::queue::{AfterFailure, Delivery, DeliveryQueue, DeliveryState, QueueStats};
use super::sled_flush::Flusher;
use super::StoreError;

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(Box::new(e))
}

fn due_key(at: u64, id: &str) -> Vec<u8> {
    let mut k = at.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

pub struct SledQueue {
    flusher: Arc<Flusher>,
    deliveries: sled::Tree,
    due: sled::Tree,
    dedupe: sled::Tree,
    dedupe_by_expiry: sled::Tree,
    writes: tokio::sync::Mutex<()>,
}

impl SledQueue {
    pub fn open(db: &sled::Db, flusher: Arc<Flusher>) -> sled::Result<Self> {
        Ok(SledQueue {
            flusher,
            deliveries: db.open_tree("deliveries")?,
            due: db.open_tree("deliveries_due")?,
            dedupe: db.open_tree("delivery_dedupe")?,
            dedupe_by_expiry: db.open_tree("delivery_dedupe_by_expiry")?,
            writes: tokio::sync::Mutex::new(()),
        })
    }

    fn get(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        match self.deliveries.get(id.as_bytes()).map_err(io)? {
            Some(v) => Ok(Some(Delivery::decode(id, &v)?)),
            None => Ok(None),
        }
    }

    /// Writes `d` and its due key (pending only), replacing `old_due`.
    fn put(&self, d: &Delivery, old_due: Option<u64>) -> Result<(), StoreError> {
        if let Some(at) = old_due {
            self.due.remove(due_key(at, &d.id)).map_err(io)?;
        }
        self.deliveries
            .insert(d.id.as_bytes(), d.encode())
            .map_err(io)?;
        if d.state == DeliveryState::Pending {
            self.due
                .insert(due_key(d.next_attempt_at, &d.id), &[])
                .map_err(io)?;
        }
        Ok(())
    }

    fn old_due(d: &Delivery) -> Option<u64> {
        (d.state == DeliveryState::Pending).then_some(d.next_attempt_at)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush().await
    }
}

#[async_trait]
impl DeliveryQueue for SledQueue {
    async fn enqueue(&self, d: &Delivery, now: u64, dedupe_until: u64) -> Result<bool, StoreError> {
        {
            let _w = self.writes.lock().await;
            let key = d.dedupe_key();
            if let Some(v) = self.dedupe.get(key.as_bytes()).map_err(io)? {
                let until = u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
                if until > now {
                    return Ok(false);
                }
                self.dedupe_by_expiry
                    .remove(due_key(until, &key))
                    .map_err(io)?;
            }
            self.dedupe
                .insert(key.as_bytes(), &dedupe_until.to_be_bytes())
                .map_err(io)?;
            self.dedupe_by_expiry
                .insert(due_key(dedupe_until, &key), &[])
                .map_err(io)?;
            self.put(d, None)?;
        }
        self.flush().await?;
        Ok(true)
    }

    async fn is_duplicate(&self, d: &Delivery, now: u64) -> Result<bool, StoreError> {
        Ok(
            match self.dedupe.get(d.dedupe_key().as_bytes()).map_err(io)? {
                Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])) > now,
                None => false,
            },
        )
    }

    async fn claim(
        &self,
        now: u64,
        limit: usize,
        lease_until: u64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let _w = self.writes.lock().await;
        let end = due_key(now.saturating_add(1), "");
        let mut out = Vec::new();
        let keys: Vec<sled::IVec> = self
            .due
            .range(..end)
            .keys()
            .take(limit)
            .collect::<Result<_, _>>()
            .map_err(io)?;
        for k in keys {
            self.due.remove(&k).map_err(io)?;
            let id = String::from_utf8_lossy(&k[8..]).into_owned();
            let Some(mut d) = self.get(&id)? else {
                continue;
            };
            if d.state != DeliveryState::Pending {
                continue;
            }
            d.next_attempt_at = lease_until;
            self.put(&d, None)?;
            out.push(d);
        }
        Ok(out)
    }

    async fn delivered(&self, id: &str) -> Result<(), StoreError> {
        let _w = self.writes.lock().await;
        if let Some(d) = self.get(id)? {
            if let Some(at) = Self::old_due(&d) {
                self.due.remove(due_key(at, id)).map_err(io)?;
            }
            self.deliveries.remove(id.as_bytes()).map_err(io)?;
        }
        Ok(())
    }

    async fn failed(
        &self,
        id: &str,
        attempts: u32,
        error: &str,
        after: AfterFailure,
    ) -> Result<(), StoreError> {
        {
            let _w = self.writes.lock().await;
            let Some(mut d) = self.get(id)? else {
                return Ok(());
            };
            let old = Self::old_due(&d);
            d.attempts = attempts;
            d.last_error = Some(error.to_owned());
            match after {
                AfterFailure::RetryAt(at) => d.next_attempt_at = at,
                AfterFailure::Dead => d.state = DeliveryState::Dead,
            }
            self.put(&d, old)?;
        }
        if after == AfterFailure::Dead {
            self.flush().await?;
        }
        Ok(())
    }

    async fn list_deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut out = Vec::new();
        for kv in self.deliveries.iter() {
            let (k, v) = kv.map_err(io)?;
            let d = Delivery::decode(&String::from_utf8_lossy(&k), &v)?;
            if state.is_none_or(|s| d.state == s) {
                out.push(d);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn retry_delivery(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        {
            let _w = self.writes.lock().await;
            let Some(mut d) = self.get(id)? else {
                return Ok(false);
            };
            // A pending one is left as it is: it may be being delivered right now.
            if d.state != DeliveryState::Dead {
                return Ok(true);
            }
            d.attempts = 0;
            d.state = DeliveryState::Pending;
            d.next_attempt_at = now;
            self.put(&d, None)?;
        }
        self.flush().await?;
        Ok(true)
    }

    async fn retry_dead(&self, now: u64) -> Result<usize, StoreError> {
        let n = {
            let _w = self.writes.lock().await;
            let dead = self
                .list_deliveries(Some(DeliveryState::Dead), usize::MAX)
                .await?;
            for mut d in dead.iter().cloned() {
                d.state = DeliveryState::Pending;
                d.attempts = 0;
                d.next_attempt_at = now;
                self.put(&d, None)?;
            }
            dead.len()
        };
        self.flush().await?;
        Ok(n)
    }

    async fn drop_delivery(&self, id: &str) -> Result<bool, StoreError> {
        {
            let _w = self.writes.lock().await;
            let Some(d) = self.get(id)? else {
                return Ok(false);
            };
            if let Some(at) = Self::old_due(&d) {
                self.due.remove(due_key(at, id)).map_err(io)?;
            }
            self.deliveries.remove(id.as_bytes()).map_err(io)?;
        }
        self.flush().await?;
        Ok(true)
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let pending = self.due.len() as u64;
        let total = self.deliveries.len() as u64;
        // Ids begin with the arrival time, so the oldest pending one is found by walking the
        // records in id order to the first pending one (dead letters first, if any).
        let mut oldest_pending = None;
        if pending > 0 {
            for kv in self.deliveries.iter() {
                let (k, v) = kv.map_err(io)?;
                let d = Delivery::decode(&String::from_utf8_lossy(&k), &v)?;
                if d.state == DeliveryState::Pending {
                    oldest_pending = Some(d.received_at);
                    break;
                }
            }
        }
        Ok(QueueStats {
            pending,
            dead: total.saturating_sub(pending),
            oldest_pending,
        })
    }

    async fn sweep_dedupe(&self, now: u64) -> Result<usize, StoreError> {
        let _w = self.writes.lock().await;
        let end = due_key(now.saturating_add(1), "");
        let keys: Vec<sled::IVec> = self
            .dedupe_by_expiry
            .range(..end)
            .keys()
            .take(10_000)
            .collect::<Result<_, _>>()
            .map_err(io)?;
        for k in &keys {
            self.dedupe_by_expiry.remove(k).map_err(io)?;
            self.dedupe.remove(&k[8..]).map_err(io)?;
        }
        Ok(keys.len())
    }
}
