//! What the Check path reads through instead of the store: read-through
//! lookups of keys, users and groups ([`Lookup`]), and bounded maps whose
//! entries expire ([`ExpiringMap`]). The `gatehouse` crate supplies both,
//! bounded, time-limited and with concurrent misses collapsed into one read.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;
use crate::domain::{Group, KeyGrant, User};

/// A cached record; `None` is a negative entry: no such record.
pub type Entry<V> = Option<Arc<V>>;

/// A read-through cache of one kind of record, by id.
#[async_trait]
pub trait Lookup<V>: Send + Sync + 'static {
    /// The record for `id`, from the cache or, on a miss, from the store.
    async fn get(&self, id: &str) -> Result<Entry<V>, Arc<StoreError>>;
    /// The longest a read behind this cache may take.
    fn lookup_timeout(&self) -> Duration;
    /// Forgets one record so the next read goes to the store.
    async fn invalidate(&self, id: &str);
    /// Forgets every record.
    fn invalidate_all(&self);
    /// Forgets the records `matches` picks: no read returns one of them
    /// after this call.
    fn invalidate_where(&self, matches: Box<dyn Fn(&V) -> bool + Send + Sync>);
}

/// API keys joined with their owner, by key id.
pub type KeyCache = Arc<dyn Lookup<KeyGrant>>;
/// Users, by id.
pub type UserCache = Arc<dyn Lookup<User>>;
/// Groups (and so their limits), by name.
pub type GroupCache = Arc<dyn Lookup<Group>>;

/// A map of at most a fixed number of entries, each kept no longer than
/// the time it was inserted with.
pub trait ExpiringMap<K, V>: Send + Sync + 'static {
    fn get(&self, key: &K) -> Option<V>;
    /// Inserts or replaces `key`, kept for at most `keep`.
    fn insert(&self, key: K, value: V, keep: Duration);
}

/// A shared expiring map.
pub type SharedMap<K, V> = Arc<dyn ExpiringMap<K, V>>;
