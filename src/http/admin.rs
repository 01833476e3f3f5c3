//! `/admin/*` (also `/api/v1/admin/*`): users and groups, for callers holding
//! `manage_users`. A refused call changes nothing.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::HttpState;
use super::auth::{envelope, list, page};
use super::error::ApiError;
use super::extract::{Audited, Caller, JsonBody, QueryParams};
use crate::accounts::parse_models;
use crate::audit::event;
use crate::domain::budget::BudgetUpdate;
use crate::domain::{
    AuditAction, AuditQuery, DEFAULT_GROUP, Group, KeyUpdate, ModelList, Permission, Role, UserUpdate,
};
use crate::ratelimit::Limit;
use crate::secret::Secret;
use crate::views::{AuditView, GroupView, KeyView, UserView};

fn respond(status: StatusCode, value: impl serde::Serialize) -> Result<Response, ApiError> {
    let value = serde_json::to_value(value).map_err(|_| ApiError::Internal)?;
    Ok(axum::response::IntoResponse::into_response((status, axum::Json(envelope(value)))))
}

async fn admin(audited: &Audited, caller: &Caller) -> Result<(), ApiError> {
    audited.require(caller, Permission::ManageUsers).await
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    role.parse().map_err(|e: crate::domain::UnknownRole| ApiError::validation("role", e.to_string()))
}

#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = super::openapi::UserList), (status = 401, body = super::openapi::ErrorEnvelope), (status = 403, body = super::openapi::ErrorEnvelope),
))]
pub async fn list_users(State(s): State<HttpState>, caller: Caller, audited: Audited) -> Result<Response, ApiError> {
    admin(&audited, &caller).await?;
    let users = s.accounts.list_users().await?;
    let views: Vec<UserView> = users.iter().map(UserView::from).collect();
    Ok(list("users", serde_json::to_value(views).map_err(|_| ApiError::Internal)?))
}

