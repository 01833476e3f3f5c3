//! Logging in through an external provider, ending with a Gatehouse session
//! token:
//! * `GET /auth/oidc/login[?provider=NAME]` -> the provider (authorization
//!   code flow with PKCE S256, `state` and `nonce`); `GET /auth/oidc/callback`
//!   exchanges the code and verifies the ID token.
//!   All providers share that callback, so the login state names the
//!   provider (and its issuer) the login began with: the code goes only to
//!   that provider's token endpoint, and an `iss` in the callback (RFC 9207)
//!   must be that issuer — required when the provider advertises it — so a
//!   provider cannot be handed another's code and PKCE verifier (mix-up).
//! * `GET /auth/github` -> GitHub; `GET /auth/github/callback` exchanges the
//!   code and reads the account's verified primary email.
//! * `POST /api/v1/oauth/validate {session_token}` says whether a token is
//!   valid, to its holder or an administrator.
//!
//! * `GET /auth/providers` lists the configured providers and their login URLs.
//!
//! The state, nonce and PKCE verifier travel in a signed, HttpOnly,
//! SameSite=Lax cookie (10 minutes), never in a URL, so the callback may land
//! on any replica.
//!
//! A login started with `?console=true&console_nonce=N` (the web console's
//! buttons) ends with a redirect to the console instead of a JSON body: the
//! session token goes into an HttpOnly, SameSite=Strict cookie scoped to
//! `/auth/refresh` for two minutes, which the console exchanges once for a
//! token it keeps in memory (see [`super::auth::refresh`]). No token ever
//! appears in a URL. The cookie is bound to the login that started it: it
//! carries the SHA-256 of the console's nonce, and the exchange needs the
//! nonce itself, which only the console page that started the login holds (in
//! its `sessionStorage`, which pages of other origins cannot reach, unlike
//! cookies, which any port of the same host can set). So a cookie planted by
//! another page cannot sign the console in as someone else.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::HttpState;
use super::auth::{envelope, token_body};
use super::error::ApiError;
use super::extract::{Audited, JsonBody, QueryParams};
use crate::audit::event;
use crate::authn::fetch::read_capped;
use crate::authn::login::{CallbackError, GITHUB, Pending};
use crate::authn::oidc::{ExternalIdentity, MAX_DOCUMENT_BYTES};
use crate::config::GithubConfig;
use crate::domain::{AuditAction, Denial};

const STATE_TTL: i64 = 600;
const SESSION_COOKIE_TTL: i64 = 120;
/// The request header carrying the console's nonce at the hand-off exchange.
const HANDOFF_NONCE_HEADER: &str = "x-gatehouse-handoff";

/// A cookie Gatehouse sets: always HttpOnly, and Secure when browsers reach
/// the API over https.
pub struct Cookie {
    name: &'static str,
    path: &'static str,
    same_site: &'static str,
}

/// The provider login's state, nonce and PKCE verifier (signed). Scoped to
/// `/auth`, where the callbacks (`redirect_uri`) are, so it never travels with
/// requests to the upstream (the gateways send `/auth/*` only to Gatehouse).
const LOGIN_COOKIE: Cookie = Cookie { name: "gatehouse_login", path: "/auth", same_site: "Lax" };
/// The console's one-time session hand-off (read by `/auth/refresh`).
pub const SESSION_COOKIE: Cookie = Cookie { name: "gatehouse_session", path: "/auth/refresh", same_site: "Strict" };

impl Cookie {
    /// `Set-Cookie` for `value` (`max_age` 0 clears it).
    pub fn set(&self, s: &HttpState, value: &str, max_age: i64) -> Result<HeaderValue, ApiError> {
        let Cookie { name, path, same_site } = self;
        let secure = if s.secure_cookies { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
        ))
        .map_err(|_| ApiError::Internal)
    }

    /// This cookie's value in the request's `Cookie` headers.
    pub fn read<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let values: Vec<&str> = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
        crate::authn::credentials::cookie_values(&values, self.name).into_iter().next()
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginQuery {
    provider: Option<String>,
    console: Option<bool>,
    /// With `console=true`: a random value the console keeps; the hand-off
    /// cookie is exchanged only together with it.
    console_nonce: Option<String>,
}

impl LoginQuery {
    /// For a console login, the binding its hand-off cookie will carry.
    fn console_binding(&self) -> Result<Option<String>, ApiError> {
        if !self.console.unwrap_or(false) {
            return Ok(None);
        }
        let nonce = self.console_nonce.as_deref().unwrap_or("");
        let well_formed =
            (22..=128).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !well_formed {
            return Err(ApiError::validation(
                "console_nonce",
                "a console login needs console_nonce: 22 to 128 letters, digits, '-' or '_'",
            ));
        }
        Ok(Some(handoff_binding(nonce)))
    }
}

