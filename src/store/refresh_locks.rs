//! One token refresh per record at a time, in this process: the lock a request takes before
//! it refreshes a rotating token (see `oauth::rotation`), so concurrent requests that find
//! one expiring token make one refresh call and the others use its result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{RecordKind, TeamRef};

/// A record: the app, its team and which record of the team.
pub type LockKey = (String, TeamRef, RecordKind);

/// Per-record refresh locks, forgotten once nobody holds or waits on them.
#[derive(Default)]
pub struct RefreshLocks {
    locks: Mutex<HashMap<LockKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl RefreshLocks {
    /// The lock of `key`, shared by everyone who asks for it until [`Self::release`].
    pub fn lock_for(&self, key: &LockKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("rotation lock map");
        locks.entry(key.clone()).or_default().clone()
    }

    /// Gives `lock` back; the map forgets it when nobody else holds or waits on it.
    pub fn release(&self, key: &LockKey, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().expect("rotation lock map");
        // Two references: ours and the map's. Nobody else waits: forget the lock.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(key);
        }
    }
}
