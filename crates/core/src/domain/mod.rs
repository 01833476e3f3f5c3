//! The domain: identities, credentials, permissions and decisions. Nothing in
//! here knows about gRPC, HTTP or SQL.

pub mod audit;
pub mod budget;
pub mod denial;
pub mod limit;
pub mod models;
pub mod permission;
pub mod principal;
pub mod role;
pub mod user;

pub use audit::{AuditAction, AuditEvent, AuditOutcome, AuditQuery, NewAuditEvent, UnknownAuditAction};
pub use denial::{Denial, ErrorKind};
pub use limit::{Limit, Override};
pub use models::{InvalidModelList, ModelList};
pub use permission::{Permission, PermissionSet, UnknownPermission};
pub use principal::{AuthMethod, Principal, Session};
pub use role::{Role, RolePermissions, UnknownRole};
pub use user::{ApiKey, DEFAULT_GROUP, Group, KeyGrant, KeyTerms, KeyUpdate, NewApiKey, NewUser, User, UserUpdate};
