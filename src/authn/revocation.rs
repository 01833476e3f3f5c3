//! Revoked session tokens (logout, refresh).
//!
//! Check consults an in-memory set, never the database. Revocations made by
//! this process enter the set at once; those made by other replicas arrive
//! over the Redis bus at once, and in any case by polling the store every
//! `poll_interval`, which bounds how stale a replica can be without Redis. Entries leave the set when the token would have expired anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

use crate::store::bus::{Bus, Change};
use crate::store::{DynStore, StoreResult};

struct UntilExpiry;

impl Expiry<Arc<str>, i64> for UntilExpiry {
    fn expire_after_create(&self, _jti: &Arc<str>, expires_at: &i64, _now: Instant) -> Option<Duration> {
        let left = expires_at.saturating_sub(unix_now()).max(0);
        // Keep a little past expiry so a token inside its leeway stays revoked.
        Some(Duration::from_secs(left.unsigned_abs() + 300))
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[derive(Clone)]
pub struct Revocations {
    store: DynStore,
    bus: Bus,
    // Unbounded on purpose: evicting a live revocation would un-revoke a token.
    // Its size is the number of tokens revoked within one token lifetime.
    revoked: Cache<Arc<str>, i64>,
    cursor: Arc<AtomicI64>,
}

impl Revocations {
    pub fn new(store: DynStore, bus: Bus) -> Self {
        let revoked = Cache::builder().expire_after(UntilExpiry).build();
        Revocations { store, bus, revoked, cursor: Arc::new(AtomicI64::new(0)) }
    }

    /// Records a revocation learnt from another replica.
    pub fn remember(&self, jti: &str, expires_at: i64) {
        self.revoked.insert(Arc::from(jti), expires_at);
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.contains_key(jti)
    }

    /// Records the revocation in the store (shared by every replica), then here.
    pub async fn revoke(&self, jti: &str, user_id: &str, expires_at: i64, now: i64) -> StoreResult<()> {
        self.store.revoke_token(jti, user_id, expires_at, now).await?;
        self.remember(jti, expires_at);
        self.bus.publish(&Change::Token { jti: jti.to_owned(), expires_at }).await;
        Ok(())
    }

    /// Loads revocations recorded since the last sync (with a margin for
    /// clock skew between replicas and in-flight transactions).
    pub async fn sync(&self, now: i64) -> StoreResult<usize> {
        let since = self.cursor.load(Ordering::Acquire).saturating_sub(30);
        let found = self.store.revoked_tokens_since(since, now).await?;
        for (jti, expires_at) in &found {
            self.revoked.insert(Arc::from(jti.as_str()), *expires_at);
        }
        self.cursor.store(now, Ordering::Release);
        Ok(found.len())
    }

    /// Syncs every `interval` until `shutdown`. Failures are logged and retried:
    /// revocations made here still apply, others wait for the database.
    pub async fn run(self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.sync(unix_now()).await {
                        tracing::warn!(error = %e, "could not load token revocations");
                    }
                }
                () = &mut shutdown => break,
            }
        }
    }
}
