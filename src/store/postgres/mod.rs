//! The PostgreSQL backend (`storage.backend = "postgres"`): one database shared by any number
//! of gateways.
//!
//! Records are sled's, row for row: the same keys ([`super::record_key`]) and the same JSON
//! envelope with the same sealing ([`super::record::Codec`]), so export and import move them
//! between the two unchanged. What several replicas need on top of sled:
//!
//! - **A local read cache, invalidated across replicas.** The request path reads decoded
//!   records from memory and touches the database only on a miss; every write logs its keys
//!   and NOTIFYs them, and [`watch`] forgets them on every replica within about a second, or
//!   drops the whole cache after a lost connection. Owned reads (`find_bot`, `find_user`,
//!   `find_latest`: token rotation, the admin API) always read the database.
//! - **Atomic claims.** A used OAuth state, a verified signature and a refresh lease are each
//!   claimed with one `INSERT ... ON CONFLICT`: of any number of replicas, one wins.
//! - **Outages.** Every call gives up after `op_timeout` with [`StoreError::Unavailable`];
//!   the watcher marks the store unavailable for `/readyz` until it reconnects.
//!
//! - **Queued delivery** ([`queue`]): deliveries claimed with `FOR UPDATE SKIP LOCKED`.
//!
//! Migrations ([`sql::MIGRATIONS`]) are applied at open under an advisory lock.

mod claims;
mod connect;
mod queue;
mod sql;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;

use super::read_cache::{Lookup, ReadCache};
use super::record::Codec;
use super::sealing::KeyRing;
use super::{
    bot_key, check_id, latest_key, parse_record_key, record_key, save_keys, team_prefix, user_key,
    Installation, InstallationStore, RecordKind, Signature, StoreError, StoredRecord, TeamRef,
};
use crate::config::PostgresConfig;
use sql::Sql;
use watch::AbortOnDrop;

/// Decoded records kept in memory at most per replica (about 1 KiB each); past it, a miss
/// evicts an arbitrary record.
const READ_CACHE_MAX_RECORDS: usize = 50_000;
/// A NOTIFY payload holds at most 8000 bytes; past this the payload says "everything".
const NOTIFY_MAX: usize = 7000;

/// How the store behaves when the database is slow or away.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long [`PgStore::open`] keeps trying to reach the database.
    pub start: Duration,
    /// How long one call (a pool checkout and its queries) may take.
    pub op: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start: Duration::from_secs(30),
            op: Duration::from_secs(2),
        }
    }
}

/// Installations in a PostgreSQL schema.
pub struct PgStore {
    shared: Arc<Shared>,
    /// Where replay claims go to be batched ([`claims`]).
    claims: tokio::sync::mpsc::UnboundedSender<claims::Claim>,
    _watcher: AbortOnDrop,
    _claims: AbortOnDrop,
}

/// What the store and its watcher share.
pub(super) struct Shared {
    pg: tokio_postgres::Config,
    pool: Pool,
    sql: Sql,
    queue_sql: queue::QueueSql,
    codec: Codec,
    cache: ReadCache,
    bots: AtomicU64,
    /// Why the database cannot be used now; `None` while it can.
    down: Mutex<Option<String>>,
    /// How many times the watcher has connected (tests wait on it).
    connected: AtomicU64,
    /// `host:port` of the database, for messages.
    hosts: String,
    /// The URL without its password.
    shown: String,
    /// This process's name in refresh leases and the migrations table.
    holder: String,
    op_timeout: Duration,
}

impl Shared {
    fn set_down(&self, reason: Option<String>) {
        let mut down = self.down.lock().expect("health lock");
        match (&*down, &reason) {
            (None, Some(r)) => tracing::error!(reason = %r, "installation store unavailable"),
            (Some(_), None) => {
                tracing::info!(store = %self.shown, "installation store available again")
            }
            _ => {}
        }
        *down = reason;
    }
}

