//! The delivery queue in memory: [`super::memory::MemoryStore`]'s, and the reference the
//! queue contract keeps the durable backends honest against.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::queue::{AfterFailure, Delivery, DeliveryQueue, DeliveryState, QueueStats};
use super::StoreError;

#[derive(Default)]
pub struct MemoryQueue {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    deliveries: BTreeMap<String, Delivery>,
    dedupe: HashMap<String, u64>,
}

impl MemoryQueue {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("queue lock"))
    }
}

#[async_trait]
impl DeliveryQueue for MemoryQueue {
    async fn enqueue(&self, d: &Delivery, now: u64, dedupe_until: u64) -> Result<bool, StoreError> {
        Ok(self.with(|q| {
            let key = d.dedupe_key();
            if q.dedupe.get(&key).is_some_and(|until| *until > now) {
                return false;
            }
            q.dedupe.insert(key, dedupe_until);
            q.deliveries.insert(d.id.clone(), d.clone());
            true
        }))
    }

    async fn is_duplicate(&self, d: &Delivery, now: u64) -> Result<bool, StoreError> {
        Ok(self.with(|q| q.dedupe.get(&d.dedupe_key()).is_some_and(|u| *u > now)))
    }

    async fn claim(
        &self,
        now: u64,
        limit: usize,
        lease_until: u64,
    ) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.with(|q| {
            let mut due: Vec<&mut Delivery> = q
                .deliveries
                .values_mut()
                .filter(|d| d.state == DeliveryState::Pending && d.next_attempt_at <= now)
                .collect();
            due.sort_by_key(|d| (d.next_attempt_at, d.id.clone()));
            due.into_iter()
                .take(limit)
                .map(|d| {
                    d.next_attempt_at = lease_until;
                    d.clone()
                })
                .collect()
        }))
    }

    async fn delivered(&self, id: &str) -> Result<(), StoreError> {
        self.with(|q| q.deliveries.remove(id));
        Ok(())
    }

    async fn failed(
        &self,
        id: &str,
        attempts: u32,
        error: &str,
        after: AfterFailure,
    ) -> Result<(), StoreError> {
        self.with(|q| {
            if let Some(d) = q.deliveries.get_mut(id) {
                d.attempts = attempts;
                d.last_error = Some(error.to_owned());
                match after {
                    AfterFailure::RetryAt(at) => d.next_attempt_at = at,
                    AfterFailure::Dead => d.state = DeliveryState::Dead,
                }
            }
        });
        Ok(())
    }

    async fn list_deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.with(|q| {
            q.deliveries
                .values()
                .filter(|d| state.is_none_or(|s| d.state == s))
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    async fn retry_delivery(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        Ok(self.with(|q| match q.deliveries.get_mut(id) {
            Some(d) => {
                if d.state == DeliveryState::Dead {
                    d.attempts = 0;
                    d.state = DeliveryState::Pending;
                    d.next_attempt_at = now;
                }
                true
            }
            None => false,
        }))
    }

    async fn retry_dead(&self, now: u64) -> Result<usize, StoreError> {
        Ok(self.with(|q| {
            let mut n = 0;
            for d in q.deliveries.values_mut() {
                if d.state == DeliveryState::Dead {
                    d.state = DeliveryState::Pending;
                    d.attempts = 0;
                    d.next_attempt_at = now;
                    n += 1;
                }
            }
            n
        }))
    }

    async fn drop_delivery(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.with(|q| q.deliveries.remove(id).is_some()))
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        Ok(self.with(|q| {
            let mut s = QueueStats::default();
            for d in q.deliveries.values() {
                match d.state {
                    DeliveryState::Pending => {
                        s.pending += 1;
                        s.oldest_pending = Some(
                            s.oldest_pending
                                .map_or(d.received_at, |o| o.min(d.received_at)),
                        );
                    }
                    DeliveryState::Dead => s.dead += 1,
                }
            }
            s
        }))
    }

    async fn sweep_dedupe(&self, now: u64) -> Result<usize, StoreError> {
        Ok(self.with(|q| {
            let before = q.dedupe.len();
            q.dedupe.retain(|_, until| *until > now);
            before - q.dedupe.len()
        }))
    }
}
