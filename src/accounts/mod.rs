//! Managing users, groups and API keys: validation and rules shared by the
//! CLI and the REST API. Every invalid input is refused before anything is
//! written.

mod keys;

pub use keys::{Acting, Actor, Door};

use crate::audit::Audit;
use crate::authn::oidc::ExternalIdentity;
use crate::authn::password;
use crate::config::AccountSettings;
use crate::domain::{
    ApiKey, DEFAULT_GROUP, Group, ModelList, NewUser, Principal, Role, RolePermissions, User, UserUpdate,
};
use crate::secret::Secret;
use crate::store::bus::{Apply, Bus, Change};
use crate::store::cache::{GroupCache, KeyCache, UserCache};
use crate::store::{DynStore, StoreError};

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
    /// Unknown account and wrong password share this one message.
    #[error("invalid email or password")]
    InvalidLogin,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn validation(field: &'static str, message: impl Into<String>) -> AccountError {
    AccountError::Validation { field, message: message.into() }
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
        let until = self.key.previous_secret_expires_at.map_or_else(|| "now".to_owned(), crate::views::timestamp);
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
    pub bus: Bus,
}

impl Caches {
    async fn evict(&self, change: &Change) {
        match change {
            Change::Key(id) => self.keys.invalidate(id).await,
            // A key's grant carries its owner's role, group and status.
            Change::User(id) => {
                self.users.invalidate(id).await;
                self.keys.invalidate_all();
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

    async fn reset(&self) {
        self.caches.keys.invalidate_all();
        self.caches.users.invalidate_all();
        self.caches.groups.invalidate_all();
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
}

impl Accounts {
    pub fn new(store: DynStore, roles: RolePermissions, settings: AccountSettings, caches: Option<Caches>) -> Self {
        let audit = Audit::new(store.clone());
        Accounts { store, roles, settings, caches, audit }
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

    /// Self-service sign-up: the configured default role, the default group.
    pub async fn register(&self, email: &str, password: Secret, name: Option<&str>) -> Result<User, AccountError> {
        if !self.settings.allow_registration {
            return Err(AccountError::Forbidden("registration is disabled".into()));
        }
        let email = validate_email(email)?;
        if !registrable(&email) {
            return Err(validation("email", "addresses in the .invalid domain cannot register"));
        }
        let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
        let allowed = &self.settings.allowed_email_domains;
        if !allowed.is_empty() && !allowed.iter().any(|d| d == domain) {
            return Err(AccountError::Forbidden(format!("registration is not open to {domain} addresses")));
        }
        self.create_user_with_password(&email, name, self.settings.default_role, DEFAULT_GROUP, Some(password)).await
    }

    /// Creates a user, with a password when given (checked against the policy
    /// and hashed before anything is written).
    pub async fn create_user_with_password(
        &self,
        email: &str,
        name: Option<&str>,
        role: Role,
        group: &str,
        password: Option<Secret>,
    ) -> Result<User, AccountError> {
        let password_hash = match password {
            Some(p) => Some(self.hash_password(p).await?),
            None => None,
        };
        self.insert_user(email, name, role, group, password_hash).await
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
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(|e| AccountError::Store(StoreError::Internal(e.to_string())))
    }

    /// Checks an email and password. Unknown users cost a hash verification
    /// too, so timing does not reveal which accounts exist.
    pub async fn verify_password(&self, email: &str, password: Secret) -> Result<User, AccountError> {
        let user = self.store.user_by_email(email.trim()).await?;
        let hash = match &user {
            Some(u) => self.store.password_hash(&u.id).await?,
            None => None,
        };
        let ok = tokio::task::spawn_blocking(move || password::verify(&password, hash.as_deref()))
            .await
            .map_err(|e| AccountError::Store(StoreError::Internal(e.to_string())))?;
        match user {
            Some(u) if ok => Ok(u),
            _ => Err(AccountError::InvalidLogin),
        }
    }

    /// The user behind an external identity, created on first sight
    /// ("just in time") so keys, groups and limits work for them too. A
    /// verified email links to an existing user with that email. The role and
    /// group follow the provider's claims when it sends them.
    pub async fn provision(&self, identity: &ExternalIdentity) -> Result<User, AccountError> {
        let user = match self.store.user_by_identity(&identity.provider, &identity.subject).await? {
            Some(user) => user,
            None => self.link_new_identity(identity).await?,
        };
        self.sync_claims(user, identity).await
    }

    async fn link_new_identity(&self, identity: &ExternalIdentity) -> Result<User, AccountError> {
        // A provider's email that Gatehouse could not store or forward safely
        // is treated as no email at all: never linked, never forwarded.
        let verified_email = identity.verified_email.as_deref().and_then(|e| validate_email(e).ok());
        let existing = match &verified_email {
            Some(email) => self.store.user_by_email(email).await?,
            None => None,
        };
        let user = match existing {
            Some(user) => user,
            None => {
                let email = verified_email.unwrap_or_else(|| placeholder_email(identity));
                let role = identity.role.unwrap_or(self.settings.default_role);
                // A display name Gatehouse would refuse is left out, not fatal.
                let name = identity.name.as_deref().filter(|n| validate_text("name", n, 200).is_ok());
                match self.insert_user(&email, name, role, DEFAULT_GROUP, None).await {
                    Err(AccountError::Conflict(_)) => {
                        self.store.user_by_email(&email).await?.ok_or(AccountError::NotFound("user"))?
                    }
                    other => other?,
                }
            }
        };
        match self.store.link_identity(&identity.provider, &identity.subject, &user.id).await {
            // Another request linked it first: use what it linked.
            Err(StoreError::Conflict) => self
                .store
                .user_by_identity(&identity.provider, &identity.subject)
                .await?
                .ok_or(AccountError::NotFound("user")),
            Err(e) => Err(e.into()),
            Ok(()) => {
                tracing::info!(user_id = %user.id, provider = %identity.provider, "external identity linked");
                Ok(user)
            }
        }
    }

    /// Applies the provider's role and group claims when they differ from
    /// what is stored (a group must already exist here to be used).
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
        self.update_user(&user.id, &update).await
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

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    pub async fn create_user(
        &self,
        email: &str,
        name: Option<&str>,
        role: Role,
        group: &str,
    ) -> Result<User, AccountError> {
        self.insert_user(email, name, role, group, None).await
    }

    async fn insert_user(
        &self,
        email: &str,
        name: Option<&str>,
        role: Role,
        group: &str,
        password_hash: Option<String>,
    ) -> Result<User, AccountError> {
        let email = validate_email(email)?;
        let name = name.map(|n| validate_text("name", n, 200)).transpose()?;
        validate_group_name(group)?;
        if self.store.group(group).await?.is_none() {
            return Err(validation("group", format!("group '{group}' does not exist")));
        }
        let new = NewUser { email: email.clone(), name, role, group: group.to_owned(), password_hash };
        match self.store.create_user(&new).await {
            Err(StoreError::Conflict) => {
                Err(AccountError::Conflict(format!("a user with email {email} already exists")))
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
    format!("{}@{}.idp.invalid", clean(&identity.subject, 64), host.join("."))
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
    let email = email.trim().to_ascii_lowercase();
    if is_plain_email(&email) { Ok(email) } else { Err(validation("email", "not a valid email address")) }
}

fn is_plain_email(email: &str) -> bool {
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
