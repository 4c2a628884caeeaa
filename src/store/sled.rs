//! The embedded default backend: one `sled` tree, JSON records in a versioned envelope.
//!
//! Keys are `inst/{client_id}/{enterprise|-}/{team|-}/{bot|latest|user/{user_id}}`. A save
//! writes its records in one atomic batch and then flushes (sled's background flush runs only
//! every 500 ms, so without it a crash could lose an acknowledged install). Writes are
//! serialized by a mutex so the bot count stays exact; reads never wait on it.
//!
//! Used OAuth states live in two more trees: the markers by id, and the same keyed by expiry
//! so that the sweep is a range scan up to now (run on a blocking thread), never a scan of
//! every marker.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::queue::DeliveryQueue;
use super::read_cache::{Lookup, ReadCache};
use super::record::Codec;
use super::sealing::KeyRing;
use super::sled_flush::Flusher;
use super::sled_queue::SledQueue;
use super::{
    bot_key, check_id, latest_key, parse_record_key, record_key, save_keys, team_prefix, user_key,
    Installation, InstallationStore, RecordKind, Signature, StoreError, StoredRecord, TeamRef,
};

const TREE: &str = "installations";
/// The number of bot records, kept in the installations tree (outside every `inst/` prefix)
/// and written in the same atomic batch as the records it counts: opening a store then needs
/// no scan of every key, which would pull the whole tree into memory (about 150 MiB at
/// 100,000 installations).
const BOT_COUNT_KEY: &[u8] = b"meta/bot_count";
/// Where earlier versions kept every issued OAuth state; dropped at open (states are
/// self-verifying now, see [`crate::store::states`]).
const LEGACY_STATES: &str = "oauth_states";
/// Used-state markers: `id` → `keep_until` (u64, big-endian).
const USED_STATES: &str = "oauth_used_states";
/// The markers by expiry: `keep_until` (u64, big-endian) ‖ `id` → empty, so a sweep is a
/// range scan up to now.
const USED_STATES_BY_EXPIRY: &str = "oauth_used_states_by_expiry";
/// Verified signatures (replay protection), keyed by `forget_at` (big-endian) then the MAC:
/// the forgotten ones are a prefix of the tree, swept by a range scan.
const SIGNATURES: &str = "replay_signatures";
/// Forgotten signatures removed at most per [`InstallationStore::remember_signatures`] call,
/// so a sweep never holds up the journal for long.
const SIGNATURE_SWEEP_MAX: usize = 4096;

/// Installations in a sled database folder. Opened once per process (sled locks the folder).
pub struct SledStore {
    path: std::path::PathBuf,
    tree: sled::Tree,
    used_states: sled::Tree,
    used_states_by_expiry: sled::Tree,
    signatures: sled::Tree,
    writes: tokio::sync::Mutex<()>,
    bots: AtomicU64,
    /// Encodes records, sealing tokens at rest when `storage.encryption_key` is set.
    codec: Codec,
    /// Decoded records recently read: the request path then skips sled and JSON decoding.
    cache: ReadCache,
    /// Queued delivery's events, in trees of the same database.
    queue: SledQueue,
    /// The database's one flusher (its own and the queue's writes).
    flusher: Arc<Flusher>,
}

/// Decoded records kept in memory at most (about 1 KiB each).
const READ_CACHE_MAX_RECORDS: usize = 20_000;
/// sled's own page cache. Its default (1 GiB) would hold a large store entirely in memory.
const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How long an open waits for sled's file lock to be let go (see [`open_db`]).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled's database at `path`. sled's file lock outlives the last handle by a moment (its
/// flusher thread lets go of the file after the handle is dropped), so a store closed and
/// opened again at once in one process can find it still held: such an open is tried again
/// for up to [`LOCK_WAIT`]. A lock another running gateway holds fails after that wait.
pub fn open_db(path: &Path) -> sled::Result<sled::Db> {
    let config = sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(SLED_CACHE_BYTES)
        // No background flusher: every write that must be durable flushes through the one
        // grouped flusher (store/sled_flush.rs); sled 0.34's own, running beside it, can
        // deadlock its IO threads under a burst of flushes (sled#1308).
        .flush_every_ms(None);
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}

