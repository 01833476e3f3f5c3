//! Authentication: from a presented credential to a [`Principal`].

pub mod api_key;
pub mod credentials;
pub mod jwt;
pub mod login;
pub mod oidc;
pub mod password;
pub mod revocation;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::domain::Override;
use crate::domain::budget::{Budget, CallerBudgets};
use crate::domain::{AuthMethod, Denial, KeyGrant, Principal, RolePermissions, Session, User};
use crate::store::cache::{KeyCache, SharedMap, UserCache};
use crate::store::usage::UsageRecorder;

pub use credentials::Credential;
use jwt::{Claims, Jwt};
use oidc::Providers;
use revocation::Revocations;

/// A token that passed verification.
#[derive(Debug)]
pub enum Verified {
    /// One of Gatehouse's own session tokens.
    Session(Claims),
    /// A provider's token, and the user it was provisioned as.
    External { user_id: String, exp: i64 },
    /// A provider's token whose identity gets no account here, remembered
    /// until `until` so a retried token costs no lookup and no audit row.
    Refused { denial: Denial, until: i64 },
}

/// How long a refused provider token stays refused without another look
/// (an admin's fix applies after at most this long).
const REFUSAL_MEMORY_SECONDS: i64 = 60;

impl Verified {
    fn exp(&self) -> i64 {
        match self {
            Verified::Session(c) => c.exp,
            Verified::External { exp, .. } => *exp,
            Verified::Refused { until, .. } => *until,
        }
    }
}

/// Gives a provider's identity its account here (the account service).
#[async_trait::async_trait]
pub trait Provision: Send + Sync + 'static {
    async fn provision(&self, identity: &oidc::ExternalIdentity) -> Result<User, ProvisionError>;
}

/// Why a provider's identity got no account.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The rules refuse it (the reason is shown to the caller).
    #[error("{0}")]
    Refused(&'static str),
    /// The accounts could not be read or written.
    #[error("{0}")]
    Failed(String),
}

/// Verified tokens, keyed by the SHA-256 of the token (never the token
/// itself), each kept no longer than the token is valid. A token verified once
/// is not verified again: steady-state RS256 costs what HS256 costs.
pub type VerifiedTokens = SharedMap<[u8; 32], Arc<Verified>>;

thread_local! {
    /// Verified-token cache hits and misses, resolved once per thread.
    static TOKEN_CACHE: (metrics::Counter, metrics::Counter) = (
        metrics::counter!("gatehouse_cache_requests_total", "cache" => "tokens", "result" => "hit"),
        metrics::counter!("gatehouse_cache_requests_total", "cache" => "tokens", "result" => "miss"),
    );
}

pub struct Authenticator {
    providers: Arc<Providers>,
    accounts: Arc<dyn Provision>,
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
    pub providers: Arc<Providers>,
    /// For provisioning users seen first in a provider's token.
    pub accounts: Arc<dyn Provision>,
    pub keys: KeyCache,
    pub users: UserCache,
    pub jwt: Arc<Jwt>,
    pub revocations: Revocations,
    pub usage: UsageRecorder,
    /// Where verified tokens are remembered (bounded: the cache capacity).
    pub verified: VerifiedTokens,
}

impl Authenticator {
    pub fn new(sources: Sources, roles: RolePermissions) -> Self {
        let Sources { providers, accounts, keys, users, jwt, revocations, usage, verified } = sources;
        Authenticator { providers, accounts, keys, users, jwt, revocations, verified, roles, usage }
    }

