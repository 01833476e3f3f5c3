//! `GET /auth/budget`: where the caller's budgets stand.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::error::ApiError;
use super::extract::Caller;
use crate::budget::BudgetStatus;
use crate::domain::budget::Budget;

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct BudgetBody {
    budgets: Vec<BudgetStatus>,
}

fn respond(budgets: Vec<BudgetStatus>) -> Result<Response, ApiError> {
    let value = serde_json::to_value(BudgetBody { budgets }).map_err(|_| ApiError::Internal)?;
    Ok((StatusCode::OK, axum::Json(super::auth::envelope(value))).into_response())
}

/// The caller's budgets now: the key's own (when called with a key), the
/// user's, the group's, and those of the user's other active keys.
#[utoipa::path(get, path = "/auth/budget", tag = "usage", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, description = "each budget's limit, use and reset", body = super::openapi::BudgetEnvelope),
    (status = 401, body = super::openapi::ErrorEnvelope),
    (status = 503, description = "the budget ledger cannot be read", body = super::openapi::ErrorEnvelope),
))]
pub async fn my_budget(State(s): State<HttpState>, Caller(caller): Caller) -> Result<Response, ApiError> {
    let now = s.clock.now();
    let user = s.accounts.find_user(&caller.user_id).await?;
    let group = s.accounts.group(&user.group).await?.map(|g| g.budget).unwrap_or_default();
    let mut scopes: Vec<(String, Budget)> = Vec::new();
    for key in s.accounts.list_keys(Some(&user.id)).await? {
        let active = key.revoked_at.is_none() && key.expires_at.is_none_or(|t| t > now);
        if active && !key.budget.is_empty() {
            scopes.push((format!("key:{}", key.id), key.budget));
        }
    }
    scopes.push((format!("user:{}", user.id), user.budget));
    scopes.push((format!("group:{}", user.group), group));
    scopes.retain(|(_, b)| !b.is_empty());
    let Some(budgets) = s.authorizer.budgets() else {
        return respond(Vec::new());
    };
    let status = budgets.status(&scopes, now).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read the budget ledger");
        ApiError::Unavailable
    })?;
    respond(status)
}
