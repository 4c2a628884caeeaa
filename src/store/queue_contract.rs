//! The behaviour every [`DeliveryQueue`] must have, run against each backend (an empty queue
//! each time): memory in unit tests, sled and PostgreSQL in `tests/store_contract.rs`.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use super::queue::{AfterFailure, Delivery, DeliveryQueue, DeliveryState, QueueStats};
use super::InstallationStore;

const T0: u64 = 1_700_000_000_000;

fn event(event_id: &str, at: u64) -> Delivery {
    Delivery::new(
        event_id.to_owned(),
        "A1".to_owned(),
        Some("T1".to_owned()),
        "/slack/events".to_owned(),
        "application/json".to_owned(),
        Bytes::from(format!("{{\"event_id\":\"{event_id}\"}}\n\u{0}\u{7f}")),
        at,
    )
}

fn queue(store: &dyn InstallationStore) -> &dyn DeliveryQueue {
    store
        .deliveries()
        .expect("a backend under the queue contract has a queue")
}

/// Every check, in order, on the empty queue of `store`.
pub async fn run_all(store: Arc<dyn InstallationStore>) {
    claims_lease_and_deliver(queue(store.as_ref())).await;
    dedupe_holds_within_the_window(queue(store.as_ref())).await;
    failures_retry_then_die(queue(store.as_ref())).await;
    concurrent_claims_take_each_delivery_once(store).await;
}

async fn claims_lease_and_deliver(q: &dyn DeliveryQueue) {
    let a = event("EvA", T0);
    let b = event("EvB", T0 + 1);
    assert!(q.enqueue(&a, T0, T0 + 60_000).await.unwrap());
    assert!(q.enqueue(&b, T0 + 1, T0 + 60_000).await.unwrap());
    assert_eq!(
        q.queue_stats().await.unwrap(),
        QueueStats {
            pending: 2,
            dead: 0,
            oldest_pending: Some(T0)
        }
    );
    let got = q.claim(T0 + 5, 1, T0 + 10_000).await.unwrap();
    assert_eq!(got.len(), 1, "the limit holds");
    assert_eq!(got[0].id, a.id, "oldest due first");
    assert_eq!(got[0].body, a.body, "the body byte for byte");
    assert_eq!(
        (got[0].event_id.as_str(), got[0].team_id.as_deref()),
        ("EvA", Some("T1"))
    );
    assert!(
        q.retry_delivery(&a.id, T0 + 5).await.unwrap(),
        "a pending delivery is found"
    );
    let got = q.claim(T0 + 5, 10, T0 + 10_000).await.unwrap();
    assert_eq!(
        got.iter().map(|d| &d.id).collect::<Vec<_>>(),
        [&b.id],
        "a leased delivery is not claimed again, retried or not"
    );
    assert!(q
        .claim(T0 + 9_999, 10, T0 + 20_000)
        .await
        .unwrap()
        .is_empty());
    let again = q.claim(T0 + 10_000, 10, T0 + 20_000).await.unwrap();
    assert_eq!(again.len(), 2, "a lapsed lease makes them due again");
    q.delivered(&a.id).await.unwrap();
    q.delivered(&b.id).await.unwrap();
    q.delivered("d000000000000ffffffffffffffff").await.unwrap();
    assert!(q.list_deliveries(None, 100).await.unwrap().is_empty());
    assert_eq!(q.queue_stats().await.unwrap(), QueueStats::default());
}

async fn dedupe_holds_within_the_window(q: &dyn DeliveryQueue) {
    let first = event("EvDup", T0);
    assert!(q.enqueue(&first, T0, T0 + 1_000).await.unwrap());
    q.delivered(&first.id).await.unwrap();
    let retry = event("EvDup", T0 + 500);
    assert!(q.is_duplicate(&retry, T0 + 500).await.unwrap());
    assert!(
        !q.is_duplicate(&retry, T0 + 1_000).await.unwrap(),
        "the window ended"
    );
    assert!(!q.is_duplicate(&event("EvOther", T0), T0).await.unwrap());
    assert!(
        !q.enqueue(&retry, T0 + 500, T0 + 1_500).await.unwrap(),
        "accepted within the window, even once delivered"
    );
    let mut other_app = event("EvDup", T0 + 500);
    other_app.api_app_id = "A2".into();
    assert!(q.enqueue(&other_app, T0 + 500, T0 + 1_500).await.unwrap());
    q.delivered(&other_app.id).await.unwrap();
    assert!(q.list_deliveries(None, 100).await.unwrap().is_empty());
    assert_eq!(q.sweep_dedupe(T0 + 1_000).await.unwrap(), 1);
    let later = event("EvDup", T0 + 1_000);
    assert!(
        q.enqueue(&later, T0 + 1_000, T0 + 2_000).await.unwrap(),
        "after the window it is a new event"
    );
    q.delivered(&later.id).await.unwrap();
    assert_eq!(q.sweep_dedupe(T0 + 10_000).await.unwrap(), 2);
}

