//! Authentication: from a presented credential to a [`Principal`].

pub mod api_key;
pub mod credentials;

use crate::domain::{AuthMethod, Denial, KeyGrant, Principal, RolePermissions};
use crate::store::cache::KeyCache;
use crate::store::usage::UsageRecorder;

pub use credentials::Credential;

pub struct Authenticator {
    keys: KeyCache,
    roles: RolePermissions,
    usage: UsageRecorder,
}

impl Authenticator {
    pub fn new(keys: KeyCache, roles: RolePermissions, usage: UsageRecorder) -> Self {
        Authenticator { keys, roles, usage }
    }

    pub async fn authenticate(&self, credential: Credential<'_>, now: i64) -> Result<Principal, Denial> {
        match credential {
            Credential::ApiKey(key) => self.api_key(key, now).await,
            // No JWT verifier is configured: a bearer token that is not an API key
            // cannot be valid.
            Credential::Bearer(_) => Err(Denial::InvalidCredential),
        }
    }

    async fn api_key(&self, key: &str, now: i64) -> Result<Principal, Denial> {
        let presented = api_key::parse(key).map_err(|_| Denial::InvalidCredential)?;
        let grant = match self.keys.get(presented.id).await {
            Ok(Some(grant)) => grant,
            Ok(None) => return Err(Denial::InvalidCredential),
            Err(e) => {
                tracing::warn!(error = %e, "key lookup failed");
                return Err(Denial::BackendUnavailable);
            }
        };
        // The secret is checked before anything about the key is revealed
        // (revoked, expired, disabled owner).
        if !api_key::verify(presented.secret, &grant.secret_hash) {
            return Err(Denial::InvalidCredential);
        }
        check_grant(&grant, now)?;
        self.usage.record(&grant.key_id, now);
        let role_permissions = self.roles.of(grant.role);
        Ok(Principal {
            user_id: grant.user_id.clone(),
            email: grant.email.clone(),
            role: grant.role,
            group: grant.group.clone(),
            method: AuthMethod::ApiKey,
            key_id: Some(grant.key_id.clone()),
            // A key never holds more than its owner's role grants now.
            permissions: grant.permissions.map_or(role_permissions, |p| p.intersection(role_permissions)),
        })
    }
}

/// Revocation, expiry and the owner's status, in that order.
fn check_grant(grant: &KeyGrant, now: i64) -> Result<(), Denial> {
    if grant.revoked_at.is_some_and(|at| at <= now) {
        return Err(Denial::Revoked);
    }
    if grant.expires_at.is_some_and(|at| at <= now) {
        return Err(Denial::Expired);
    }
    if grant.user_disabled {
        return Err(Denial::AccountDisabled);
    }
    Ok(())
}
