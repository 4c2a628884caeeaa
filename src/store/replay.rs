//! Replay protection: an exact copy of a signed request is refused inside the signature's
//! validity window.
//!
//! A signature covers the timestamp and the body, so two requests with one signature are the
//! same request. Signatures are remembered until their timestamp leaves the 5-minute window
//! (after that the signature check refuses them anyway). Events API retries carry a new
//! timestamp and signature, so they pass. The set is sharded to keep lock contention off the
//! request path.
//!
//! Gateways sharing a store (PostgreSQL) refuse each other's replays: after the local check,
//! a first sighting is claimed in the store ([`InstallationStore::claim_signature`], one
//! `INSERT ... ON CONFLICT DO NOTHING` into an unlogged table), and a signature another
//! gateway claimed first is a replay. While the store is unavailable each gateway checks
//! alone, and the request is not held up: a claim that takes longer than [`CLAIM_TIMEOUT`]
//! counts as a first sighting.
//!
//! A restart must not forget them: each first sighting is also handed to a journal task
//! ([`ReplayGuard::start`]) that writes them to the store in batches, durably, behind the
//! request path; at start the ones not yet forgotten are read back. A request accepted just
//! before a crash is remembered once its batch is flushed (milliseconds later).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::{InstallationStore, Signature, StoreError};
use crate::slack::signature::MAX_CLOCK_SKEW_SECS;

const SHARDS: usize = 16;
/// Expired entries of a shard are swept when it grows past this many.
const SWEEP_AT: usize = 4096;

/// How long a shared store's claim may take before the local check alone decides.
pub const CLAIM_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Signatures written to the store in one batch at most.
const JOURNAL_BATCH_MAX: usize = 4096;

/// Signatures seen recently.
pub struct ReplayGuard {
    shards: Vec<Mutex<Shard>>,
    /// Where first sightings go to be written to the store; unset until [`Self::start`].
    journal: OnceLock<mpsc::UnboundedSender<Journal>>,
    /// A store shared with other gateways, where first sightings are claimed.
    shared: OnceLock<Arc<dyn InstallationStore>>,
}

/// What the journal task is told.
enum Journal {
    Seen(Signature),
    /// Answer once everything sent before is written.
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Shard {
    seen: HashMap<[u8; 32], u64>,
    sweep_at: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            journal: OnceLock::new(),
            shared: OnceLock::new(),
        }
    }
}

impl ReplayGuard {
    /// Records a signature first seen now with request timestamp `ts`; false when it was
    /// already seen (a replay).
    pub fn first_sighting(&self, signature: [u8; 32], ts: u64, now: u64) -> bool {
        let forget_at = forget_at(ts, now);
        let mut shard = self.shards[signature[0] as usize % SHARDS]
            .lock()
            .expect("replay shard");
        if shard.seen.len() >= shard.sweep_at.max(SWEEP_AT) {
            shard.seen.retain(|_, until| *until > now);
            shard.sweep_at = shard.seen.len() * 2;
        }
        match shard.seen.get(&signature) {
            Some(until) if *until > now => false,
            _ => {
                shard.seen.insert(signature, forget_at);
                drop(shard);
                if let Some(journal) = self.journal.get() {
                    let _ = journal.send(Journal::Seen(Signature {
                        mac: signature,
                        forget_at,
                    }));
                }
                true
            }
        }
    }