#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "user id or email")), responses(
    (status = 200, body = super::openapi::UserEnvelope), (status = 401, body = super::openapi::ErrorEnvelope), (status = 403, body = super::openapi::ErrorEnvelope), (status = 404, body = super::openapi::ErrorEnvelope),
))]
pub async fn get_user(
    State(s): State<HttpState>,
    caller: Caller,
    audited: Audited,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&audited, &caller).await?;
    respond(StatusCode::OK, UserView::from(&s.accounts.find_user(&id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    email: String,
    password: Option<String>,
    name: Option<String>,
    role: Option<String>,
    group: Option<String>,
}

#[utoipa::path(post, path = "/admin/users", tag = "admin", security(("bearer" = []), ("api_key" = [])), request_body = CreateUserBody, responses(
    (status = 201, body = super::openapi::UserEnvelope), (status = 401, body = super::openapi::ErrorEnvelope), (status = 403, body = super::openapi::ErrorEnvelope), (status = 409, body = super::openapi::ErrorEnvelope),
))]
pub async fn create_user(
    State(s): State<HttpState>,
    caller: Caller,
    audited: Audited,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> Result<Response, ApiError> {
    admin(&audited, &caller).await?;
    let role = body.role.as_deref().map(parse_role).transpose()?.unwrap_or(Role::Viewer);
    s.accounts.may_manage_user(&audited.acting(&caller.0), None, Some(role)).await?;
    let group = body.group.as_deref().unwrap_or(DEFAULT_GROUP);
    let password = body.password.map(Secret::new);
    let user = s.accounts.create_user_with_password(&body.email, body.name.as_deref(), role, group, password).await?;
    tracing::info!(actor = %caller.0.user_id, user_id = %user.id, role = %user.role, "user created");
    let detail = format!("role {}, group {}", user.role, user.group);
    audited
        .record(
            event(AuditAction::UserCreated)
                .actor(&*caller.0.user_id)
                .target(format!("user:{}", user.id))
                .detail(detail),
        )
        .await;
    respond(StatusCode::CREATED, UserView::from(&user))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    role: Option<String>,
    group: Option<String>,
    disabled: Option<bool>,
    /// `true`: the address is known to be the holder's, so a provider's
    /// identity with that verified email may be linked to the account.
    email_verified: Option<bool>,
    /// `"REQUESTS/SECONDS[/BURST]"` replaces the group's limit; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<String>>,
    /// `"TOKENS/SECONDS"`: the user's token budget (all their keys and
    /// sessions); `null` removes it.
    #[serde(default, deserialize_with = "present")]
    token_limit: Option<Option<String>>,
    /// `"USD/PERIOD"` (PERIOD: day, week, month or seconds); `null` removes it.
    #[serde(default, deserialize_with = "present")]
    spend_limit: Option<Option<String>>,
}

/// A budget change from a body's `token_limit` and `spend_limit`.
fn budget_change(
    token_limit: &Option<Option<String>>,
    spend_limit: &Option<Option<String>>,
) -> Result<BudgetUpdate, ApiError> {
    Ok(crate::accounts::parse_budget_update(
        token_limit.as_ref().map(Option::as_deref),
        spend_limit.as_ref().map(Option::as_deref),
    )?)
}

/// Tells a field set to `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

fn parse_override(value: Option<Option<String>>) -> Result<Option<Option<Limit>>, ApiError> {
    value
        .map(|v| v.map(|s| s.parse::<Limit>().map_err(|e| ApiError::validation("rate_limit", e))).transpose())
        .transpose()
}

#[utoipa::path(patch, path = "/admin/users/{id}", tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "user id or email")), request_body = UpdateUserBody, responses(
    (status = 200, body = super::openapi::UserEnvelope), (status = 401, body = super::openapi::ErrorEnvelope), (status = 403, body = super::openapi::ErrorEnvelope), (status = 404, body = super::openapi::ErrorEnvelope),
))]
pub async fn update_user(
    State(s): State<HttpState>,
    caller: Caller,
    audited: Audited,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateUserBody>,
) -> Result<Response, ApiError> {
    admin(&audited, &caller).await?;
    let update = UserUpdate {
        role: body.role.as_deref().map(parse_role).transpose()?,
        group: body.group,
        disabled: body.disabled,
        rate_limit: parse_override(body.rate_limit)?,
        budget: budget_change(&body.token_limit, &body.spend_limit)?,
        email_verified: body.email_verified,
    };
    let target = s.accounts.find_user(&id).await?;
    s.accounts.may_manage_user(&audited.acting(&caller.0), Some(&target), update.role).await?;
    if !update.budget.is_empty() {
        s.accounts.refuse_budgeted_key(&audited.acting(&caller.0), "change budgets").await?;
    }
    // An admin cannot lock themselves out.
    if target.id == *caller.0.user_id
        && (update.disabled == Some(true) || update.role.is_some_and(|r| r != Role::Admin))
    {
        return Err(ApiError::validation("role", "you cannot demote or disable your own account"));
    }
    let user = s.accounts.update_user(&target.id, &update).await?;
    tracing::info!(actor = %caller.0.user_id, user_id = %user.id, role = %user.role, disabled = user.disabled, "user changed");
    let subject = format!("user:{}", user.id);
    if user.role != target.role {
        let change = event(AuditAction::RoleChanged).detail(format!("{} -> {}", target.role, user.role));
        audited.record(change.actor(&*caller.0.user_id).target(subject.clone())).await;
    }
    let mut changes = Vec::new();
    if user.group != target.group {
        changes.push(format!("group {} -> {}", target.group, user.group));
    }
    if user.disabled != target.disabled {
        changes.push(format!("disabled {} -> {}", target.disabled, user.disabled));
    }
    if update.rate_limit.is_some() {
        changes.push("rate limit changed".to_owned());
    }
    if user.budget != target.budget {
        changes.push(format!("budget {} -> {}", budget_text(&target.budget), budget_text(&user.budget)));
    }
    if user.email_verified != target.email_verified {
        changes.push(format!("email_verified {} -> {}", target.email_verified, user.email_verified));
    }
    if !changes.is_empty() {
        let change = event(AuditAction::UserUpdated).detail(changes.join(", "));
        audited.record(change.actor(&*caller.0.user_id).target(subject)).await;
    }
    respond(StatusCode::OK, UserView::from(&user))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyBody {
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    allowed_models: Option<Option<Vec<String>>>,
    /// `"TOKENS/SECONDS"`: the key's own token budget; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    token_limit: Option<Option<String>>,
    /// `"USD/PERIOD"`: the key's own spend budget; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    spend_limit: Option<Option<String>>,
}

/// `tokens 1000/60, spend 5/day` or `none`, for the audit log.
fn budget_text(b: &crate::domain::budget::Budget) -> String {
    let parts: Vec<String> = [b.tokens.map(|t| format!("tokens {t}")), b.spend.map(|s| format!("spend {s}"))]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }
}

