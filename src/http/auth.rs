//! `/auth/*`: registration, password login, session tokens, the caller's
//! profile and API keys. Also served under `/api/v1/auth/*` and `/api/auth/*`
//! so scripts written for the seed systems work unchanged.
//!
//! Successful bodies carry their fields at the top level and again under
//! `data`, with `"success": true`: the shapes the seed clients read
//! (`.token`, `.access_token`, `.data.token`) all work.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::HttpState;
use super::error::ApiError;
use super::extract::{Audited, Caller, JsonBody, OptionalJsonBody, QueryParams};
use super::login::SESSION_COOKIE;
use crate::accounts::{AccountError, KeyRequest, LoginName};
use crate::audit::event;
use crate::authn::jwt::IssuedToken;
use crate::domain::{AuditAction, Denial, Permission, User};
use crate::ratelimit::{Limit, Limiter, address_bucket, ceil_secs};
use crate::secret::Secret;
use crate::views::{CreatedKeyView, KeyView, UserView, timestamp};

/// `value`'s fields, plus `"success": true` and the same value under `data`.
pub fn envelope(value: Value) -> Value {
    match value {
        Value::Object(mut map) => {
            let data = Value::Object(map.clone());
            map.insert("success".into(), Value::Bool(true));
            map.insert("data".into(), data);
            Value::Object(map)
        }
        other => json!({ "success": true, "data": other }),
    }
}

/// A list: the items under `data` (as OpenAI lists and the seed envelope have
/// them) and again under `name`.
pub fn list(name: &str, items: Value) -> Response {
    Json(Value::Object(list_body(name, items))).into_response()
}

/// One page of a list, with the cursor for the next (`null` on the last).
pub fn page(name: &str, items: Value, next_cursor: Option<String>) -> Response {
    let mut body = list_body(name, items);
    body.insert("has_more".into(), Value::Bool(next_cursor.is_some()));
    body.insert("next_cursor".into(), json!(next_cursor));
    Json(Value::Object(body)).into_response()
}

fn list_body(name: &str, items: Value) -> serde_json::Map<String, Value> {
    let mut body = serde_json::Map::new();
    body.insert("object".into(), Value::String("list".into()));
    body.insert(name.into(), items.clone());
    body.insert("data".into(), items);
    body.insert("success".into(), Value::Bool(true));
    body
}

fn ok(status: StatusCode, value: Value) -> Response {
    (status, Json(envelope(value))).into_response()
}

/// Per-address limits on the password endpoints, counted by the limiter that
/// Check uses: in Redis when it is configured, so every replica shares one
/// budget per address. Every attempt counts, before any password work.
#[derive(Clone)]
pub struct AuthLimits {
    pub limiter: std::sync::Arc<dyn Limiter>,
    pub register: Option<Limit>,
    pub login: Option<Limit>,
    /// Per user.
    pub refresh: Option<Limit>,
}

impl AuthLimits {
    /// Counts one `endpoint` request from `client_ip`; 429 when over.
    async fn admit(&self, endpoint: &str, limit: Option<Limit>, client_ip: Option<&str>) -> Result<(), ApiError> {
        self.admit_key(endpoint, limit, format!("{endpoint}:ip:{}", address_bucket(client_ip))).await
    }

    /// Counts one `endpoint` request by `user_id`; 429 when over.
    async fn admit_user(&self, endpoint: &str, limit: Option<Limit>, user_id: &str) -> Result<(), ApiError> {
        self.admit_key(endpoint, limit, format!("{endpoint}:user:{user_id}")).await
    }

