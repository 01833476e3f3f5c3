//! Why a request is refused. One enum for the whole Check path; how each door
//! writes it (HTTP status, gRPC code, challenge, JSON envelope) is
//! `crate::render`'s alone.

use super::permission::PermissionSet;

/// The error families of the seed's error table and of OpenAI's error `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400 `VALIDATION_ERROR` / `invalid_request_error`
    InvalidRequest,
    /// 401 `AUTHENTICATION_FAILED` / `authentication_error`
    Unauthenticated,
    /// 403 `PERMISSION_DENIED` / `permission_error`
    Forbidden,
    /// 413 `PAYLOAD_TOO_LARGE` / `invalid_request_error`
    TooLarge,
    /// 429 `RATE_LIMITED` / `rate_limit_error`
    RateLimited,
    /// 429 `QUOTA_EXCEEDED` / `insufficient_quota`
    QuotaExceeded,
    /// 503 `AUTH_BACKEND_UNAVAILABLE` / `api_error`
    Unavailable,
}

/// A refused Check. Messages never contain the presented credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("authentication required: send an API key (X-API-Key) or a bearer token")]
    MissingCredential,
    #[error("malformed credential: {0}")]
    MalformedCredential(&'static str),
    /// Unknown key id and wrong secret share one message, so a caller cannot
    /// learn which key ids exist.
    #[error("invalid API key or token")]
    InvalidCredential,
    /// A failed password login: unknown account and wrong password alike.
    #[error("invalid email or password")]
    InvalidLogin,
    #[error("credential has expired")]
    Expired,
    #[error("credential has been revoked")]
    Revoked,
    #[error("account is disabled")]
    AccountDisabled,
    #[error("conflicting credentials: the request carries more than one, and they differ")]
    ConflictingCredentials,
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    #[error("missing permission: {}", .missing)]
    MissingPermissions { missing: PermissionSet },
    /// No rule allows this request (the route table's default, or a `deny` rule).
    #[error("this route is not allowed")]
    RouteDenied,
    /// A valid provider token whose identity gets no account here (the
    /// provider does not provision, email domain, unverified local account).
    #[error("{0}")]
    NotProvisioned(&'static str),
    /// A key's replaced secret, in its rotation grace period: it keeps
    /// calls through the gateway working while clients switch, and does
    /// nothing else (a leaked old secret must not outlive the rotation).
    #[error(
        "this is a key's replaced secret: it works for calls through the gateway only until its grace period ends; use the new secret"
    )]
    ReplacedSecret,
    #[error("this route requires the role {}", .roles.join(" or "))]
    RoleRequired { roles: Vec<&'static str> },
    #[error("model '{model}' is not allowed for this caller")]
    ModelNotAllowed { model: String },
    #[error("request body exceeds {max_bytes} bytes")]
    BodyTooLarge { max_bytes: usize },
    #[error("prompt is {chars} characters; the maximum is {max_chars}")]
    PromptTooLong { chars: usize, max_chars: usize },
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    #[error("authentication backend unavailable, try again later")]
    BackendUnavailable,
    /// Over the caller's rate limit: numbers for the `X-RateLimit-*` and
    /// `Retry-After` headers.
    #[error("rate limit exceeded: {limit} requests per {period_seconds}s, retry in {retry_after_seconds}s")]
    RateLimited { limit: u32, period_seconds: u64, retry_after_seconds: u64, reset_seconds: u64 },
    /// A token or spend budget cannot hold the request's reservation.
    /// `retry_after_seconds`: when the window frees capacity (`None`: the
    /// request is larger than the whole budget, or the period is calendar
    /// and far off); `tokens`: the `x-ratelimit-*-tokens` values.
    #[error("{message}")]
    QuotaExceeded { message: String, retry_after_seconds: Option<u64>, tokens: Option<super::budget::TokenHeaders> },
    /// A spend budget applies and the price table has no price for the model.
    #[error("model '{model}' has no price configured, so it cannot be used under a spend budget")]
    ModelNotPriced { model: String },
}

impl Denial {
    pub const fn kind(&self) -> ErrorKind {
        match self {
            Denial::MissingCredential
            | Denial::MalformedCredential(_)
            | Denial::InvalidCredential
            | Denial::InvalidLogin
            | Denial::Expired
            | Denial::Revoked
            | Denial::AccountDisabled => ErrorKind::Unauthenticated,
            Denial::ConflictingCredentials
            | Denial::InvalidRequest(_)
            | Denial::InvalidBody(_)
            | Denial::PromptTooLong { .. } => ErrorKind::InvalidRequest,
            Denial::MissingPermissions { .. }
            | Denial::RouteDenied
            | Denial::NotProvisioned(_)
            | Denial::ReplacedSecret
            | Denial::RoleRequired { .. }
            | Denial::ModelNotAllowed { .. }
            | Denial::ModelNotPriced { .. } => ErrorKind::Forbidden,
            Denial::BodyTooLarge { .. } => ErrorKind::TooLarge,
            Denial::BackendUnavailable => ErrorKind::Unavailable,
            Denial::RateLimited { .. } => ErrorKind::RateLimited,
            Denial::QuotaExceeded { .. } => ErrorKind::QuotaExceeded,
        }
    }

    /// A stable snake_case label for metrics, logs and Envoy dynamic metadata.
    pub const fn reason(&self) -> &'static str {
        match self {
            Denial::MissingCredential => "missing_credential",
            Denial::MalformedCredential(_) => "malformed_credential",
            Denial::InvalidCredential => "invalid_credential",
            Denial::InvalidLogin => "invalid_login",
            Denial::Expired => "expired",
            Denial::Revoked => "revoked",
            Denial::AccountDisabled => "account_disabled",
            Denial::ConflictingCredentials => "conflicting_credentials",
            Denial::InvalidRequest(_) => "invalid_request",
            Denial::MissingPermissions { .. } => "missing_permission",
            Denial::RouteDenied => "route_denied",
            Denial::NotProvisioned(_) => "not_provisioned",
            Denial::ReplacedSecret => "replaced_secret",
            Denial::RoleRequired { .. } => "role_required",
            Denial::ModelNotAllowed { .. } => "model_not_allowed",
            Denial::BodyTooLarge { .. } => "body_too_large",
            Denial::PromptTooLong { .. } => "prompt_too_long",
            Denial::InvalidBody(_) => "invalid_body",
            Denial::BackendUnavailable => "backend_unavailable",
            Denial::RateLimited { .. } => "rate_limited",
            Denial::QuotaExceeded { .. } => "quota_exceeded",
            Denial::ModelNotPriced { .. } => "model_not_priced",
        }
    }

    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The request field at fault, for OpenAI's `param`.
    pub const fn param(&self) -> Option<&'static str> {
        match self {
            Denial::ModelNotAllowed { .. } | Denial::ModelNotPriced { .. } => Some("model"),
            Denial::PromptTooLong { .. } => Some("messages"),
            _ => None,
        }
    }
}