impl PgStore {
    /// Connects (retrying for [`Timeouts::start`] while the database cannot be reached),
    /// applies the migrations and starts the watcher.
    pub async fn open(
        cfg: &PostgresConfig,
        ring: Option<KeyRing>,
        timeouts: Timeouts,
    ) -> Result<Self, StoreError> {
        let pg = connect::pg_config(&cfg.url)?;
        let holder = format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        connect::migrate_with_retry(&pg, cfg, &holder, timeouts.start).await?;
        let pool = connect::pool(pg.clone(), cfg.pool_size, timeouts.op).map_err(|e| {
            StoreError::Open {
                path: format!("PostgreSQL {}", cfg.url),
                reason: e,
            }
        })?;
        let shared = Arc::new(Shared {
            pg,
            pool,
            sql: Sql::new(&cfg.schema),
            queue_sql: queue::QueueSql::new(&cfg.schema),
            codec: Codec { ring },
            cache: ReadCache::new(READ_CACHE_MAX_RECORDS),
            bots: AtomicU64::new(0),
            down: Mutex::new(None),
            connected: AtomicU64::new(0),
            hosts: cfg.url.hosts().to_owned(),
            shown: cfg.url.to_string(),
            holder,
            op_timeout: timeouts.op,
        });
        let (claims, claims_rx) = tokio::sync::mpsc::unbounded_channel();
        let store = PgStore {
            _watcher: AbortOnDrop(tokio::spawn(watch::run(shared.clone()))),
            _claims: AbortOnDrop(tokio::spawn(claims::run(shared.clone(), claims_rx))),
            claims,
            shared,
        };
        store.refresh_bot_count().await?;
        Ok(store)
    }

    /// How many times the watcher has (re)connected to the database.
    pub fn connections_made(&self) -> u64 {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// How many decoded records this replica holds in memory.
    pub fn cached_records(&self) -> usize {
        self.shared.cache.len()
    }

    /// `f` given `op_timeout`: past it the store is unavailable.
    async fn op<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        Self::op_on(&self.shared, f).await
    }

