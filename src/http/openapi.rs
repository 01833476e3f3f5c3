//! The REST API's OpenAPI 3.1 document, served at `/openapi.json`.
//!
//! Generated from the handlers' own types: request bodies and query
//! parameters are the structs the handlers deserialize, answers the view
//! structs they serialize, and each operation is declared by a
//! `#[utoipa::path]` on its handler. The shapes below are the envelopes the
//! handlers wrap views in ([`super::auth::envelope`], [`super::auth::list`]);
//! the suite checks a live server's answers against the document.
//!
//! The seed aliases (`/api/v1/auth/*`, `/api/auth/*`, `/auth/api-keys`,
//! `/api/v1/admin/*`, `/api/v1/oauth/validate`) are listed as copies of the
//! canonical operation, tagged `seed aliases` and marked with
//! `x-gatehouse-alias-of`.
#![allow(dead_code, reason = "the shapes here only describe JSON the handlers assemble")]

use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::views::{AuditView, CreatedKeyView, GroupView, KeyView, UserView};

/// The error envelope of every refusal.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    success: bool,
    error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// `VALIDATION_ERROR`, `AUTHENTICATION_FAILED`, `PERMISSION_DENIED`,
    /// `NOT_FOUND`, `METHOD_NOT_ALLOWED`, `CONFLICT`, `REQUEST_TIMEOUT`,
    /// `PAYLOAD_TOO_LARGE`, `UNSUPPORTED_MEDIA_TYPE`, `RATE_LIMITED`,
    /// `INTERNAL_ERROR`, `AUTH_BACKEND_UNAVAILABLE`, `SERVER_BUSY`.
    code: String,
    /// A sentence for people; never contains a credential.
    message: String,
    /// OpenAI's error type: `invalid_request_error`, `authentication_error`,
    /// `permission_error`, `rate_limit_error`, `api_error`.
    #[serde(rename = "type")]
    kind: String,
    param: Option<String>,
    /// For `VALIDATION_ERROR`: `{"field": NAME}`.
    details: Option<Value>,
}

macro_rules! enveloped {
    ($(#[$doc:meta])* $name:ident, $inner:ty) => {
        $(#[$doc])*
        /// The fields at the top level, again under `data`, and `success`.
        #[derive(Serialize, ToSchema)]
        pub struct $name {
            #[serde(flatten)]
            fields: $inner,
            /// Always `true`.
            success: bool,
            data: $inner,
        }
    };
}

/// A new session token (login, refresh, provider login).
#[derive(Serialize, ToSchema)]
pub struct TokenBody {
    access_token: String,
    /// The same token, for seed clients.
    token: String,
    /// `Bearer`.
    token_type: String,
    expires_in: i64,
    /// RFC 3339.
    expires_at: String,
    user: UserView,
}

/// A registered user: the user's fields, again under `user`, and `user_id`.
#[derive(Serialize, ToSchema)]
pub struct RegisteredBody {
    #[serde(flatten)]
    fields: UserView,
    user: UserView,
    user_id: String,
}

/// The caller's profile.
#[derive(Serialize, ToSchema)]
pub struct MeBody {
    #[serde(flatten)]
    fields: UserView,
    /// The email, for seed clients.
    username: String,
    /// The caller's effective permissions.
    permissions: Vec<String>,
    /// `api_key`, `jwt` or `oidc`.
    auth_method: String,
    key_id: Option<String>,
}

/// Whether a credential is valid, and whose it is.
#[derive(Serialize, ToSchema)]
pub struct ValidationBody {
    valid: bool,
    user_identity: Option<String>,
    user_email: Option<String>,
    user_name: Option<String>,
    auth_method: Option<String>,
    expires_at: Option<String>,
    /// Why not, when not valid.
    reason: Option<String>,
}

enveloped!(TokenEnvelope, TokenBody);
enveloped!(RegisteredEnvelope, RegisteredBody);
enveloped!(MeEnvelope, MeBody);
enveloped!(UserEnvelope, UserView);
enveloped!(GroupEnvelope, GroupView);
enveloped!(KeyEnvelope, KeyView);
enveloped!(
    /// A key just created or rotated: the only answer holding its secret (`key`).
    CreatedKeyEnvelope,
    CreatedKeyView
);
enveloped!(ValidationEnvelope, ValidationBody);
enveloped!(
    /// Each of the caller's budgets: limit, use, what is left, when it resets.
    BudgetEnvelope,
    super::budget::BudgetBody
);
enveloped!(
    /// Usage summed over a range of days, with the totals.
    UsageEnvelope,
    super::usage::UsageReport
);

macro_rules! listed {
    ($name:ident, $field:ident, $item:ty) => {
        /// A list: the items under `data`, as OpenAI lists have them, and again under their own name.
        #[derive(Serialize, ToSchema)]
        pub struct $name {
            /// `list`.
            object: String,
            data: Vec<$item>,
            $field: Vec<$item>,
            success: bool,
        }
    };
}

listed!(KeyList, keys, KeyView);
listed!(UserList, users, UserView);
listed!(GroupList, groups, GroupView);
listed!(ProviderList, providers, Provider);

/// A login provider.
#[derive(Serialize, ToSchema)]
pub struct Provider {
    name: String,
    /// `oidc` or `github`.
    #[serde(rename = "type")]
    kind: String,
    login_url: String,
}

/// One page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    object: String,
    data: Vec<AuditView>,
    events: Vec<AuditView>,
    success: bool,
    has_more: bool,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LogoutBody {
    success: bool,
    message: String,
}

/// The public signing keys (RFC 7517); no keys for HS256.
#[derive(Serialize, ToSchema)]
pub struct Jwks {
    keys: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    status: String,
}

/// Readiness: `ready`, `degraded` (Redis unreachable) or, with 503, `not_ready` and a reason.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    status: String,
    database: Option<String>,
    redis: Option<String>,
    reason: Option<String>,
}

/// `GET /healthz`: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200, body = Health)))]
pub async fn healthz_doc() {}

/// `GET /readyz`.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses(
    (status = 200, description = "ready, or degraded while Redis is unreachable", body = Readiness),
    (status = 503, description = "shutting down, the database does not answer, or provider keys never loaded", body = Readiness),
))]
pub async fn readyz_doc() {}

