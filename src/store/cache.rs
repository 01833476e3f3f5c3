//! The in-process cache in front of the store for the Check path.
//!
//! * Bounded (entry count) and time-limited, so memory depends on the cache
//!   capacity, not on how many keys are stored.
//! * Unknown key ids are cached too ("negative" entries, shorter TTL), so a
//!   flood of random keys cannot hammer the database.
//! * Concurrent misses for one key id collapse into one query
//!   (`try_get_with`).
//! * Errors are not cached: when the store is down, the next request tries
//!   again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::{DynStore, StoreError};
use crate::domain::KeyGrant;

/// `None` is a negative entry: the key id does not exist.
type Entry = Option<Arc<KeyGrant>>;

#[derive(Clone, Debug)]
pub struct CacheSettings {
    pub capacity: u64,
    pub ttl: Duration,
    pub negative_ttl: Duration,
}

struct EntryExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _key: &String, value: &Entry, _now: Instant) -> Option<Duration> {
        Some(if value.is_some() { self.ttl } else { self.negative_ttl })
    }
}

#[derive(Clone)]
pub struct KeyCache {
    store: DynStore,
    cache: Cache<String, Entry>,
}

impl KeyCache {
    pub fn new(store: DynStore, settings: &CacheSettings) -> Self {
        let cache = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(EntryExpiry { ttl: settings.ttl, negative_ttl: settings.negative_ttl })
            .build();
        KeyCache { store, cache }
    }

    /// The grant for `key_id`, from the cache or, on a miss, from the store.
    pub async fn get(&self, key_id: &str) -> Result<Entry, Arc<StoreError>> {
        if let Some(entry) = self.cache.get(key_id).await {
            return Ok(entry);
        }
        let store = self.store.clone();
        let id = key_id.to_owned();
        self.cache.try_get_with(key_id.to_owned(), async move { Ok(store.key_grant(&id).await?.map(Arc::new)) }).await
    }

    /// Forgets a key so the next Check reads it from the store again.
    pub async fn invalidate(&self, key_id: &str) {
        self.cache.invalidate(key_id).await;
    }

    /// Forgets every entry (after a change that touches many keys, such as a
    /// user's role).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }
}