impl SledStore {
    /// Opens (or creates, mode 0700) the store folder; tokens are stored as given.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_sealed(path, None)
    }

    /// Opens the store with tokens sealed by `ring`.
    pub fn open_sealed(path: &Path, ring: Option<KeyRing>) -> Result<Self, StoreError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.display().to_string(),
            reason: super::error_chain(source.as_ref()),
        };
        create_private_dir(path).map_err(|e| open_err(Box::new(e)))?;
        let db = open_db(path).map_err(|e| open_err(Box::new(e)))?;
        let tree = db.open_tree(TREE).map_err(|e| open_err(Box::new(e)))?;
        let signatures = db
            .open_tree(SIGNATURES)
            .map_err(|e| open_err(Box::new(e)))?;
        let used_states = db
            .open_tree(USED_STATES)
            .map_err(|e| open_err(Box::new(e)))?;
        let used_states_by_expiry = db
            .open_tree(USED_STATES_BY_EXPIRY)
            .map_err(|e| open_err(Box::new(e)))?;
        db.drop_tree(LEGACY_STATES)
            .map_err(|e| open_err(Box::new(e)))?;
        let flusher = Arc::new(Flusher::new(db.clone()));
        let queue = SledQueue::open(&db, flusher.clone()).map_err(|e| open_err(Box::new(e)))?;
        let bots = match tree
            .get(BOT_COUNT_KEY)
            .map_err(|e| open_err(Box::new(e)))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        {
            Some(bytes) => u64::from_be_bytes(bytes),
            None => {
                // A store written before the count was kept: count once and keep it.
                let mut bots = 0u64;
                for item in tree.scan_prefix(b"inst/").keys() {
                    let k = item.map_err(|e| open_err(Box::new(e)))?;
                    if k.ends_with(b"/bot") {
                        bots += 1;
                    }
                }
                tree.insert(BOT_COUNT_KEY, &bots.to_be_bytes())
                    .and_then(|_| tree.flush())
                    .map_err(|e| open_err(Box::new(e)))?;
                bots
            }
        };
        Ok(SledStore {
            path: path.to_path_buf(),
            tree,
            used_states,
            used_states_by_expiry,
            signatures,
            writes: tokio::sync::Mutex::new(()),
            bots: AtomicU64::new(bots),
            codec: Codec { ring },
            cache: ReadCache::new(READ_CACHE_MAX_RECORDS),
            queue,
            flusher,
        })
    }

    /// The bot count once `batch` lands, with `added` bot records new and `removed` gone; a
    /// changed count joins the batch, so it is written atomically with the records. Call with
    /// `writes` held, and store the result in `bots` after the batch is applied.
    fn count_bots(&self, batch: &mut sled::Batch, added: u64, removed: u64) -> u64 {
        let count = (self.bots.load(Ordering::Relaxed) + added).saturating_sub(removed);
        if added != removed {
            batch.insert(BOT_COUNT_KEY, &count.to_be_bytes());
        }
        count
    }

    /// A record by key: from the cache, else read, decoded and cached. Shared, not copied.
    fn get(&self, key: &str) -> Result<Option<Arc<Installation>>, StoreError> {
        let generation = match self.cache.get(key) {
            Lookup::Hit(hit) => return Ok(Some(hit)),
            Lookup::Miss(generation) => generation,
        };
        let Some(bytes) = self.tree.get(key.as_bytes()).map_err(io)? else {
            return Ok(None);
        };
        let inst = Arc::new(self.codec.decode(key, &bytes)?.0);
        self.cache.fill(key, &inst, generation);
        Ok(Some(inst))
    }

    /// [`get`](Self::get), copied out for the owned lookups of the trait.
    fn get_owned(&self, key: &str) -> Result<Option<Installation>, StoreError> {
        Ok(self.get(key)?.map(Arc::unwrap_or_clone))
    }

    async fn remove_keys(&self, keys: Vec<sled::IVec>) -> Result<usize, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        let mut bots = 0;
        for k in &keys {
            if k.ends_with(b"/bot") {
                bots += 1;
            }
            batch.remove(k.clone());
        }
        let count = self.count_bots(&mut batch, 0, bots);
        self.tree.apply_batch(batch).map_err(io)?;
        let written: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
        self.cache.invalidate(Some(&written));
        self.bots.store(count, Ordering::Relaxed);
        self.flusher.flush().await?;
        Ok(keys.len())
    }

    async fn remove_existing(&self, keys: &[String]) -> Result<usize, StoreError> {
        let _w = self.writes.lock().await;
        let mut present = Vec::new();
        for k in keys {
            if self.tree.contains_key(k.as_bytes()).map_err(io)? {
                present.push(sled::IVec::from(k.as_bytes()));
            }
        }
        self.remove_keys(present).await
    }
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(Box::new(e))
}

