//! Persistence behind one small trait (the `gatehouse` crate implements it
//! for SQLite, the embedded default, and Postgres). The Check path reaches
//! the store only on a cache miss (see [`cache`]).

pub mod bus;
pub mod cache;
pub mod changes;
pub mod metering;
pub mod usage;

use std::sync::Arc;

use async_trait::async_trait;

pub use metering::{Metering, UsageEvent, UsageGroupBy, UsageQuery, UsageRow, UsageSum};

use crate::domain::{
    ApiKey, AuditEvent, AuditQuery, Group, KeyGrant, KeyUpdate, NewApiKey, NewAuditEvent, NewUser, User, UserUpdate,
};

/// What went wrong, classified where the driver's error is converted.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint would be violated.
    #[error("already exists")]
    Conflict,
    /// A referenced row (user, group) does not exist.
    #[error("referenced record does not exist")]
    MissingReference,
    #[error("database error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A shared handle to the configured backend.
pub type DynStore = Arc<dyn Store>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is ("sqlite" or "postgres").
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> StoreResult<()>;

    /// The Check path's one query: a key joined with its owner.
    async fn key_grant(&self, key_id: &str) -> StoreResult<Option<KeyGrant>>;

    async fn create_user(&self, user: &NewUser) -> StoreResult<User>;
    /// Creates a user linked to an external account, both or neither
    /// (`Conflict` if the email or the external account is taken).
    async fn create_linked_user(&self, user: &NewUser, provider: &str, subject: &str) -> StoreResult<User>;
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// The user linked to an account at an external identity provider.
    async fn user_by_identity(&self, provider: &str, subject: &str) -> StoreResult<Option<User>>;
    /// Links an external account to a user (`Conflict` if already linked).
    async fn link_identity(&self, provider: &str, subject: &str, user_id: &str) -> StoreResult<()>;
    /// Applies `update`; `None` when no such user.
    async fn update_user(&self, id: &str, update: &UserUpdate) -> StoreResult<Option<User>>;

    /// The user's argon2id hash; `None` when the user has no password.
    async fn password_hash(&self, user_id: &str) -> StoreResult<Option<String>>;
    /// Replaces the password and ends the user's sessions (moves
    /// `tokens_valid_after` past every token issued so far), in one statement.
    /// Returns whether the user exists.
    async fn set_password(&self, user_id: &str, hash: &str) -> StoreResult<bool>;
    /// Ends the user's sessions: tokens issued until `at` are refused from now
    /// on. Returns whether the user exists.
    async fn end_sessions(&self, user_id: &str, at: i64) -> StoreResult<bool>;

    async fn create_group(&self, group: &Group) -> StoreResult<()>;
    /// Replaces a group's limits. Returns whether the group exists.
    async fn update_group(&self, group: &Group) -> StoreResult<bool>;
    async fn group(&self, name: &str) -> StoreResult<Option<Group>>;
    async fn list_groups(&self) -> StoreResult<Vec<Group>>;

    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKey>;
    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKey>>;
    /// Keys of one user, or of everyone when `user_id` is `None`; newest first.
    async fn list_api_keys(&self, user_id: Option<&str>) -> StoreResult<Vec<ApiKey>>;
    /// Applies `update`; `None` when no such key.
    async fn update_api_key(&self, id: &str, update: &KeyUpdate) -> StoreResult<Option<ApiKey>>;
    /// Replaces a key's secret; the old one keeps working until
    /// `previous_until` (`None`: not at all). `None` when no such unrevoked key.
    async fn rotate_api_key(
        &self,
        id: &str,
        secret_hash: &[u8; 32],
        previous_until: Option<i64>,
        at: i64,
    ) -> StoreResult<Option<ApiKey>>;
    /// Sets `revoked_at` unless already revoked. Returns whether a key changed.
    async fn revoke_api_key(&self, id: &str, at: i64) -> StoreResult<bool>;
    /// Records a revoked token id. Returns whether this call revoked it
    /// (`false`: it already was), atomically across replicas.
    async fn revoke_token(&self, jti: &str, user_id: &str, expires_at: i64, at: i64) -> StoreResult<bool>;
    /// Token ids revoked at or after `since` whose token expires after
    /// `expired_after`, with that expiry.
    async fn revoked_tokens_since(&self, since: i64, expired_after: i64) -> StoreResult<Vec<(String, i64)>>;

    /// Records when keys were last used (batched off the Check path).
    async fn touch_api_keys(&self, used: &[(String, i64)]) -> StoreResult<()>;

    /// The newest id in the change feed (0 when it is empty).
    async fn latest_change(&self) -> StoreResult<i64>;
    /// Change feed rows after `after` (`id`, `kind`, `ref`), oldest first.
    async fn changes_after(&self, after: i64, limit: i64) -> StoreResult<Vec<(i64, String, String)>>;
    /// Deletes change feed rows written before `before` (Unix seconds).
    async fn prune_changes(&self, before: i64) -> StoreResult<u64>;

    async fn record_audit(&self, event: &NewAuditEvent) -> StoreResult<()>;
    /// Events matching `query`, newest first, at most `query.limit`.
    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;

    /// Adds each row's counters to the stored ones (`usage_daily`), in one
    /// transaction: all of them or, on error, none.
    async fn add_usage(&self, rows: &[UsageRow]) -> StoreResult<()>;
    /// Usage matching `query`, summed as it groups them, ordered by day then model.
    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageSum>>;
}