    pub async fn authenticate(&self, credential: Credential<'_>, now: i64) -> Result<Principal, Denial> {
        match credential {
            Credential::ApiKey(key) => self.api_key(key, now).await,
            Credential::Bearer(token) => self.bearer(token, now).await,
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
        let current = api_key::verify(presented.secret, &grant.secret_hash);
        // After a rotation, the replaced secret works until its grace period ends.
        let terms = grant.terms();
        let previous = || {
            terms.previous_secret.is_some_and(|(hash, until)| now < until && api_key::verify(presented.secret, &hash))
        };
        let previous_secret = !current && previous();
        if !current && !previous_secret {
            return Err(Denial::InvalidCredential);
        }
        check_grant(&grant, now)?;
        self.usage.record(&grant.key_id, now);
        let role_permissions = self.roles.of(grant.role);
        // A key never holds more than its owner's role grants now.
        let permissions = grant.permissions.map_or(role_permissions, |p| p.intersection(role_permissions));
        Ok(Principal {
            user_id: grant.user_id.clone(),
            email: grant.email.clone(),
            role: self.roles.carried_by(grant.role, permissions),
            group: grant.group.clone(),
            method: AuthMethod::ApiKey,
            key_id: Some(grant.key_id.clone()),
            permissions,
            session: None,
            rate_limit: terms
                .key_rate_limit
                .map(|limit| Override { limit, per_key: true })
                .or(terms.user_rate_limit.map(|limit| Override { limit, per_key: false })),
            models: terms.key_models.clone(),
            budgets: CallerBudgets { key: terms.key_budget, user: terms.user_budget },
            previous_secret,
        })
    }

    async fn bearer(&self, token: &str, now: i64) -> Result<Principal, Denial> {
        let verified = self.verified_token(token, now).await?;
        let (user_id, session, method, issued_at) = match &*verified {
            Verified::Session(claims) => {
                if self.revocations.is_revoked(&claims.jti, now) {
                    return Err(Denial::Revoked);
                }
                let session = Session { jti: Arc::from(claims.jti.as_str()), expires_at: claims.exp };
                (claims.sub.as_str(), Some(session), AuthMethod::Jwt, Some(claims.iat))
            }
            Verified::External { user_id, .. } => (user_id.as_str(), None, AuthMethod::Oidc, None),
            Verified::Refused { denial, .. } => return Err(denial.clone()),
        };
        let user = match self.users.get(user_id).await {
            Ok(Some(user)) => user,
            Ok(None) => return Err(Denial::InvalidCredential),
            Err(e) => return Err(unavailable(&e)),
        };
        // The user's sessions were ended (password change, disabled, "sign
        // out everywhere") after this token was issued.
        if issued_at.is_some_and(|iat| iat <= user.tokens_valid_after) && !user.disabled {
            return Err(Denial::Revoked);
        }
        self.user_principal(&user, method, session)
    }

    /// From the cache, or verified now: Gatehouse's own tokens by its key, a
    /// configured provider's by that provider's JWKS.
    async fn verified_token(&self, token: &str, now: i64) -> Result<Arc<Verified>, Denial> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.verified.get(&digest);
        TOKEN_CACHE.with(|(hit, miss)| if cached.is_some() { hit.increment(1) } else { miss.increment(1) });
        if let Some(verified) = cached {
            if let Verified::Refused { denial, .. } = &*verified {
                return Err(denial.clone());
            }
            if verified.exp() + self.jwt.settings().leeway_seconds <= now {
                return Err(Denial::Expired);
            }
            return Ok(verified);
        }
        let issuer = oidc::peek_issuer(token);
        let verified = match issuer.as_deref().and_then(|iss| self.providers.by_issuer(iss)) {
            Some(provider) if issuer.as_deref() != Some(self.jwt.settings().issuer.as_str()) => {
                let (_, identity) = provider.verify(token, None).await?;
                // Boxed: the cold path's future is deep, and need not be inlined.
                // Bounded like the caches' reads: with the database away, a
                // Check must still answer (503) before the proxy gives up.
                let provision = Box::pin(self.accounts.provision(&identity));
                let provisioned = tokio::time::timeout(self.users.lookup_timeout(), provision).await;
                let Ok(provisioned) = provisioned else {
                    tracing::warn!("could not provision a provider's user in time");
                    return Err(Denial::BackendUnavailable);
                };
                match provisioned {
                    Ok(user) => Verified::External { user_id: user.id, exp: identity.expires_at },
                    Err(ProvisionError::Refused(reason)) => {
                        let until = identity.expires_at.min(now + REFUSAL_MEMORY_SECONDS);
                        Verified::Refused { denial: Denial::NotProvisioned(reason), until }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not provision a provider's user");
                        return Err(Denial::BackendUnavailable);
                    }
                }
            }
            _ => Verified::Session(self.jwt.verify(token, now)?),
        };
        let verified = Arc::new(verified);
        let keep = Duration::from_secs(verified.exp().saturating_sub(now).max(0).unsigned_abs());
        self.verified.insert(digest, verified.clone(), keep);
        match &*verified {
            Verified::Refused { denial, .. } => Err(denial.clone()),
            _ => Ok(verified),
        }
    }

    pub fn providers(&self) -> &Arc<Providers> {
        &self.providers
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
            role: Some(user.role),
            group: Arc::from(user.group.as_str()),
            method,
            key_id: None,
            permissions: self.roles.of(user.role),
            session,
            rate_limit: user.rate_limit.map(|limit| Override { limit, per_key: false }),
            models: None,
            budgets: CallerBudgets { key: Budget::default(), user: user.budget },
            previous_secret: false,
        })
    }

    pub fn jwt(&self) -> &Arc<Jwt> {
        &self.jwt
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
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
