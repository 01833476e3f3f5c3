//! Logging in with GitHub (OAuth): the redirect, the callback, the verified
//! primary email and the organization and team membership checks.

use super::*;

pub(super) fn github(s: &HttpState) -> Result<&GithubConfig, ApiError> {
    s.github.as_ref().ok_or(ApiError::NotFound("GitHub login is not configured".into()))
}

#[utoipa::path(get, path = "/auth/github", tag = "providers", params(LoginQuery), responses(
    (status = 302, description = "to GitHub"), (status = 404, description = "GitHub login is not configured", body = crate::http::openapi::ErrorEnvelope),
))]
pub async fn github_login(
    State(s): State<HttpState>,
    QueryParams(q): QueryParams<LoginQuery>,
) -> Result<Response, ApiError> {
    let gh = github(&s)?;
    let login = Pending::github(&gh.oauth_url, q.console_binding()?);
    let redirect_uri = format!("{}/auth/github/callback", s.public_url);
    // Organisation and team memberships need `read:org`.
    let scope = if gh.allowed_orgs.is_empty() { "read:user user:email" } else { "read:user user:email read:org" };
    let endpoint = format!("{}/login/oauth/authorize", gh.oauth_url);
    let location = authorization_url(&login, &endpoint, &gh.client_id, &redirect_uri, scope)?;
    redirect_with_state(&s, &location, &login)
}

#[derive(Deserialize)]
pub(super) struct GithubUser {
    id: i64,
    login: String,
    name: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct GithubEmail {
    email: String,
    primary: bool,
    verified: bool,
}

#[utoipa::path(get, path = "/auth/github/callback", tag = "providers", params(CallbackQuery), responses(
    (status = 200, description = "a session token", body = crate::http::openapi::TokenEnvelope),
    (status = 303, description = "to the web console, for a login it started"),
    (status = 400, body = crate::http::openapi::ErrorEnvelope), (status = 401, body = crate::http::openapi::ErrorEnvelope), (status = 403, body = crate::http::openapi::ErrorEnvelope), (status = 404, body = crate::http::openapi::ErrorEnvelope),
))]
pub async fn github_callback(
    State(s): State<HttpState>,
    audited: Audited,
    headers: HeaderMap,
    QueryParams(q): QueryParams<CallbackQuery>,
) -> Result<Response, ApiError> {
    let gh = github(&s)?.clone();
    let login = take_state(&s, &headers, &q)?;
    login.check_provider(GITHUB, &gh.oauth_url).map_err(refused)?;
    let code = q.code.clone().ok_or(ApiError::validation("code", "missing authorization code"))?;
    let redirect_uri = format!("{}/auth/github/callback", s.public_url);
    let form = [
        ("client_id", gh.client_id.as_str()),
        ("client_secret", gh.client_secret.expose()),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", login.verifier.as_str()),
    ];
    let tokens: TokenResponse = provider_post(&s, &format!("{}/login/oauth/access_token", gh.oauth_url), &form).await?;
    let access = tokens.access_token.ok_or(ApiError::Unauthenticated(Denial::InvalidCredential))?;
    let user: GithubUser = github_get(&s, &gh, "/user", &access).await?;
    let emails: Vec<GithubEmail> = github_get(&s, &gh, "/user/emails", &access).await?;
    // Only the primary address, and only once verified: a secondary one is
    // not the address the account answers to.
    let email = emails
        .iter()
        .find(|e| e.primary && e.verified)
        .map(|e| e.email.to_lowercase())
        .ok_or(ApiError::Forbidden("the GitHub account's primary email is not verified".into()))?;
    // Without allowed organisations, GitHub creates no accounts: anyone can
    // have a GitHub account. With them, every login must be a member.
    if !gh.allowed_orgs.is_empty() && !github_member(&s, &gh, &user.login, &access).await? {
        let detail = format!("GitHub user {} is not an active member of {}", user.login, gh.allowed_orgs.join(", "));
        audited.record(event(AuditAction::LoginFailed).actor("provider:github").detail(detail)).await;
        return Err(ApiError::Forbidden(
            "this GitHub account is not a member of an allowed organisation or team".into(),
        ));
    }
    let identity = ExternalIdentity {
        provider: "github".into(),
        subject: user.id.to_string(),
        verified_email: Some(email),
        name: user.name.or(Some(user.login)),
        provision: !gh.allowed_orgs.is_empty(),
        ..ExternalIdentity::default()
    };
    finish(&s, &audited, &identity, login.console).await
}

#[derive(Deserialize)]
pub(super) struct GithubMembership {
    state: String,
}

/// Whether `login` is an active member of one of `GITHUB_ALLOWED_ORGS` (an
/// organisation, or `org/team`), asked of GitHub with the user's token. A 404
/// or 403 (not a member, or an organisation that restricts this app) is no.
pub(super) async fn github_member(
    s: &HttpState,
    gh: &GithubConfig,
    login: &str,
    token: &str,
) -> Result<bool, ApiError> {
    if login.is_empty() || !login.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Ok(false);
    }
    for rule in &gh.allowed_orgs {
        let path = match rule.split_once('/') {
            Some((org, team)) => format!("/orgs/{org}/teams/{team}/memberships/{login}"),
            None => format!("/user/memberships/orgs/{rule}"),
        };
        let response = github_send(s, gh, &path, token).await?;
        match response.status().as_u16() {
            200 => {
                let membership: GithubMembership = github_body(response, &path).await?;
                if membership.state == "active" {
                    return Ok(true);
                }
            }
            403 | 404 => {}
            401 => return Err(ApiError::Unauthenticated(Denial::InvalidCredential)),
            status => {
                tracing::warn!(status, "GitHub membership check failed");
                return Err(ApiError::Unavailable);
            }
        }
    }
    Ok(false)
}

pub(super) async fn github_get<T: serde::de::DeserializeOwned>(
    s: &HttpState,
    gh: &GithubConfig,
    path: &str,
    token: &str,
) -> Result<T, ApiError> {
    let response = github_send(s, gh, path, token).await?;
    if !response.status().is_success() {
        return Err(ApiError::Unauthenticated(Denial::InvalidCredential));
    }
    github_body(response, path).await
}

/// A GET of GitHub's API with the user's token.
pub(super) async fn github_send(
    s: &HttpState,
    gh: &GithubConfig,
    path: &str,
    token: &str,
) -> Result<reqwest::Response, ApiError> {
    s.http_client
        .get(format!("{}{path}", gh.api_url))
        .bearer_auth(token)
        .header(header::ACCEPT, "application/vnd.github+json")
        .header(header::USER_AGENT, "gatehouse")
        .send()
        .await
        .map_err(|_| ApiError::Unavailable)
}

/// GitHub's answer as JSON, read no further than the document cap.
pub(super) async fn github_body<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    path: &str,
) -> Result<T, ApiError> {
    let body = read_capped(response, MAX_DOCUMENT_BYTES).await.map_err(|e| {
        tracing::warn!(error = %e, path, "cannot read GitHub's answer");
        ApiError::Unavailable
    })?;
    serde_json::from_slice(&body).map_err(|_| ApiError::Unavailable)
}