/// `["m", "p*"]` sets a list; `null` removes it (any model).
fn parse_model_change(value: Option<Option<Vec<String>>>) -> Result<Option<Option<ModelList>>, ApiError> {
    Ok(match value {
        None => None,
        Some(None) => Some(None),
        Some(Some(names)) => Some(Some(parse_models(&names)?)),
    })
}

/// Sets or clears an API key's own limit (its own budget, replacing the
/// owner's) or its model list.
#[utoipa::path(patch, path = "/admin/keys/{id}", tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "the key id")), request_body = UpdateKeyBody, responses(
    (status = 200, body = super::openapi::KeyEnvelope), (status = 401, body = super::openapi::ErrorEnvelope), (status = 403, body = super::openapi::ErrorEnvelope), (status = 404, body = super::openapi::ErrorEnvelope),
))]
pub async fn update_key(
    State(s): State<HttpState>,
    caller: Caller,
    audited: Audited,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateKeyBody>,
) -> Result<Response, ApiError> {
    admin(&audited, &caller).await?;
    let update = KeyUpdate {
        rate_limit: parse_override(body.rate_limit)?,
        models: parse_model_change(body.allowed_models)?,
        budget: budget_change(&body.token_limit, &body.spend_limit)?,
    };
    let key = s.accounts.update_key(&audited.acting(&caller.0), &id, &update).await?;
    tracing::info!(actor = %caller.0.user_id, key_id = %key.id, "API key changed");
    respond(StatusCode::OK, KeyView::new(&key, s.clock.now()))
}

#[utoipa::path(get, path = "/admin/groups", tag = "admin", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, body = super::openapi::GroupList), (status = 401, body = super::openapi::ErrorEnvelope), (status = 403, body = super::openapi::ErrorEnvelope),
))]
pub async fn list_groups(State(s): State<HttpState>, caller: Caller, audited: Audited) -> Result<Response, ApiError> {
    admin(&audited, &caller).await?;
    let groups = s.accounts.list_groups().await?;
    let views: Vec<GroupView> = groups.iter().map(GroupView::from).collect();
    Ok(list("groups", serde_json::to_value(views).map_err(|_| ApiError::Internal)?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    name: Option<String>,
    requests_per_period: Option<i64>,
    period_seconds: Option<i64>,
    burst: Option<i64>,
    /// Left out on an update: unchanged; `null`: any model.
    #[serde(default, deserialize_with = "present")]
    allowed_models: Option<Option<Vec<String>>>,
    /// `"TOKENS/SECONDS"`, shared by every member. Left out on an update:
    /// unchanged; `null`: none.
    #[serde(default, deserialize_with = "present")]
    token_limit: Option<Option<String>>,
    /// `"USD/PERIOD"`, shared by every member. Left out on an update:
    /// unchanged; `null`: none.
    #[serde(default, deserialize_with = "present")]
    spend_limit: Option<Option<String>>,
}

impl GroupBody {
    /// The group as it should be; `current` supplies what an update leaves out.
    fn into_group(self, name: String, current: Option<&Group>) -> Result<Group, ApiError> {
        let models = match parse_model_change(self.allowed_models)? {
            Some(models) => models,
            None => current.and_then(|g| g.models.clone()),
        };
        let mut budget = current.map(|g| g.budget).unwrap_or_default();
        budget_change(&self.token_limit, &self.spend_limit)?.apply(&mut budget);
        Ok(Group {
            name,
            requests_per_period: self.requests_per_period,
            period_seconds: self.period_seconds,
            burst: self.burst,
            models,
            budget,
        })
    }
}

#[utoipa::path(post, path = "/admin/groups", tag = "admin", security(("bearer" = []), ("api_key" = [])), request_body = GroupBody, responses(
    (status = 201, body = super::openapi::GroupEnvelope), (status = 401, body = super::openapi::ErrorEnvelope), (status = 403, body = super::openapi::ErrorEnvelope), (status = 409, body = super::openapi::ErrorEnvelope),
))]
pub async fn create_group(
    State(s): State<HttpState>,
    caller: Caller,
    audited: Audited,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Response, ApiError> {
    admin(&audited, &caller).await?;
    let name = body.name.clone().ok_or_else(|| ApiError::validation("name", "name is required"))?;
    let group = body.into_group(name, None)?;
    s.accounts
        .may_set_models(&audited.acting(&caller.0), &format!("group:{}", group.name), group.models.as_ref())
        .await?;
    if !group.budget.is_empty() {
        s.accounts.refuse_budgeted_key(&audited.acting(&caller.0), "change budgets").await?;
    }
    let group = s.accounts.create_group(group).await?;
    tracing::info!(actor = %caller.0.user_id, group = %group.name, "group created");
    audited
        .record(event(AuditAction::GroupCreated).actor(&*caller.0.user_id).target(format!("group:{}", group.name)))
        .await;
    respond(StatusCode::CREATED, GroupView::from(&group))
}

#[utoipa::path(patch, path = "/admin/groups/{name}", tag = "admin", security(("bearer" = []), ("api_key" = [])),
    params(("name" = String, Path, description = "the group")), request_body = GroupBody, responses(
    (status = 200, body = super::openapi::GroupEnvelope), (status = 401, body = super::openapi::ErrorEnvelope), (status = 403, body = super::openapi::ErrorEnvelope), (status = 404, body = super::openapi::ErrorEnvelope),
))]
pub async fn update_group(
    State(s): State<HttpState>,
    caller: Caller,
    audited: Audited,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Response, ApiError> {
    admin(&audited, &caller).await?;
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::validation("name", "a group cannot be renamed"));
    }
    let current = s.accounts.group(&name).await?.ok_or_else(|| ApiError::NotFound("group not found".into()))?;
    let group = body.into_group(name, Some(&current))?;
    if group.budget != current.budget {
        s.accounts.refuse_budgeted_key(&audited.acting(&caller.0), "change budgets").await?;
    }
    if group.models != current.models {
        let subject = format!("group:{}", group.name);
        s.accounts.may_set_models(&audited.acting(&caller.0), &subject, group.models.as_ref()).await?;
    }
    let group = s.accounts.update_group(group).await?;
    tracing::info!(actor = %caller.0.user_id, group = %group.name, "group limits changed");
    audited
        .record(event(AuditAction::GroupUpdated).actor(&*caller.0.user_id).target(format!("group:{}", group.name)))
        .await;
    respond(StatusCode::OK, GroupView::from(&group))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditLogQuery {
    action: Option<String>,
    outcome: Option<String>,
    /// The acting user's id.
    actor: Option<String>,
    /// `user:<id>`, `key:<id>`, `group:<name>`, or a refused call's `METHOD /path`.
    target: Option<String>,
    /// RFC 3339 or Unix seconds, inclusive.
    since: Option<String>,
    until: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
}

