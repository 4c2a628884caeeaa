//! Replay protection: an exact copy of a signed request is refused inside the signature's
//! validity window.
//!
//! A signature covers the timestamp and the body, so two requests with one signature are the
//! same request. Signatures are remembered until their timestamp leaves the 5-minute window
//! (after that the signature check refuses them anyway). Events API retries carry a new
//! timestamp and signature, so they pass. The set is sharded to keep lock contention off the
//! request path.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::slack::signature::MAX_CLOCK_SKEW_SECS;

const SHARDS: usize = 16;
/// Expired entries of a shard are swept when it grows past this many.
const SWEEP_AT: usize = 4096;

/// Signatures seen recently.
pub struct ReplayGuard {
    shards: Vec<Mutex<Shard>>,
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
        }
    }
}

impl ReplayGuard {
    /// Records a signature first seen now with request timestamp `ts`; false when it was
    /// already seen (a replay).
    pub fn first_sighting(&self, signature: [u8; 32], ts: u64, now: u64) -> bool {
        let forget_at = ts.max(now) + MAX_CLOCK_SKEW_SECS + 1;
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
                true
            }
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