    async fn op_on<T>(
        shared: &Shared,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(shared.op_timeout, f)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "PostgreSQL at {} did not answer within {:?}",
                    shared.hosts, shared.op_timeout
                )))
            })
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Self::client_of(&self.shared).await
    }

    async fn client_of(shared: &Shared) -> Result<deadpool_postgres::Client, StoreError> {
        shared.pool.get().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "no connection to PostgreSQL at {}: {}",
                shared.hosts,
                super::error_chain(&e)
            ))
        })
    }

    async fn refresh_bot_count(&self) -> Result<(), StoreError> {
        let n = self.count(&self.shared.sql.count_bots).await?;
        self.shared.bots.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// A record read from the database, decoded; cached unless something changed meanwhile.
    async fn fetch(
        &self,
        key: &str,
        generation: u64,
    ) -> Result<Option<Arc<Installation>>, StoreError> {
        let row = self
            .op(async {
                let c = self.client().await?;
                let st = c.prepare_cached(&self.shared.sql.get).await.map_err(db)?;
                c.query_opt(&st, &[&key]).await.map_err(db)
            })
            .await?;
        let Some(row) = row else { return Ok(None) };
        let body: String = row.get(0);
        let inst = Arc::new(self.shared.codec.decode(key, body.as_bytes())?.0);
        self.shared.cache.fill(key, &inst, generation);
        Ok(Some(inst))
    }

    /// A record from the cache, else the database.
    async fn get(&self, key: &str) -> Result<Option<Arc<Installation>>, StoreError> {
        match self.shared.cache.get(key) {
            Lookup::Hit(hit) => Ok(Some(hit)),
            Lookup::Miss(generation) => self.fetch(key, generation).await,
        }
    }

    /// A record from the database, bypassing the cache.
    async fn read(&self, key: &str) -> Result<Option<Installation>, StoreError> {
        let generation = self.shared.cache.generation();
        Ok(self.fetch(key, generation).await?.map(Arc::unwrap_or_clone))
    }

    /// Writes `rows` (key, record) and deletes `deleted` in one transaction that logs and
    /// announces every key it touched; returns the keys deleted.
    async fn write(
        &self,
        app: &str,
        rows: &[(String, &Installation)],
        delete: Delete<'_>,
    ) -> Result<Vec<String>, StoreError> {
        let sql = &self.shared.sql;
        let bodies: Vec<(String, String)> = rows
            .iter()
            .map(|(k, inst)| (k.clone(), self.body(k, inst)))
            .collect();
        let (deleted, new_bots) = self
            .op(async {
                let mut c = self.client().await?;
                let tx = c.transaction().await.map_err(db)?;
                let upsert = tx.prepare_cached(&sql.upsert).await.map_err(db)?;
                let mut new_bots = 0u64;
                for (k, body) in &bodies {
                    let inserted: bool = tx
                        .query_one(&upsert, &[k, &app, &kind_of(k), body])
                        .await
                        .map_err(db)?
                        .get(0);
                    new_bots += u64::from(inserted && kind_of(k) == "bot");
                }
                let deleted: Vec<String> = match delete {
                    Delete::None => Vec::new(),
                    Delete::Keys(keys) => tx
                        .query(&sql.delete_keys, &[&keys])
                        .await
                        .map_err(db)?
                        .iter()
                        .map(|r| r.get(0))
                        .collect(),
                    Delete::Range(from, to) => tx
                        .query(&sql.delete_range, &[&from, &to])
                        .await
                        .map_err(db)?
                        .iter()
                        .map(|r| r.get(0))
                        .collect(),
                };
                let touched: Vec<&str> = bodies
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .chain(deleted.iter().map(String::as_str))
                    .collect();
                if !touched.is_empty() {
                    tx.execute(&sql.log_changes, &[&touched])
                        .await
                        .map_err(db)?;
                    let mut payload = touched.join("\n");
                    if payload.len() > NOTIFY_MAX {
                        payload = "*".to_owned();
                    }
                    tx.execute(&sql.notify, &[&sql.channel, &payload])
                        .await
                        .map_err(db)?;
                }
                tx.commit().await.map_err(db)?;
                Ok((deleted, new_bots))
            })
            .await?;
        let mut keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        keys.extend(deleted.iter().map(String::as_str));
        self.shared.cache.invalidate(Some(&keys));
        // This write's own change to the count, exact; other replicas' writes are counted by
        // the watcher's recount every few seconds (a count here would cost a scan per write).
        let gone = deleted.iter().filter(|k| kind_of(k) == "bot").count() as u64;
        let bots = &self.shared.bots;
        let _ = bots.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some((n + new_bots).saturating_sub(gone))
        });
        Ok(deleted)
    }

    /// A record as the `body` column keeps it (JSON text, tokens sealed when sealing is on).
    fn body(&self, key: &str, inst: &Installation) -> String {
        String::from_utf8(self.shared.codec.encode(key, inst)).expect("records are JSON text")
    }

    /// Runs one query; its rows.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.op(async {
            let c = self.client().await?;
            let st = c.prepare_cached(sql).await.map_err(db)?;
            c.query(&st, params).await.map_err(db)
        })
        .await
    }

    /// Runs a `SELECT count(*)`.
    async fn count(&self, sql: &str) -> Result<u64, StoreError> {
        let rows = self.query(sql, &[]).await?;
        let n: i64 = rows.first().map_or(0, |r| r.get(0));
        Ok(n.max(0) as u64)
    }

    /// Runs one statement that returns a row count.
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.op(async {
            let c = self.client().await?;
            let st = c.prepare_cached(sql).await.map_err(db)?;
            c.execute(&st, params).await.map_err(db)
        })
        .await
    }
}

/// What a write deletes.
enum Delete<'a> {
    None,
    Keys(&'a [String]),
    /// Keys in `[from, to)`.
    Range(&'a str, &'a str),
}

/// Unix seconds as PostgreSQL's `bigint` (saturating: no real time is past it).
pub(super) fn sql_int(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

/// The `kind` column of a key: `bot`, `latest` or `user`.
fn kind_of(key: &str) -> &'static str {
    if key.ends_with("/bot") {
        "bot"
    } else if key.ends_with("/latest") {
        "latest"
    } else {
        "user"
    }
}