    async fn admit_key(&self, endpoint: &str, limit: Option<Limit>, key: String) -> Result<(), ApiError> {
        let Some(limit) = limit else { return Ok(()) };
        match self.limiter.check(&key, limit).await {
            Ok(outcome) if !outcome.allowed => {
                metrics::counter!("gatehouse_auth_rate_limited_total", "endpoint" => endpoint.to_owned()).increment(1);
                Err(ApiError::RateLimited(std::time::Duration::from_secs(ceil_secs(outcome.retry_after))))
            }
            Ok(_) => Ok(()),
            // As for Check: an unavailable limiter does not stop logins (the
            // hashing pool still bounds the work).
            Err(e) => {
                tracing::warn!(error = %e, endpoint, "rate limiter failed; request not counted");
                Ok(())
            }
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    email: Option<String>,
    /// Seed 004 sends the email as `username` too.
    username: Option<String>,
    password: String,
    name: Option<String>,
}

#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterBody, responses(
    (status = 201, description = "registered", body = super::openapi::RegisteredEnvelope),
    (status = 403, description = "registration closed, or the email domain not allowed", body = super::openapi::ErrorEnvelope),
    (status = 409, description = "the address is registered", body = super::openapi::ErrorEnvelope),
))]
pub async fn register(
    State(s): State<HttpState>,
    audited: Audited,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<Response, ApiError> {
    let email = body.email.or(body.username).ok_or_else(|| ApiError::validation("email", "email is required"))?;
    s.auth_limits.admit("register", s.auth_limits.register, audited.client_ip.as_deref()).await?;
    let user = s.accounts.register(&email, Secret::new(body.password), body.name.as_deref()).await?;
    tracing::info!(user_id = %user.id, "user registered");
    audited.record(event(AuditAction::Registered).actor(&user.id).target(format!("user:{}", user.id))).await;
    let view = serde_json::to_value(UserView::from(&user)).map_err(|_| ApiError::Internal)?;
    let mut value = view.clone();
    if let Value::Object(map) = &mut value {
        map.insert("user".into(), view);
        map.insert("user_id".into(), Value::String(user.id.clone()));
    }
    Ok(ok(StatusCode::CREATED, value))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    email: Option<String>,
    username: Option<String>,
    password: String,
}

#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginBody, responses(
    (status = 200, description = "a session token", body = super::openapi::TokenEnvelope),
    (status = 401, description = "wrong password or unknown account", body = super::openapi::ErrorEnvelope),
    (status = 429, description = "locked out or rate limited (Retry-After)", body = super::openapi::ErrorEnvelope),
))]
pub async fn login(
    State(s): State<HttpState>,
    audited: Audited,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Response, ApiError> {
    let account = body.email.or(body.username).ok_or_else(|| ApiError::validation("email", "email is required"))?;
    // One spelling of the account for the throttle, the lookup and the log.
    let name = LoginName::new(&account);
    let ip = audited.client_ip.clone();
    s.auth_limits.admit("login", s.auth_limits.login, ip.as_deref()).await?;
    // The attempt takes its place before the password is checked.
    let attempt = s.throttle.reserve(&name, ip.as_deref()).map_err(ApiError::RateLimited)?;
    let verified = s.accounts.verify_password(&name, Secret::new(body.password)).await;
    // A disabled account's right password fails like a wrong one (same
    // answer, same work, counted the same), so it does not confirm the password.
    let failure = match &verified {
        Err(AccountError::InvalidLogin) => Some("wrong password or unknown account"),
        Ok(user) if user.disabled => Some("account disabled"),
        _ => None,
    };
    if let Some(why) = failure {
        drop(attempt); // counted as a failure
        let shown = crate::telemetry::email(name.as_str());
        tracing::info!(client_ip = ip.as_deref().unwrap_or("-"), account = shown, "login failed");
        // The account attacked, when it exists; never the password.
        let known = s.accounts.user_by_login(&name).await.ok().flatten();
        let failed = event(AuditAction::LoginFailed).detail(why);
        audited
            .record(match known {
                Some(user) => failed.target(format!("user:{}", user.id)),
                None => failed,
            })
            .await;
        return Err(AccountError::InvalidLogin.into());
    }
    let user = match verified {
        Ok(user) => user,
        Err(e) => {
            attempt.release();
            return Err(e.into());
        }
    };
    attempt.succeeded();
    let issued = s.authorizer.authn().jwt().issue(&user, s.clock.now())?;
    tracing::info!(user_id = %user.id, "login");
    let method = event(AuditAction::LoginSucceeded).detail("password");
    audited.record(method.actor(&user.id).target(format!("user:{}", user.id))).await;
    Ok(ok(StatusCode::OK, token_body(&issued, &user)))
}

pub fn token_body(issued: &IssuedToken, user: &User) -> Value {
    json!({
        "access_token": issued.token.expose(),
        "token": issued.token.expose(),
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "expires_at": timestamp(issued.expires_at),
        "user": UserView::from(user),
    })
}

/// The bearer token of the request, whatever its state.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthenticated(Denial::MissingCredential))?;
    match crate::authn::credentials::extract([("authorization", value)])? {
        Some(crate::authn::Credential::Bearer(token)) => Ok(token),
        _ => Err(ApiError::validation("authorization", "a session token (Bearer JWT) is required")),
    }
}

