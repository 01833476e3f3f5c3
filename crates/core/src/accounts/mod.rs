//! Managing users, groups and API keys: validation and rules shared by the
//! CLI and the REST API. Every invalid input is refused before anything is
//! written.

mod authority;
mod caches;
mod keys;
mod providers;
mod validate;

use crate::clock::SharedClock;
pub use caches::{Caches, Invalidator};
pub use validate::{LoginName, is_plain_email, normalize_email, validate_email, validate_group_name};
use validate::{registrable, validate_text};

pub use keys::{Acting, Actor, Door, MAX_ACTIVE_KEYS_PER_USER};

use sha2::Digest;

use crate::audit::{Audit, event};
use crate::authn::oidc::ExternalIdentity;
use crate::authn::password;
use crate::domain::budget::{Budget, BudgetUpdate, SpendLimit, TokenLimit};
use crate::domain::{
    ApiKey, AuditAction, AuditEvent, AuditQuery, DEFAULT_GROUP, Group, ModelList, NewUser, Principal, Role,
    RolePermissions, User, UserUpdate,
};
use crate::secret::Secret;
use crate::store::bus::{Apply, Change, Publish};
use crate::store::cache::{GroupCache, KeyCache, UserCache};
use crate::store::{DynStore, StoreError, UsageQuery, UsageSum};

