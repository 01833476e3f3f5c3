//! The in-process caches in front of the store for the Check path.
//!
//! * Bounded (entry count) and time-limited, so memory depends on the cache
//!   capacity, not on how many records are stored.
//! * Absent records are cached too ("negative" entries, shorter TTL), so a
//!   flood of random key ids cannot hammer the database.
//! * Concurrent misses for one id collapse into one query (`try_get_with`).
//! * Errors are not cached: when the store is down, the next request tries
//!   again.
//! * Stale-if-error: an entry older than its TTL is re-read; if the store is
//!   unavailable, the old answer keeps serving until `stale_limit`, so warm
//!   callers ride out a database outage (cold ones get 503). Evicted entries
//!   (revocations, changes) are gone at once and never served stale.

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
    /// How long past its TTL an entry may answer while the store is down.
    pub stale_limit: Duration,
}

/// `None` is a negative entry: no such record.
type Entry<V> = Option<Arc<V>>;

/// An entry and when it was read from the store.
struct Stamped<V> {
    value: Entry<V>,
    loaded: Instant,
}

impl<V> Clone for Stamped<V> {
    fn clone(&self) -> Self {
        Stamped { value: self.value.clone(), loaded: self.loaded }
    }
}

type Loader<V> = fn(DynStore, String) -> Pin<Box<dyn Future<Output = StoreResult<Option<V>>> + Send>>;

struct EntryExpiry {
    keep: Duration,
    negative_ttl: Duration,
}

impl<V> Expiry<String, Stamped<V>> for EntryExpiry {
    fn expire_after_create(&self, _key: &String, entry: &Stamped<V>, _now: Instant) -> Option<Duration> {
        Some(if entry.value.is_some() { self.keep } else { self.negative_ttl })
    }

    fn expire_after_update(
        &self,
        key: &String,
        entry: &Stamped<V>,
        now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, entry, now)
    }
}

/// A read-through cache of one kind of record, by id.
pub struct ReadThrough<V> {
    store: DynStore,
    cache: Cache<String, Stamped<V>>,
    load: Loader<V>,
    ttl: Duration,
    stats: Arc<CacheStats>,
}

/// Metric handles, resolved once (the hot path only increments them).
struct CacheStats {
    hits: metrics::Counter,
    misses: metrics::Counter,
    stale: metrics::Counter,
    store_errors: metrics::Counter,
    store_duration: metrics::Histogram,
}

impl CacheStats {
    fn new(cache: &'static str) -> Self {
        let requests = |result: &'static str| metrics::counter!("gatehouse_cache_requests_total", "cache" => cache, "result" => result);
        CacheStats {
            hits: requests("hit"),
            misses: requests("miss"),
            stale: requests("stale"),
            store_errors: metrics::counter!("gatehouse_store_errors_total", "cache" => cache),
            store_duration: metrics::histogram!("gatehouse_store_duration_seconds", "cache" => cache),
        }
    }

    /// Times a store read and counts its failure.
    async fn timed<T>(&self, read: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let started = Instant::now();
        let result = read.await;
        self.store_duration.record(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.store_errors.increment(1);
        }
        result
    }
}

impl<V> Clone for ReadThrough<V> {
    fn clone(&self) -> Self {
        ReadThrough {
            store: self.store.clone(),
            cache: self.cache.clone(),
            load: self.load,
            ttl: self.ttl,
            stats: self.stats.clone(),
        }
    }
}

impl<V: Send + Sync + 'static> ReadThrough<V> {
    fn new(name: &'static str, store: DynStore, settings: &CacheSettings, load: Loader<V>) -> Self {
        let keep = settings.ttl + settings.stale_limit;
        let cache = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(EntryExpiry { keep, negative_ttl: settings.negative_ttl })
            .build();
        ReadThrough { store, cache, load, ttl: settings.ttl, stats: Arc::new(CacheStats::new(name)) }
    }

    /// The record for `id`, from the cache or, on a miss, from the store.
    pub async fn get(&self, id: &str) -> Result<Entry<V>, Arc<StoreError>> {
        if let Some(entry) = self.cache.get(id).await {
            if entry.loaded.elapsed() < self.ttl {
                self.stats.hits.increment(1);
                return Ok(entry.value);
            }
            self.stats.stale.increment(1);
            return self.refresh(id, entry).await;
        }
        self.stats.misses.increment(1);
        let load = self.stats.timed((self.load)(self.store.clone(), id.to_owned()));
        let fresh = async move { Ok(Stamped { value: load.await?.map(Arc::new), loaded: Instant::now() }) };
        self.cache.try_get_with(id.to_owned(), fresh).await.map(|e| e.value)
    }

    /// Re-reads an entry past its TTL; serves the old answer if the store is
    /// unavailable (the entry expires from the cache at TTL + stale limit).
    async fn refresh(&self, id: &str, stale: Stamped<V>) -> Result<Entry<V>, Arc<StoreError>> {
        match self.stats.timed((self.load)(self.store.clone(), id.to_owned())).await {
            Ok(value) => {
                let value = value.map(Arc::new);
                self.cache.insert(id.to_owned(), Stamped { value: value.clone(), loaded: Instant::now() }).await;
                Ok(value)
            }
            Err(e) if e.is_unavailable() && stale.value.is_some() => {
                tracing::debug!(error = %e, "store unavailable; serving a cached entry past its TTL");
                Ok(stale.value)
            }
            Err(e) => Err(Arc::new(e)),
        }
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
    ReadThrough::new("keys", store, settings, |store, id| Box::pin(async move { store.key_grant(&id).await }))
}

pub fn user_cache(store: DynStore, settings: &CacheSettings) -> UserCache {
    ReadThrough::new("users", store, settings, |store, id| Box::pin(async move { store.user_by_id(&id).await }))
}

pub fn group_cache(store: DynStore, settings: &CacheSettings) -> GroupCache {
    ReadThrough::new("groups", store, settings, |store, name| Box::pin(async move { store.group(&name).await }))
}
