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

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::clock::SharedClock;
use crate::store::bus::{Change, Publish};
use crate::store::{DynStore, StoreResult};

/// Revoked token ids and the Unix time past which Check could no longer
/// accept the token anyway (its expiry plus the leeway); pruned as those
/// times pass. Unbounded on purpose: evicting a live revocation would
/// un-revoke a token. Its size is the number of tokens revoked within one
/// token lifetime.
#[derive(Default)]
struct Revoked(RwLock<HashMap<Box<str>, i64>>);

impl Revoked {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, i64>> {
        // A poisoned lock only means a writer panicked between two
        // statements that each leave the map whole.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Box<str>, i64>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    fn contains(&self, jti: &str, now: i64) -> bool {
        self.read().get(jti).is_some_and(|until| *until > now)
    }

    fn insert_all<'a>(&self, entries: impl IntoIterator<Item = (&'a str, i64)>, now: i64) {
        let mut map = self.write();
        map.retain(|_, until| *until > now);
        for (jti, until) in entries {
            if until > now {
                map.insert(jti.into(), until);
            }
        }
    }
}

#[derive(Clone)]
pub struct Revocations {
    store: DynStore,
    bus: Arc<dyn Publish>,
    revoked: Arc<Revoked>,
    cursor: Arc<AtomicI64>,
    /// How long after its expiry Check still accepts a token (the leeway).
    after_expiry: i64,
    clock: SharedClock,
}

impl Revocations {
    /// `after_expiry`: how long after its `exp` Check still accepts a token
    /// (the leeway).
    pub fn new(store: DynStore, bus: Arc<dyn Publish>, after_expiry: i64, clock: SharedClock) -> Self {
        let after_expiry = after_expiry.max(0);
        let cursor = Arc::new(AtomicI64::new(0));
        Revocations { store, bus, revoked: Arc::default(), cursor, after_expiry, clock }
    }

    /// Until when Check could accept a token that expires at `expires_at`.
    fn until(&self, expires_at: i64) -> i64 {
        expires_at.saturating_add(self.after_expiry)
    }

    /// Records a revocation learnt from another replica.
    pub fn remember(&self, jti: &str, expires_at: i64) {
        self.revoked.insert_all([(jti, self.until(expires_at))], self.clock.now());
    }

    /// Whether `jti` was revoked, as of `now` (the Check's own time).
    pub fn is_revoked(&self, jti: &str, now: i64) -> bool {
        self.revoked.contains(jti, now)
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
        self.revoked.insert_all(found.iter().map(|(jti, expires_at)| (jti.as_str(), self.until(*expires_at))), now);
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
                    if let Err(e) = self.sync(self.clock.now()).await {
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
        let revoked = Revoked::default();
        let now = 1_000_000;
        // Expires in an hour; expired 10 s ago (inside a 30 s leeway); expired 31 s ago.
        revoked.insert_all([("live", now + 3600 + 30), ("leeway", now - 10 + 30), ("gone", now - 31 + 30)], now);
        assert!(revoked.contains("live", now));
        assert!(revoked.contains("leeway", now));
        assert!(!revoked.contains("gone", now));
        assert!(!revoked.contains("leeway", now + 20));
        // Past their time, entries are pruned on the next insert.
        revoked.insert_all([], now + 21);
        assert_eq!(revoked.read().len(), 1);
    }
}
