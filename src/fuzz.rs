//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), also replayed
//! over the checked-in corpus by the test suite. Each takes arbitrary bytes,
//! drives one piece of hostile-input handling, and panics if an invariant
//! breaks. Not part of the public API.

use crate::authn::credentials::{self, Credential};
use crate::authn::jwt::{Jwt, JwtKeys, JwtSettings};
use crate::authn::{api_key, oidc};
use crate::policy::path;
use crate::secret::Secret;

/// Headers from bytes: lines of `name: value`.
pub fn credentials(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let headers: Vec<(&str, &str)> =
        text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim(), v.trim_start())).collect();
    match credentials::extract(headers.iter().copied()) {
        Ok(Some(Credential::ApiKey(key))) => {
            assert!(!key.is_empty() && key.len() <= credentials::MAX_CREDENTIAL_LEN);
            // Parsing never panics; a parsed key has the documented shape.
            if let Ok(parsed) = api_key::parse(key) {
                assert!(api_key::is_valid_id(parsed.id));
            }
        }
        Ok(Some(Credential::Bearer(token))) => {
            assert!(!token.is_empty() && token.len() <= credentials::MAX_CREDENTIAL_LEN);
        }
        Ok(None) | Err(_) => {}
    }
}

/// A token from bytes: issuer peeking and verification must refuse
/// everything that is not a token this key signed, without panicking.
pub fn jwt(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let _ = oidc::peek_issuer(&token);
    let keys = JwtKeys::hmac(&Secret::new("fuzzing secret that is long enough 0123"));
    let jwt = Jwt::new(
        keys.unwrap_or_else(|e| unreachable!("{e}")),
        JwtSettings {
            algorithm: jsonwebtoken::Algorithm::HS256,
            issuer: "gatehouse".into(),
            audience: "gatehouse".into(),
            expiry_seconds: 3600,
            leeway_seconds: 30,
            refresh_grace_seconds: 0,
        },
    );
    assert!(jwt.verify(&token, 1_700_000_000).is_err(), "an arbitrary input verified");
}

/// A path from bytes: normalization is canonical and idempotent.
pub fn path(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    if let Ok(normalized) = path::normalize(&raw) {
        assert!(normalized.starts_with('/'));
        assert!(!normalized.contains("//") && !normalized.contains('\\') && !normalized.contains('\0'));
        assert!(normalized.split('/').all(|s| s != "." && s != ".."));
        assert_eq!(path::normalize(&normalized).as_deref(), Ok(normalized.as_str()), "not idempotent: {raw:?}");
    }
}