pub const MAX_AUDIT_PAGE: u32 = 500;

fn parse_time(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    if let Ok(seconds) = value.parse::<i64>() {
        return Ok(Some(seconds));
    }
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|t| Some(t.unix_timestamp()))
        .map_err(|_| ApiError::validation(field, "expected an RFC 3339 time or Unix seconds"))
}

/// `GET /auth/audit`: security events, newest first, filtered and paged.
#[utoipa::path(get, path = "/auth/audit", tag = "admin", security(("bearer" = []), ("api_key" = [])), params(AuditLogQuery), responses(
    (status = 200, body = super::openapi::AuditPage), (status = 401, body = super::openapi::ErrorEnvelope), (status = 403, body = super::openapi::ErrorEnvelope),
))]
pub async fn audit_log(
    State(s): State<HttpState>,
    caller: Caller,
    audited: Audited,
    QueryParams(q): QueryParams<AuditLogQuery>,
) -> Result<Response, ApiError> {
    audited.require(&caller, Permission::ViewAuditLogs).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::validation("limit", format!("must be between 1 and {MAX_AUDIT_PAGE}")));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| ApiError::validation("cursor", "not a cursor from this API"))?,
        ),
    };
    let query = AuditQuery {
        action: q
            .action
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: crate::domain::UnknownAuditAction| ApiError::validation("action", e.to_string()))?,
        outcome: q
            .outcome
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| ApiError::validation("outcome", e))?,
        actor_id: q.actor,
        target: q.target,
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
        before,
        limit,
    };
    let events = s.accounts.audit_events(&query).await?;
    let next = (events.len() == limit as usize).then(|| events.last().map(|e| e.id.to_string())).flatten();
    let views: Vec<AuditView> = events.iter().map(AuditView::from).collect();
    Ok(page("events", serde_json::to_value(views).map_err(|_| ApiError::Internal)?, next))
}
