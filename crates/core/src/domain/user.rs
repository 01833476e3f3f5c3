//! Stored users, groups and API keys, as the domain sees them.

use std::sync::Arc;

use super::budget::{Budget, BudgetUpdate};
use super::models::ModelList;
use super::permission::PermissionSet;
use super::role::Role;
use crate::domain::limit::Limit;

/// The group every user belongs to unless given another.
pub const DEFAULT_GROUP: &str = "default";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    pub group: String,
    pub disabled: bool,
    pub created_at: i64,
    /// Replaces the group's limit for this user.
    pub rate_limit: Option<Limit>,
    /// The user's token and spend budgets (all their keys and sessions).
    pub budget: Budget,
    /// Whether Gatehouse knows the address is the holder's (made by an admin,
    /// the CLI or the bootstrap, or from a provider's verified email; never by
    /// self-registration). Only such accounts are linked to a provider's
    /// identity by email.
    pub email_verified: bool,
    /// Session tokens issued at or before this time (Unix seconds) are
    /// refused: moved forward by a password change, disabling the user and
    /// "sign out everywhere".
    pub tokens_valid_after: i64,
}

/// A user to create. `email` is stored lower-cased.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    pub group: String,
    /// argon2id PHC string; `None`: the user cannot log in with a password.
    pub password_hash: Option<String>,
    pub email_verified: bool,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    pub role: Option<Role>,
    pub group: Option<String>,
    pub disabled: Option<bool>,
    /// `Some(None)` removes the override.
    pub rate_limit: Option<Option<Limit>>,
    pub budget: BudgetUpdate,
    pub email_verified: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// Requests allowed per `period_seconds`; `None` means unlimited.
    pub requests_per_period: Option<i64>,
    pub period_seconds: Option<i64>,
    pub burst: Option<i64>,
    /// Models the group's members may call; `None`: any.
    pub models: Option<ModelList>,
    /// The team's token and spend budgets, shared by every member.
    pub budget: Budget,
}

/// An API key as listed to its owner: everything but the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// `None`: the key inherits its owner's permissions as they are at each request.
    pub permissions: Option<PermissionSet>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// Replaces the owner's limit for requests made with this key.
    pub rate_limit: Option<Limit>,
    /// Models this key may call, within its owner's group's; `None`: any.
    pub models: Option<ModelList>,
    /// The key's own token and spend budgets.
    pub budget: Budget,
    /// When the secret was last replaced.
    pub rotated_at: Option<i64>,
    /// Until when the secret replaced by the last rotation still works.
    pub previous_secret_expires_at: Option<i64>,
}

/// A key to store. The secret itself never reaches the store, only its hash.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub secret_hash: [u8; 32],
    pub permissions: Option<PermissionSet>,
    pub expires_at: Option<i64>,
    pub models: Option<ModelList>,
    pub budget: Budget,
}

/// Changes to a key; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct KeyUpdate {
    pub rate_limit: Option<Option<Limit>>,
    pub models: Option<Option<ModelList>>,
    pub budget: BudgetUpdate,
}

/// What Check needs to authenticate a key: the key joined with its owner.
///
/// One of these is cached per key Check has seen (up to the cache's
/// capacity), so what most keys lack is kept apart in [`KeyTerms`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGrant {
    pub key_id: Arc<str>,
    pub secret_hash: [u8; 32],
    pub permissions: Option<PermissionSet>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub user_id: Arc<str>,
    pub email: Arc<str>,
    pub role: Role,
    pub group: Arc<str>,
    pub user_disabled: bool,
    /// `None` when every term is unset: build it with [`KeyTerms::boxed`].
    pub terms: Option<Box<KeyTerms>>,
}

/// A key's own limit, models and budget, its owner's limit and budget, and
/// the secret a rotation replaced: each unset for most keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyTerms {
    pub key_rate_limit: Option<Limit>,
    pub user_rate_limit: Option<Limit>,
    pub key_models: Option<ModelList>,
    pub key_budget: Budget,
    pub user_budget: Budget,
    /// The hash of the secret replaced by the last rotation, and until when
    /// it still works (the grace period).
    pub previous_secret: Option<([u8; 32], i64)>,
}

static NO_TERMS: KeyTerms = KeyTerms {
    key_rate_limit: None,
    user_rate_limit: None,
    key_models: None,
    key_budget: Budget { tokens: None, spend: None },
    user_budget: Budget { tokens: None, spend: None },
    previous_secret: None,
};

impl KeyGrant {
    /// The key's terms (all unset when it has none).
    pub fn terms(&self) -> &KeyTerms {
        self.terms.as_deref().unwrap_or(&NO_TERMS)
    }
}

impl KeyTerms {
    /// What [`KeyGrant::terms`] holds: nothing when every term is unset.
    pub fn boxed(self) -> Option<Box<KeyTerms>> {
        (self != NO_TERMS).then(|| Box::new(self))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_without_terms_stay_small() {
        // A cache holds up to `cache.capacity` of these (100,000 by default):
        // the terms most keys lack (352 bytes inline) are boxed apart.
        assert!(std::mem::size_of::<KeyGrant>() <= 160, "{} bytes", std::mem::size_of::<KeyGrant>());
        assert!(KeyTerms::default().boxed().is_none());
        let limited = KeyTerms {
            key_rate_limit: Some(Limit { requests: 1, period: Duration::from_secs(1), burst: 1 }),
            ..Default::default()
        };
        assert_eq!(limited.clone().boxed().as_deref(), Some(&limited));
        let rotated = KeyTerms { previous_secret: Some(([1; 32], 5)), ..Default::default() };
        assert_eq!(rotated.clone().boxed().as_deref(), Some(&rotated));
    }
}