/// `GET /metrics`: Prometheus text, for callers holding `read_metrics`.
#[utoipa::path(get, path = "/metrics", tag = "probes", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
    (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
))]
pub async fn metrics_doc() {}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "probes", responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_doc() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gatehouse REST API",
        description = "Accounts, sessions, API keys and administration of Gatehouse, the Envoy ext_authz server. \
                       Successful bodies carry their fields at the top level and again under `data`, with \
                       `success: true`; every error has the `ErrorEnvelope` shape.",
        license(name = "Apache-2.0"),
    ),
    paths(
        super::auth::register,
        super::auth::login,
        super::auth::refresh,
        super::auth::logout,
        super::auth::logout_all,
        super::auth::change_password,
        super::auth::me,
        super::auth::create_key,
        super::auth::list_keys,
        super::auth::rotate_key,
        super::auth::delete_key,
        super::auth::jwks,
        super::budget::my_budget,
        super::login::providers,
        super::login::oidc_login,
        super::login::oidc_callback,
        super::login::github_login,
        super::login::github_callback,
        super::login::validate,
        super::admin::audit_log,
        super::admin::list_users,
        super::admin::create_user,
        super::admin::get_user,
        super::admin::update_user,
        super::admin::list_groups,
        super::admin::create_group,
        super::admin::update_group,
        super::admin::update_key,
        super::usage::own_usage,
        super::usage::admin_usage,
        healthz_doc,
        readyz_doc,
        metrics_doc,
        openapi_doc,
    ),
    components(schemas(ErrorEnvelope)),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Registration, login and session tokens"),
        (name = "keys", description = "The caller's API keys (others' with manage_users)"),
        (name = "providers", description = "Login through OpenID Connect providers and GitHub"),
        (name = "usage", description = "Token and spend budgets, and metered LLM usage (requests, tokens, spend): the caller's own; anyone's for manage_users"),
        (name = "admin", description = "Users, groups and keys, for manage_users; the audit log for view_audit_logs"),
        (name = "probes", description = "Health, readiness, metrics, this document"),
        (name = "seed aliases", description = "The same operations under the paths seed clients call"),
    ),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A session token (JWT) or an API key (gk_...)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description("X-API-Key", "An API key (gk_...)"))),
        );
    }
}

/// Where each canonical path prefix is served again.
const ALIASES: &[(&str, &[&str])] = &[
    (
        "/auth/keys",
        &["/auth/api-keys", "/api/v1/auth/keys", "/api/v1/auth/api-keys", "/api/auth/keys", "/api/auth/api-keys"],
    ),
    ("/auth/oauth/validate", &["/api/v1/oauth/validate", "/api/v1/auth/oauth/validate", "/api/auth/oauth/validate"]),
    ("/auth/", &["/api/v1/auth/", "/api/auth/"]),
    ("/admin/", &["/api/v1/admin/"]),
];

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
        doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
        add_aliases(&mut doc);
        add_default_errors(&mut doc);
        doc
    })
}

fn add_aliases(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object().cloned() else { return };
    let mut out = serde_json::Map::new();
    for (path, item) in &paths {
        out.insert(path.clone(), item.clone());
        let Some((prefix, aliases)) = ALIASES.iter().find(|(p, _)| path.starts_with(p)) else { continue };
        for alias_prefix in *aliases {
            let alias = format!("{alias_prefix}{}", &path[prefix.len()..]);
            let mut copy = item.clone();
            if let Some(ops) = copy.as_object_mut() {
                for (method, op) in ops.iter_mut() {
                    let Some(op) = op.as_object_mut() else { continue };
                    let id = op.get("operationId").and_then(Value::as_str).unwrap_or("op").to_owned();
                    let suffix: String =
                        alias_prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
                    op.insert("operationId".into(), json!(format!("{id}{suffix}")));
                    op.insert("tags".into(), json!(["seed aliases"]));
                    op.insert("x-gatehouse-alias-of".into(), json!(path));
                    let summary = format!("Alias of {} {path}", method.to_uppercase());
                    op.insert("summary".into(), json!(summary));
                }
            }
            out.insert(alias, copy);
        }
    }
    doc["paths"] = Value::Object(out);
}

/// Every operation answers any other status with the error envelope.
fn add_default_errors(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for item in paths.values_mut() {
        let Some(ops) = item.as_object_mut() else { continue };
        for op in ops.values_mut() {
            let responses = &mut op["responses"];
            if responses.get("default").is_none() {
                responses["default"] = json!({
                    "description": "a refusal or failure: the error envelope (see ErrorEnvelope)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
                });
            }
        }
    }
}
