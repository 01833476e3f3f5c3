//! Finding the credential in a request's headers.
//!
//! Accepted: `X-API-Key: <key>` and `Authorization: Bearer <key or JWT>`, with
//! header names matched case-insensitively. Two credentials that differ are
//! refused (400) rather than guessed between: an attacker must not be able to
//! choose which one a downstream component reads.
//!
//! A route may also accept a credential from a query parameter or a cookie
//! ([`ExtraSources`], each off by default), for clients that cannot set
//! headers (browsers, webhooks); the same rule applies across all places.

use std::sync::Arc;

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

/// Places besides the headers where a route accepts a credential.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtraSources {
    /// A query parameter's name (removed before the request goes upstream).
    pub query: Option<Arc<str>>,
    /// A cookie's name.
    pub cookie: Option<Arc<str>>,
}

/// Where the credential was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Query,
    Cookie,
}

/// Extracts at most one credential from the headers and the places `extra`
/// names (`path` is the request path with its query string). A value in the
/// query or a cookie is an API key when it looks like one, else a bearer
/// token; sent unencoded (keys and JWTs need no escaping). Differing
/// credentials, wherever they are, are refused.
pub fn extract_with<'a, I>(
    headers: I,
    path: &'a str,
    extra: &ExtraSources,
) -> Result<Option<(Credential<'a>, Source)>, Denial>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut cookie_headers: Vec<&'a str> = Vec::new();
    let wants_cookie = extra.cookie.is_some();
    let headers = headers.into_iter().inspect(|(name, value)| {
        if wants_cookie && name.eq_ignore_ascii_case("cookie") {
            cookie_headers.push(value);
        }
    });
    let mut found = extract(headers)?.map(|c| (c, Source::Header));
    if let Some(name) = &extra.query {
        for value in query_values(path, name) {
            merge(&mut found, value, Source::Query)?;
        }
    }
    if let Some(name) = &extra.cookie {
        for value in cookie_values(&cookie_headers, name) {
            merge(&mut found, value, Source::Cookie)?;
        }
    }
    Ok(found)
}

fn merge<'a>(found: &mut Option<(Credential<'a>, Source)>, value: &'a str, source: Source) -> Result<(), Denial> {
    let credential = Credential::Bearer(check_token(value, "empty credential")?).classify();
    match found {
        Some((previous, _)) if previous.token() != credential.token() => Err(Denial::ConflictingCredentials),
        Some(_) => Ok(()),
        None => {
            *found = Some((credential, source));
            Ok(())
        }
    }
}

/// The values of the query parameter `name` in `path`.
pub fn query_values<'a, 'n>(path: &'a str, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or("");
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// The values of the cookie `name` in `Cookie` header values.
pub fn cookie_values<'a>(headers: &[&'a str], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
        .collect()
}

/// The `Cookie` header value without the cookie `name`; `None` if nothing is left.
pub fn without_cookie(headers: &[&str], name: &str) -> Option<String> {
    let rest: Vec<&str> = headers
        .iter()
        .flat_map(|h| h.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').map_or(c.trim(), |(k, _)| k.trim()) != name)
        .collect();
    (!rest.is_empty()).then(|| rest.join("; "))
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

    fn extra(query: Option<&str>, cookie: Option<&str>) -> ExtraSources {
        ExtraSources { query: query.map(Arc::from), cookie: cookie.map(Arc::from) }
    }

    #[test]
    fn query_and_cookie_only_where_enabled() {
        let none = ExtraSources::default();
        let both = extra(Some("api_key"), Some("gh_key"));
        let path = "/v1/models?x=1&api_key=gk_q#frag";
        assert_eq!(extract_with([], path, &none), Ok(None), "off by default");
        assert_eq!(extract_with([], path, &both), Ok(Some((Credential::ApiKey("gk_q"), Source::Query))));
        let cookie = [("cookie", "a=b; gh_key=\"eyJ.c.d\"; c=d")];
        assert_eq!(extract_with(cookie, "/v1/models", &none), Ok(None));
        assert_eq!(
            extract_with(cookie, "/v1/models", &both),
            Ok(Some((Credential::Bearer("eyJ.c.d"), Source::Cookie)))
        );
        // The same credential in two places is one credential; two different ones are refused.
        assert_eq!(
            extract_with([("x-api-key", "gk_q")], path, &both),
            Ok(Some((Credential::ApiKey("gk_q"), Source::Header)))
        );
        assert_eq!(extract_with([("x-api-key", "gk_h")], path, &both), Err(Denial::ConflictingCredentials));
        assert_eq!(extract_with([], "/v1/models?api_key=a&api_key=b", &both), Err(Denial::ConflictingCredentials));
        assert_eq!(extract_with([("cookie", "gh_key=gk_c")], path, &both), Err(Denial::ConflictingCredentials));
        assert!(matches!(extract_with([], "/v1/models?api_key=", &both), Err(Denial::MalformedCredential(_))));
        // A parameter whose name merely contains the configured one is not it.
        assert_eq!(extract_with([], "/v1/models?my_api_key=gk_x", &both), Ok(None));
    }

    #[test]
    fn one_cookie_removed_the_rest_kept() {
        assert_eq!(without_cookie(&["a=b; gh_key=x", "c=d"], "gh_key").as_deref(), Some("a=b; c=d"));
        assert_eq!(without_cookie(&["gh_key=x"], "gh_key"), None);
    }
}
