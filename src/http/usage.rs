//! Metered LLM usage: `GET /auth/usage` (the caller's own) and
//! `GET /admin/usage` (anyone's, for `manage_users`), summed per day, per
//! model, or per day and model, over at most 366 days.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::HttpState;
use super::auth::envelope;
use super::error::ApiError;
use super::extract::{Audited, Caller, QueryParams};
use crate::domain::Permission;
use crate::store::metering::{UsageCounters, UsageGroupBy, UsageQuery, UsageSum, day_range};

/// The most rows one answer holds; past it the answer says `truncated`
/// (the totals still cover everything matched).
pub const MAX_ROWS: u32 = 10_000;

/// Summed counters.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageTotalsView {
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// In USD (stored in units of 1e-9 USD).
    pub cost_usd: f64,
    /// Requests charged their reservation because no usage was reported.
    pub unmeasured: i64,
}

impl From<&UsageCounters> for UsageTotalsView {
    fn from(c: &UsageCounters) -> Self {
        UsageTotalsView {
            requests: c.requests,
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
            total_tokens: c.total_tokens(),
            cost_usd: c.cost_usd(),
            unmeasured: c.unmeasured,
        }
    }
}

/// One row: a day, a model, or a day and a model (the other `null`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageRowView {
    /// `YYYY-MM-DD` (UTC); `null` when grouped by model only.
    pub day: Option<String>,
    /// `null` when grouped by day only.
    pub model: Option<String>,
    #[serde(flatten)]
    pub counters: UsageTotalsView,
}

impl From<&UsageSum> for UsageRowView {
    fn from(s: &UsageSum) -> Self {
        UsageRowView { day: s.day.clone(), model: s.model.clone(), counters: (&s.counters).into() }
    }
}

/// A usage report.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// `usage`.
    pub object: String,
    /// The first day covered, `YYYY-MM-DD`.
    pub from: String,
    /// The last day covered, inclusive.
    pub to: String,
    /// `day`, `model` or `day,model`.
    pub group_by: String,
    /// Ordered by day, then model.
    pub rows: Vec<UsageRowView>,
    /// Everything matched.
    pub totals: UsageTotalsView,
    /// More than 10000 rows matched; only the first 10000 are listed.
    pub truncated: bool,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OwnUsageQuery {
    /// First day, `YYYY-MM-DD` (UTC), inclusive; default: 29 days before `to`.
    from: Option<String>,
    /// Last day, inclusive; default: today (UTC). At most 366 days in all.
    to: Option<String>,
    /// Only this model.
    model: Option<String>,
    /// Only this API key, which must be one of the caller's (403 otherwise);
    /// empty: only sessions and provider tokens.
    key_id: Option<String>,
    /// `day` (default), `model` or `day,model`.
    group_by: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AdminUsageQuery {
    /// Only this user (id or email).
    user: Option<String>,
    /// Only this group.
    group: Option<String>,
    /// Only this API key; empty: only sessions and provider tokens.
    #[serde(alias = "key_id")]
    key: Option<String>,
    /// Only this model.
    model: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC), inclusive; default: 29 days before `to`.
    from: Option<String>,
    /// Last day, inclusive; default: today (UTC). At most 366 days in all.
    to: Option<String>,
    /// `day` (default), `model` or `day,model`.
    group_by: Option<String>,
}

/// The query's days and grouping, checked; the filters are the caller's.
fn query(from: Option<&str>, to: Option<&str>, group_by: Option<&str>, now: i64) -> Result<UsageQuery, ApiError> {
    let (from, to) = day_range(from, to, now).map_err(|e| ApiError::validation(e.field, e.message))?;
    let group_by = match group_by {
        None => UsageGroupBy::Day,
        Some(g) => g.parse().map_err(|e: String| ApiError::validation("group_by", e))?,
    };
    Ok(UsageQuery { from: Some(from), to: Some(to), group_by, ..UsageQuery::default() })
}

