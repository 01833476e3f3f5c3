//! API key management: who may create, rotate, revoke or change which key.
//! REST, the gRPC admin API and the CLI all call these methods; the rules
//! live here and nowhere else, and each action is audited here, once.
//!
//! The rules, so no credential acts beyond itself:
//! * The operator at the command line (who holds the database already) may
//!   manage any key.
//! * A secret in its rotation grace period manages nothing: a leaked old
//!   secret cannot rotate the key again and take over the new one.
//! * A caller's own keys: with a session token (the person, signed in), any;
//!   with an API key, only keys whose permissions it holds all of.
//! * Other users' keys need `manage_users`; rotating one (which hands the new
//!   secret to the caller) also needs every permission of that key.
//! * A new key never holds a permission its creator does not hold, and never
//!   more than its owner's role grants.

use crate::audit::event;
use crate::authn::api_key;
use crate::domain::{
    ApiKey, AuditAction, AuthMethod, KeyUpdate, NewApiKey, NewAuditEvent, Permission, PermissionSet, Principal, User,
};
use crate::secret::Secret;
use crate::store::bus::Change;

use super::{
    AccountError, Accounts, DEFAULT_ROTATION_GRACE_SECONDS, KeyRequest, MAX_KEY_LIFETIME_DAYS,
    MAX_ROTATION_GRACE_SECONDS, RotatedKey, key_models, parse_models, validate_text, validation,
};

/// The most unrevoked, unexpired keys one user may hold: keys are rows,
/// audit events and list entries, and a stolen session should not mint them
/// by the thousand.
pub const MAX_ACTIVE_KEYS_PER_USER: usize = 100;

/// Who asks for a management action.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// The operator at the command line.
    Operator,
    /// An authenticated caller of the REST or gRPC API.
    Caller(&'a Principal),
}

/// The door a management action came through, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Rest,
    Grpc,
    CommandLine,
}

impl Door {
    fn as_str(self) -> &'static str {
        match self {
            Door::Rest => "REST",
            Door::Grpc => "gRPC",
            Door::CommandLine => "command line",
        }
    }
}

/// An actor, the door and the client address: what every management
/// action takes, so that it can decide and audit on its own.
#[derive(Debug, Clone, Copy)]
pub struct Acting<'a> {
    pub actor: Actor<'a>,
    pub door: Door,
    pub client_ip: Option<&'a str>,
}

impl<'a> Acting<'a> {
    /// The operator at the command line.
    pub fn operator() -> Acting<'static> {
        Acting { actor: Actor::Operator, door: Door::CommandLine, client_ip: None }
    }

    pub fn caller(principal: &'a Principal, door: Door, client_ip: Option<&'a str>) -> Acting<'a> {
        Acting { actor: Actor::Caller(principal), door, client_ip }
    }

    pub(super) fn principal(&self) -> Option<&'a Principal> {
        match self.actor {
            Actor::Operator => None,
            Actor::Caller(p) => Some(p),
        }
    }

    /// An audit event attributed to this actor.
    pub(super) fn event(&self, action: AuditAction, target: String, detail: String) -> NewAuditEvent {
        let actor = self.principal().map_or_else(|| "operator".to_owned(), |p| p.user_id.to_string());
        event(action)
            .actor(actor)
            .target(target)
            .detail(format!("{detail} (via {})", self.door.as_str()))
            .client_ip(self.client_ip)
    }
}

/// What is being done to an existing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAction {
    Rotate,
    Revoke,
    Update,
}

impl KeyAction {
    fn verb(self) -> &'static str {
        match self {
            KeyAction::Rotate => "rotate",
            KeyAction::Revoke => "revoke",
            KeyAction::Update => "change",
        }
    }
}

