//! Refusals as each door says them: the HTTP status, the gRPC code, the RFC
//! 6750 challenge, the `X-RateLimit-*` values and the one JSON error
//! envelope, for Check denials (through Envoy), the REST API and the gRPC
//! admin API alike. The domain names what went wrong (`Denial`, `ErrorKind`);
//! only this module knows how it is written on the wire.

use serde_json::{Value, json};

use crate::domain::{Denial, ErrorKind};

pub const fn http_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::InvalidRequest => 400,
        ErrorKind::Unauthenticated => 401,
        ErrorKind::Forbidden => 403,
        ErrorKind::TooLarge => 413,
        ErrorKind::RateLimited | ErrorKind::QuotaExceeded => 429,
        ErrorKind::Unavailable => 503,
    }
}

/// The seed's error `code`.
pub const fn code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "VALIDATION_ERROR",
        ErrorKind::Unauthenticated => "AUTHENTICATION_FAILED",
        ErrorKind::Forbidden => "PERMISSION_DENIED",
        ErrorKind::TooLarge => "PAYLOAD_TOO_LARGE",
        ErrorKind::RateLimited => "RATE_LIMITED",
        ErrorKind::QuotaExceeded => "QUOTA_EXCEEDED",
        ErrorKind::Unavailable => "AUTH_BACKEND_UNAVAILABLE",
    }
}

/// The OpenAI error `type`, so OpenAI SDKs raise the right exception.
pub const fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::TooLarge => "invalid_request_error",
        ErrorKind::Unauthenticated => "authentication_error",
        ErrorKind::Forbidden => "permission_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::QuotaExceeded => "insufficient_quota",
        ErrorKind::Unavailable => "api_error",
    }
}

pub const fn grpc_code(kind: ErrorKind) -> tonic::Code {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::TooLarge => tonic::Code::InvalidArgument,
        ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorKind::Forbidden => tonic::Code::PermissionDenied,
        ErrorKind::RateLimited | ErrorKind::QuotaExceeded => tonic::Code::ResourceExhausted,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
    }
}

/// A denial as a gRPC status (the admin API), with its message.
pub fn grpc_status(denial: &Denial) -> tonic::Status {
    tonic::Status::new(grpc_code(denial.kind()), denial.message())
}

/// The `WWW-Authenticate` challenge (RFC 6750 section 3) for 401s.
pub fn challenge(denial: &Denial) -> Option<String> {
    match denial {
        Denial::MissingCredential | Denial::InvalidLogin => Some(r#"Bearer realm="gatehouse""#.to_owned()),
        d if d.kind() == ErrorKind::Unauthenticated => Some(format!(
            r#"Bearer realm="gatehouse", error="invalid_token", error_description="{}""#,
            d.to_string().replace('"', "'")
        )),
        _ => None,
    }
}

/// `{"success": false, "error": {"code", "message", "type", "param",
/// "details"}}`: the seed's shape (its clients test `.success == false`)
/// with OpenAI's `type` and `param`, so both kinds of client understand it.
/// Every error of every door is written by this function.
pub fn envelope(code: &str, error_type: &str, message: &str, param: Option<&str>, details: Value) -> Value {
    json!({
        "success": false,
        "error": { "code": code, "message": message, "type": error_type, "param": param, "details": details },
    })
}

/// A Check denial's body (and a REST refusal that is a denial).
pub fn denial_body(denial: &Denial) -> String {
    let kind = denial.kind();
    envelope(code(kind), error_type(kind), &denial.message(), denial.param(), Value::Null).to_string()
}

/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (Unix seconds when the
/// bucket is full again; seed 003).
pub fn rate_limit_headers(limit: u32, remaining: u32, reset_after_seconds: u64) -> [(&'static str, String); 3] {
    let now = time::OffsetDateTime::now_utc().unix_timestamp().unsigned_abs();
    [
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", (now + reset_after_seconds).to_string()),
    ]
}

/// OpenAI's `x-ratelimit-limit-tokens`, `-remaining-tokens` and
/// `-reset-tokens` (a duration such as `6m0s`).
pub fn token_limit_headers(t: crate::domain::budget::TokenHeaders) -> [(&'static str, String); 3] {
    [
        ("x-ratelimit-limit-tokens", t.limit.to_string()),
        ("x-ratelimit-remaining-tokens", t.remaining.max(0).to_string()),
        ("x-ratelimit-reset-tokens", duration(t.reset_seconds)),
    ]
}

/// Seconds as OpenAI writes durations: `45s`, `6m0s`, `1h2m3s`.
pub fn duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_seed_shape() {
        let body: Value = serde_json::from_str(&denial_body(&Denial::InvalidCredential)).unwrap();
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], "AUTHENTICATION_FAILED");
        assert_eq!(body["error"]["type"], "authentication_error");
        assert!(body["error"]["param"].is_null());
        assert!(body["error"]["details"].is_null());
        let body: Value =
            serde_json::from_str(&denial_body(&Denial::ModelNotAllowed { model: "gpt-x".into() })).unwrap();
        assert_eq!(body["error"]["param"], "model");
    }

    #[test]
    fn durations_read_like_openai_headers() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(360), "6m0s");
        assert_eq!(duration(3723), "1h2m3s");
    }

    #[test]
    fn quota_refusals_read_as_insufficient_quota() {
        let denial = Denial::QuotaExceeded { message: "out".into(), retry_after_seconds: None, tokens: None };
        let body: Value = serde_json::from_str(&denial_body(&denial)).unwrap();
        assert_eq!(body["error"]["code"], "QUOTA_EXCEEDED");
        assert_eq!(body["error"]["type"], "insufficient_quota");
        assert_eq!(http_status(denial.kind()), 429);
    }

    #[test]
    fn challenges_only_for_401() {
        assert_eq!(challenge(&Denial::MissingCredential).unwrap(), r#"Bearer realm="gatehouse""#);
        assert!(challenge(&Denial::Expired).unwrap().contains(r#"error="invalid_token""#));
        assert!(challenge(&Denial::BackendUnavailable).is_none());
        assert!(challenge(&Denial::ConflictingCredentials).is_none());
    }

    #[test]
    fn every_kind_has_one_status_and_code() {
        use ErrorKind::*;
        for (kind, http, grpc) in [
            (InvalidRequest, 400, tonic::Code::InvalidArgument),
            (Unauthenticated, 401, tonic::Code::Unauthenticated),
            (Forbidden, 403, tonic::Code::PermissionDenied),
            (TooLarge, 413, tonic::Code::InvalidArgument),
            (RateLimited, 429, tonic::Code::ResourceExhausted),
            (QuotaExceeded, 429, tonic::Code::ResourceExhausted),
            (Unavailable, 503, tonic::Code::Unavailable),
        ] {
            assert_eq!(http_status(kind), http);
            assert_eq!(grpc_code(kind), grpc);
        }
    }
}