async fn report(s: &HttpState, mut q: UsageQuery) -> Result<Response, ApiError> {
    q.limit = MAX_ROWS + 1;
    let mut rows = s.accounts.usage(&q).await?;
    let truncated = rows.len() > MAX_ROWS as usize;
    rows.truncate(MAX_ROWS as usize);
    let totals = s.accounts.usage(&UsageQuery { group_by: UsageGroupBy::Total, limit: 0, ..q.clone() }).await?;
    let totals = totals.first().map(|t| t.counters).unwrap_or_default();
    let body = UsageReport {
        object: "usage".into(),
        from: q.from.clone().unwrap_or_default(),
        to: q.to.clone().unwrap_or_default(),
        group_by: q.group_by.as_str().into(),
        rows: rows.iter().map(UsageRowView::from).collect(),
        totals: (&totals).into(),
        truncated,
    };
    let value = serde_json::to_value(body).map_err(|_| ApiError::Internal)?;
    Ok((StatusCode::OK, axum::Json(envelope(value))).into_response())
}

/// `GET /auth/usage`: the caller's own user's usage, whatever credential
/// they call with (an API key sees its user's usage, every key's).
#[utoipa::path(get, path = "/auth/usage", tag = "usage", security(("bearer" = []), ("api_key" = [])), params(OwnUsageQuery), responses(
    (status = 200, description = "the caller's usage", body = super::openapi::UsageEnvelope),
    (status = 400, description = "a bad day, from after to, more than 366 days, an unknown group_by", body = super::openapi::ErrorEnvelope),
    (status = 401, body = super::openapi::ErrorEnvelope),
    (status = 403, description = "key_id is not one of the caller's keys", body = super::openapi::ErrorEnvelope),
))]
pub async fn own_usage(
    State(s): State<HttpState>,
    Caller(caller): Caller,
    QueryParams(params): QueryParams<OwnUsageQuery>,
) -> Result<Response, ApiError> {
    let mut q = query(params.from.as_deref(), params.to.as_deref(), params.group_by.as_deref(), s.clock.now())?;
    if let Some(key_id) = params.key_id.as_deref().filter(|k| !k.is_empty()) {
        // One answer for someone else's key and for no key at all: the
        // endpoint does not tell which key ids exist.
        if !s.accounts.owns_key(&caller.user_id, key_id).await? {
            return Err(ApiError::Forbidden("key_id is not one of your API keys".into()));
        }
    }
    q.user_id = Some(caller.user_id.to_string());
    q.key_id = params.key_id;
    q.model = params.model;
    report(&s, q).await
}

/// `GET /admin/usage`: anyone's usage, filtered; for `manage_users`.
#[utoipa::path(get, path = "/admin/usage", tag = "usage", security(("bearer" = []), ("api_key" = [])), params(AdminUsageQuery), responses(
    (status = 200, description = "usage matching the filters", body = super::openapi::UsageEnvelope),
    (status = 400, description = "a bad day, from after to, more than 366 days, an unknown group_by", body = super::openapi::ErrorEnvelope),
    (status = 401, body = super::openapi::ErrorEnvelope),
    (status = 403, body = super::openapi::ErrorEnvelope),
    (status = 404, description = "no user with that email", body = super::openapi::ErrorEnvelope),
))]
pub async fn admin_usage(
    State(s): State<HttpState>,
    caller: Caller,
    audited: Audited,
    QueryParams(params): QueryParams<AdminUsageQuery>,
) -> Result<Response, ApiError> {
    audited.require(&caller, Permission::ManageUsers).await?;
    let mut q = query(params.from.as_deref(), params.to.as_deref(), params.group_by.as_deref(), s.clock.now())?;
    q.user_id = match params.user {
        // An email names a user who exists; an id is taken as it is (usage
        // outlives the account's state).
        Some(u) if u.contains('@') => Some(s.accounts.find_user(&u).await?.id),
        other => other,
    };
    q.group = params.group;
    q.key_id = params.key;
    q.model = params.model;
    report(&s, q).await
}
