//! Finding the credential in a request's headers.
//!
//! Accepted: `X-API-Key: <key>` and `Authorization: Bearer <key or JWT>`, with
//! header names matched case-insensitively. Two credentials that differ are
//! refused (400) rather than guessed between: an attacker must not be able to
//! choose which one a downstream component reads.

use crate::domain::Denial;

use super::api_key;

/// Longest credential accepted. JWTs with many claims reach a few KiB; nothing
/// legitimate comes near this.
pub const MAX_CREDENTIAL_LEN: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    ApiKey(&'a str),
    Bearer(&'a str),
}

impl<'a> Credential<'a> {
    fn token(self) -> &'a str {
        match self {
            Credential::ApiKey(t) | Credential::Bearer(t) => t,
        }
    }

    /// A bearer token in API key format is an API key.
    fn classify(self) -> Credential<'a> {
        match self {
            Credential::Bearer(t) if api_key::looks_like_key(t) => Credential::ApiKey(t),
            c => c,
        }
    }
}

/// Extracts at most one credential from `headers`. `Ok(None)`: none was sent.
pub fn extract<'a, I>(headers: I) -> Result<Option<Credential<'a>>, Denial>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut found: Option<Credential<'a>> = None;
    for (name, value) in headers {
        let credential = if name.eq_ignore_ascii_case("x-api-key") {
            Credential::ApiKey(check_token(value.trim(), "empty API key")?)
        } else if name.eq_ignore_ascii_case("authorization") {
            parse_authorization(value)?
        } else {
            continue;
        };
        let credential = credential.classify();
        match found {
            Some(previous) if previous.token() != credential.token() => {
                return Err(Denial::ConflictingCredentials);
            }
            Some(_) => {}
            None => found = Some(credential),
        }
    }
    Ok(found)
}

fn parse_authorization(value: &str) -> Result<Credential<'_>, Denial> {
    let value = value.trim();
    let (scheme, token) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denial::MalformedCredential("unsupported authorization scheme, use Bearer"));
    }
    Ok(Credential::Bearer(check_token(token.trim(), "empty bearer token")?))
}

/// Rejects what no credential can be. A comma means the proxy joined two
/// header lines into one value: two credentials, so ambiguous.
fn check_token<'a>(token: &'a str, empty: &'static str) -> Result<&'a str, Denial> {
    if token.is_empty() {
        return Err(Denial::MalformedCredential(empty));
    }
    if token.len() > MAX_CREDENTIAL_LEN {
        return Err(Denial::MalformedCredential("credential too long"));
    }
    if token.contains(',') {
        return Err(Denial::ConflictingCredentials);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Denial::MalformedCredential("credential contains invalid characters"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex<'a>(h: &'a [(&'a str, &'a str)]) -> Result<Option<Credential<'a>>, Denial> {
        extract(h.iter().copied())
    }

    #[test]
    fn finds_each_form() {
        assert_eq!(ex(&[("x-api-key", "gk_x")]), Ok(Some(Credential::ApiKey("gk_x"))));
        assert_eq!(ex(&[("X-Api-Key", " gk_x ")]), Ok(Some(Credential::ApiKey("gk_x"))));
        assert_eq!(ex(&[("authorization", "Bearer gk_x")]), Ok(Some(Credential::ApiKey("gk_x"))));
        assert_eq!(ex(&[("Authorization", "bearer eyJ.a.b")]), Ok(Some(Credential::Bearer("eyJ.a.b"))));
        assert_eq!(ex(&[("accept", "*/*")]), Ok(None));
    }

    #[test]
    fn same_credential_twice_is_fine_different_is_not() {
        assert_eq!(
            ex(&[("x-api-key", "gk_x"), ("authorization", "Bearer gk_x")]),
            Ok(Some(Credential::ApiKey("gk_x")))
        );
        assert_eq!(ex(&[("x-api-key", "gk_x"), ("authorization", "Bearer gk_y")]), Err(Denial::ConflictingCredentials));
        assert_eq!(ex(&[("x-api-key", "gk_x,gk_y")]), Err(Denial::ConflictingCredentials));
        assert_eq!(
            ex(&[("authorization", "Bearer a"), ("AUTHORIZATION", "Bearer b")]),
            Err(Denial::ConflictingCredentials)
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for (name, value) in [
            ("authorization", "Bearer"),
            ("authorization", "Bearer    "),
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("authorization", "Bearer a b"),
            ("authorization", "Bearer t\u{0}k"),
            ("authorization", "Bearer tök"),
            ("x-api-key", ""),
        ] {
            let headers = [(name, value)];
            let r = ex(&headers);
            assert!(matches!(r, Err(Denial::MalformedCredential(_))), "{value:?}: {r:?}");
        }
        let huge = "a".repeat(64 * 1024);
        assert_eq!(ex(&[("x-api-key", &huge)]), Err(Denial::MalformedCredential("credential too long")));
    }
}
