//! Security events: who did what to whom, from where, and how it ended.

use std::fmt;

/// What happened. Stored and filtered by its dotted name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    LoginSucceeded,
    LoginFailed,
    Logout,
    Registered,
    UserCreated,
    UserUpdated,
    RoleChanged,
    GroupCreated,
    GroupUpdated,
    KeyCreated,
    KeyUpdated,
    KeyRevoked,
    /// A key got a new secret; the old one may work for a grace period.
    KeyRotated,
    /// An authenticated caller was refused an administrative call.
    AdminDenied,
}

impl AuditAction {
    pub const ALL: [AuditAction; 14] = [
        AuditAction::LoginSucceeded,
        AuditAction::LoginFailed,
        AuditAction::Logout,
        AuditAction::Registered,
        AuditAction::UserCreated,
        AuditAction::UserUpdated,
        AuditAction::RoleChanged,
        AuditAction::GroupCreated,
        AuditAction::GroupUpdated,
        AuditAction::KeyCreated,
        AuditAction::KeyUpdated,
        AuditAction::KeyRevoked,
        AuditAction::KeyRotated,
        AuditAction::AdminDenied,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            AuditAction::LoginSucceeded => "login.succeeded",
            AuditAction::LoginFailed => "login.failed",
            AuditAction::Logout => "logout",
            AuditAction::Registered => "user.registered",
            AuditAction::UserCreated => "user.created",
            AuditAction::UserUpdated => "user.updated",
            AuditAction::RoleChanged => "user.role_changed",
            AuditAction::GroupCreated => "group.created",
            AuditAction::GroupUpdated => "group.updated",
            AuditAction::KeyCreated => "key.created",
            AuditAction::KeyUpdated => "key.updated",
            AuditAction::KeyRevoked => "key.revoked",
            AuditAction::KeyRotated => "key.rotated",
            AuditAction::AdminDenied => "admin.denied",
        }
    }

    /// The outcome an action implies.
    pub const fn outcome(self) -> AuditOutcome {
        match self {
            AuditAction::LoginFailed => AuditOutcome::Failure,
            AuditAction::AdminDenied => AuditOutcome::Denied,
            _ => AuditOutcome::Success,
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit action '{0}' (known: {known})", known = AuditAction::ALL.map(AuditAction::as_str).join(", "))]
pub struct UnknownAuditAction(pub String);

impl std::str::FromStr for AuditAction {
    type Err = UnknownAuditAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| UnknownAuditAction(s.to_owned()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditOutcome {
    Success,
    Failure,
    Denied,
}

impl AuditOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Failure => "failure",
            AuditOutcome::Denied => "denied",
        }
    }
}

impl std::str::FromStr for AuditOutcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(AuditOutcome::Success),
            "failure" => Ok(AuditOutcome::Failure),
            "denied" => Ok(AuditOutcome::Denied),
            other => Err(format!("unknown outcome '{other}' (known: success, failure, denied)")),
        }
    }
}

/// An event to record. `target` names what was acted on (`user:<id>`,
/// `key:<id>`, `group:<name>`, or the path of a refused call); `detail` says
/// what changed. Neither ever holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub at: i64,
    pub action: AuditAction,
    pub actor_id: Option<String>,
    pub target: Option<String>,
    pub client_ip: Option<String>,
    pub detail: Option<String>,
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub action: String,
    pub outcome: String,
    pub actor_id: Option<String>,
    pub target: Option<String>,
    pub client_ip: Option<String>,
    pub detail: Option<String>,
}

/// Filters and a page: newest first, `before` is the id to continue below.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub action: Option<AuditAction>,
    pub outcome: Option<AuditOutcome>,
    pub actor_id: Option<String>,
    pub target: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before: Option<i64>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_by_name() {
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>(), Ok(action));
        }
        let err = "login".parse::<AuditAction>().unwrap_err().to_string();
        assert!(err.contains("login.succeeded"), "{err}");
    }
}
