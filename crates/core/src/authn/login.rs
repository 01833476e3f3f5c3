//! Logging in through an external provider, apart from HTTP: what a login
//! carries from its start to its callback, the URL it sends the browser to,
//! and what a callback must show before its code is exchanged. The HTTP
//! layer keeps the cookie that carries a [`Pending`] login, and the
//! redirects.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use super::api_key::random_base62;

/// The provider name a GitHub login carries.
pub const GITHUB: &str = "github";

/// A login between its start and its callback: signed into a cookie, never
/// put in a URL.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    pub provider: String,
    /// The issuer the login began with (GitHub: its OAuth URL).
    pub issuer: String,
    pub state: String,
    /// OpenID Connect only: the ID token must carry it.
    pub nonce: String,
    /// The PKCE verifier (RFC 7636); the URL carries only its S256 challenge.
    pub verifier: String,
    /// Started from the web console: the binding of its session hand-off.
    #[serde(default)]
    pub console: Option<String>,
}

/// Why a callback is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// The callback's `state` is not the login's: a forged or replayed answer.
    #[error("login state does not match: start the login again")]
    StateMismatch,
    /// The login began with another provider (or GitHub login is configured
    /// differently now).
    #[error("login state does not match: start the login again")]
    OtherProvider,
    /// The answer names another issuer, or none where the provider promises
    /// one (RFC 9207): a mix-up attempt.
    #[error("the answer is not from the provider this login began with")]
    OtherIssuer,
}

/// Why no authorization URL could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the provider's authorization endpoint is not a URL: {0}")]
pub struct EndpointError(String);

impl Pending {
    /// An OpenID Connect login with `provider`: fresh state, nonce and verifier.
    pub fn oidc(provider: &str, issuer: &str, console: Option<String>) -> Pending {
        Pending {
            provider: provider.to_owned(),
            issuer: issuer.to_owned(),
            state: random_base62(32),
            nonce: random_base62(32),
            verifier: random_base62(64),
            console,
        }
    }

    /// A GitHub login (OAuth, no ID token, so no nonce).
    pub fn github(oauth_url: &str, console: Option<String>) -> Pending {
        Pending {
            provider: GITHUB.to_owned(),
            issuer: oauth_url.to_owned(),
            state: random_base62(32),
            nonce: String::new(),
            verifier: random_base62(64),
            console,
        }
    }

    fn is_oidc(&self) -> bool {
        !self.nonce.is_empty()
    }

    /// The authorization request: `endpoint` (its own query kept) with the
    /// client, the callback, the scope, the state, PKCE S256 and, for
    /// OpenID Connect, `response_type=code` and the nonce.
    pub fn authorization_url(
        &self,
        endpoint: &str,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
    ) -> Result<Url, EndpointError> {
        let mut url = Url::parse(endpoint).map_err(|e| EndpointError(e.to_string()))?;
        {
            let mut query = url.query_pairs_mut();
            if self.is_oidc() {
                query.append_pair("response_type", "code");
            }
            query
                .append_pair("client_id", client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", scope)
                .append_pair("state", &self.state);
            if self.is_oidc() {
                query.append_pair("nonce", &self.nonce);
            }
            query.append_pair("code_challenge", &pkce_challenge(&self.verifier));
            query.append_pair("code_challenge_method", "S256");
        }
        Ok(url)
    }

    /// The callback's `state` must be this login's (compared in constant time).
    pub fn check_state(&self, presented: Option<&str>) -> Result<(), CallbackError> {
        let presented = presented.unwrap_or("");
        let matches: bool = subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), self.state.as_bytes()).into();
        if matches { Ok(()) } else { Err(CallbackError::StateMismatch) }
    }

    /// The callback is for this provider and issuer.
    pub fn check_provider(&self, provider: &str, issuer: &str) -> Result<(), CallbackError> {
        if self.provider == provider && self.issuer == issuer { Ok(()) } else { Err(CallbackError::OtherProvider) }
    }

    /// RFC 9207: an `iss` in the callback must be the login's issuer, and is
    /// required when the provider says it sends one.
    pub fn check_issuer(&self, iss: Option<&str>, provider_sends_iss: bool) -> Result<(), CallbackError> {
        let from_issuer = match iss {
            Some(iss) => iss.trim_end_matches('/') == self.issuer,
            None => !provider_sends_iss,
        };
        if from_issuer { Ok(()) } else { Err(CallbackError::OtherIssuer) }
    }
}

/// The PKCE S256 challenge of `verifier` (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc7636_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_authorization_url_keeps_the_endpoints_query_and_encodes_every_value() {
        let login = Pending::oidc("corp", "https://idp.example", None);
        let url = login
            .authorization_url(
                "https://idp.example/authorize?tenant=a%26b",
                "gate&house",
                "https://gw/cb?x=1",
                "openid email",
            )
            .unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("tenant"), Some("a&b"), "{url}");
        assert_eq!(get("client_id"), Some("gate&house"));
        assert_eq!(get("redirect_uri"), Some("https://gw/cb?x=1"));
        assert_eq!(get("scope"), Some("openid email"));
        assert_eq!(get("response_type"), Some("code"));
        assert_eq!(get("nonce"), Some(login.nonce.as_str()));
        assert_eq!(get("code_challenge"), Some(pkce_challenge(&login.verifier).as_str()));
        assert_eq!(get("code_challenge_method"), Some("S256"));
        assert!(!url.as_str().contains(&login.verifier), "the verifier never travels in the URL");
        let github = Pending::github("https://github.com", None);
        let url = github
            .authorization_url("https://github.com/login/oauth/authorize", "id", "https://gw/cb", "read:user")
            .unwrap();
        assert!(url.query_pairs().all(|(k, _)| k != "nonce" && k != "response_type"), "{url}");
        assert!(login.authorization_url("not a url", "id", "cb", "openid").is_err());
    }

    #[test]
    fn a_callback_must_match_the_login() {
        let login = Pending::oidc("corp", "https://idp.example", None);
        assert_eq!(login.check_state(Some(&login.state)), Ok(()));
        assert_eq!(login.check_state(Some("forged")), Err(CallbackError::StateMismatch));
        assert_eq!(login.check_state(None), Err(CallbackError::StateMismatch));
        assert_eq!(login.check_provider("corp", "https://idp.example"), Ok(()));
        assert_eq!(login.check_provider("other", "https://idp.example"), Err(CallbackError::OtherProvider));
        assert_eq!(login.check_issuer(Some("https://idp.example/"), true), Ok(()));
        assert_eq!(login.check_issuer(Some("https://evil.example"), false), Err(CallbackError::OtherIssuer));
        assert_eq!(login.check_issuer(None, true), Err(CallbackError::OtherIssuer), "promised but absent");
        assert_eq!(login.check_issuer(None, false), Ok(()));
    }
}