/// The console's hand-off: a one-time ticket for a session, bound to the
/// login that started it (the SHA-256 of the console's nonce), signed like
/// the login state. It holds no session token: whoever reads the cookie (a
/// service on another port of the same host receives it too) holds nothing
/// usable without the nonce, which only the console page has.
#[derive(Serialize, Deserialize)]
pub struct Handoff {
    pub user_id: String,
    /// Consumed (as a revoked token id) by the one exchange that succeeds.
    pub ticket: String,
    /// When the person signed in: the session's lifetime counts from here.
    pub auth_time: i64,
    pub expires_at: i64,
    binding: String,
}

fn handoff_binding(nonce: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(nonce.as_bytes()))
}

/// The ticket in a hand-off cookie, when the request also presents the nonce
/// of the console login the cookie was made for. Anything else (a cookie
/// planted by another page, a forged or stale one, no nonce) is a 401.
pub fn open_handoff(s: &HttpState, cookie: &str, headers: &HeaderMap, now: i64) -> Result<Handoff, ApiError> {
    let refused = || ApiError::Unauthenticated(Denial::InvalidCredential);
    let handoff: Handoff = s.authorizer.authn().jwt().verify_state(cookie, now).map_err(|_| refused())?;
    let nonce = headers.get(HANDOFF_NONCE_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(refused)?;
    let matches: bool =
        subtle::ConstantTimeEq::ct_eq(handoff_binding(nonce).as_bytes(), handoff.binding.as_bytes()).into();
    if !matches {
        tracing::info!("console hand-off refused: not presented by the page that started the login");
        return Err(refused());
    }
    Ok(handoff)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// RFC 9207: the issuer of this authorization response.
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn redirect_with_state(s: &HttpState, location: &str, login: &Pending) -> Result<Response, ApiError> {
    let signed = s.authorizer.authn().jwt().sign_state(login, s.clock.now(), STATE_TTL)?;
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_str(location).map_err(|_| ApiError::Internal)?);
    headers.insert(header::SET_COOKIE, LOGIN_COOKIE.set(s, &signed, STATE_TTL)?);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The login state from the cookie, checked against the callback's `state`.
fn take_state(s: &HttpState, headers: &HeaderMap, q: &CallbackQuery) -> Result<Pending, ApiError> {
    if let Some(error) = &q.error {
        // Both come from the URL: escaped and capped, never logged raw.
        let error = crate::telemetry::escape(error, crate::telemetry::VALUE_CAP);
        let detail =
            crate::telemetry::escape(q.error_description.as_deref().unwrap_or(""), crate::telemetry::VALUE_CAP);
        tracing::info!(error = %error, detail = %detail, "provider refused the login");
        return Err(ApiError::Unauthenticated(Denial::InvalidCredential));
    }
    let cookie = LOGIN_COOKIE
        .read(headers)
        .ok_or(ApiError::validation("state", "missing login state: start the login again"))?;
    let login: Pending = s
        .authorizer
        .authn()
        .jwt()
        .verify_state(cookie, s.clock.now())
        .map_err(|d| ApiError::validation("state", d.message()))?;
    login.check_state(q.state.as_deref()).map_err(refused)?;
    Ok(login)
}

/// A callback that does not belong to its login: the caller starts again.
fn refused(e: CallbackError) -> ApiError {
    let field = if e == CallbackError::OtherIssuer { "iss" } else { "state" };
    ApiError::validation(field, e.to_string())
}

/// Where the browser goes to log in: `endpoint` with the login's parameters.
fn authorization_url(
    login: &Pending,
    endpoint: &str,
    client_id: &str,
    redirect_uri: &str,
    scope: &str,
) -> Result<String, ApiError> {
    login.authorization_url(endpoint, client_id, redirect_uri, scope).map(String::from).map_err(|e| {
        tracing::warn!(provider = %login.provider, error = %e, "cannot send a login to the provider");
        ApiError::Unavailable
    })
}

/// `GET /auth/providers`: the external providers a user can log in with.
#[utoipa::path(get, path = "/auth/providers", tag = "providers", responses(
    (status = 200, description = "the configured login providers", body = super::openapi::ProviderList),
))]
pub async fn providers(State(s): State<HttpState>) -> Response {
    let mut items: Vec<serde_json::Value> = s
        .authorizer
        .authn()
        .providers()
        .all()
        .iter()
        .filter(|i| i.config().client_id.is_some())
        .map(|i| {
            let name = &i.config().name;
            json!({"name": name, "type": "oidc", "login_url": format!("/auth/oidc/login?{}", url::form_urlencoded::Serializer::new(String::new()).append_pair("provider", name).finish())})
        })
        .collect();
    if s.github.is_some() {
        items.push(json!({"name": "github", "type": "github", "login_url": "/auth/github"}));
    }
    super::auth::list("providers", serde_json::Value::Array(items))
}