/// `keep_until` (big-endian) ‖ `id`: a used-state marker's key in the expiry index.
fn expiry_key(keep_until: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + id.len());
    k.extend_from_slice(&keep_until.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// Creates the store folder readable by its owner only.
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path)
}

#[async_trait]
impl InstallationStore for SledStore {
    async fn save(&self, app: &str, inst: &Installation) -> Result<(), StoreError> {
        let keys = save_keys(app, inst)?;
        let bot_key = bot_key(app, &inst.team_ref())?;
        let mut batch = sled::Batch::default();
        for k in &keys {
            batch.insert(k.as_bytes(), self.codec.encode(k, inst));
        }
        let written: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let _w = self.writes.lock().await;
        let new_bot =
            inst.bot_token.is_some() && !self.tree.contains_key(bot_key.as_bytes()).map_err(io)?;
        let count = self.count_bots(&mut batch, u64::from(new_bot), 0);
        self.tree.apply_batch(batch).map_err(io)?;
        self.cache.invalidate(Some(&written));
        self.bots.store(count, Ordering::Relaxed);
        self.flusher.flush().await?;
        Ok(())
    }

    async fn find_bot(
        &self,
        app: &str,
        team: &TeamRef,
    ) -> Result<Option<Installation>, StoreError> {
        self.get_owned(&bot_key(app, team)?)
    }

    async fn find_user(
        &self,
        app: &str,
        team: &TeamRef,
        user_id: &str,
    ) -> Result<Option<Installation>, StoreError> {
        self.get_owned(&user_key(app, team, user_id)?)
    }

    async fn find_bot_shared(
        &self,
        app: &str,
        team: &TeamRef,
    ) -> Result<Option<Arc<Installation>>, StoreError> {
        self.get(&bot_key(app, team)?)
    }

    async fn find_user_shared(
        &self,
        app: &str,
        team: &TeamRef,
        user_id: &str,
    ) -> Result<Option<Arc<Installation>>, StoreError> {
        self.get(&user_key(app, team, user_id)?)
    }

    async fn find_latest(
        &self,
        app: &str,
        team: &TeamRef,
    ) -> Result<Option<Installation>, StoreError> {
        self.get_owned(&latest_key(app, team)?)
    }

    async fn delete_bot(&self, app: &str, team: &TeamRef) -> Result<usize, StoreError> {
        self.remove_existing(&[bot_key(app, team)?]).await
    }

    async fn delete_user(
        &self,
        app: &str,
        team: &TeamRef,
        user_id: &str,
    ) -> Result<usize, StoreError> {
        self.remove_existing(&[user_key(app, team, user_id)?]).await
    }

    async fn delete_team(&self, app: &str, team: &TeamRef) -> Result<usize, StoreError> {
        let prefix = team_prefix(app, team)?;
        let _w = self.writes.lock().await;
        let keys = self
            .tree
            .scan_prefix(prefix.as_bytes())
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        self.remove_keys(keys).await
    }

