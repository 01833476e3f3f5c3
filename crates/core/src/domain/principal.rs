//! Who is calling: the outcome of authentication.

use std::fmt;
use std::sync::Arc;

use super::permission::PermissionSet;
use super::role::Role;

/// How the caller authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    ApiKey,
    Jwt,
    Oidc,
    Anonymous,
}

impl AuthMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Oidc => "oidc",
            AuthMethod::Anonymous => "anonymous",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller. Cheap to clone: strings are shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Arc<str>,
    pub email: Arc<str>,
    /// The role this credential carries: the user's, except for an API key
    /// narrowed below it (see [`RolePermissions::carried_by`]), which carries
    /// the highest role whose permissions it holds in full, or none.
    ///
    /// [`RolePermissions::carried_by`]: super::RolePermissions::carried_by
    pub role: Option<Role>,
    pub group: Arc<str>,
    pub method: AuthMethod,
    /// The API key used, when `method` is [`AuthMethod::ApiKey`].
    pub key_id: Option<Arc<str>>,
    /// Effective permissions for this request.
    pub permissions: PermissionSet,
    /// The session token used, when `method` is [`AuthMethod::Jwt`].
    pub session: Option<Session>,
    /// A limit that replaces the group's: the key's own, else the user's.
    pub rate_limit: Option<crate::domain::limit::Override>,
    /// The key's and the user's token and spend budgets.
    pub budgets: super::budget::CallerBudgets,
    /// Models the credential may call (an API key's own list); the group's
    /// list applies as well.
    pub models: Option<super::ModelList>,
    /// Authenticated with a key's replaced secret, in its rotation grace
    /// period: good for calls, never for managing keys.
    pub previous_secret: bool,
}

impl Principal {
    /// Whether `id_or_email` names this caller.
    pub fn is(&self, id_or_email: &str) -> bool {
        *self.user_id == *id_or_email || self.email.eq_ignore_ascii_case(id_or_email)
    }

    /// The carried role's name, or `""` for none.
    pub fn role_name(&self) -> &'static str {
        self.role.map_or("", Role::as_str)
    }
}

/// A session token's identity, for logout and refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub jti: Arc<str>,
    pub expires_at: i64,
}
