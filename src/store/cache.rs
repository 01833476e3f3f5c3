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
//! * A read gets `lookup_timeout` (default 300 ms), then counts as the store
//!   being unavailable; and once a read has found it unavailable, reads by
//!   every cache fail at once for the next [`COOL_DOWN`] (one [`Breaker`]).
//!   A Check must answer within the proxy's own timeout (0.5 s in the
//!   shipped Envoy config): with the database down, a connection attempt
//!   waits out the pool's timeout (2 s), and a Check reads up to three
//!   records, so the proxy, not Gatehouse, would answer, with a bare 503
//!   even for a warm caller.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::{DynStore, StoreError, StoreResult};

pub use gatehouse_core::store::cache::*;

#[derive(Clone, Debug)]
pub struct CacheSettings {
    pub capacity: u64,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    /// How long past its TTL an entry may answer while the store is down.
    pub stale_limit: Duration,
    /// The longest a read behind the cache may take before the store counts
    /// as unavailable.
    pub lookup_timeout: Duration,
}

/// After a read finds the store unavailable, how long reads fail at once.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// Whether the store was found unavailable in the last [`COOL_DOWN`], shared
/// by the caches of one process.
#[derive(Clone, Default)]
pub struct Breaker {
    tripped: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.tripped.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open(&self) -> bool {
        self.lock().is_some_and(|at| at.elapsed() < COOL_DOWN)
    }

    fn record<T>(&self, result: &StoreResult<T>) {
        match result {
            Err(e) if e.is_unavailable() => *self.lock() = Some(Instant::now()),
            Ok(_) => *self.lock() = None,
            Err(_) => {}
        }
    }
}

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
    lookup_timeout: Duration,
    breaker: Breaker,
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

    /// Times a store read (giving up after `limit`, or at once while
    /// `breaker` is open) and counts its failure.
    async fn timed<T>(
        &self,
        breaker: &Breaker,
        limit: Duration,
        read: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        if breaker.open() {
            self.store_errors.increment(1);
            return Err(StoreError::Unavailable("unavailable moments ago".to_owned()));
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(limit, read).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!("no answer within {} ms", limit.as_millis()))),
        };
        breaker.record(&result);
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
            lookup_timeout: self.lookup_timeout,
            breaker: self.breaker.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<V: Send + Sync + 'static> ReadThrough<V> {
    fn new(name: &'static str, store: DynStore, settings: &CacheSettings, breaker: &Breaker, load: Loader<V>) -> Self {
        let keep = settings.ttl + settings.stale_limit;
        let cache = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(EntryExpiry { keep, negative_ttl: settings.negative_ttl })
            .support_invalidation_closures()
            .build();
        ReadThrough {
            store,
            cache,
            load,
            ttl: settings.ttl,
            lookup_timeout: settings.lookup_timeout,
            breaker: breaker.clone(),
            stats: Arc::new(CacheStats::new(name)),
        }
    }

    /// Reads a record the cache does not hold; concurrent misses for one id
    /// share one read.
    async fn load_missing(&self, id: &str) -> Result<Entry<V>, Arc<StoreError>> {
        let load = self.stats.timed(&self.breaker, self.lookup_timeout, (self.load)(self.store.clone(), id.to_owned()));
        let fresh = async move { Ok(Stamped { value: load.await?.map(Arc::new), loaded: Instant::now() }) };
        self.cache.try_get_with(id.to_owned(), fresh).await.map(|e| e.value)
    }

    /// Re-reads an entry past its TTL; serves the old answer if the store is
    /// unavailable (the entry expires from the cache at TTL + stale limit).
    async fn refresh(&self, id: &str, stale: Stamped<V>) -> Result<Entry<V>, Arc<StoreError>> {
        match self.stats.timed(&self.breaker, self.lookup_timeout, (self.load)(self.store.clone(), id.to_owned())).await
        {
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
}

#[async_trait::async_trait]
impl<V: Send + Sync + 'static> Lookup<V> for ReadThrough<V> {
    /// The record for `id`, from the cache or, on a miss, from the store.
    ///
    /// The reads behind a miss or a stale entry are boxed futures of their
    /// own: this one, moved into a box on every Check, stays the size of a
    /// cache hit.
    async fn get(&self, id: &str) -> Result<Entry<V>, Arc<StoreError>> {
        if let Some(entry) = self.cache.get(id).await {
            if entry.loaded.elapsed() < self.ttl {
                self.stats.hits.increment(1);
                return Ok(entry.value);
            }
            self.stats.stale.increment(1);
            return Box::pin(self.refresh(id, entry)).await;
        }
        self.stats.misses.increment(1);
        Box::pin(self.load_missing(id)).await
    }

    /// The longest a read behind this cache may take.
    fn lookup_timeout(&self) -> Duration {
        self.lookup_timeout
    }

    /// Forgets one record so the next read goes to the store.
    async fn invalidate(&self, id: &str) {
        self.cache.invalidate(id).await;
    }

    /// Forgets every record.
    fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Forgets the records `matches` picks: no read returns one of them
    /// after this (moka checks the predicate on every read of an entry
    /// cached before the call).
    fn invalidate_where(&self, matches: Box<dyn Fn(&V) -> bool + Send + Sync>) {
        let picked = self.cache.invalidate_entries_if(move |_, entry| entry.value.as_deref().is_some_and(&matches));
        if let Err(e) = picked {
            tracing::warn!(error = %e, "could not evict selectively; evicting everything");
            self.cache.invalidate_all();
        }
    }
}

pub fn key_cache(store: DynStore, settings: &CacheSettings, breaker: &Breaker) -> KeyCache {
    Arc::new(ReadThrough::new("keys", store, settings, breaker, |store, id| {
        Box::pin(async move { store.key_grant(&id).await })
    }))
}

pub fn user_cache(store: DynStore, settings: &CacheSettings, breaker: &Breaker) -> UserCache {
    Arc::new(ReadThrough::new("users", store, settings, breaker, |store, id| {
        Box::pin(async move { store.user_by_id(&id).await })
    }))
}

pub fn group_cache(store: DynStore, settings: &CacheSettings, breaker: &Breaker) -> GroupCache {
    Arc::new(ReadThrough::new("groups", store, settings, breaker, |store, name| {
        Box::pin(async move { store.group(&name).await })
    }))
}

/// A bounded map (`None`: unbounded) whose entries each expire after the
/// time they were inserted with.
pub fn expiring_map<K, V>(capacity: Option<u64>) -> SharedMap<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let mut builder = moka::sync::Cache::builder().expire_after(KeepFor);
    if let Some(capacity) = capacity {
        builder = builder.max_capacity(capacity);
    }
    Arc::new(MokaMap(builder.build()))
}

struct MokaMap<K, V>(moka::sync::Cache<K, (V, Duration)>);

struct KeepFor;

impl<K, V> Expiry<K, (V, Duration)> for KeepFor {
    fn expire_after_create(&self, _: &K, entry: &(V, Duration), _: Instant) -> Option<Duration> {
        Some(entry.1)
    }

    fn expire_after_update(&self, _: &K, entry: &(V, Duration), _: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(entry.1)
    }
}

impl<K, V> ExpiringMap<K, V> for MokaMap<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn get(&self, key: &K) -> Option<V> {
        self.0.get(key).map(|(value, _)| value)
    }

    fn insert(&self, key: K, value: V, keep: Duration) {
        self.0.insert(key, (value, keep));
    }
}
