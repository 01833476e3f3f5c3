//! HTTP transport: the REST API (`/auth/*`, `/admin/*` and their seed
//! aliases), the JWKS, and probes. Handlers translate; the rules live in
//! [`crate::accounts`] and [`crate::authn`].

pub mod admin;
pub mod auth;
pub mod budget;
pub mod console;
pub mod error;
pub mod extract;
pub mod login;
pub mod openapi;
pub mod server;
pub mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde_json::json;

use crate::accounts::Accounts;
use crate::authn::oidc::Providers;
use crate::authn::throttle::LoginThrottle;
use crate::authz::Authorizer;
use crate::config::GithubConfig;
use crate::ratelimit::redis::RedisLimiter;
use error::ApiError;

#[derive(Clone)]
pub struct HttpState {
    /// False once shutdown has begun.
    pub ready: Arc<AtomicBool>,
    pub accounts: Accounts,
    pub authorizer: Arc<Authorizer>,
    pub throttle: LoginThrottle,
    /// Per-address limits on registration and login.
    pub auth_limits: auth::AuthLimits,
    pub trusted_proxy_hops: usize,
    pub max_body_bytes: usize,
    /// From a request's headers to its answer, the body read included.
    pub request_timeout: Duration,
    /// External providers; not ready until each one's keys have loaded.
    pub providers: Arc<Providers>,
    /// The shared limiter, when Redis is configured.
    pub redis: Option<RedisLimiter>,
    /// The cross-replica invalidation channel (connected only with Redis).
    pub bus: crate::store::bus::Bus,
    pub github: Option<GithubConfig>,
    pub public_url: String,
    /// For talking to providers (code exchange, GitHub's API).
    pub http_client: reqwest::Client,
    pub audit: crate::audit::Audit,
    /// Metered LLM usage: recorded by whoever learns a request's usage, read
    /// back through `/auth/usage` and `/admin/usage` (from the store).
    pub metering: crate::store::Metering,
    /// Serve the web console at `/`.
    pub console: bool,
    /// Cookies get `Secure`: browsers reach the API over https (the public
    /// URL says so, or Gatehouse serves TLS itself).
    pub secure_cookies: bool,
    /// Where handlers read the time.
    pub clock: crate::clock::SharedClock,
}

fn auth_routes() -> Router<HttpState> {
    let keys = Router::new()
        .route("/", post(auth::create_key).get(auth::list_keys))
        .route("/{id}", delete(auth::delete_key))
        .route("/{id}/rotate", post(auth::rotate_key));
    Router::new()
        .route("/register", post(auth::register))
        .route("/login", post(auth::login))
        .route("/refresh", post(auth::refresh))
        .route("/logout", post(auth::logout))
        .route("/logout/all", post(auth::logout_all))
        .route("/password", post(auth::change_password))
        .route("/me", get(auth::me))
        .route("/budget", get(budget::my_budget))
        .nest("/keys", keys.clone())
        .nest("/api-keys", keys)
        .route("/oidc/login", get(login::oidc_login))
        .route("/oidc/callback", get(login::oidc_callback))
        .route("/github", get(login::github_login))
        .route("/github/callback", get(login::github_callback))
        .route("/oauth/validate", post(login::validate))
        .route("/providers", get(login::providers))
        .route("/audit", get(admin::audit_log).layer(axum::Extension(extract::AdminArea)))
        .route("/usage", get(usage::own_usage))
        .layer(axum::middleware::map_response(no_store))
}

fn admin_routes() -> Router<HttpState> {
    Router::new()
        .route("/users", get(admin::list_users).post(admin::create_user))
        .route("/users/{id}", get(admin::get_user).patch(admin::update_user))
        .route("/groups", get(admin::list_groups).post(admin::create_group))
        .route("/groups/{name}", patch(admin::update_group))
        .route("/keys/{id}", patch(admin::update_key))
        .route("/usage", get(usage::admin_usage))
        .layer(axum::Extension(extract::AdminArea))
        .layer(axum::middleware::map_response(no_store))
}

