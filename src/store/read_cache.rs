//! Decoded records recently read, shared by the durable backends: the request path then skips
//! the backend and JSON decoding.
//!
//! A write bumps the generation after it lands (or, for PostgreSQL, once another replica's
//! change is heard of), and a read only fills the cache if no invalidation happened since it
//! looked at the backend, so the cache never holds a value older than the backend.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::Installation;

/// A bounded map of decoded records with a generation counter.
pub(crate) struct ReadCache {
    inner: RwLock<Inner>,
    max: usize,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    records: HashMap<String, Arc<Installation>>,
}

/// What a lookup found: the record, or the generation to fill the cache under.
pub(crate) enum Lookup {
    Hit(Arc<Installation>),
    Miss(u64),
}

impl ReadCache {
    /// A cache holding at most `max` records.
    pub fn new(max: usize) -> Self {
        ReadCache {
            inner: Default::default(),
            max,
        }
    }

    pub fn get(&self, key: &str) -> Lookup {
        let c = self.inner.read().expect("cache lock");
        match c.records.get(key) {
            Some(hit) => Lookup::Hit(hit.clone()),
            None => Lookup::Miss(c.generation),
        }
    }

    /// The generation now: a read that starts here fills the cache under it.
    pub fn generation(&self) -> u64 {
        self.inner.read().expect("cache lock").generation
    }

    /// Caches `inst` read at `generation`, unless something was invalidated since. A full
    /// cache makes room by forgetting an arbitrary record (a cheap stand-in for LRU: hot
    /// records come straight back).
    pub fn fill(&self, key: &str, inst: &Arc<Installation>, generation: u64) {
        let mut c = self.inner.write().expect("cache lock");
        if c.generation != generation {
            return;
        }
        if c.records.len() >= self.max {
            if let Some(victim) = c.records.keys().next().cloned() {
                c.records.remove(&victim);
            }
        }
        c.records.insert(key.to_owned(), inst.clone());
    }

    /// Forgets `keys` (every record when `None`); call after the write landed.
    pub fn invalidate<K: AsRef<[u8]>>(&self, keys: Option<&[K]>) {
        let mut c = self.inner.write().expect("cache lock");
        c.generation += 1;
        match keys {
            None => c.records.clear(),
            Some(keys) => {
                for k in keys {
                    c.records
                        .remove(String::from_utf8_lossy(k.as_ref()).as_ref());
                }
            }
        }
    }

    /// How many records are cached.
    pub fn len(&self) -> usize {
        self.inner.read().expect("cache lock").records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_after_an_invalidation_is_dropped_and_a_full_cache_makes_room() {
        let c = ReadCache::new(2);
        let inst = Arc::new(Installation::default());
        let Lookup::Miss(g) = c.get("a") else {
            panic!("empty")
        };
        c.invalidate(Some(&["a"]));
        c.fill("a", &inst, g);
        assert!(
            matches!(c.get("a"), Lookup::Miss(_)),
            "read before a write: not cached"
        );
        for k in ["a", "b", "c"] {
            c.fill(k, &inst, c.generation());
        }
        assert_eq!(c.len(), 2, "bounded");
        assert!(matches!(c.get("c"), Lookup::Hit(_)), "the newest is in");
        c.invalidate::<&[u8]>(None);
        assert_eq!(c.len(), 0);
    }
}