/// Exchanges a session token, even one expired within the grace window (but
/// never a revoked one), for a new token; the old one is revoked. The
/// revocation comes first and the database decides it: of concurrent
/// exchanges of one token, on any replicas, exactly one gets a new token, the
/// others a 401. Tokens issued at or before the user's `tokens_valid_after`
/// are refused, and a session is never refreshed past its absolute lifetime
/// (counted from its login, the `auth_time` each new token carries on).
///
/// The token comes from `Authorization: Bearer`, or, for the web console after
/// a provider login, from the one-time `gatehouse_session` cookie; that cookie
/// is honoured only with an `X-Requested-With` header (which a cross-site form
/// cannot send, and a cross-site script cannot without a CORS preflight that
/// Gatehouse never grants) and the nonce the console started the login with
/// (see [`super::login::open_handoff`]), and is cleared by the answer, whatever
/// it is.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, description = "a new session token; the old one is revoked", body = super::openapi::TokenEnvelope),
    (status = 401, body = super::openapi::ErrorEnvelope),
))]
pub async fn refresh(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let now = s.clock.now();
    let cookie_allowed =
        !headers.contains_key(axum::http::header::AUTHORIZATION) && headers.contains_key("x-requested-with");
    let from_cookie = cookie_allowed.then(|| SESSION_COOKIE.read(&headers)).flatten();
    let result = match from_cookie {
        Some(cookie) => match super::login::open_handoff(&s, cookie, &headers, now) {
            Ok(handoff) => exchange_handoff(&s, &handoff, now).await,
            Err(e) => Err(e),
        },
        None => match bearer(&headers) {
            Ok(token) => exchange(&s, token, now).await,
            Err(e) => Err(e),
        },
    };
    let mut response = result.into_response();
    if from_cookie.is_some()
        && let Ok(clear) = SESSION_COOKIE.set(&s, "", 0)
    {
        response.headers_mut().append(axum::http::header::SET_COOKIE, clear);
    }
    response
}

/// The console's hand-off ticket for a session: once (the ticket is
/// consumed in the database, so across replicas too), for a user who is
/// still enabled and has not ended their sessions since.
async fn exchange_handoff(s: &HttpState, handoff: &super::login::Handoff, now: i64) -> Result<Response, ApiError> {
    let authn = s.authorizer.authn();
    s.auth_limits.admit_user("refresh", s.auth_limits.refresh, &handoff.user_id).await?;
    let user = s.accounts.user_by_id(&handoff.user_id).await?.ok_or(Denial::InvalidCredential)?;
    if user.disabled {
        return Err(Denial::AccountDisabled.into());
    }
    if handoff.auth_time <= user.tokens_valid_after {
        return Err(Denial::Revoked.into());
    }
    if !authn.revocations().revoke(&handoff.ticket, &user.id, handoff.expires_at, now).await? {
        tracing::info!(user_id = %user.id, "console hand-off refused: already exchanged");
        return Err(Denial::Revoked.into());
    }
    let issued = authn.jwt().continue_session(&user, now, handoff.auth_time)?;
    tracing::info!(user_id = %user.id, "console hand-off exchanged");
    Ok(ok(StatusCode::OK, token_body(&issued, &user)))
}