/// Provisions the user (which applies `ALLOWED_EMAIL_DOMAINS`, the
/// provider's provisioning rule and the linking rules, and audits a refusal)
/// and issues a session token.
async fn finish(
    s: &HttpState,
    audited: &Audited,
    identity: &ExternalIdentity,
    console: Option<String>,
) -> Result<Response, ApiError> {
    let via = format!("provider {}", identity.provider);
    let user = s.accounts.provision(identity).await?;
    let subject = format!("user:{}", user.id);
    if user.disabled {
        audited
            .record(event(AuditAction::LoginFailed).target(subject).detail(format!("{via}: account disabled")))
            .await;
        return Err(Denial::AccountDisabled.into());
    }
    let now = s.clock.now();
    tracing::info!(user_id = %user.id, provider = %identity.provider, "login through provider");
    audited.record(event(AuditAction::LoginSucceeded).actor(&user.id).target(subject).detail(via)).await;
    let mut response = if let Some(binding) = console {
        let handoff = Handoff {
            user_id: user.id.clone(),
            ticket: uuid::Uuid::new_v4().to_string(),
            auth_time: now,
            expires_at: now + SESSION_COOKIE_TTL,
            binding,
        };
        let cookie = s.authorizer.authn().jwt().sign_state(&handoff, now, SESSION_COOKIE_TTL)?;
        let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/#/keys")]).into_response();
        r.headers_mut().append(header::SET_COOKIE, SESSION_COOKIE.set(s, &cookie, SESSION_COOKIE_TTL)?);
        r
    } else {
        let issued = s.authorizer.authn().jwt().issue(&user, now)?;
        (StatusCode::OK, Json(envelope(token_body(&issued, &user)))).into_response()
    };
    response.headers_mut().append(header::SET_COOKIE, LOGIN_COOKIE.set(s, "", 0)?);
    Ok(response)
}

#[utoipa::path(get, path = "/auth/oidc/login", tag = "providers", params(LoginQuery), responses(
    (status = 302, description = "to the provider's authorization endpoint"),
    (status = 404, description = "no such provider", body = super::openapi::ErrorEnvelope), (status = 503, description = "the provider's discovery document has not loaded", body = super::openapi::ErrorEnvelope),
))]
pub async fn oidc_login(
    State(s): State<HttpState>,
    QueryParams(q): QueryParams<LoginQuery>,
) -> Result<Response, ApiError> {
    let name = q.provider.as_deref().unwrap_or("default");
    let issuer = s
        .authorizer
        .authn()
        .providers()
        .by_name(name)
        .ok_or(ApiError::NotFound(format!("no OIDC provider named {name}")))?;
    let client_id =
        issuer.config().client_id.clone().ok_or(ApiError::NotFound("OIDC login is not configured".into()))?;
    let endpoint = issuer.discovery().await.and_then(|d| d.authorization_endpoint).ok_or(ApiError::Unavailable)?;
    let login = Pending::oidc(name, &issuer.config().issuer_url, q.console_binding()?);
    let redirect_uri = format!("{}/auth/oidc/callback", s.public_url);
    let location = authorization_url(&login, &endpoint, &client_id, &redirect_uri, "openid email profile")?;
    redirect_with_state(&s, &location, &login)
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
}

#[utoipa::path(get, path = "/auth/oidc/callback", tag = "providers", params(CallbackQuery), responses(
    (status = 200, description = "a session token", body = super::openapi::TokenEnvelope),
    (status = 303, description = "to the web console, for a login it started"),
    (status = 400, body = super::openapi::ErrorEnvelope), (status = 401, body = super::openapi::ErrorEnvelope), (status = 403, body = super::openapi::ErrorEnvelope),
))]
pub async fn oidc_callback(
    State(s): State<HttpState>,
    audited: Audited,
    headers: HeaderMap,
    QueryParams(q): QueryParams<CallbackQuery>,
) -> Result<Response, ApiError> {
    let login = take_state(&s, &headers, &q)?;
    let code = q.code.clone().ok_or(ApiError::validation("code", "missing authorization code"))?;
    let issuer = s
        .authorizer
        .authn()
        .providers()
        .by_name(&login.provider)
        .filter(|i| i.config().issuer_url == login.issuer)
        .ok_or(ApiError::validation("state", "login state does not match: start the login again"))?;
    let config = issuer.config();
    let discovery = issuer.discovery().await.ok_or(ApiError::Unavailable)?;
    if let Err(e) = login.check_issuer(q.iss.as_deref(), discovery.authorization_response_iss_parameter_supported) {
        tracing::warn!(provider = %login.provider, "authorization response not from the login's provider");
        let detail = format!("provider {}: authorization response from another issuer", config.issuer_url);
        audited.record(event(AuditAction::LoginFailed).detail(detail)).await;
        return Err(refused(e));
    }
    let endpoint = discovery.token_endpoint.ok_or(ApiError::Unavailable)?;
    let redirect_uri = format!("{}/auth/oidc/callback", s.public_url);
    let client_id = config.client_id.clone().unwrap_or_default();
    let secret = config.client_secret.as_ref().map(|s| s.expose().to_owned()).unwrap_or_default();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("client_id", client_id.as_str()),
        ("code_verifier", login.verifier.as_str()),
    ];
    if !secret.is_empty() {
        form.push(("client_secret", secret.as_str()));
    }
    let tokens: TokenResponse = provider_post(&s, &endpoint, &form).await?;
    let id_token = tokens.id_token.ok_or(ApiError::Unauthenticated(Denial::InvalidCredential))?;
    let (_, identity) = issuer.verify(&id_token, Some(&login.nonce)).await?;
    finish(&s, &audited, &identity, login.console).await
}

