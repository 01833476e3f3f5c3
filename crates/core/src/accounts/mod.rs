//! Managing users, groups and API keys: validation and rules shared by the
//! CLI and the REST API. Every invalid input is refused before anything is
//! written.

mod authority;
mod keys;

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
    async fn evict(&self, change: &Change) {
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
}

impl Accounts {
    pub fn new(store: DynStore, roles: RolePermissions, settings: AccountSettings, caches: Option<Caches>) -> Self {
        let audit = Audit::new(store.clone());
        let hashing = password::Hashing::new(settings.password_hashing.clone());
        Accounts { store, roles, settings, caches, audit, hashing }
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

    /// The user behind an external identity. On first sight, a verified
    /// email links to the account with that address when Gatehouse verified
    /// it too (refused otherwise: it may have been registered by someone
    /// else); with no such account, one is created if the provider
    /// provisions users. `ALLOWED_EMAIL_DOMAINS` applies to every identity.
    /// The role and group follow the provider's claims when they map to
    /// something here; each change is audited with the provider as actor.
    pub async fn provision(&self, identity: &ExternalIdentity) -> Result<User, AccountError> {
        let email = usable_email(identity);
        if !self.settings.allowed_email_domains.is_empty() && !email.as_deref().is_some_and(|e| self.domain_allowed(e))
        {
            return Err(self.refuse(identity, None, refusal::DOMAIN).await);
        }
        let user = match self.store.user_by_identity(&identity.provider, &identity.subject).await? {
            Some(user) => user,
            None => self.link_new_identity(identity, email).await?,
        };
        self.sync_claims(user, identity).await
    }

    async fn link_new_identity(
        &self,
        identity: &ExternalIdentity,
        email: Option<String>,
    ) -> Result<User, AccountError> {
        if let Some(email) = &email
            && let Some(user) = self.store.user_by_email(email).await?
        {
            return self.link_existing(identity, user).await;
        }
        if !identity.provision {
            return Err(self.refuse(identity, None, refusal::NOT_PROVISIONED).await);
        }
        let email_verified = email.is_some();
        let new = NewUser {
            email: email.unwrap_or_else(|| placeholder_email(identity)),
            // A display name Gatehouse would refuse is left out, not fatal.
            name: identity.name.as_deref().and_then(|n| validate_text("name", n, 200).ok()),
            role: identity.role.or(identity.default_role).unwrap_or(self.settings.default_role),
            group: DEFAULT_GROUP.to_owned(),
            password_hash: None,
            email_verified,
        };
        match self.store.create_linked_user(&new, &identity.provider, &identity.subject).await {
            Ok(user) => {
                let claim = identity.role.and(identity.role_claim.as_deref());
                let detail = format!(
                    "provisioned as {}{} for subject {}",
                    user.role,
                    claim.map(|c| format!(" from claim {c}")).unwrap_or_default(),
                    identity.subject
                );
                self.audit_by_provider(identity, AuditAction::UserCreated, &user, detail).await;
                tracing::info!(user_id = %user.id, provider = %identity.provider, "user provisioned");
                Ok(user)
            }
            // Another request for this identity got there first, or the
            // address is taken (never linked on that ground alone).
            Err(StoreError::Conflict) => {
                if let Some(user) = self.store.user_by_identity(&identity.provider, &identity.subject).await? {
                    return Ok(user);
                }
                match self.store.user_by_email(&new.email).await? {
                    Some(user) if email_verified => self.link_existing(identity, user).await,
                    taken => Err(self.refuse(identity, taken.as_ref(), refusal::PLACEHOLDER_TAKEN).await),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Links an identity whose verified email is `user`'s address, if
    /// Gatehouse verified that address too.
    async fn link_existing(&self, identity: &ExternalIdentity, user: User) -> Result<User, AccountError> {
        if !user.email_verified {
            return Err(self.refuse(identity, Some(&user), refusal::UNVERIFIED_ACCOUNT).await);
        }
        match self.store.link_identity(&identity.provider, &identity.subject, &user.id).await {
            // Another request linked it first: use what it linked.
            Err(StoreError::Conflict) => self
                .store
                .user_by_identity(&identity.provider, &identity.subject)
                .await?
                .ok_or(AccountError::NotFound("user")),
            Err(e) => Err(e.into()),
            Ok(()) => {
                let detail = format!("linked to subject {} by verified email", identity.subject);
                self.audit_by_provider(identity, AuditAction::UserUpdated, &user, detail).await;
                tracing::info!(user_id = %user.id, provider = %identity.provider, "external identity linked");
                Ok(user)
            }
        }
    }

    /// Records why `identity` gets no account (`user`: the account in the way).
    async fn refuse(&self, identity: &ExternalIdentity, user: Option<&User>, reason: &'static str) -> AccountError {
        let mut e = event(AuditAction::LoginFailed)
            .actor(provider_actor(identity))
            .detail(format!("{reason} (subject {})", identity.subject));
        if let Some(user) = user {
            e = e.target(format!("user:{}", user.id));
        }
        self.audit.record(e).await;
        AccountError::Refused(reason)
    }

    async fn audit_by_provider(&self, identity: &ExternalIdentity, action: AuditAction, user: &User, detail: String) {
        let e = event(action).actor(provider_actor(identity)).target(format!("user:{}", user.id)).detail(detail);
        self.audit.record(e).await;
    }

    /// Applies the provider's role and group claims when they differ from
    /// what is stored (a claim with no value that maps to a role, or no group
    /// that exists here, changes nothing); each change is audited.
    async fn sync_claims(&self, user: User, identity: &ExternalIdentity) -> Result<User, AccountError> {
        let mut update = UserUpdate::default();
        if let Some(role) = identity.role.filter(|r| *r != user.role) {
            update.role = Some(role);
        }
        for group in &identity.groups {
            if validate_group_name(group).is_ok() && self.store.group(group).await?.is_some() {
                if *group != user.group {
                    update.group = Some(group.clone());
                }
                break;
            }
        }
        if update.role.is_none() && update.group.is_none() {
            return Ok(user);
        }
        let updated = self.update_user(&user.id, &update).await?;
        let claim = |c: &Option<String>| c.clone().unwrap_or_default();
        if updated.role != user.role {
            let detail = format!("{} -> {} from claim {}", user.role, updated.role, claim(&identity.role_claim));
            self.audit_by_provider(identity, AuditAction::RoleChanged, &updated, detail).await;
        }
        if updated.group != user.group {
            let detail =
                format!("group {} -> {} from claim {}", user.group, updated.group, claim(&identity.group_claim));
            self.audit_by_provider(identity, AuditAction::UserUpdated, &updated, detail).await;
        }
        Ok(updated)
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

/// The provider's verified email as Gatehouse would store it; `None` when it
/// has none, or one Gatehouse could not store or forward safely, or one in the
/// reserved `.invalid` domain (never linked to a placeholder account).
fn usable_email(identity: &ExternalIdentity) -> Option<String> {
    identity.verified_email.as_deref().and_then(|e| validate_email(e).ok()).filter(|e| registrable(e))
}

/// The audit log's actor for changes a provider's claims make.
fn provider_actor(identity: &ExternalIdentity) -> String {
    format!("provider:{}", identity.provider)
}

/// An address for a provider account without a (verified) email: never
/// deliverable (`.invalid`), unique per provider and subject.
fn placeholder_email(identity: &ExternalIdentity) -> String {
    // Letters, digits and hyphens only, so the address passes `validate_email`.
    let clean = |s: &str, max: usize| -> String {
        let cleaned: String =
            s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(max).collect();
        let trimmed = cleaned.trim_matches('-');
        if trimmed.is_empty() { "x".to_owned() } else { trimmed.to_owned() }
    };
    let host = identity.provider.split("://").nth(1).unwrap_or(&identity.provider);
    let host = host.split(['/', ':']).next().unwrap_or("idp");
    let host: Vec<String> = host.split('.').map(|label| clean(label, 63)).collect();
    // Subjects are case-sensitive and may hold any character: when cleaning
    // changed the subject, a digest of the exact subject keeps `NoEmail` and
    // `noemail` (or `a.b` and `a-b`) from sharing an address.
    let local = clean(&identity.subject, 50);
    let local = if local == identity.subject {
        local
    } else {
        let digest = sha2::Sha256::digest(identity.subject.as_bytes());
        let tag: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
        format!("{local}-{tag}")
    };
    format!("{local}@{}.idp.invalid", host.join("."))
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

/// An email as Gatehouse stores it and forwards it (`x-auth-email`):
/// lower-case ASCII, a local part of letters, digits and `. _ + -`, and a
/// domain of dot-separated letter-digit-hyphen labels. Quoted local parts,
/// `,` `;` `"` `<` `>` `(` `)` `:` `%` `/` `?` `#`, spaces, non-ASCII and
/// look-alike characters are refused: an upstream that reads the header as a
/// list, an address with a display name, or a URL must see exactly one plain
/// address, the same one Gatehouse checked.
pub fn validate_email(email: &str) -> Result<String, AccountError> {
    let email = normalize_email(email);
    if is_plain_email(&email) { Ok(email) } else { Err(validation("email", "not a valid email address")) }
}

/// An email as it is stored: surrounding (Unicode) whitespace removed, ASCII
/// letters in lower case. Anything else is left as is, so it can never
/// match a stored (plain ASCII) address.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// The account a login attempt names, normalized once ([`normalize_email`]):
/// the login throttle counts against it and the account is looked up by it,
/// so no spelling (`"  Victim@Example.com"`, a no-break space) reaches the
/// account with a budget of its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoginName(String);

impl LoginName {
    pub fn new(identifier: &str) -> LoginName {
        LoginName(normalize_email(identifier))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stored email it can match: `None` when it is no plain address
    /// (the store's own case folding never sees anything but ASCII).
    pub fn email(&self) -> Option<&str> {
        is_plain_email(&self.0).then_some(self.0.as_str())
    }
}

/// Whether `email` is already in the form [`validate_email`] returns.
pub fn is_plain_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    let local_ok = (1..=64).contains(&local.len())
        && local.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._+-".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    email.len() <= 254 && local_ok && domain.contains('.') && domain.split('.').all(label_ok)
}

/// Whether an email may be used for a self-registered account: plain, and
/// not in the reserved `.invalid` domain that provider accounts without an
/// email are given (registering one would let a password account pose as,
/// or be linked to, a provider's user).
fn registrable(email: &str) -> bool {
    !email.ends_with(".invalid")
}

/// Characters that change how text looks without being seen: bidi
/// overrides and isolates, zero-width characters, joiners, the BOM, tags,
/// variation selectors, soft hyphens and other format characters. A name
/// carrying them can pose as another in a list or a log.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

fn validate_text(field: &'static str, value: &str, max: usize) -> Result<String, AccountError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(validation(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(validation(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(validation(field, "must not contain control characters"));
    }
    if value.chars().any(is_invisible) {
        return Err(validation(field, "must not contain invisible or formatting characters (bidi, zero-width)"));
    }
    Ok(value.to_owned())
}

pub fn validate_group_name(name: &str) -> Result<(), AccountError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(validation("group", "use 1-64 characters: a-z, 0-9, '-' and '_'")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(validate_email(" Alice@Example.COM ").unwrap(), "alice@example.com");
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a@b@c.com",
            "al ice@x.com",
            "a@.x.com",
            "mallory,admin@example.com",
            "mallory;admin@example.com",
            "\"mallory\"@example.com",
            "<admin@example.com>",
            "admin@example.com>",
            "mallory(admin)@example.com",
            "a:b@example.com",
            "a%2c@example.com",
            "a/b@example.com",
            "\u{430}dmin@example.com",
            "admin@ex\u{430}mple.com",
            "admin@example.com\u{200B}",
            "a..b@example.com",
            ".a@example.com",
            "a@-x.com",
            "a@x_y.com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
        for good in ["a.b+tag@mail.example.com", "o-k_1@x-y.example.org"] {
            assert!(validate_email(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn login_names_are_emails_as_stored() {
        let victim = LoginName::new("victim@example.com");
        for spelling in [
            "  victim@example.com",
            "VICTIM@Example.Com\t",
            "\u{a0}victim@example.com\u{3000}",
            "\u{2003}\u{85}victim@example.com\u{2028}\n",
        ] {
            assert_eq!(LoginName::new(spelling), victim, "{spelling:?}");
        }
        assert_eq!(victim.email(), Some("victim@example.com"));
        // The Kelvin sign lower-cases to `k` in Unicode: never looked up.
        assert_eq!(LoginName::new("\u{212a}im@example.com").email(), None);
        assert_eq!(LoginName::new("not an email").email(), None);
    }

    #[test]
    fn names_refuse_invisible_characters() {
        for bad in ["ci\u{202E}yek", "ci\u{200B}key", "key\u{2066}", "\u{FEFF}key", "ke\u{00AD}y", "k\u{E0041}"] {
            assert!(validate_text("name", bad, 100).is_err(), "{bad:?}");
        }
        assert_eq!(validate_text("name", " Clé d'équipe ", 100).unwrap(), "Clé d'équipe");
    }

    #[test]
    fn placeholder_emails_are_valid_and_unregistrable() {
        let identity = ExternalIdentity {
            provider: "https://idp.example.com:8443/realms/x".into(),
            subject: "Ünïcode sub/with,odd;chars".into(),
            ..ExternalIdentity::default()
        };
        let email = placeholder_email(&identity);
        assert!(validate_email(&email).is_ok(), "{email}");
        let twin = ExternalIdentity { subject: identity.subject.to_uppercase(), ..identity.clone() };
        assert_ne!(placeholder_email(&twin), email, "subjects differing in case get different addresses");
        assert!(!registrable(&email));
    }

    #[test]
    fn group_names() {
        assert!(validate_group_name("team-a_1").is_ok());
        for bad in ["", "Team", "a b", "ä", &"x".repeat(65)] {
            assert!(validate_group_name(bad).is_err(), "{bad}");
        }
    }
}