/// Who may register, and how passwords are hashed.
#[derive(Clone, Debug)]
pub struct AccountSettings {
    pub allow_registration: bool,
    /// Lower-case domains; empty: any.
    pub allowed_email_domains: Vec<String>,
    pub default_role: Role,
    pub password_min_length: usize,
    /// How many password hashes and verifications run at once, and how long
    /// the rest wait.
    pub password_hashing: password::HashingLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{field}: {message}")]
    Validation { field: &'static str, message: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// A provider's identity gets no account here (one of [`refusal`]).
    #[error("{0}")]
    Refused(&'static str),
    /// Unknown account and wrong password share this one message.
    #[error("invalid email or password")]
    InvalidLogin,
    /// Password hashing is at capacity: try again after this long.
    #[error("too many password checks at once; retry in {0:?}")]
    Busy(std::time::Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait::async_trait]
impl crate::authn::Provision for Accounts {
    async fn provision(&self, identity: &ExternalIdentity) -> Result<User, crate::authn::ProvisionError> {
        Accounts::provision(self, identity).await.map_err(|e| match e {
            AccountError::Refused(reason) => crate::authn::ProvisionError::Refused(reason),
            e => crate::authn::ProvisionError::Failed(e.to_string()),
        })
    }
}

impl From<password::HashingError> for AccountError {
    fn from(e: password::HashingError) -> Self {
        match e {
            password::HashingError::Busy(retry_after) => AccountError::Busy(retry_after),
            password::HashingError::Failed => AccountError::Store(StoreError::Internal(e.to_string())),
        }
    }
}

fn validation(field: &'static str, message: impl Into<String>) -> AccountError {
    AccountError::Validation { field, message: message.into() }
}

/// A budget change as the doors receive it: `None` leaves a limit alone,
/// `Some(None)` removes it, `Some(Some(text))` sets it (`TOKENS/SECONDS`,
/// `USD/PERIOD`).
pub fn parse_budget_update(
    token_limit: Option<Option<&str>>,
    spend_limit: Option<Option<&str>>,
) -> Result<BudgetUpdate, AccountError> {
    Ok(BudgetUpdate {
        tokens: token_limit
            .map(|v| v.map(|s| s.parse::<TokenLimit>().map_err(|e| validation("token_limit", e))).transpose())
            .transpose()?,
        spend: spend_limit
            .map(|v| v.map(|s| s.parse::<SpendLimit>().map_err(|e| validation("spend_limit", e))).transpose())
            .transpose()?,
    })
}

/// A new budget from optional `token_limit` and `spend_limit` texts.
pub fn parse_budget(token_limit: Option<&str>, spend_limit: Option<&str>) -> Result<Budget, AccountError> {
    let mut budget = Budget::default();
    parse_budget_update(token_limit.map(Some), spend_limit.map(Some))?.apply(&mut budget);
    Ok(budget)
}

/// Why a provider's identity gets no account: shown to the user (403) and
/// recorded in the audit log.
pub mod refusal {
    pub const NOT_PROVISIONED: &str =
        "this sign-in provider does not create accounts for new users: ask an administrator for an account";
    pub const DOMAIN: &str = "this account's verified email is not in an allowed domain";
    pub const UNVERIFIED_ACCOUNT: &str = "an account with this email exists, but its address was not verified by \
                                          Gatehouse: ask an administrator to verify it before signing in this way";
    pub const PLACEHOLDER_TAKEN: &str =
        "this identity has no verified email, and the address it would be given is taken: ask an administrator";
}

pub const MAX_KEY_LIFETIME_DAYS: u32 = 3650;
/// How long a rotated key's old secret keeps working unless told otherwise.
pub const DEFAULT_ROTATION_GRACE_SECONDS: u64 = 86_400;
/// The longest grace period a rotation may give the old secret.
pub const MAX_ROTATION_GRACE_SECONDS: u64 = 30 * 86_400;

/// A rotated key: its new secret (shown once) and the fingerprints of the
/// new and the replaced secret's hashes, for the audit log.
pub struct RotatedKey {
    pub key: ApiKey,
    pub secret: Secret,
    pub fingerprint: String,
    pub previous_fingerprint: String,
}

impl RotatedKey {
    /// The audit log's account of the rotation: both secrets by fingerprint.
    pub fn audit_detail(&self) -> String {
        let until = self.key.previous_secret_expires_at.map_or_else(|| "now".to_owned(), crate::clock::timestamp);
        format!("new secret {}, previous secret {} valid until {until}", self.fingerprint, self.previous_fingerprint)
    }
}

#[derive(Clone)]
pub struct Accounts {
    store: DynStore,
    roles: RolePermissions,
    settings: AccountSettings,
    /// Present in a running server.
    caches: Option<Caches>,
    audit: Audit,
    /// Every argon2id run of the process.
    hashing: password::Hashing,
    clock: SharedClock,
}

impl Accounts {
    pub fn new(
        store: DynStore,
        roles: RolePermissions,
        settings: AccountSettings,
        caches: Option<Caches>,
        clock: SharedClock,
    ) -> Self {
        let audit = Audit::new(store.clone(), clock.clone());
        let hashing = password::Hashing::new(settings.password_hashing.clone());
        Accounts { store, roles, settings, caches, audit, hashing, clock }
    }

    /// The service's clock: every door asks it for the time of a request.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Evicts what a change affects here, and tells the other replicas.
    async fn changed(&self, change: Change) {
        if let Some(c) = &self.caches {
            c.evict(&change).await;
            c.bus.publish(&change).await;
        }
    }

    pub fn roles(&self) -> &RolePermissions {
        &self.roles
    }

    pub fn settings(&self) -> &AccountSettings {
        &self.settings
    }

    /// Where every password hash and verification of the process runs.
    pub fn hashing(&self) -> &password::Hashing {
        &self.hashing
    }

    /// Self-service sign-up: the configured default role, the default group.
    pub async fn register(&self, email: &str, password: Secret, name: Option<&str>) -> Result<User, AccountError> {
        if !self.settings.allow_registration {
            return Err(AccountError::Forbidden("registration is disabled".into()));
        }
        let email = validate_email(email)?;
        if !registrable(&email) {
            return Err(validation("email", "addresses in the .invalid domain cannot register"));
        }
        if !self.domain_allowed(&email) {
            let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
            return Err(AccountError::Forbidden(format!("registration is not open to {domain} addresses")));
        }
        // Gatehouse sends no mail: a self-registered address is unverified.
        let role = self.settings.default_role;
        self.user_with_password(&email, name, role, DEFAULT_GROUP, Some(password), false).await
    }

    /// Whether `ALLOWED_EMAIL_DOMAINS` admits this address.
    fn domain_allowed(&self, email: &str) -> bool {
        let allowed = &self.settings.allowed_email_domains;
        let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
        allowed.is_empty() || allowed.iter().any(|d| d == domain)
    }

    /// Creates a user (by an admin, the CLI or the bootstrap: the address
    /// counts as verified), with a password when given (checked against the
    /// policy and hashed before anything is written).
    pub async fn create_user_with_password(
        &self,
        email: &str,
        name: Option<&str>,
        role: Role,
        group: &str,
        password: Option<Secret>,
    ) -> Result<User, AccountError> {
        self.user_with_password(email, name, role, group, password, true).await
    }

    async fn user_with_password(
        &self,
        email: &str,
        name: Option<&str>,
        role: Role,
        group: &str,
        password: Option<Secret>,
        email_verified: bool,
    ) -> Result<User, AccountError> {
        let password_hash = match password {
            Some(p) => Some(self.hash_password(p).await?),
            None => None,
        };
        self.insert_user(email, name, role, group, password_hash, email_verified).await
    }

    async fn hash_password(&self, password: Secret) -> Result<String, AccountError> {
        let len = password.expose().chars().count();
        if len < self.settings.password_min_length {
            let min = self.settings.password_min_length;
            return Err(validation("password", format!("must be at least {min} characters")));
        }
        if password.expose().len() > password::MAX_LEN {
            return Err(validation("password", format!("must be at most {} bytes", password::MAX_LEN)));
        }
        Ok(self.hashing.hash(password).await?)
    }

    /// Checks a login's password. Unknown users cost a hash verification
    /// too, so timing does not reveal which accounts exist.
    pub async fn verify_password(&self, name: &LoginName, password: Secret) -> Result<User, AccountError> {
        let user = self.user_by_login(name).await?;
        let hash = match &user {
            Some(u) => self.store.password_hash(&u.id).await?,
            None => None,
        };
        let ok = self.hashing.verify(password, hash).await?;
        match user {
            Some(u) if ok => Ok(u),
            _ => Err(AccountError::InvalidLogin),
        }
    }

    /// The user a login names, if any: looked up by exactly the name the
    /// login throttle counts against.
    pub async fn user_by_login(&self, name: &LoginName) -> Result<Option<User>, AccountError> {
        match name.email() {
            Some(email) => Ok(self.store.user_by_email(email).await?),
            None => Ok(None),
        }
    }

    /// Sets a user's password, ending every session they have (tokens
    /// issued until now are refused by Check and by refresh).
    pub async fn set_password(&self, user_id: &str, password: Secret) -> Result<(), AccountError> {
        let hash = self.hash_password(password).await?;
        if !self.store.set_password(user_id, &hash).await? {
            return Err(AccountError::NotFound("user"));
        }
        self.changed(Change::User(user_id.to_owned())).await;
        Ok(())
    }

    /// Ends every session of a user ("sign out everywhere"): session tokens
    /// issued until `now` are refused by Check and by refresh, on every
    /// replica. API keys are not affected.
    pub async fn end_sessions(&self, user_id: &str, now: i64) -> Result<(), AccountError> {
        if !self.store.end_sessions(user_id, now).await? {
            return Err(AccountError::NotFound("user"));
        }
        self.changed(Change::User(user_id.to_owned())).await;
        Ok(())
    }

    pub async fn update_group(&self, group: Group) -> Result<Group, AccountError> {
        validate_limits(&group)?;
        if !self.store.update_group(&group).await? {
            return Err(AccountError::NotFound("group"));
        }
        self.changed(Change::Group(group.name.clone())).await;
        Ok(group)
    }

    /// The store itself, for start-up and tests; the doors use the
    /// methods below.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// The audit log this service records to.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> Result<(), AccountError> {
        Ok(self.store.ping().await?)
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, AccountError> {
        Ok(self.store.user_by_id(id).await?)
    }

    pub async fn list_users(&self) -> Result<Vec<User>, AccountError> {
        Ok(self.store.list_users().await?)
    }

    pub async fn group(&self, name: &str) -> Result<Option<Group>, AccountError> {
        Ok(self.store.group(name).await?)
    }

    pub async fn list_groups(&self) -> Result<Vec<Group>, AccountError> {
        Ok(self.store.list_groups().await?)
    }

    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, AccountError> {
        Ok(self.store.audit_events(query).await?)
    }

    /// Metered LLM usage matching `query`, summed as it groups it.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageSum>, AccountError> {
        Ok(self.store.usage(query).await?)
    }

    /// Whether `key_id` is one of `user_id`'s API keys (revoked or not).
    pub async fn owns_key(&self, user_id: &str, key_id: &str) -> Result<bool, AccountError> {
        Ok(self.store.api_key(key_id).await?.is_some_and(|k| k.user_id == user_id))
    }

    pub async fn create_user(
        &self,
        email: &str,
        name: Option<&str>,
        role: Role,
        group: &str,
    ) -> Result<User, AccountError> {
        self.insert_user(email, name, role, group, None, true).await
    }

    async fn insert_user(
        &self,
        email: &str,
        name: Option<&str>,
        role: Role,
        group: &str,
        password_hash: Option<String>,
        email_verified: bool,
    ) -> Result<User, AccountError> {
        let email = validate_email(email)?;
        let name = name.map(|n| validate_text("name", n, 200)).transpose()?;
        validate_group_name(group)?;
        if self.store.group(group).await?.is_none() {
            return Err(validation("group", format!("group '{group}' does not exist")));
        }
        let new = NewUser { email: email.clone(), name, role, group: group.to_owned(), password_hash, email_verified };
        match self.store.create_user(&new).await {
            Err(StoreError::Conflict) => {
                Err(AccountError::Conflict("a user with this email already exists".to_owned()))
            }
            other => Ok(other?),
        }
    }

    /// A user by id, or by email when the argument contains `@`.
    pub async fn find_user(&self, id_or_email: &str) -> Result<User, AccountError> {
        let found = if id_or_email.contains('@') {
            self.store.user_by_email(id_or_email).await?
        } else {
            self.store.user_by_id(id_or_email).await?
        };
        found.ok_or(AccountError::NotFound("user"))
    }

    /// Changes a user's role, group or status. Cached grants are dropped so
    /// the change applies to the user's keys at once on this replica.
    /// Disabling a user ends their sessions for good: enabling them again
    /// does not bring their old tokens back.
    pub async fn update_user(&self, id: &str, update: &UserUpdate) -> Result<User, AccountError> {
        if let Some(group) = &update.group {
            validate_group_name(group)?;
            if self.store.group(group).await?.is_none() {
                return Err(validation("group", format!("group '{group}' does not exist")));
            }
        }
        let user = self.store.update_user(id, update).await?.ok_or(AccountError::NotFound("user"))?;
        self.changed(Change::User(user.id.clone())).await;
        Ok(user)
    }

    pub async fn create_group(&self, group: Group) -> Result<Group, AccountError> {
        validate_group_name(&group.name)?;
        validate_limits(&group)?;
        match self.store.create_group(&group).await {
            Err(StoreError::Conflict) => Err(AccountError::Conflict(format!("group '{}' already exists", group.name))),
            Err(e) => Err(e.into()),
            Ok(()) => {
                // After the insert: a replica that reloads at once must find it.
                self.changed(Change::Group(group.name.clone())).await;
                Ok(group)
            }
        }
    }

    pub async fn list_keys(&self, user_id: Option<&str>) -> Result<Vec<ApiKey>, AccountError> {
        Ok(self.store.list_api_keys(user_id).await?)
    }
}

/// What a new key should be.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyRequest<'a> {
    pub name: &'a str,
    /// `None`: the key inherits its owner's permissions.
    pub permissions: Option<&'a [String]>,
    pub expires_in_days: Option<u32>,
    /// `None`: any model the owner's group allows.
    pub models: Option<&'a [String]>,
    /// The key's own token and spend budgets.
    pub budget: Budget,
}

/// The models a key created by `caller` may have: a key made with a
/// model-restricted key stays within that key's models, inheriting the list or
/// asking for a part of it.
pub fn key_models(caller: &Principal, requested: Option<Vec<String>>) -> Result<Option<Vec<String>>, AccountError> {
    let Some(held) = &caller.models else { return Ok(requested) };
    let Some(requested) = requested else { return Ok(Some(held.names().to_vec())) };
    let within = |m: &String| if m.contains('*') { held.names().contains(m) } else { held.allows(m) };
    match requested.iter().find(|m| !within(m)) {
        Some(m) => Err(AccountError::Forbidden(format!("cannot allow model '{m}': the calling key does not allow it"))),
        None => Ok(Some(requested)),
    }
}

/// A model list from a request; errors name the `allowed_models` field.
pub fn parse_models(names: &[String]) -> Result<ModelList, AccountError> {
    ModelList::new(names).map_err(|e| validation("allowed_models", e.to_string()))
}

fn validate_limits(group: &Group) -> Result<(), AccountError> {
    for (field, value) in [
        ("requests_per_period", group.requests_per_period),
        ("period_seconds", group.period_seconds),
        ("burst", group.burst),
    ] {
        if value.is_some_and(|v| v <= 0) {
            return Err(validation(field, "must be a positive number"));
        }
    }
    if group.requests_per_period.is_some() != group.period_seconds.is_some() {
        return Err(validation("period_seconds", "a limit needs both requests_per_period and period_seconds"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