/// The end of the key range of every key starting with `prefix` (which ends with `/`): the
/// same prefix with its last `/` replaced by the next byte, `0`.
fn range_end(prefix: &str) -> String {
    let mut end = prefix.strip_suffix('/').unwrap_or(prefix).to_owned();
    end.push('0');
    end
}

/// A database error: a refused statement is the store's fault (I/O); anything else (no
/// connection, a connection lost mid-call) means the database is unavailable.
fn db(e: tokio_postgres::Error) -> StoreError {
    if e.code().is_some() {
        StoreError::Io(Box::new(e))
    } else {
        StoreError::Unavailable(super::error_chain(&e))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_owned())
}

#[async_trait]
impl InstallationStore for PgStore {
    async fn save(&self, app: &str, inst: &Installation) -> Result<(), StoreError> {
        let rows: Vec<(String, &Installation)> = save_keys(app, inst)?
            .into_iter()
            .map(|k| (k, inst))
            .collect();
        self.write(app, &rows, Delete::None).await?;
        Ok(())
    }

    async fn find_bot(
        &self,
        app: &str,
        team: &TeamRef,
    ) -> Result<Option<Installation>, StoreError> {
        self.read(&bot_key(app, team)?).await
    }

    async fn find_user(
        &self,
        app: &str,
        team: &TeamRef,
        user_id: &str,
    ) -> Result<Option<Installation>, StoreError> {
        self.read(&user_key(app, team, user_id)?).await
    }

    async fn find_bot_shared(
        &self,
        app: &str,
        team: &TeamRef,
    ) -> Result<Option<Arc<Installation>>, StoreError> {
        self.get(&bot_key(app, team)?).await
    }

    async fn find_user_shared(
        &self,
        app: &str,
        team: &TeamRef,
        user_id: &str,
    ) -> Result<Option<Arc<Installation>>, StoreError> {
        self.get(&user_key(app, team, user_id)?).await
    }

    async fn find_latest(
        &self,
        app: &str,
        team: &TeamRef,
    ) -> Result<Option<Installation>, StoreError> {
        self.read(&latest_key(app, team)?).await
    }

    async fn delete_bot(&self, app: &str, team: &TeamRef) -> Result<usize, StoreError> {
        let keys = [bot_key(app, team)?];
        Ok(self.write(app, &[], Delete::Keys(&keys)).await?.len())
    }

    async fn delete_user(
        &self,
        app: &str,
        team: &TeamRef,
        user_id: &str,
    ) -> Result<usize, StoreError> {
        let keys = [user_key(app, team, user_id)?];
        Ok(self.write(app, &[], Delete::Keys(&keys)).await?.len())
    }

    async fn delete_team(&self, app: &str, team: &TeamRef) -> Result<usize, StoreError> {
        let prefix = team_prefix(app, team)?;
        let end = range_end(&prefix);
        Ok(self
            .write(app, &[], Delete::Range(&prefix, &end))
            .await?
            .len())
    }