async fn failures_retry_then_die(q: &dyn DeliveryQueue) {
    let d = event("EvFail", T0);
    assert!(q.enqueue(&d, T0, T0 + 60_000).await.unwrap());
    q.claim(T0, 10, T0 + 10_000).await.unwrap();
    q.failed(&d.id, 1, "HTTP 500", AfterFailure::RetryAt(T0 + 2_000))
        .await
        .unwrap();
    assert!(q
        .claim(T0 + 1_999, 10, T0 + 20_000)
        .await
        .unwrap()
        .is_empty());
    let got = q.claim(T0 + 2_000, 10, T0 + 20_000).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].attempts, got[0].last_error.as_deref()),
        (1, Some("HTTP 500"))
    );
    q.failed(&d.id, 2, "timed out", AfterFailure::Dead)
        .await
        .unwrap();
    assert!(q
        .claim(u64::MAX / 2, 10, u64::MAX / 2)
        .await
        .unwrap()
        .is_empty());
    let dead = q
        .list_deliveries(Some(DeliveryState::Dead), 100)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].state,
            dead[0].attempts,
            dead[0].last_error.as_deref()
        ),
        (DeliveryState::Dead, 2, Some("timed out"))
    );
    assert!(q
        .list_deliveries(Some(DeliveryState::Pending), 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        q.queue_stats().await.unwrap(),
        QueueStats {
            pending: 0,
            dead: 1,
            oldest_pending: None
        }
    );
    assert!(q.retry_delivery(&d.id, T0 + 30_000).await.unwrap());
    let back = q.claim(T0 + 30_000, 10, T0 + 40_000).await.unwrap();
    assert_eq!(
        (back.len(), back[0].attempts, back[0].state),
        (1, 0, DeliveryState::Pending),
        "a retried dead letter starts over"
    );
    q.failed(&d.id, 1, "x", AfterFailure::Dead).await.unwrap();
    let e = event("EvFail2", T0);
    assert!(q.enqueue(&e, T0, T0 + 60_000).await.unwrap());
    q.failed(&e.id, 3, "y", AfterFailure::Dead).await.unwrap();
    assert_eq!(q.retry_dead(T0 + 50_000).await.unwrap(), 2);
    assert_eq!(q.retry_dead(T0 + 50_000).await.unwrap(), 0);
    assert_eq!(q.queue_stats().await.unwrap().pending, 2);
    assert!(q.drop_delivery(&d.id).await.unwrap());
    assert!(!q.drop_delivery(&d.id).await.unwrap());
    assert!(!q.retry_delivery(&d.id, T0).await.unwrap());
    assert!(q.drop_delivery(&e.id).await.unwrap());
    assert_eq!(q.queue_stats().await.unwrap(), QueueStats::default());
}

async fn concurrent_claims_take_each_delivery_once(store: Arc<dyn InstallationStore>) {
    let q = queue(store.as_ref());
    let mut ids = HashSet::new();
    for i in 0..40 {
        let d = event(&format!("EvC{i}"), T0 + i);
        assert!(q.enqueue(&d, T0 + i, T0 + 60_000).await.unwrap());
        ids.insert(d.id);
    }
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = queue(store.as_ref())
                        .claim(T0 + 100, 3, T0 + 100_000)
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch.into_iter().map(|d| d.id));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    assert_eq!(claimed.len(), 40, "each claimed exactly once");
    assert_eq!(claimed.iter().cloned().collect::<HashSet<_>>(), ids);
    for id in &ids {
        q.delivered(id).await.unwrap();
    }
    q.sweep_dedupe(u64::MAX).await.unwrap();
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_memory_queue_passes() {
        super::run_all(std::sync::Arc::new(crate::store::memory::MemoryStore::new())).await;
    }
}
