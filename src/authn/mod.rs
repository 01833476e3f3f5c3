//! Authentication: from a presented credential to a [`Principal`].

pub mod api_key;
pub mod credentials;
pub mod jwt;
pub mod password;
pub mod revocation;
pub mod throttle;

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use sha2::{Digest, Sha256};

use crate::domain::{AuthMethod, Denial, KeyGrant, Principal, RolePermissions, Session, User};
use crate::store::cache::{KeyCache, UserCache};
use crate::store::usage::UsageRecorder;

pub use credentials::Credential;
use jwt::{Claims, Jwt};
use revocation::Revocations;

/// Verified tokens, keyed by the SHA-256 of the token (never the token
/// itself), each kept no longer than the token is valid. A token verified once
/// is not verified again: steady-state RS256 costs what HS256 costs.
type VerifiedTokens = moka::sync::Cache<[u8; 32], Arc<Claims>>;

struct UntilTokenExpiry;

impl Expiry<[u8; 32], Arc<Claims>> for UntilTokenExpiry {
    fn expire_after_create(&self, _: &[u8; 32], claims: &Arc<Claims>, _: Instant) -> Option<Duration> {
        let left = claims.exp - time::OffsetDateTime::now_utc().unix_timestamp();
        Some(Duration::from_secs(left.max(0).unsigned_abs()))
    }
}

pub struct Authenticator {
    keys: KeyCache,
    users: UserCache,
    jwt: Arc<Jwt>,
    revocations: Revocations,
    verified: VerifiedTokens,
    roles: RolePermissions,
    usage: UsageRecorder,
}

/// What the authenticator reads through.
pub struct Sources {
    pub keys: KeyCache,
    pub users: UserCache,
    pub jwt: Arc<Jwt>,
    pub revocations: Revocations,
    pub usage: UsageRecorder,
}

impl Authenticator {
    pub fn new(sources: Sources, roles: RolePermissions, token_cache_capacity: u64) -> Self {
        let verified =
            moka::sync::Cache::builder().max_capacity(token_cache_capacity).expire_after(UntilTokenExpiry).build();
        let Sources { keys, users, jwt, revocations, usage } = sources;
        Authenticator { keys, users, jwt, revocations, verified, roles, usage }
    }

    pub async fn authenticate(&self, credential: Credential<'_>, now: i64) -> Result<Principal, Denial> {
        match credential {
            Credential::ApiKey(key) => self.api_key(key, now).await,
            Credential::Bearer(token) => self.session_token(token, now).await,
        }
    }

    async fn api_key(&self, key: &str, now: i64) -> Result<Principal, Denial> {
        let presented = api_key::parse(key).map_err(|_| Denial::InvalidCredential)?;
        let grant = match self.keys.get(presented.id).await {
            Ok(Some(grant)) => grant,
            Ok(None) => return Err(Denial::InvalidCredential),
            Err(e) => return Err(unavailable(&e)),
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
            session: None,
        })
    }

    async fn session_token(&self, token: &str, now: i64) -> Result<Principal, Denial> {
        let claims = self.verified_claims(token, now)?;
        if self.revocations.is_revoked(&claims.jti) {
            return Err(Denial::Revoked);
        }
        let user = match self.users.get(&claims.sub).await {
            Ok(Some(user)) => user,
            Ok(None) => return Err(Denial::InvalidCredential),
            Err(e) => return Err(unavailable(&e)),
        };
        let session = Session { jti: Arc::from(claims.jti.as_str()), expires_at: claims.exp };
        self.user_principal(&user, AuthMethod::Jwt, Some(session))
    }

    fn verified_claims(&self, token: &str, now: i64) -> Result<Arc<Claims>, Denial> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.verified.get(&digest) {
            if claims.exp + self.jwt.settings().leeway_seconds <= now {
                return Err(Denial::Expired);
            }
            return Ok(claims);
        }
        let claims = Arc::new(self.jwt.verify(token, now)?);
        self.verified.insert(digest, claims.clone());
        Ok(claims)
    }

    /// A principal for a user as stored now: current role, group and status.
    pub fn user_principal(
        &self,
        user: &User,
        method: AuthMethod,
        session: Option<Session>,
    ) -> Result<Principal, Denial> {
        if user.disabled {
            return Err(Denial::AccountDisabled);
        }
        Ok(Principal {
            user_id: Arc::from(user.id.as_str()),
            email: Arc::from(user.email.as_str()),
            role: user.role,
            group: Arc::from(user.group.as_str()),
            method,
            key_id: None,
            permissions: self.roles.of(user.role),
            session,
        })
    }

    pub fn jwt(&self) -> &Arc<Jwt> {
        &self.jwt
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    pub fn roles(&self) -> &RolePermissions {
        &self.roles
    }
}

fn unavailable(e: &crate::store::StoreError) -> Denial {
    tracing::warn!(error = %e, "credential lookup failed");
    Denial::BackendUnavailable
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