    async fn list(&self, app: &str) -> Result<Vec<StoredRecord>, StoreError> {
        let prefix = format!("inst/{}/", check_id(app)?);
        let end = range_end(&prefix);
        let rows = self.query(&self.shared.sql.list, &[&prefix, &end]).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key: String = row.get(0);
            let body: String = row.get(1);
            let (team, kind) = parse_record_key(&prefix, &key)?;
            out.push(StoredRecord {
                team,
                kind,
                installation: self.shared.codec.decode(&key, body.as_bytes())?.0,
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
        self.write(app, &[(key, inst)], Delete::None).await?;
        Ok(())
    }

    async fn mark_state_used(&self, id: &str, keep_until: u64) -> Result<bool, StoreError> {
        let until = sql_int(keep_until);
        Ok(self
            .execute(&self.shared.sql.mark_state, &[&id, &until])
            .await?
            == 1)
    }

    async fn sweep_used_states(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let (now, limit) = (sql_int(now), limit as i64);
        Ok(self
            .execute(&self.shared.sql.sweep_states, &[&now, &limit])
            .await? as usize)
    }

    async fn used_state_count(&self) -> Result<u64, StoreError> {
        self.count(&self.shared.sql.count_states).await
    }

    fn bot_count(&self) -> u64 {
        self.shared.bots.load(Ordering::Relaxed)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every write is committed before it returns.
        Ok(())
    }

    async fn remember_signatures(&self, seen: &[Signature], now: u64) -> Result<(), StoreError> {
        let macs: Vec<&[u8]> = seen.iter().map(|s| &s.mac[..]).collect();
        let until: Vec<i64> = seen.iter().map(|s| sql_int(s.forget_at)).collect();
        let now = sql_int(now);
        self.execute(&self.shared.sql.remember_signatures, &[&macs, &until])
            .await?;
        self.execute(&self.shared.sql.forget_signatures, &[&now])
            .await?;
        Ok(())
    }

    async fn recent_signatures(&self, now: u64) -> Result<Vec<Signature>, StoreError> {
        let now = sql_int(now);
        let rows = self
            .query(&self.shared.sql.recent_signatures, &[&now])
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let mac: &[u8] = r.get(0);
                let forget_at: i64 = r.get(1);
                Some(Signature {
                    mac: mac.try_into().ok()?,
                    forget_at: forget_at.max(0) as u64,
                })
            })
            .collect())
    }

    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.shared.shown)
    }

    fn deliveries(&self) -> Option<&dyn super::queue::DeliveryQueue> {
        Some(self)
    }

    fn unavailable(&self) -> Option<String> {
        self.shared.down.lock().expect("health lock").clone()
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn claim_signature(&self, sig: &Signature, now: u64) -> Result<bool, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let gone = || StoreError::Unavailable("the replay claim batcher stopped".to_owned());
        self.claims
            .send(claims::Claim {
                sig: *sig,
                now,
                answer,
            })
            .map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }

    async fn claim_refresh(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ms = ttl.as_millis().min(i64::MAX as u128) as i64;
        Ok(self
            .execute(
                &self.shared.sql.claim_lease,
                &[&key, &self.shared.holder, &ms],
            )
            .await?
            == 1)
    }

    async fn release_refresh(&self, key: &str) -> Result<(), StoreError> {
        self.execute(&self.shared.sql.release_lease, &[&key, &self.shared.holder])
            .await?;
        Ok(())
    }

    async fn reseal(&self) -> Result<usize, StoreError> {
        if self.shared.codec.ring.is_none() {
            return Ok(0);
        }
        let rows = self
            .query(&self.shared.sql.list, &[&"inst/", &"inst0"])
            .await?;
        let mut n = 0;
        for row in rows {
            let key: String = row.get(0);
            let body: String = row.get(1);
            let (inst, stale) = self.shared.codec.decode(&key, body.as_bytes())?;
            if !stale {
                continue;
            }
            let new = self.body(&key, &inst);
            // Only if nobody changed it meanwhile.
            n += self
                .execute(&self.shared.sql.reseal, &[&key, &body, &new])
                .await? as usize;
        }
        self.shared.cache.invalidate::<&[u8]>(None);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ranges_cover_exactly_their_prefix() {
        let end = range_end("inst/app/-/T1/");
        assert_eq!(end, "inst/app/-/T10");
        for inside in ["inst/app/-/T1/bot", "inst/app/-/T1/user/U1"] {
            assert!(
                inside >= "inst/app/-/T1/" && inside < end.as_str(),
                "{inside}"
            );
        }
        for outside in ["inst/app/-/T10/bot", "inst/app/-/T1", "inst/app/-/T2/bot"] {
            assert!(
                !(outside >= "inst/app/-/T1/" && outside < end.as_str()),
                "{outside}"
            );
        }
        assert_eq!(kind_of("inst/a/-/T/user/U1"), "user");
        assert_eq!(kind_of("inst/a/-/T/bot"), "bot");
    }
}
