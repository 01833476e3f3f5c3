//! `/admin/*` (also `/api/v1/admin/*`): users and groups, for callers holding
//! `manage_users`. A refused call changes nothing.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::HttpState;
use super::auth::{envelope, list};
use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use crate::accounts::parse_models;
use crate::domain::{DEFAULT_GROUP, Group, KeyUpdate, ModelList, Permission, Role, UserUpdate};
use crate::ratelimit::Limit;
use crate::secret::Secret;
use crate::views::{GroupView, KeyView, UserView};

fn respond(status: StatusCode, value: impl serde::Serialize) -> Result<Response, ApiError> {
    let value = serde_json::to_value(value).map_err(|_| ApiError::Internal)?;
    Ok(axum::response::IntoResponse::into_response((status, axum::Json(envelope(value)))))
}

fn admin(caller: &Caller) -> Result<(), ApiError> {
    let allowed = caller.require(Permission::ManageUsers);
    if allowed.is_err() {
        tracing::info!(actor = %caller.0.user_id, "admin call refused");
    }
    allowed
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    role.parse().map_err(|e: crate::domain::UnknownRole| ApiError::validation("role", e.to_string()))
}

pub async fn list_users(State(s): State<HttpState>, caller: Caller) -> Result<Response, ApiError> {
    admin(&caller)?;
    let users = s.accounts.store().list_users().await?;
    let views: Vec<UserView> = users.iter().map(UserView::from).collect();
    Ok(list("users", serde_json::to_value(views).map_err(|_| ApiError::Internal)?))
}

pub async fn get_user(
    State(s): State<HttpState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    respond(StatusCode::OK, UserView::from(&s.accounts.find_user(&id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    email: String,
    password: Option<String>,
    name: Option<String>,
    role: Option<String>,
    group: Option<String>,
}

pub async fn create_user(
    State(s): State<HttpState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    let role = body.role.as_deref().map(parse_role).transpose()?.unwrap_or(Role::Viewer);
    let group = body.group.as_deref().unwrap_or(DEFAULT_GROUP);
    let password = body.password.map(Secret::new);
    let user = s.accounts.create_user_with_password(&body.email, body.name.as_deref(), role, group, password).await?;
    tracing::info!(actor = %caller.0.user_id, user_id = %user.id, role = %user.role, "user created");
    respond(StatusCode::CREATED, UserView::from(&user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    role: Option<String>,
    group: Option<String>,
    disabled: Option<bool>,
    /// `"REQUESTS/SECONDS[/BURST]"` replaces the group's limit; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<String>>,
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

pub async fn update_user(
    State(s): State<HttpState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateUserBody>,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    let update = UserUpdate {
        role: body.role.as_deref().map(parse_role).transpose()?,
        group: body.group,
        disabled: body.disabled,
        rate_limit: parse_override(body.rate_limit)?,
    };
    let target = s.accounts.find_user(&id).await?;
    // An admin cannot lock themselves out.
    if target.id == *caller.0.user_id
        && (update.disabled == Some(true) || update.role.is_some_and(|r| r != Role::Admin))
    {
        return Err(ApiError::validation("role", "you cannot demote or disable your own account"));
    }
    let user = s.accounts.update_user(&target.id, &update).await?;
    tracing::info!(actor = %caller.0.user_id, user_id = %user.id, role = %user.role, disabled = user.disabled, "user changed");
    respond(StatusCode::OK, UserView::from(&user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyBody {
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    allowed_models: Option<Option<Vec<String>>>,
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
pub async fn update_key(
    State(s): State<HttpState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateKeyBody>,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    let update =
        KeyUpdate { rate_limit: parse_override(body.rate_limit)?, models: parse_model_change(body.allowed_models)? };
    if update.rate_limit.is_none() && update.models.is_none() {
        return Err(ApiError::validation("rate_limit", "set rate_limit or allowed_models"));
    }
    let key = s.accounts.update_key(&id, &update).await?;
    tracing::info!(actor = %caller.0.user_id, key_id = %key.id, "API key changed");
    respond(StatusCode::OK, KeyView::new(&key, crate::app::now()))
}

pub async fn list_groups(State(s): State<HttpState>, caller: Caller) -> Result<Response, ApiError> {
    admin(&caller)?;
    let groups = s.accounts.store().list_groups().await?;
    let views: Vec<GroupView> = groups.iter().map(GroupView::from).collect();
    Ok(list("groups", serde_json::to_value(views).map_err(|_| ApiError::Internal)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    name: Option<String>,
    requests_per_period: Option<i64>,
    period_seconds: Option<i64>,
    burst: Option<i64>,
    /// Left out on an update: unchanged; `null`: any model.
    #[serde(default, deserialize_with = "present")]
    allowed_models: Option<Option<Vec<String>>>,
}

impl GroupBody {
    /// The group as it should be; `current` supplies what an update leaves out.
    fn into_group(self, name: String, current: Option<&Group>) -> Result<Group, ApiError> {
        let models = match parse_model_change(self.allowed_models)? {
            Some(models) => models,
            None => current.and_then(|g| g.models.clone()),
        };
        Ok(Group {
            name,
            requests_per_period: self.requests_per_period,
            period_seconds: self.period_seconds,
            burst: self.burst,
            models,
        })
    }
}

pub async fn create_group(
    State(s): State<HttpState>,
    caller: Caller,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    let name = body.name.clone().ok_or_else(|| ApiError::validation("name", "name is required"))?;
    let group = s.accounts.create_group(body.into_group(name, None)?).await?;
    tracing::info!(actor = %caller.0.user_id, group = %group.name, "group created");
    respond(StatusCode::CREATED, GroupView::from(&group))
}

pub async fn update_group(
    State(s): State<HttpState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<GroupBody>,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::validation("name", "a group cannot be renamed"));
    }
    let current = s.accounts.store().group(&name).await?.ok_or_else(|| ApiError::NotFound("group not found".into()))?;
    let group = s.accounts.update_group(body.into_group(name, Some(&current))?).await?;
    tracing::info!(actor = %caller.0.user_id, group = %group.name, "group limits changed");
    respond(StatusCode::OK, GroupView::from(&group))
}
