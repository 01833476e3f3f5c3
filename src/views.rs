//! JSON shapes of users, groups and keys, shared by the CLI's `--json` output
//! and the REST API. Secrets appear only in [`CreatedKeyView`].

use serde::Serialize;

use crate::domain::{ApiKey, Group, User};
use crate::secret::Secret;

/// RFC 3339 UTC, as the seed documents show (`2026-02-04T12:00:00Z`).
pub use gatehouse_core::clock::timestamp;

fn opt_timestamp(unix: Option<i64>) -> Option<String> {
    unix.map(timestamp)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub role: String,
    pub group: String,
    pub disabled: bool,
    pub created_at: String,
    /// `REQUESTS/SECONDS/BURST` replacing the group's limit, if any.
    pub rate_limit: Option<String>,
    /// Whether a provider's identity with this verified email may be linked.
    pub email_verified: bool,
    /// `TOKENS/SECONDS`: the user's token budget, if any.
    pub token_limit: Option<String>,
    /// `USD/PERIOD`: the user's spend budget, if any.
    pub spend_limit: Option<String>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role.to_string(),
            group: u.group.clone(),
            disabled: u.disabled,
            created_at: timestamp(u.created_at),
            rate_limit: u.rate_limit.map(|l| l.to_string()),
            email_verified: u.email_verified,
            token_limit: u.budget.tokens.map(|t| t.to_string()),
            spend_limit: u.budget.spend.map(|s| s.to_string()),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupView {
    pub name: String,
    pub requests_per_period: Option<i64>,
    pub period_seconds: Option<i64>,
    pub burst: Option<i64>,
    /// `null`: any model.
    pub allowed_models: Option<Vec<String>>,
    /// `TOKENS/SECONDS` shared by the members, if any.
    pub token_limit: Option<String>,
    /// `USD/PERIOD` shared by the members, if any.
    pub spend_limit: Option<String>,
}

impl From<&Group> for GroupView {
    fn from(g: &Group) -> Self {
        GroupView {
            name: g.name.clone(),
            requests_per_period: g.requests_per_period,
            period_seconds: g.period_seconds,
            burst: g.burst,
            allowed_models: g.models.as_ref().map(|m| m.names().to_vec()),
            token_limit: g.budget.tokens.map(|t| t.to_string()),
            spend_limit: g.budget.spend.map(|s| s.to_string()),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    /// The non-secret start of the key, to recognise it in a list.
    pub prefix: String,
    pub name: String,
    pub user_id: String,
    /// `null` in listings when the key inherits its owner's permissions.
    pub permissions: Option<Vec<&'static str>>,
    /// The key has whatever its owner's role grants at each request.
    pub inherits_permissions: bool,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    #[schema(value_type = String, pattern = "^(active|revoked|expired)$")]
    pub status: &'static str,
    /// `REQUESTS/SECONDS/BURST` replacing the owner's limit, if any.
    pub rate_limit: Option<String>,
    /// `null`: any model the owner's group allows.
    pub allowed_models: Option<Vec<String>>,
    /// `TOKENS/SECONDS`: the key's own token budget, if any.
    pub token_limit: Option<String>,
    /// `USD/PERIOD`: the key's own spend budget, if any.
    pub spend_limit: Option<String>,
    /// When the secret was last rotated.
    pub rotated_at: Option<String>,
    /// Until when the secret replaced by the last rotation still works
    /// (`null`: it does not).
    pub previous_secret_expires_at: Option<String>,
}

impl KeyView {
    pub fn new(k: &ApiKey, now: i64) -> Self {
        let status = if k.revoked_at.is_some_and(|t| t <= now) {
            "revoked"
        } else if k.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else {
            "active"
        };
        KeyView {
            id: k.id.clone(),
            prefix: format!("{}{}", crate::authn::api_key::KEY_PREFIX, k.id),
            name: k.name.clone(),
            user_id: k.user_id.clone(),
            permissions: k.permissions.map(|p| p.names()),
            inherits_permissions: k.permissions.is_none(),
            expires_at: opt_timestamp(k.expires_at),
            revoked_at: opt_timestamp(k.revoked_at),
            created_at: timestamp(k.created_at),
            last_used_at: opt_timestamp(k.last_used_at),
            status,
            rate_limit: k.rate_limit.map(|l| l.to_string()),
            allowed_models: k.models.as_ref().map(|m| m.names().to_vec()),
            token_limit: k.budget.tokens.map(|t| t.to_string()),
            spend_limit: k.budget.spend.map(|s| s.to_string()),
            rotated_at: opt_timestamp(k.rotated_at),
            previous_secret_expires_at: opt_timestamp(k.previous_secret_expires_at.filter(|t| *t > now)),
        }
    }
}

/// A key just created: the only time its secret is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKeyView {
    #[serde(flatten)]
    pub info: KeyView,
    /// The full key: `gk_<id>_<secret>`.
    #[serde(rename = "key", serialize_with = "expose")]
    #[schema(value_type = String)]
    pub secret: Secret,
}

fn expose<S: serde::Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose())
}

/// A security event as `GET /auth/audit` lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub time: String,
    pub action: String,
    pub outcome: String,
    pub actor_id: Option<String>,
    pub target: Option<String>,
    pub client_ip: Option<String>,
    pub detail: Option<String>,
}

impl From<&crate::domain::AuditEvent> for AuditView {
    fn from(e: &crate::domain::AuditEvent) -> Self {
        AuditView {
            id: e.id,
            time: timestamp(e.at),
            action: e.action.clone(),
            outcome: e.outcome.clone(),
            actor_id: e.actor_id.clone(),
            target: e.target.clone(),
            client_ip: e.client_ip.clone(),
            detail: e.detail.clone(),
        }
    }
}
