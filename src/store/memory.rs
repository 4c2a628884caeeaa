//! A process-local backend: the same records and keys as [`super::sled::SledStore`] in a
//! `BTreeMap`. Nothing survives the process; used by tests and offline tools, and as the
//! second implementation that keeps the contract suite honest.

use std::collections::BTreeMap;
use std::sync::RwLock;

use async_trait::async_trait;

use super::{
    bot_key, check_id, latest_key, parse_record_key, record_key, save_keys, team_prefix, user_key,
    Installation, InstallationStore, RecordKind, Signature, StoreError, StoredRecord, TeamRef,
};

/// Installations in memory.
#[derive(Default)]
pub struct MemoryStore {
    records: RwLock<BTreeMap<String, Installation>>,
    signatures: std::sync::Mutex<std::collections::HashMap<[u8; 32], u64>>,
    used_states: std::sync::Mutex<UsedStates>,
    queue: super::memory_queue::MemoryQueue,
}

/// Used-state markers, and the same by expiry for the sweep.
#[derive(Default)]
struct UsedStates {
    by_id: std::collections::HashMap<String, u64>,
    by_expiry: std::collections::BTreeSet<(u64, String)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self, key: &str) -> Option<Installation> {
        self.records.read().expect("store lock").get(key).cloned()
    }

    fn remove_prefix(&self, prefix: &str, exact: bool) -> usize {
        let mut map = self.records.write().expect("store lock");
        let keys: Vec<String> = map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| !exact || k.as_str() == prefix)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            map.remove(k);
        }
        keys.len()
    }
}

#[async_trait]
impl InstallationStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn deliveries(&self) -> Option<&dyn super::queue::DeliveryQueue> {
        Some(&self.queue)
    }

    async fn save(&self, app: &str, inst: &Installation) -> Result<(), StoreError> {
        let keys = save_keys(app, inst)?;
        let mut map = self.records.write().expect("store lock");
        for k in keys {
            map.insert(k, inst.clone());
        }
        Ok(())
    }

    async fn find_bot(
        &self,
        app: &str,
        team: &TeamRef,
    ) -> Result<Option<Installation>, StoreError> {
        Ok(self.get(&bot_key(app, team)?))
    }

    async fn find_user(
        &self,
        app: &str,
        team: &TeamRef,
        user_id: &str,
    ) -> Result<Option<Installation>, StoreError> {
        Ok(self.get(&user_key(app, team, user_id)?))
    }

    async fn find_latest(
        &self,
        app: &str,
        team: &TeamRef,
    ) -> Result<Option<Installation>, StoreError> {
        Ok(self.get(&latest_key(app, team)?))
    }

    async fn delete_bot(&self, app: &str, team: &TeamRef) -> Result<usize, StoreError> {
        Ok(self.remove_prefix(&bot_key(app, team)?, true))
    }

    async fn delete_user(
        &self,
        app: &str,
        team: &TeamRef,
        user_id: &str,
    ) -> Result<usize, StoreError> {
        Ok(self.remove_prefix(&user_key(app, team, user_id)?, true))
    }

    async fn delete_team(&self, app: &str, team: &TeamRef) -> Result<usize, StoreError> {
        Ok(self.remove_prefix(&team_prefix(app, team)?, false))
    }

    async fn list(&self, app: &str) -> Result<Vec<StoredRecord>, StoreError> {
        let prefix = format!("inst/{}/", check_id(app)?);
        let map = self.records.read().expect("store lock");
        map.range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| {
                let (team, kind) = parse_record_key(&prefix, k)?;
                Ok(StoredRecord {
                    team,
                    kind,
                    installation: v.clone(),
                })
            })
            .collect()
    }

    async fn update_record(
        &self,
        app: &str,
        team: &TeamRef,
        kind: &RecordKind,
        inst: &Installation,
    ) -> Result<(), StoreError> {
        let key = record_key(app, team, kind)?;
        self.records
            .write()
            .expect("store lock")
            .insert(key, inst.clone());
        Ok(())
    }

    async fn mark_state_used(&self, id: &str, keep_until: u64) -> Result<bool, StoreError> {
        let mut used = self.used_states.lock().expect("state lock");
        if used.by_id.contains_key(id) {
            return Ok(false);
        }
        used.by_id.insert(id.to_owned(), keep_until);
        used.by_expiry.insert((keep_until, id.to_owned()));
        Ok(true)
    }

    async fn sweep_used_states(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let mut used = self.used_states.lock().expect("state lock");
        let due: Vec<(u64, String)> = used
            .by_expiry
            .range(..(now, String::new()))
            .take(limit)
            .cloned()
            .collect();
        for entry in &due {
            used.by_expiry.remove(entry);
            used.by_id.remove(&entry.1);
        }
        Ok(due.len())
    }

    async fn used_state_count(&self) -> Result<u64, StoreError> {
        Ok(self.used_states.lock().expect("state lock").by_id.len() as u64)
    }

    fn bot_count(&self) -> u64 {
        let map = self.records.read().expect("store lock");
        map.keys().filter(|k| k.ends_with("/bot")).count() as u64
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn remember_signatures(&self, seen: &[Signature], now: u64) -> Result<(), StoreError> {
        let mut sigs = self.signatures.lock().expect("signature lock");
        sigs.retain(|_, forget_at| *forget_at > now);
        for s in seen {
            sigs.insert(s.mac, s.forget_at);
        }
        Ok(())
    }

    async fn recent_signatures(&self, now: u64) -> Result<Vec<Signature>, StoreError> {
        let sigs = self.signatures.lock().expect("signature lock");
        Ok(sigs
            .iter()
            .filter(|(_, forget_at)| **forget_at > now)
            .map(|(mac, forget_at)| Signature {
                mac: *mac,
                forget_at: *forget_at,
            })
            .collect())
    }
}