/// API answers may carry tokens, key secrets or account data: no cache
/// (browser, proxy or CDN) keeps them.
async fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

pub fn router(state: HttpState) -> Router {
    let logged = state.clone();
    let console = if state.console { console::routes() } else { Router::new() };
    Router::new()
        .merge(console)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(auth::jwks))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(openapi::document().clone()) }))
        .nest("/auth", auth_routes())
        .nest("/api/v1/auth", auth_routes())
        .nest("/api/auth", auth_routes())
        .route("/api/v1/oauth/validate", post(login::validate).layer(axum::middleware::map_response(no_store)))
        .nest("/admin", admin_routes())
        .nest("/api/v1/admin", admin_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(logged.request_timeout, request_timeout))
        .layer(axum::middleware::from_fn_with_state(logged, access_log))
        .with_state(state)
}

/// The separate metrics listener's routes: `/metrics`, unauthenticated.
pub fn metrics_router() -> Router {
    Router::new().route("/metrics", get(|| async { render_metrics() })).fallback(not_found)
}

/// A request still unanswered `limit` after its headers arrived (a body sent
/// slowly, say) is answered 408 and its connection closed.
async fn request_timeout(
    State(limit): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::Timeout.into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// One log line per API request (seed 003: time, client IP, user, endpoint,
/// status, duration) in a span carrying the request id, which is Envoy's
/// `x-request-id` when present (so API and Check logs line up) and is echoed
/// back. The path is logged as [`crate::telemetry::path`] shows it: without
/// its query string, emails redacted, escaped and capped. Probes log at debug.
async fn access_log(
    extract::ClientIp(ip): extract::ClientIp,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let method = request.method().clone();
    let path = crate::telemetry::path(request.uri().path());
    let span = tracing::info_span!("request", request_id = %request_id, user_id = tracing::field::Empty);
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let client_ip = ip.map(|ip| ip.to_string());
    let _entered = span.enter();
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
        tracing::debug!(%method, path, status, duration_ms, client_ip, "http request");
    } else {
        tracing::info!(%method, path, status, duration_ms, client_ip, "http request");
    }
    response
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: not shutting down, and the database answers.
async fn readyz(State(state): State<HttpState>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return not_ready("shutting down");
    }
    let waiting = state.providers.not_ready();
    if !waiting.is_empty() {
        return not_ready(&format!("identity provider keys not loaded yet: {}", waiting.join(", ")));
    }
    // Without Redis, limits are enforced per replica: still ready, but degraded.
    let redis = match &state.redis {
        None => "not configured",
        Some(r) if r.is_degraded() || !state.bus.is_connected().await => {
            "unavailable, limiting per replica and invalidating by TTL"
        }
        Some(_) => "ok",
    };
    match tokio::time::timeout(Duration::from_secs(2), state.accounts.ping()).await {
        Ok(Ok(())) => {
            let status = if redis.starts_with("unavailable") { "degraded" } else { "ready" };
            Json(json!({"status": status, "database": "ok", "redis": redis})).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            not_ready("database unavailable")
        }
        Err(_) => not_ready("database timed out"),
    }
}

/// Prometheus text format, for callers holding `read_metrics`.
async fn metrics(caller: extract::Caller) -> Result<Response, ApiError> {
    caller.require(crate::domain::Permission::ReadMetrics)?;
    Ok(render_metrics())
}

fn render_metrics() -> Response {
    let body = crate::telemetry::metrics().render();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn not_ready(reason: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not_ready", "reason": reason}))).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> Response {
    let body = crate::render::envelope(
        "METHOD_NOT_ALLOWED",
        "invalid_request_error",
        "method not allowed on this endpoint",
        None,
        serde_json::Value::Null,
    );
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}