async fn provider_post<T: serde::de::DeserializeOwned>(
    s: &HttpState,
    url: &str,
    form: &[(&str, &str)],
) -> Result<T, ApiError> {
    let response =
        s.http_client.post(url).header(header::ACCEPT, "application/json").form(form).send().await.map_err(|e| {
            tracing::warn!(error = %e.without_url(), "provider token endpoint unreachable");
            ApiError::Unavailable
        })?;
    if !response.status().is_success() {
        tracing::info!(status = %response.status(), "provider refused the code exchange");
        return Err(ApiError::Unauthenticated(Denial::InvalidCredential));
    }
    let body = read_capped(response, MAX_DOCUMENT_BYTES).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read the provider's token endpoint answer");
        ApiError::Unavailable
    })?;
    serde_json::from_slice(&body).map_err(|_| ApiError::Unauthenticated(Denial::InvalidCredential))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    session_token: String,
}

/// Seed 001's session check: 200 with `valid` true or false and, when
/// valid, whose it is. Only a credential's own holder or an administrator
/// learns anything:
/// * a caller sending no credential of its own presents a session token in
///   the body (seed 001's call) and learns about that token alone;
/// * an API key is validated only for a caller that authenticates (with that
///   key, or another credential of the same user);
/// * validating another user's credential needs `manage_users`: refused 403
///   (and audited) otherwise, whether that credential is valid or not.
#[utoipa::path(post, path = "/auth/oauth/validate", tag = "auth", security(("bearer" = []), ("api_key" = [])), request_body = ValidateBody, responses(
    (status = 200, description = "whether the token is valid, and whose", body = super::openapi::ValidationEnvelope),
    (status = 401, body = super::openapi::ErrorEnvelope), (status = 403, body = super::openapi::ErrorEnvelope),
))]
pub async fn validate(
    State(s): State<HttpState>,
    audited: Audited,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ValidateBody>,
) -> Result<Response, ApiError> {
    let now = s.clock.now();
    let sent = headers.iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("\u{0}")));
    let caller = match s.authorizer.authenticate(sent, now).await {
        Ok(caller) => Some(caller),
        Err(Denial::MissingCredential) => None,
        Err(d) => return Err(d.into()),
    };
    if caller.is_none() && crate::authn::api_key::looks_like_key(body.session_token.trim()) {
        return Err(ApiError::Unauthenticated(Denial::MissingCredential));
    }
    let presented = [("authorization", format!("Bearer {}", body.session_token))];
    let result = s.authorizer.authenticate(presented.iter().map(|(k, v)| (*k, v.as_str())), now).await;
    if let Some(caller) = caller {
        let own = result.as_ref().is_ok_and(|p| p.user_id == caller.user_id);
        if !own {
            audited.require(&super::extract::Caller(caller), crate::domain::Permission::ManageUsers).await?;
        }
    }
    let value = match result {
        Ok(p) => {
            let user = s.accounts.find_user(&p.user_id).await?;
            json!({
                "valid": true,
                "user_identity": user.email,
                "user_email": user.email,
                "user_name": user.name,
                "auth_method": p.method.as_str(),
                "expires_at": p.session.as_ref().map(|s| crate::views::timestamp(s.expires_at)),
            })
        }
        Err(Denial::BackendUnavailable) => return Err(ApiError::Unavailable),
        Err(d) => json!({ "valid": false, "reason": d.reason() }),
    };
    Ok((StatusCode::OK, Json(envelope(value))).into_response())
}

mod github;
pub use github::{__path_github_callback, __path_github_login, github_callback, github_login};
