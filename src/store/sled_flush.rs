//! One flush at a time for a sled database, shared by everything that writes to it.
//!
//! sled 0.34's `flush_async` can deadlock when several run at once (spacejam/sled#1308: under
//! a burst of queued events every IO thread hung). So flushes are serialised here, and
//! grouped: a caller whose writes were made before a flush began is made durable by that
//! flush, and does not start another (group commit: a burst costs a few flushes, not one
//! each).

use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;

pub(crate) struct Flusher {
    db: sled::Db,
    /// Tickets handed out: one per caller, taken after its writes.
    written: AtomicU64,
    /// Every ticket up to this one is durable.
    durable: AtomicU64,
    lock: tokio::sync::Mutex<()>,
}

impl Flusher {
    pub(crate) fn new(db: sled::Db) -> Self {
        Flusher {
            db,
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Makes everything the caller wrote before this call durable.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let mine = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let _one = self.lock.lock().await;
        if self.durable.load(Ordering::SeqCst) >= mine {
            return Ok(());
        }
        // Every ticket up to here was taken after its writes, so this flush covers them.
        let upto = self.written.load(Ordering::SeqCst);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Io(Box::new(e)))?
            .map_err(|e| StoreError::Io(Box::new(e)))?;
        self.durable.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }
}