async fn exchange(s: &HttpState, token: &str, now: i64) -> Result<Response, ApiError> {
    let authn = s.authorizer.authn();
    let claims = authn.jwt().verify_for_refresh(token, now)?;
    if authn.revocations().is_revoked(&claims.jti, now) {
        return Err(Denial::Revoked.into());
    }
    s.auth_limits.admit_user("refresh", s.auth_limits.refresh, &claims.sub).await?;
    let user = s.accounts.user_by_id(&claims.sub).await?.ok_or(Denial::InvalidCredential)?;
    if user.disabled {
        return Err(Denial::AccountDisabled.into());
    }
    if claims.iat <= user.tokens_valid_after {
        return Err(Denial::Revoked.into());
    }
    let session_over =
        claims.auth_time <= 0 || claims.auth_time.saturating_add(authn.jwt().session_max_seconds()) <= now;
    if session_over {
        tracing::info!(user_id = %user.id, "refresh refused: the session's lifetime is over");
        return Err(Denial::Expired.into());
    }
    if !authn.revocations().revoke(&claims.jti, &claims.sub, claims.exp, now).await? {
        tracing::info!(user_id = %user.id, "refresh refused: the token was already exchanged or revoked");
        return Err(Denial::Revoked.into());
    }
    let issued = authn.jwt().continue_session(&user, now, claims.auth_time)?;
    tracing::info!(user_id = %user.id, "token refreshed");
    Ok(ok(StatusCode::OK, token_body(&issued, &user)))
}

/// The session token a logout names: any token refresh would still accept
/// (one expired within the grace window too, or logging out after a nap
/// would leave it refreshable), never an API key.
fn session_to_end(s: &HttpState, headers: &HeaderMap, now: i64) -> Result<crate::authn::jwt::Claims, ApiError> {
    if !headers.contains_key(axum::http::header::AUTHORIZATION) && headers.contains_key("x-api-key") {
        return Err(ApiError::validation(
            "authorization",
            "logout needs a session token; revoke API keys with DELETE /auth/keys/{id}",
        ));
    }
    let token = bearer(headers)?;
    let claims = s.authorizer.authn().jwt().verify_for_refresh(token, now)?;
    if s.authorizer.authn().revocations().is_revoked(&claims.jti, now) {
        return Err(Denial::Revoked.into());
    }
    Ok(claims)
}

#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, description = "the session token is revoked", body = super::openapi::LogoutBody),
    (status = 400, description = "not a session token", body = super::openapi::ErrorEnvelope),
    (status = 401, body = super::openapi::ErrorEnvelope),
))]
pub async fn logout(State(s): State<HttpState>, audited: Audited, headers: HeaderMap) -> Result<Response, ApiError> {
    let now = s.clock.now();
    let claims = session_to_end(&s, &headers, now)?;
    if !s.authorizer.authn().revocations().revoke(&claims.jti, &claims.sub, claims.exp, now).await? {
        return Err(Denial::Revoked.into());
    }
    tracing::info!(user_id = %claims.sub, "logout");
    audited.record(event(AuditAction::Logout).actor(&claims.sub).target(format!("user:{}", claims.sub))).await;
    Ok(Json(json!({ "success": true, "message": "Logged out successfully" })).into_response())
}

