//! Replay claims in batches: the signatures that arrive while a claim is on its way to the
//! database go together in the next statement, so under load one round trip and one
//! statement serve many requests instead of one each. A lone request still goes at once.
//!
//! Each request hands its signature to the batcher and waits for its answer. The batcher
//! takes everything waiting (up to [`BATCH_MAX`]) and runs one `INSERT ... SELECT unnest(...)
//! ON CONFLICT ... RETURNING mac`: a returned MAC was claimed by this call. At most
//! [`IN_FLIGHT`] statements run at once, so a slow database does not take the whole pool.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{db, sql_int, PgStore, Shared};
use crate::store::{Signature, StoreError};

/// Signatures claimed by one statement at most.
const BATCH_MAX: usize = 256;
/// Claim statements running at once at most.
const IN_FLIGHT: usize = 4;

/// One request's claim and where its answer goes.
pub(super) struct Claim {
    pub sig: Signature,
    pub now: u64,
    pub answer: oneshot::Sender<Result<bool, StoreError>>,
}

/// Collects claims into batches and runs them; ends when every sender is gone.
pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Claim>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Whatever arrived while waiting for a slot joins this batch.
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            claim_batch(&shared, batch).await;
            drop(slot);
        });
    }
}

async fn claim_batch(shared: &Shared, batch: Vec<Claim>) {
    // A MAC twice in one statement is an error in PostgreSQL; the second copy is a replay of
    // the first anyway.
    let mut macs: Vec<&[u8]> = Vec::with_capacity(batch.len());
    let mut until = Vec::with_capacity(batch.len());
    let mut unique = HashSet::with_capacity(batch.len());
    for c in &batch {
        if unique.insert(c.sig.mac) {
            macs.push(&c.sig.mac[..]);
            until.push(sql_int(c.sig.forget_at));
        }
    }
    let now = sql_int(batch.iter().map(|c| c.now).max().unwrap_or(0));
    let result = PgStore::op_on(shared, async {
        let c = PgStore::client_of(shared).await?;
        let st = c
            .prepare_cached(&shared.sql.claim_signatures)
            .await
            .map_err(db)?;
        let rows = c.query(&st, &[&macs, &until, &now]).await.map_err(db)?;
        Ok(rows
            .iter()
            .filter_map(|r| <[u8; 32]>::try_from(r.get::<_, &[u8]>(0)).ok())
            .collect::<HashSet<[u8; 32]>>())
    })
    .await;
    match result {
        Ok(mut claimed) => {
            for c in batch {
                // Only the first copy of a MAC takes the claim.
                let _ = c.answer.send(Ok(claimed.remove(&c.sig.mac)));
            }
        }
        Err(e) => {
            let reason = e.to_string();
            for c in batch {
                let _ = c.answer.send(Err(StoreError::Unavailable(reason.clone())));
            }
        }
    }
}
