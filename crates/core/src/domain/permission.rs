//! Permissions (seed 003) and a compact set of them.
//!
//! A [`PermissionSet`] is a bit set so that the Check hot path can test and
//! intersect permissions without allocating.

use std::fmt;
use std::str::FromStr;

macro_rules! permissions {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// One capability a route may require.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Permission { $($variant),+ }

        impl Permission {
            /// Every permission, in declaration order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant),+];

            /// The wire name, as the seed documents spell it.
            pub const fn as_str(self) -> &'static str {
                match self { $(Permission::$variant => $name),+ }
            }
        }

        impl FromStr for Permission {
            type Err = UnknownPermission;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($name => Ok(Permission::$variant),)+ _ => Err(UnknownPermission(s.to_owned())) }
            }
        }
    };
}

permissions! {
    ReadModels => "read_models",
    WriteModels => "write_models",
    DeleteModels => "delete_models",
    RunInference => "run_inference",
    ManageCache => "manage_cache",
    ReadMetrics => "read_metrics",
    WriteConfig => "write_config",
    ManageUsers => "manage_users",
    ViewAuditLogs => "view_audit_logs",
    UseStreaming => "use_streaming",
    ManageQueue => "manage_queue",
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permission name that is not one of [`Permission::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission '{0}'")]
pub struct UnknownPermission(pub String);

/// A set of permissions stored as bits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PermissionSet(u32);

impl PermissionSet {
    pub const EMPTY: PermissionSet = PermissionSet(0);

    pub fn all() -> Self {
        Permission::ALL.iter().copied().collect()
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & (1 << p as u8) != 0
    }

    pub fn insert(&mut self, p: Permission) {
        self.0 |= 1 << p as u8;
    }

    pub fn is_subset_of(self, other: PermissionSet) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn intersection(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 & other.0)
    }

    /// Permissions of `self` missing from `other`.
    pub fn difference(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.iter().copied().filter(move |p| self.contains(*p))
    }

    /// Parses a comma- or whitespace-separated list; empty input is the empty set.
    pub fn parse_list(s: &str) -> Result<Self, UnknownPermission> {
        s.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()).map(Permission::from_str).collect()
    }

    /// Parses a list of names, as given on a command line or in JSON.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, UnknownPermission> {
        names.iter().map(|n| n.as_ref().trim().parse::<Permission>()).collect()
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Permission::as_str).collect()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = PermissionSet::EMPTY;
        for p in iter {
            set.insert(p);
        }
        set
    }
}

/// Comma-separated names, the form used in headers and in the database.
impl fmt::Display for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(p.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let set = PermissionSet::parse_list("run_inference, read_models").unwrap();
        assert_eq!(set.to_string(), "read_models,run_inference");
        assert_eq!(PermissionSet::parse_list(&set.to_string()).unwrap(), set);
        assert_eq!(PermissionSet::parse_list("").unwrap(), PermissionSet::EMPTY);
    }

    #[test]
    fn rejects_unknown_names() {
        assert_eq!(PermissionSet::parse_list("read_models,root").unwrap_err(), UnknownPermission("root".into()));
    }

    #[test]
    fn subset_and_difference() {
        let small = PermissionSet::from_names(&["read_models"]).unwrap();
        let big = PermissionSet::from_names(&["read_models", "run_inference"]).unwrap();
        assert!(small.is_subset_of(big));
        assert!(!big.is_subset_of(small));
        assert_eq!(big.difference(small).names(), vec!["run_inference"]);
        assert_eq!(PermissionSet::all().iter().count(), Permission::ALL.len());
    }
}
