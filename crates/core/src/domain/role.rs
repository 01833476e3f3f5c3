//! Roles (seed 001: viewer < operator < admin) and the permissions each grants.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::permission::{Permission, PermissionSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role '{0}' (expected viewer, operator or admin)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(UnknownRole(s.to_owned())),
        }
    }
}

/// Which permissions each role grants. Configurable; see [`RolePermissions::default`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolePermissions {
    pub viewer: PermissionSet,
    pub operator: PermissionSet,
    pub admin: PermissionSet,
}

impl RolePermissions {
    pub fn of(&self, role: Role) -> PermissionSet {
        match role {
            Role::Viewer => self.viewer,
            Role::Operator => self.operator,
            Role::Admin => self.admin,
        }
    }

    /// The role a credential with `permissions` carries for a user of
    /// `role`: that role if it holds all of the role's permissions, else the
    /// highest lower role whose permissions it holds in full, else none. So
    /// an admin's key narrowed to `read_models` does not pass a rule that
    /// asks for the admin role, and the upstream is not told it is an admin.
    pub fn carried_by(&self, role: Role, permissions: PermissionSet) -> Option<Role> {
        Role::ALL.into_iter().rev().filter(|r| *r <= role).find(|r| self.of(*r).is_subset_of(permissions))
    }
}

impl Default for RolePermissions {
    /// A viewer may list models and call inference (an inference gateway's
    /// consumer); an operator may also manage models, cache, queue and read
    /// metrics; an admin holds every permission.
    fn default() -> Self {
        use Permission::*;
        let viewer: PermissionSet = [ReadModels, RunInference, UseStreaming].into_iter().collect();
        let mut operator = viewer;
        for p in [WriteModels, ManageCache, ReadMetrics, ManageQueue] {
            operator.insert(p);
        }
        RolePermissions { viewer, operator, admin: PermissionSet::all() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_case_insensitively_and_reject_others() {
        assert_eq!("Admin".parse::<Role>().unwrap(), Role::Admin);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn default_roles_are_nested() {
        let r = RolePermissions::default();
        assert!(r.viewer.is_subset_of(r.operator));
        assert!(r.operator.is_subset_of(r.admin));
        assert!(!r.viewer.contains(Permission::ManageUsers));
        assert!(r.admin.contains(Permission::ManageUsers));
    }
}