    async fn list(&self, app: &str) -> Result<Vec<StoredRecord>, StoreError> {
        let prefix = format!("inst/{}/", check_id(app)?);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item.map_err(io)?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let (team, kind) = parse_record_key(&prefix, &key)?;
            out.push(StoredRecord {
                team,
                kind,
                installation: self.codec.decode(&key, &v)?.0,
            });
        }
        Ok(out)
    }

    async fn update_record(
        &self,
        app: &str,
        team: &TeamRef,
        kind: &RecordKind,
        inst: &Installation,
    ) -> Result<(), StoreError> {
        let key = record_key(app, team, kind)?;
        let _w = self.writes.lock().await;
        let new_bot =
            *kind == RecordKind::Bot && !self.tree.contains_key(key.as_bytes()).map_err(io)?;
        let mut batch = sled::Batch::default();
        batch.insert(key.as_bytes(), self.codec.encode(&key, inst));
        let count = self.count_bots(&mut batch, u64::from(new_bot), 0);
        self.tree.apply_batch(batch).map_err(io)?;
        self.cache.invalidate(Some(&[key.as_bytes()]));
        self.bots.store(count, Ordering::Relaxed);
        self.flusher.flush().await?;
        Ok(())
    }

    async fn mark_state_used(&self, id: &str, keep_until: u64) -> Result<bool, StoreError> {
        let until = keep_until.to_be_bytes();
        // The index entry first: a crash between the two leaves an entry the sweep drops,
        // never a marker no sweep would find.
        self.used_states_by_expiry
            .insert(expiry_key(keep_until, id), &[])
            .map_err(io)?;
        // sled's compare-and-swap from nothing is atomic: one caller inserts, the others see
        // the marker.
        Ok(self
            .used_states
            .compare_and_swap(id.as_bytes(), None as Option<&[u8]>, Some(&until[..]))
            .map_err(io)?
            .is_ok())
    }

    async fn sweep_used_states(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let (used, by_expiry) = (self.used_states.clone(), self.used_states_by_expiry.clone());
        // Off the async runtime: removals touch sled's pages and may wait on its I/O.
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for item in by_expiry.range(..now.to_be_bytes()).keys().take(limit) {
                let k = item.map_err(io)?;
                let (until, id) = k.split_at(8);
                // Only the marker this entry indexes (same keep_until).
                let _ = used
                    .compare_and_swap(id, Some(until), None as Option<&[u8]>)
                    .map_err(io)?;
                by_expiry.remove(&k).map_err(io)?;
                n += 1;
            }
            Ok(n)
        })
        .await
        .map_err(|e| StoreError::Io(Box::new(e)))?
    }

    async fn used_state_count(&self) -> Result<u64, StoreError> {
        let used = self.used_states.clone();
        tokio::task::spawn_blocking(move || used.len() as u64)
            .await
            .map_err(|e| StoreError::Io(Box::new(e)))
    }

    fn bot_count(&self) -> u64 {
        self.bots.load(Ordering::Relaxed)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush().await?;
        Ok(())
    }

    async fn remember_signatures(&self, seen: &[Signature], now: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for s in seen {
            batch.insert(&signature_key(s)[..], &[][..]);
        }
        // The forgotten ones come first: remove a bounded run of them.
        let forgotten = self
            .signatures
            .range(
                ..signature_key(&Signature {
                    mac: [0; 32],
                    forget_at: now.saturating_add(1),
                }),
            )
            .keys()
            .take(SIGNATURE_SWEEP_MAX);
        for k in forgotten {
            batch.remove(k.map_err(io)?);
        }
        self.signatures.apply_batch(batch).map_err(io)?;
        // Durable at once (a crash right after must not forget them): the journal writes
        // one batch at a time, so under load a flush covers many signatures.
        self.flusher.flush().await?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("sled at {}", self.path.display())
    }

    fn deliveries(&self) -> Option<&dyn DeliveryQueue> {
        Some(&self.queue)
    }

    async fn reseal(&self) -> Result<usize, StoreError> {
        if self.codec.ring.is_none() {
            return Ok(0);
        }
        let _w = self.writes.lock().await;
        let mut n = 0;
        for item in self.tree.scan_prefix(b"inst/") {
            let (k, v) = item.map_err(io)?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let (inst, stale) = self.codec.decode(&key, &v)?;
            if stale {
                // Only if nobody changed it meanwhile.
                let new = self.codec.encode(&key, &inst);
                if self
                    .tree
                    .compare_and_swap(&k, Some(v), Some(new))
                    .map_err(io)?
                    .is_ok()
                {
                    n += 1;
                }
            }
        }
        self.cache.invalidate::<&[u8]>(None);
        self.flusher.flush().await?;
        Ok(n)
    }

    async fn recent_signatures(&self, now: u64) -> Result<Vec<Signature>, StoreError> {
        let from = signature_key(&Signature {
            mac: [0; 32],
            forget_at: now.saturating_add(1),
        });
        let mut out = Vec::new();
        for k in self.signatures.range(from..).keys() {
            let k = k.map_err(io)?;
            let (Some(at), Some(mac)) = (k.get(..8), k.get(8..40)) else {
                continue;
            };
            out.push(Signature {
                mac: mac.try_into().expect("32 bytes"),
                forget_at: at.try_into().map(u64::from_be_bytes).unwrap_or(0),
            });
        }
        Ok(out)
    }
}

/// A signature's key: `forget_at` big-endian, then the MAC.
fn signature_key(s: &Signature) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&s.forget_at.to_be_bytes());
    k[8..].copy_from_slice(&s.mac);
    k
}
