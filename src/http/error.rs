//! The REST API's one error type: every failure becomes a status and the
//! one error envelope (`crate::render::envelope`) here, and internal details
//! never reach the client.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::accounts::AccountError;
use crate::domain::{Denial, ErrorKind};
use crate::render;
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    Validation {
        message: String,
        field: Option<String>,
    },
    Unauthenticated(Denial),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    PayloadTooLarge(usize),
    // A body not declared as JSON; a request past the request timeout.
    UnsupportedMediaType,
    Timeout,
    RateLimited(Duration),
    Unavailable,
    /// At capacity (password hashing): 503 with `Retry-After`.
    Busy(Duration),
    Internal,
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation { message: message.into(), field: Some(field.into()) }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str, String, Value) {
        let kind = |k: ErrorKind| (render::code(k), render::error_type(k));
        match self {
            ApiError::Validation { message, field } => {
                let (code, t) = kind(ErrorKind::InvalidRequest);
                let details = field.as_ref().map_or(Value::Null, |f| json!({ "field": f }));
                (StatusCode::BAD_REQUEST, code, t, message.clone(), details)
            }
            ApiError::Unauthenticated(d) => {
                let (code, t) = kind(d.kind());
                let status = StatusCode::from_u16(render::http_status(d.kind())).unwrap_or(StatusCode::UNAUTHORIZED);
                (status, code, t, d.message(), Value::Null)
            }
            ApiError::Forbidden(m) => {
                let (code, t) = kind(ErrorKind::Forbidden);
                (StatusCode::FORBIDDEN, code, t, m.clone(), Value::Null)
            }
            ApiError::NotFound(m) => {
                (StatusCode::NOT_FOUND, "NOT_FOUND", "invalid_request_error", m.clone(), Value::Null)
            }
            ApiError::Conflict(m) => {
                (StatusCode::CONFLICT, "CONFLICT", "invalid_request_error", m.clone(), Value::Null)
            }
            ApiError::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "invalid_request_error",
                format!("request body is larger than {limit} bytes"),
                Value::Null,
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "invalid_request_error",
                "the body must be JSON, sent with Content-Type: application/json".into(),
                json!({ "field": "content-type" }),
            ),
            ApiError::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "invalid_request_error",
                "the request took too long to arrive or to answer".into(),
                Value::Null,
            ),
            ApiError::RateLimited(_) => {
                let (code, t) = kind(ErrorKind::RateLimited);
                (StatusCode::TOO_MANY_REQUESTS, code, t, "too many attempts, try again later".into(), Value::Null)
            }
            ApiError::Unavailable => {
                let (code, t) = kind(ErrorKind::Unavailable);
                (StatusCode::SERVICE_UNAVAILABLE, code, t, "service temporarily unavailable".into(), Value::Null)
            }
            ApiError::Busy(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER_BUSY",
                "api_error",
                "too many password checks at once, try again shortly".into(),
                Value::Null,
            ),
            ApiError::Internal => {
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "api_error", "internal error".into(), Value::Null)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, error_type, message, details) = self.parts();
        let body = render::envelope(code, error_type, &message, None, details);
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let ApiError::Unauthenticated(d) = &self
            && let Some(challenge) = render::challenge(d).and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let ApiError::RateLimited(retry) | ApiError::Busy(retry) = &self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry.as_secs().max(1)));
        }
        response
    }
}

impl From<Denial> for ApiError {
    fn from(d: Denial) -> Self {
        match d.kind() {
            ErrorKind::Unauthenticated | ErrorKind::InvalidRequest | ErrorKind::TooLarge => {
                ApiError::Unauthenticated(d)
            }
            ErrorKind::Forbidden => ApiError::Forbidden(d.message()),
            ErrorKind::RateLimited | ErrorKind::QuotaExceeded => ApiError::RateLimited(Duration::from_secs(1)),
            ErrorKind::Unavailable => ApiError::Unavailable,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::Unavailable
        } else {
            tracing::error!(error = %e, "database error");
            ApiError::Internal
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Validation { field, message } => ApiError::validation(field, message),
            AccountError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            AccountError::Conflict(m) => ApiError::Conflict(m),
            AccountError::Forbidden(m) => ApiError::Forbidden(m),
            AccountError::Refused(m) => ApiError::Forbidden(m.to_owned()),
            AccountError::InvalidLogin => ApiError::Unauthenticated(Denial::InvalidLogin),
            AccountError::Busy(retry) => ApiError::Busy(retry),
            AccountError::Store(s) => s.into(),
        }
    }
}
