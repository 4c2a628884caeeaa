//! Queued delivery's storage: Events API callbacks accepted from Slack and waiting for the
//! upstream, each stored durably before Slack's 200, claimed by one deliverer at a time
//! (a lease: a deliverer that dies lets go when it ends), removed once delivered, kept as a
//! dead letter after the last failed attempt.
//!
//! Times are Unix milliseconds. A delivery's `next_attempt_at` is both when it is due and,
//! while an attempt runs, its lease: a claim moves it to the lease's end, so a claimed
//! delivery is due again only if its deliverer never reports.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

/// Who sent an accepted event, and how: what direct forwarding would have built its
/// forwarding headers from, so a delivery carries the same (the peer, its scheme, and the
/// request's headers as they came, its signature aside: a delivery is signed afresh).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub peer: String,
    pub scheme: String,
    pub headers: Vec<(String, String)>,
}

/// An accepted event, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub api_app_id: String,
    pub team_id: Option<String>,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub received_at: u64,
    pub next_attempt_at: u64,
    /// The Slack path it arrived on (the first of `upstream.slack_paths` from Socket Mode).
    pub path: String,
    pub content_type: String,
    #[serde(default)]
    pub sender: Sender,
    #[serde(skip)]
    pub body: Bytes,
}

impl Delivery {
    /// A new pending delivery of `body`, due at once.
    pub fn new(
        event_id: String,
        api_app_id: String,
        team_id: Option<String>,
        path: String,
        content_type: String,
        body: Bytes,
        now: u64,
    ) -> Self {
        Delivery {
            id: new_id(now),
            event_id,
            api_app_id,
            team_id,
            state: DeliveryState::Pending,
            attempts: 0,
            last_error: None,
            received_at: now,
            next_attempt_at: now,
            path,
            content_type,
            sender: Sender::default(),
            body,
        }
    }

    /// The key under which its acceptance is remembered for the dedupe window.
    pub fn dedupe_key(&self) -> String {
        format!("{}\u{1f}{}", self.api_app_id, self.event_id)
    }

    /// The record as bytes: its fields as JSON, a newline, the body as it came.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).expect("a delivery serializes");
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.to_owned(),
            reason,
        };
        let split = memchr::memchr(b'\n', bytes).ok_or_else(|| corrupt("no body".into()))?;
        let mut d: Delivery =
            serde_json::from_slice(&bytes[..split]).map_err(|e| corrupt(e.to_string()))?;
        d.body = Bytes::copy_from_slice(&bytes[split + 1..]);
        Ok(d)
    }
}

/// A new delivery id: sortable by arrival, unique (the arrival in ms and 64 random bits).
fn new_id(now: u64) -> String {
    format!("d{now:012x}{:016x}", rand::random::<u64>())
}

/// Whether `id` could be a delivery id (checked before it becomes a key).
pub fn valid_id(id: &str) -> bool {
    id.len() == 29 && id.starts_with('d') && id[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Tried again at this time.
    RetryAt(u64),
    /// No attempt left: a dead letter.
    Dead,
}

/// The queue's size, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub pending: u64,
    pub dead: u64,
    /// When the oldest pending delivery was received.
    pub oldest_pending: Option<u64>,
}

/// Queued delivery's storage. Implementations must pass [`super::queue_contract::run_all`].
#[async_trait]
pub trait DeliveryQueue: Send + Sync + 'static {
    /// Stores `d` durably, unless its dedupe key was accepted before and is remembered until
    /// after `now`; remembers the key until `dedupe_until`. `false`: a duplicate, not stored.
    async fn enqueue(&self, d: &Delivery, now: u64, dedupe_until: u64) -> Result<bool, StoreError>;

    /// Whether `d`'s dedupe key is remembered after `now` (an enqueue would find it a
    /// duplicate). Lets a caller skip work for a duplicate before it enqueues.
    async fn is_duplicate(&self, d: &Delivery, now: u64) -> Result<bool, StoreError>;

    /// Up to `limit` pending deliveries due at `now`, oldest due first, each leased until
    /// `lease_until` (no other claim gets it before then).
    async fn claim(
        &self,
        now: u64,
        limit: usize,
        lease_until: u64,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Delivered: removed. Unknown ids are ignored.
    async fn delivered(&self, id: &str) -> Result<(), StoreError>;

    /// Attempt number `attempts` failed with `error`.
    async fn failed(
        &self,
        id: &str,
        attempts: u32,
        error: &str,
        after: AfterFailure,
    ) -> Result<(), StoreError>;

    /// Deliveries in `state` (both without one), oldest first, bodies included.
    async fn list_deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// A dead letter back to pending, due at `now`, its attempts reset; a pending one is
    /// made due at `now` too. `false`: no such delivery.
    async fn retry_delivery(&self, id: &str, now: u64) -> Result<bool, StoreError>;

    /// Every dead letter back to pending, due at `now`; how many.
    async fn retry_dead(&self, now: u64) -> Result<usize, StoreError>;

    /// Removes one delivery; `false`: no such delivery.
    async fn drop_delivery(&self, id: &str) -> Result<bool, StoreError>;

    async fn queue_stats(&self) -> Result<QueueStats, StoreError>;

    /// Forgets dedupe keys remembered until before `now`; how many.
    async fn sweep_dedupe(&self, now: u64) -> Result<usize, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_with_any_body() {
        let d = Delivery::new(
            "Ev1".into(),
            "A1".into(),
            Some("T1".into()),
            "/slack/events".into(),
            "application/json".into(),
            Bytes::from_static(b"{\"a\":\n1}\n\x00"),
            1_700_000_000_000,
        );
        assert!(valid_id(&d.id), "{}", d.id);
        let back = Delivery::decode("k", &d.encode()).unwrap();
        assert_eq!(back, d);
        assert!(Delivery::decode("k", b"{}").is_err());
        assert!(!valid_id("../x") && !valid_id(""));
    }
}
