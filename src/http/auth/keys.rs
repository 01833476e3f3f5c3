//! `/auth/keys`: a caller's own API keys (create, list, rotate, revoke).

use super::*;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    name: String,
    permissions: Option<Vec<String>>,
    expires_in_days: Option<u32>,
    /// Another user's id or email; needs `manage_users`.
    user: Option<String>,
    /// Models the key may call (names or `*` patterns); default: any the
    /// owner's group allows.
    allowed_models: Option<Vec<String>>,
    /// `"TOKENS/SECONDS"`: the key's own token budget (within its owner's
    /// and group's, which apply as well).
    token_limit: Option<String>,
    /// `"USD/PERIOD"` (PERIOD: day, week, month or seconds): the key's own
    /// spend budget.
    spend_limit: Option<String>,
}

#[utoipa::path(post, path = "/auth/keys", tag = "keys", security(("bearer" = []), ("api_key" = [])), request_body = CreateKeyBody, responses(
    (status = 201, description = "the key, shown only here", body = crate::http::openapi::CreatedKeyEnvelope),
    (status = 401, body = crate::http::openapi::ErrorEnvelope), (status = 403, body = crate::http::openapi::ErrorEnvelope), (status = 404, description = "no such user", body = crate::http::openapi::ErrorEnvelope),
))]
pub async fn create_key(
    State(s): State<HttpState>,
    Caller(caller): Caller,
    audited: Audited,
    JsonBody(body): JsonBody<CreateKeyBody>,
) -> Result<Response, ApiError> {
    let request = KeyRequest {
        name: &body.name,
        permissions: body.permissions.as_deref(),
        expires_in_days: body.expires_in_days,
        models: body.allowed_models.as_deref(),
        budget: crate::accounts::parse_budget(body.token_limit.as_deref(), body.spend_limit.as_deref())?,
    };
    let now = s.clock.now();
    let by = audited.acting(&caller);
    let (key, secret) = s.accounts.create_key(&by, body.user.as_deref(), request, now).await?;
    tracing::info!(actor = %caller.user_id, owner = %key.user_id, key_id = %key.id, "API key created");
    let mut info = KeyView::new(&key, now);
    if info.permissions.is_none() {
        let owner = s.accounts.find_user(&key.user_id).await?;
        info.permissions = Some(s.accounts.roles().of(owner.role).names());
    }
    let value = serde_json::to_value(CreatedKeyView { info, secret }).map_err(|_| ApiError::Internal)?;
    Ok(ok(StatusCode::CREATED, value))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListKeysQuery {
    /// Another user's keys (id or email); needs `manage_users`.
    user: Option<String>,
    /// Every user's keys; needs `manage_users`.
    all: Option<bool>,
}

#[utoipa::path(get, path = "/auth/keys", tag = "keys", security(("bearer" = []), ("api_key" = [])), params(ListKeysQuery), responses(
    (status = 200, description = "keys, without secrets", body = crate::http::openapi::KeyList),
    (status = 401, body = crate::http::openapi::ErrorEnvelope), (status = 403, body = crate::http::openapi::ErrorEnvelope), (status = 404, body = crate::http::openapi::ErrorEnvelope),
))]
pub async fn list_keys(
    State(s): State<HttpState>,
    Caller(caller): Caller,
    audited: Audited,
    QueryParams(q): QueryParams<ListKeysQuery>,
) -> Result<Response, ApiError> {
    let user_id = match (&q.user, q.all.unwrap_or(false)) {
        (None, false) => Some(caller.user_id.to_string()),
        (Some(u), _) if caller.is(u) => Some(caller.user_id.to_string()),
        (user, _) => {
            audited.require(&Caller(caller.clone()), Permission::ManageUsers).await?;
            match user {
                Some(u) => Some(s.accounts.find_user(u).await?.id),
                None => None,
            }
        }
    };
    let now = s.clock.now();
    let keys = s.accounts.list_keys(user_id.as_deref()).await?;
    let views: Vec<KeyView> = keys.iter().map(|k| KeyView::new(k, now)).collect();
    Ok(list("keys", serde_json::to_value(views).map_err(|_| ApiError::Internal)?))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyBody {
    /// How long the old secret keeps working (default 24 h; 0: stops at once).
    #[serde(alias = "grace_period_seconds")]
    grace_seconds: Option<u64>,
}

/// `POST /auth/keys/{id}/rotate`: a new secret for the same key; the old one
/// works for the grace period. Who may: see [`crate::accounts::Accounts::rotate_key`].
#[utoipa::path(post, path = "/auth/keys/{id}/rotate", tag = "keys", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "the key id")), request_body(content = Option<RotateKeyBody>), responses(
    (status = 200, description = "the new secret, shown only here", body = crate::http::openapi::CreatedKeyEnvelope),
    (status = 401, body = crate::http::openapi::ErrorEnvelope), (status = 403, body = crate::http::openapi::ErrorEnvelope), (status = 404, body = crate::http::openapi::ErrorEnvelope), (status = 409, description = "revoked or expired", body = crate::http::openapi::ErrorEnvelope),
))]
pub async fn rotate_key(
    State(s): State<HttpState>,
    Caller(caller): Caller,
    audited: Audited,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<RotateKeyBody>,
) -> Result<Response, ApiError> {
    let now = s.clock.now();
    let rotated = s.accounts.rotate_key(&audited.acting(&caller), &id, body.grace_seconds, now).await?;
    tracing::info!(actor = %caller.user_id, key_id = %rotated.key.id, "API key rotated");
    let view = CreatedKeyView { info: KeyView::new(&rotated.key, now), secret: rotated.secret };
    Ok(ok(StatusCode::OK, serde_json::to_value(view).map_err(|_| ApiError::Internal)?))
}

#[utoipa::path(delete, path = "/auth/keys/{id}", tag = "keys", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "the key id")), responses(
    (status = 204, description = "revoked"),
    (status = 401, body = crate::http::openapi::ErrorEnvelope), (status = 403, body = crate::http::openapi::ErrorEnvelope), (status = 404, body = crate::http::openapi::ErrorEnvelope),
))]
pub async fn delete_key(
    State(s): State<HttpState>,
    Caller(caller): Caller,
    audited: Audited,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.accounts.revoke_key(&audited.acting(&caller), &id, s.clock.now()).await?;
    let key_id = crate::telemetry::escape(&id, crate::telemetry::VALUE_CAP);
    tracing::info!(actor = %caller.user_id, key_id = %key_id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
