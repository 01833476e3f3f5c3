//! The in-process caches in front of the store for the Check path.
//!
//! * Bounded (entry count) and time-limited, so memory depends on the cache
//!   capacity, not on how many records are stored.
//! * Absent records are cached too ("negative" entries, shorter TTL), so a
//!   flood of random key ids cannot hammer the database.
//! * Concurrent misses for one id collapse into one query (`try_get_with`).
//! * Errors are not cached: when the store is down, the next request tries
//!   again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::{DynStore, StoreError, StoreResult};
use crate::domain::{Group, KeyGrant, User};

#[derive(Clone, Debug)]
pub struct CacheSettings {
    pub capacity: u64,
    pub ttl: Duration,
    pub negative_ttl: Duration,
}

/// `None` is a negative entry: no such record.
type Entry<V> = Option<Arc<V>>;

type Loader<V> = fn(DynStore, String) -> Pin<Box<dyn Future<Output = StoreResult<Option<V>>> + Send>>;

struct EntryExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl<V> Expiry<String, Entry<V>> for EntryExpiry {
    fn expire_after_create(&self, _key: &String, value: &Entry<V>, _now: Instant) -> Option<Duration> {
        Some(if value.is_some() { self.ttl } else { self.negative_ttl })
    }
}

/// A read-through cache of one kind of record, by id.
pub struct ReadThrough<V> {
    store: DynStore,
    cache: Cache<String, Entry<V>>,
    load: Loader<V>,
}

impl<V> Clone for ReadThrough<V> {
    fn clone(&self) -> Self {
        ReadThrough { store: self.store.clone(), cache: self.cache.clone(), load: self.load }
    }
}

impl<V: Send + Sync + 'static> ReadThrough<V> {
    fn new(store: DynStore, settings: &CacheSettings, load: Loader<V>) -> Self {
        let cache = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(EntryExpiry { ttl: settings.ttl, negative_ttl: settings.negative_ttl })
            .build();
        ReadThrough { store, cache, load }
    }

    /// The record for `id`, from the cache or, on a miss, from the store.
    pub async fn get(&self, id: &str) -> Result<Entry<V>, Arc<StoreError>> {
        if let Some(entry) = self.cache.get(id).await {
            return Ok(entry);
        }
        let load = (self.load)(self.store.clone(), id.to_owned());
        self.cache.try_get_with(id.to_owned(), async move { Ok(load.await?.map(Arc::new)) }).await
    }

    /// Forgets one record so the next read goes to the store.
    pub async fn invalidate(&self, id: &str) {
        self.cache.invalidate(id).await;
    }

    /// Forgets every record.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}

/// API keys joined with their owner, by key id.
pub type KeyCache = ReadThrough<KeyGrant>;
/// Users, by id.
pub type UserCache = ReadThrough<User>;
/// Groups (and so their limits), by name.
pub type GroupCache = ReadThrough<Group>;

pub fn key_cache(store: DynStore, settings: &CacheSettings) -> KeyCache {
    ReadThrough::new(store, settings, |store, id| Box::pin(async move { store.key_grant(&id).await }))
}

pub fn user_cache(store: DynStore, settings: &CacheSettings) -> UserCache {
    ReadThrough::new(store, settings, |store, id| Box::pin(async move { store.user_by_id(&id).await }))
}

pub fn group_cache(store: DynStore, settings: &CacheSettings) -> GroupCache {
    ReadThrough::new(store, settings, |store, name| Box::pin(async move { store.group(&name).await }))
}
