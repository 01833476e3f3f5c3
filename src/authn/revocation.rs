//! Revoked session tokens (logout, refresh).
//!
//! Check consults an in-memory set, never the database. Revocations made by
//! this process enter the set at once; those made by other replicas arrive
//! over the Redis bus at once, and in any case by polling the store every
//! `poll_interval`, which bounds how stale a replica can be without Redis.
//! Entries stay as long as Check could still accept the token (until its
//! expiry plus the leeway), and at start-up the set is loaded for that window.
//!
//! `/auth/refresh`, which accepts tokens long after they expired (the refresh
//! grace window), does not rely on the set: [`Revocations::revoke`] inserts
//! the token id in the database, and only the one call that inserts it wins.
//! So a revoked token (logged out, or already exchanged) is never exchanged
//! again, by any replica, before or after a restart, however long ago it was
//! revoked; and of concurrent exchanges of one token exactly one succeeds.
//! Keeping every revocation in memory for the whole grace window instead
//! would multiply this set's size by (expiry + grace) / expiry, 169 times
//! with the defaults, at about 430 bytes per entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

use crate::store::bus::{Bus, Change};
use crate::store::{DynStore, StoreResult};

/// Keeps an entry until `after` seconds past the token's expiry.
struct UntilExpiry {
    after: i64,
}

impl UntilExpiry {
    fn keep_for(&self, expires_at: i64, now: i64) -> Duration {
        let left = expires_at.saturating_add(self.after).saturating_sub(now).max(0);
        Duration::from_secs(left.unsigned_abs())
    }
}

impl Expiry<Arc<str>, i64> for UntilExpiry {
    fn expire_after_create(&self, _jti: &Arc<str>, expires_at: &i64, _now: Instant) -> Option<Duration> {
        Some(self.keep_for(*expires_at, unix_now()))
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
    /// How long after its expiry Check still accepts a token (the leeway).
    after_expiry: i64,
}

impl Revocations {
    /// `after_expiry`: how long after its `exp` Check still accepts a token
    /// (the leeway).
    pub fn new(store: DynStore, bus: Bus, after_expiry: i64) -> Self {
        let after_expiry = after_expiry.max(0);
        let revoked = Cache::builder().expire_after(UntilExpiry { after: after_expiry }).build();
        Revocations { store, bus, revoked, cursor: Arc::new(AtomicI64::new(0)), after_expiry }
    }

    /// Records a revocation learnt from another replica.
    pub fn remember(&self, jti: &str, expires_at: i64) {
        self.revoked.insert(Arc::from(jti), expires_at);
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.contains_key(jti)
    }

    /// Records the revocation in the store (shared by every replica), then
    /// here. Returns whether this call revoked the token: of any number of
    /// concurrent calls for one token, on any replicas, exactly one gets
    /// `true` (the database decides); the others find it already revoked.
    pub async fn revoke(&self, jti: &str, user_id: &str, expires_at: i64, now: i64) -> StoreResult<bool> {
        let revoked_here = self.store.revoke_token(jti, user_id, expires_at, now).await?;
        self.remember(jti, expires_at);
        if revoked_here {
            self.bus.publish(&Change::Token { jti: jti.to_owned(), expires_at }).await;
        }
        Ok(revoked_here)
    }

    /// Loads revocations recorded since the last sync (with a margin for
    /// clock skew between replicas and in-flight transactions); the first
    /// sync loads every revocation of a token that Check could still accept.
    pub async fn sync(&self, now: i64) -> StoreResult<usize> {
        let since = self.cursor.load(Ordering::Acquire).saturating_sub(30);
        let found = self.store.revoked_tokens_since(since, now.saturating_sub(self.after_expiry)).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_last_while_check_could_accept_the_token() {
        let window = UntilExpiry { after: 30 };
        let now = 1_000_000;
        assert_eq!(window.keep_for(now + 3600, now), Duration::from_secs(3630));
        // Expired 10 s ago, still inside the leeway.
        assert_eq!(window.keep_for(now - 10, now), Duration::from_secs(20));
        assert_eq!(window.keep_for(now - 31, now), Duration::ZERO);
    }
}