impl Accounts {
    /// Creates a key for `owner` (an id or email; `None`: the caller). The
    /// returned secret is the only copy.
    pub async fn create_key(
        &self,
        by: &Acting<'_>,
        owner: Option<&str>,
        request: KeyRequest<'_>,
        now: i64,
    ) -> Result<(ApiKey, Secret), AccountError> {
        let caller = by.principal();
        if let Some(p) = caller {
            refuse_grace_secret(p)?;
        }
        self.refuse_budgeted_key(by, "create keys").await?;
        let owner = match (owner, caller) {
            (Some(o), Some(p)) if !p.is(o) => {
                self.require_manage_users(by, p, "create a key for another user").await?;
                self.find_user(o).await?
            }
            (Some(o), None) => self.find_user(o).await?,
            (_, Some(p)) => self.find_user(&p.user_id).await?,
            (None, None) => return Err(validation("user", "name the key's owner")),
        };
        let KeyRequest { name, permissions, expires_in_days, models, budget } = request;
        let name = validate_text("name", name, 100)?;
        let role_permissions = self.roles.of(owner.role);
        let requested = permissions
            .map(|names| PermissionSet::from_names(names).map_err(|e| validation("permissions", e.to_string())))
            .transpose()?;
        if let Some(requested) = requested {
            let extra = requested.difference(role_permissions);
            if !extra.is_empty() {
                return Err(AccountError::Forbidden(format!(
                    "a {} cannot hold permissions its role does not grant: {extra}",
                    owner.role
                )));
            }
        }
        let permissions = match (requested, caller) {
            (requested, None) => requested,
            (Some(p), Some(c)) if !p.is_subset_of(c.permissions) => {
                return Err(AccountError::Forbidden(format!(
                    "cannot grant permissions the caller does not hold: {}",
                    p.difference(c.permissions)
                )));
            }
            (Some(p), Some(_)) => Some(p),
            // Inheriting the owner's role: only where the caller holds all of it.
            (None, Some(c)) if role_permissions.is_subset_of(c.permissions) => None,
            // A narrow key making a key for its own owner: as narrow as itself.
            (None, Some(c)) if c.is(&owner.id) => Some(c.permissions),
            (None, Some(c)) => {
                return Err(AccountError::Forbidden(format!(
                    "the new key would inherit permissions the caller does not hold ({}): name its permissions",
                    role_permissions.difference(c.permissions)
                )));
            }
        };
        let requested_models = models.map(<[String]>::to_vec);
        let models = match caller {
            Some(c) => key_models(c, requested_models)?,
            None => requested_models,
        };
        let models = models.as_deref().map(parse_models).transpose()?;
        let expires_at = match expires_in_days {
            None => None,
            Some(d) if (1..=MAX_KEY_LIFETIME_DAYS).contains(&d) => Some(now + i64::from(d) * 86_400),
            Some(_) => {
                return Err(validation("expires_in_days", format!("must be between 1 and {MAX_KEY_LIFETIME_DAYS}")));
            }
        };
        let active = self.store.list_api_keys(Some(&owner.id)).await?;
        let active = active.iter().filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|t| t > now)).count();
        if active >= MAX_ACTIVE_KEYS_PER_USER {
            return Err(AccountError::Conflict(format!(
                "a user holds at most {MAX_ACTIVE_KEYS_PER_USER} active keys: revoke one first"
            )));
        }
        let generated = api_key::generate();
        let new = NewApiKey {
            id: generated.id,
            user_id: owner.id.clone(),
            name,
            secret_hash: generated.secret_hash,
            permissions,
            expires_at,
            models,
            budget,
        };
        let key = self.store.create_api_key(&new).await?;
        let granted = permissions.map_or_else(|| format!("the {} role's", owner.role), |p| p.to_string());
        let mut detail = format!("owner user:{}, permissions: {granted}", owner.id);
        if let Some(t) = budget.tokens {
            detail.push_str(&format!(", token limit {t}"));
        }
        if let Some(s) = budget.spend {
            detail.push_str(&format!(", spend limit {s}"));
        }
        self.audit.record(by.event(AuditAction::KeyCreated, format!("key:{}", key.id), detail)).await;
        Ok((key, generated.key))
    }

    /// Gives a key a new secret, keeping its id, permissions, limits and
    /// owner. The old secret keeps working for `grace_seconds` (default 24 h;
    /// 0: stops at once); a second rotation within the grace period ends the
    /// first one's.
    pub async fn rotate_key(
        &self,
        by: &Acting<'_>,
        id: &str,
        grace_seconds: Option<u64>,
        now: i64,
    ) -> Result<RotatedKey, AccountError> {
        let grace_seconds = grace_seconds.unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
        if grace_seconds > MAX_ROTATION_GRACE_SECONDS {
            return Err(validation("grace_seconds", format!("must be at most {MAX_ROTATION_GRACE_SECONDS} (30 days)")));
        }
        self.may_manage_key(by, id, KeyAction::Rotate).await?;
        let grant = self.store.key_grant(id).await?.ok_or(AccountError::NotFound("API key"))?;
        if grant.revoked_at.is_some_and(|t| t <= now) {
            return Err(AccountError::Conflict("the key is revoked; create a new one".into()));
        }
        if grant.expires_at.is_some_and(|t| t <= now) {
            return Err(AccountError::Conflict("the key has expired; create a new one".into()));
        }
        let generated = api_key::generate_for(id.to_owned());
        let until = (grace_seconds > 0).then(|| now.saturating_add(i64::try_from(grace_seconds).unwrap_or(i64::MAX)));
        let key = self
            .store
            .rotate_api_key(id, &generated.secret_hash, until, now)
            .await?
            .ok_or(AccountError::NotFound("API key"))?;
        self.changed(Change::Key(id.to_owned())).await;
        let rotated = RotatedKey {
            key,
            secret: generated.key,
            fingerprint: api_key::fingerprint(&generated.secret_hash),
            previous_fingerprint: api_key::fingerprint(&grant.secret_hash),
        };
        self.audit.record(by.event(AuditAction::KeyRotated, format!("key:{id}"), rotated.audit_detail())).await;
        Ok(rotated)
    }

    /// Revokes a key. Revoking an already revoked key changes nothing and succeeds.
    pub async fn revoke_key(&self, by: &Acting<'_>, id: &str, now: i64) -> Result<ApiKey, AccountError> {
        self.may_manage_key(by, id, KeyAction::Revoke).await?;
        self.store.revoke_api_key(id, now).await?;
        self.changed(Change::Key(id.to_owned())).await;
        let key = self.store.api_key(id).await?.ok_or(AccountError::NotFound("API key"))?;
        self.audit.record(by.event(AuditAction::KeyRevoked, format!("key:{id}"), "revoked".to_owned())).await;
        Ok(key)
    }

    /// Sets or clears a key's own rate limit or model list; applies at once
    /// on this replica, within the change feed's interval on the others.
    pub async fn update_key(&self, by: &Acting<'_>, id: &str, update: &KeyUpdate) -> Result<ApiKey, AccountError> {
        if update.rate_limit.is_none() && update.models.is_none() && update.budget.is_empty() {
            return Err(validation("rate_limit", "set rate_limit, allowed_models, token_limit or spend_limit"));
        }
        self.may_manage_key(by, id, KeyAction::Update).await?;
        // A budget limits its holder: only who manages users sets or lifts one.
        if let Some(caller) = by.principal()
            && !update.budget.is_empty()
        {
            self.require_manage_users(by, caller, "change a key's budget").await?;
            self.refuse_budgeted_key(by, "change budgets").await?;
        }
        if let Some(caller) = by.principal()
            && caller.key_id.as_deref() == Some(id)
        {
            let refused = "a key cannot change its own limits or models".to_owned();
            self.audit.record(by.event(AuditAction::AdminDenied, format!("key:{id}"), refused.clone())).await;
            return Err(AccountError::Forbidden(refused));
        }
        if let Some(models) = &update.models {
            self.may_set_models(by, &format!("key:{id}"), models.as_ref()).await?;
        }
        let key = self.store.update_api_key(id, update).await?.ok_or(AccountError::NotFound("API key"))?;
        self.changed(Change::Key(id.to_owned())).await;
        let changed: Vec<&str> = [
            (update.rate_limit.is_some(), "rate limit"),
            (update.models.is_some(), "allowed models"),
            (update.budget.tokens.is_some(), "token limit"),
            (update.budget.spend.is_some(), "spend limit"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        let detail = format!("changed: {}", changed.join(", "));
        self.audit.record(by.event(AuditAction::KeyUpdated, format!("key:{id}"), detail)).await;
        Ok(key)
    }

    /// Records something the operator did at the command line.
    pub async fn record_operator(&self, action: AuditAction, target: String, detail: String) {
        self.audit.record(Acting::operator().event(action, target, detail)).await;
    }

    /// Whether `by` may act on key `id` (see the module's rules). Someone
    /// else's key is "not found" to a caller who may not manage users.
    async fn may_manage_key(&self, by: &Acting<'_>, id: &str, action: KeyAction) -> Result<(), AccountError> {
        if !api_key::is_valid_id(id) {
            return Err(AccountError::NotFound("API key"));
        }
        let Some(caller) = by.principal() else {
            return Ok(());
        };
        refuse_grace_secret(caller)?;
        let key = self.store.api_key(id).await?.ok_or(AccountError::NotFound("API key"))?;
        let own = *key.user_id == *caller.user_id;
        if !own && !caller.permissions.contains(Permission::ManageUsers) {
            return Err(AccountError::NotFound("API key"));
        }
        let session = matches!(caller.method, AuthMethod::Jwt | AuthMethod::Oidc);
        // Revoking another user's key grants nothing; changing one is an
        // administrator's job. Rotating hands over the secret: the caller must
        // already hold all that the key can do.
        if !own && action != KeyAction::Rotate || own && session {
            return Ok(());
        }
        let owner = self.store.user_by_id(&key.user_id).await?.ok_or(AccountError::NotFound("API key"))?;
        let held = self.effective_permissions(&key, &owner);
        let missing = held.difference(caller.permissions);
        if missing.is_empty() {
            return Ok(());
        }
        let refused = format!(
            "cannot {} a key holding permissions the caller does not hold ({missing}); use a session token or a key \
             with at least those permissions",
            action.verb()
        );
        self.audit.record(by.event(AuditAction::AdminDenied, format!("key:{id}"), refused.clone())).await;
        Err(AccountError::Forbidden(refused))
    }

    /// A key with a budget of its own cannot make keys or change budgets:
    /// a sibling key without its budget (or a budget lifted) would be a way
    /// around it. Its holder uses a session, or an administrator acts.
    pub async fn refuse_budgeted_key(&self, by: &Acting<'_>, what: &str) -> Result<(), AccountError> {
        let Some(caller) = by.principal() else { return Ok(()) };
        if caller.key_id.is_none() || caller.budgets.key.is_empty() {
            return Ok(());
        }
        let refused = format!("a key with a token or spend budget of its own cannot {what}; use a session");
        let target = format!("key:{}", caller.key_id.as_deref().unwrap_or(""));
        self.audit.record(by.event(AuditAction::AdminDenied, target, refused.clone())).await;
        Err(AccountError::Forbidden(refused))
    }

    async fn require_manage_users(&self, by: &Acting<'_>, caller: &Principal, what: &str) -> Result<(), AccountError> {
        if caller.permissions.contains(Permission::ManageUsers) {
            return Ok(());
        }
        let refused = format!("the manage_users permission is required to {what}");
        self.audit.record(by.event(AuditAction::AdminDenied, "keys".to_owned(), refused.clone())).await;
        Err(AccountError::Forbidden(refused))
    }

    /// What a key can do now: its own permissions within its owner's role.
    fn effective_permissions(&self, key: &ApiKey, owner: &User) -> PermissionSet {
        let role = self.roles.of(owner.role);
        key.permissions.map_or(role, |p| p.intersection(role))
    }
}

fn refuse_grace_secret(caller: &Principal) -> Result<(), AccountError> {
    if caller.previous_secret {
        return Err(AccountError::Forbidden(
            "a key's replaced secret (in its rotation grace period) cannot manage keys; use the new secret".into(),
        ));
    }
    Ok(())
}
