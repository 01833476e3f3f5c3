//! Evicting what a change affects, here and (through [`Publish`]) on the
//! other replicas.

use super::*;

/// Caches to evict when records change, so Check sees changes at once.
#[derive(Clone)]
pub struct Caches {
    pub keys: KeyCache,
    pub users: UserCache,
    pub groups: GroupCache,
    /// Tells the other replicas.
    pub bus: std::sync::Arc<dyn Publish>,
}

impl Caches {
    pub(super) async fn evict(&self, change: &Change) {
        match change {
            Change::Key(id) => self.keys.invalidate(id).await,
            // A key's grant carries its owner's role, group and status:
            // that user's keys go too (only theirs: the others stay warm,
            // which matters when the database is about to be away).
            Change::User(id) => {
                self.users.invalidate(id).await;
                let owner: std::sync::Arc<str> = std::sync::Arc::from(id.as_str());
                self.keys.invalidate_where(Box::new(move |grant| grant.user_id == owner));
            }
            Change::Group(name) => self.groups.invalidate(name).await,
            Change::Token { .. } => {}
        }
    }
}

/// Applies changes published by other replicas.
#[derive(Clone)]
pub struct Invalidator {
    pub caches: Caches,
    pub revocations: crate::authn::revocation::Revocations,
}

impl Apply for Invalidator {
    async fn apply(&self, change: &Change) {
        match change {
            Change::Token { jti, expires_at } => self.revocations.remember(jti, *expires_at),
            other => self.caches.evict(other).await,
        }
    }

    /// Messages missed while Redis was away need no cache dropped: the
    /// change feed (read from the database) has every change, and evicts
    /// within its poll interval. Dropping everything here made every caller
    /// cold, and with the database down too (a failover during an outage),
    /// refused.
    async fn reset(&self) {
        if let Err(e) = self.revocations.sync(time::OffsetDateTime::now_utc().unix_timestamp()).await {
            tracing::warn!(error = %e, "could not reload token revocations");
        }
    }
}