/// `POST /auth/logout/all`: "sign out everywhere". Every session token of
/// the caller's user issued until now, this one included, is refused from now
/// on by Check and by refresh, on every replica. API keys keep working.
#[utoipa::path(post, path = "/auth/logout/all", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, description = "every session of the user is ended", body = super::openapi::LogoutBody),
    (status = 400, description = "not a session token", body = super::openapi::ErrorEnvelope),
    (status = 401, body = super::openapi::ErrorEnvelope),
))]
pub async fn logout_all(
    State(s): State<HttpState>,
    audited: Audited,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = s.clock.now();
    let claims = session_to_end(&s, &headers, now)?;
    let user = s.accounts.user_by_id(&claims.sub).await?.ok_or(Denial::InvalidCredential)?;
    if claims.iat <= user.tokens_valid_after {
        return Err(Denial::Revoked.into());
    }
    s.accounts.end_sessions(&user.id, now).await?;
    tracing::info!(user_id = %user.id, "signed out everywhere");
    let ended = event(AuditAction::Logout).detail("every session (sign out everywhere)");
    audited.record(ended.actor(&user.id).target(format!("user:{}", user.id))).await;
    Ok(Json(json!({ "success": true, "message": "Signed out of every session" })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

/// `POST /auth/password`: the caller changes their own password, proving
/// the current one. Every session token issued until now is refused from then
/// on (this one included), on every replica; the answer carries a new one.
/// API keys keep working.
#[utoipa::path(post, path = "/auth/password", tag = "auth", security(("bearer" = [])), request_body = ChangePasswordBody, responses(
    (status = 200, description = "the password is changed; a new session token", body = super::openapi::TokenEnvelope),
    (status = 400, body = super::openapi::ErrorEnvelope),
    (status = 401, body = super::openapi::ErrorEnvelope),
    (status = 429, body = super::openapi::ErrorEnvelope),
))]
pub async fn change_password(
    State(s): State<HttpState>,
    Caller(caller): Caller,
    audited: Audited,
    JsonBody(body): JsonBody<ChangePasswordBody>,
) -> Result<Response, ApiError> {
    if caller.session.is_none() {
        return Err(ApiError::validation("authorization", "changing the password needs a session token"));
    }
    let user = s.accounts.find_user(&caller.user_id).await?;
    let name = LoginName::new(&user.email);
    let attempt = s.throttle.reserve(&name, audited.client_ip.as_deref()).map_err(ApiError::RateLimited)?;
    match s.accounts.verify_password(&name, Secret::new(body.current_password)).await {
        Ok(verified) if verified.id == user.id => attempt.succeeded(),
        Ok(_) | Err(AccountError::InvalidLogin) => {
            drop(attempt); // counted as a failure
            let failed = event(AuditAction::LoginFailed).detail("wrong current password (password change)");
            audited.record(failed.actor(&*caller.user_id).target(format!("user:{}", user.id))).await;
            return Err(ApiError::validation("current_password", "the current password is not correct"));
        }
        Err(e) => {
            attempt.release();
            return Err(e.into());
        }
    }
    s.accounts.set_password(&user.id, Secret::new(body.new_password)).await?;
    let user = s.accounts.find_user(&user.id).await?;
    let issued = s.authorizer.authn().jwt().issue(&user, s.clock.now())?;
    tracing::info!(user_id = %user.id, "password changed");
    let changed = event(AuditAction::UserUpdated).detail("password changed; every session ended");
    audited.record(changed.actor(&*caller.user_id).target(format!("user:{}", user.id))).await;
    Ok(ok(StatusCode::OK, token_body(&issued, &user)))
}

#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = []), ("api_key" = [])), responses(
    (status = 200, description = "the caller's profile", body = super::openapi::MeEnvelope),
    (status = 401, body = super::openapi::ErrorEnvelope),
))]
pub async fn me(State(s): State<HttpState>, Caller(caller): Caller) -> Result<Response, ApiError> {
    let user = s.accounts.find_user(&caller.user_id).await?;
    let mut value = serde_json::to_value(UserView::from(&user)).map_err(|_| ApiError::Internal)?;
    if let Value::Object(map) = &mut value {
        map.insert("username".into(), Value::String(user.email.clone()));
        map.insert("permissions".into(), json!(caller.permissions.names()));
        map.insert("auth_method".into(), Value::String(caller.method.as_str().to_owned()));
        map.insert("key_id".into(), json!(caller.key_id.as_deref()));
    }
    Ok(ok(StatusCode::OK, value))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", responses(
    (status = 200, description = "the public signing keys", body = super::openapi::Jwks),
))]
pub async fn jwks(State(s): State<HttpState>) -> Response {
    Json(s.authorizer.authn().jwt().jwks()).into_response()
}

mod keys;
pub use keys::*;