    /// [`Self::first_sighting`], then, with a shared store, the claim that makes it a first
    /// sighting across every gateway sharing it.
    pub async fn admit(&self, signature: [u8; 32], ts: u64, now: u64) -> bool {
        if !self.first_sighting(signature, ts, now) {
            return false;
        }
        let Some(store) = self.shared.get() else {
            return true;
        };
        if store.unavailable().is_some() {
            return true;
        }
        let sig = Signature {
            mac: signature,
            forget_at: forget_at(ts, now),
        };
        match tokio::time::timeout(CLAIM_TIMEOUT, store.claim_signature(&sig, now)).await {
            Ok(Ok(first)) => first,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "replay claim failed; checked by this gateway alone");
                true
            }
            Err(_) => {
                tracing::debug!("replay claim timed out; checked by this gateway alone");
                true
            }
        }
    }

    /// Reads back the signatures `store` remembers, then journals every first sighting to
    /// it. Call once, before serving. A shared store needs neither: first sightings are
    /// claimed in it as they happen ([`Self::admit`]).
    pub async fn start(
        &self,
        store: Arc<dyn InstallationStore>,
    ) -> Result<tokio::task::JoinHandle<()>, StoreError> {
        if store.is_shared() {
            let _ = self.shared.set(store);
            return Ok(tokio::spawn(async {}));
        }
        let now = crate::http::unix_now();
        for s in store.recent_signatures(now).await? {
            let mut shard = self.shards[s.mac[0] as usize % SHARDS]
                .lock()
                .expect("replay shard");
            let until = shard.seen.entry(s.mac).or_insert(s.forget_at);
            *until = (*until).max(s.forget_at);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if self.journal.set(tx).is_err() {
            tracing::warn!("replay journal started twice; the first one keeps running");
        }
        Ok(tokio::spawn(write_journal(store, rx)))
    }

    /// Waits until every signature seen so far is written (at shutdown).
    pub async fn flush(&self) {
        let Some(journal) = self.journal.get() else {
            return;
        };
        let (done, written) = oneshot::channel();
        if journal.send(Journal::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }
}

/// When a signature first seen at `now` with timestamp `ts` may be forgotten: once the
/// timestamp has left the window.
fn forget_at(ts: u64, now: u64) -> u64 {
    ts.max(now) + MAX_CLOCK_SKEW_SECS + 1
}

/// The journal task: writes first sightings to the store, as many per batch as have
/// arrived meanwhile.
async fn write_journal(
    store: Arc<dyn InstallationStore>,
    mut rx: mpsc::UnboundedReceiver<Journal>,
) {
    let mut batch = Vec::new();
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(entry) = next {
            match entry {
                Journal::Seen(s) => batch.push(s),
                Journal::Flush(done) => waiting.push(done),
            }
            next = if batch.len() < JOURNAL_BATCH_MAX {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let now = crate::http::unix_now();
        if let Err(e) = store.remember_signatures(&batch, now).await {
            tracing::warn!(error = %e, count = batch.len(), "cannot record verified signatures; a restart may forget them");
        }
        batch.clear();
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once_within_the_window() {
        let g = ReplayGuard::default();
        let sig = [7u8; 32];
        assert!(g.first_sighting(sig, 1000, 1000));
        assert!(
            !g.first_sighting(sig, 1000, 1100),
            "replay inside the window"
        );
        assert!(g.first_sighting([8u8; 32], 1000, 1100), "another signature");
        assert!(
            g.first_sighting(sig, 1000, 1000 + MAX_CLOCK_SKEW_SECS + 2),
            "forgotten once the window passed"
        );
    }

    #[tokio::test]
    async fn first_sightings_are_journaled_and_read_back_by_the_next_guard() {
        let store: Arc<dyn InstallationStore> = Arc::new(crate::store::memory::MemoryStore::new());
        let now = crate::http::unix_now();
        let g = ReplayGuard::default();
        let _journal = g.start(store.clone()).await.unwrap();
        assert!(g.first_sighting([5u8; 32], now, now));
        assert!(
            !g.first_sighting([5u8; 32], now, now),
            "a replay is not journaled again"
        );
        g.flush().await;
        assert_eq!(store.recent_signatures(now).await.unwrap().len(), 1);
        // A new process: the signature is still a replay.
        let next = ReplayGuard::default();
        let _journal = next.start(store).await.unwrap();
        assert!(!next.first_sighting([5u8; 32], now, now + 10));
        assert!(next.first_sighting([6u8; 32], now, now + 10));
    }

    #[test]
    fn the_set_is_swept() {
        let g = ReplayGuard::default();
        for i in 0..(SWEEP_AT * SHARDS * 2) as u32 {
            let mut sig = [0u8; 32];
            sig[..4].copy_from_slice(&i.to_le_bytes());
            // Time moves on: a minute every 3000 requests.
            let now = i as u64 / 50;
            assert!(g.first_sighting(sig, now, now));
        }
        let total: usize = g.shards.iter().map(|s| s.lock().unwrap().seen.len()).sum();
        assert!(
            total < SWEEP_AT * SHARDS * 2,
            "old entries were swept ({total})"
        );
    }
}
