//! Accounts for providers' identities: provisioning on first sight, linking
//! to an existing account, and keeping claims in sync.

use super::*;

impl Accounts {
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

    pub(super) async fn link_new_identity(
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
    pub(super) async fn link_existing(&self, identity: &ExternalIdentity, user: User) -> Result<User, AccountError> {
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
    pub(super) async fn refuse(
        &self,
        identity: &ExternalIdentity,
        user: Option<&User>,
        reason: &'static str,
    ) -> AccountError {
        let mut e = event(AuditAction::LoginFailed)
            .actor(provider_actor(identity))
            .detail(format!("{reason} (subject {})", identity.subject));
        if let Some(user) = user {
            e = e.target(format!("user:{}", user.id));
        }
        self.audit.record(e).await;
        AccountError::Refused(reason)
    }

    pub(super) async fn audit_by_provider(
        &self,
        identity: &ExternalIdentity,
        action: AuditAction,
        user: &User,
        detail: String,
    ) {
        let e = event(action).actor(provider_actor(identity)).target(format!("user:{}", user.id)).detail(detail);
        self.audit.record(e).await;
    }

    /// Applies the provider's role and group claims when they differ from
    /// what is stored (a claim with no value that maps to a role, or no group
    /// that exists here, changes nothing); each change is audited.
    pub(super) async fn sync_claims(&self, user: User, identity: &ExternalIdentity) -> Result<User, AccountError> {
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
}

/// The provider's verified email as Gatehouse would store it; `None` when it
/// has none, or one Gatehouse could not store or forward safely, or one in the
/// reserved `.invalid` domain (never linked to a placeholder account).
pub(super) fn usable_email(identity: &ExternalIdentity) -> Option<String> {
    identity.verified_email.as_deref().and_then(|e| validate_email(e).ok()).filter(|e| registrable(e))
}

/// The audit log's actor for changes a provider's claims make.
pub(super) fn provider_actor(identity: &ExternalIdentity) -> String {
    format!("provider:{}", identity.provider)
}

/// An address for a provider account without a (verified) email: never
/// deliverable (`.invalid`), unique per provider and subject.
pub(super) fn placeholder_email(identity: &ExternalIdentity) -> String {
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
