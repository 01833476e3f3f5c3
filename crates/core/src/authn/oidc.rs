//! Tokens from external OpenID Connect providers (Keycloak, Auth0, Okta,
//! Azure AD, Google, ...).
//!
//! Per issuer: the discovery document gives the JWKS URL; keys are loaded in
//! the background (retrying with backoff while the provider is down) and
//! refreshed periodically, so a Check with a known `kid` never waits on the
//! provider. An unknown `kid` triggers one refetch, at most once per
//! `min_refetch_interval`, so a flood of made-up kids cannot hammer the
//! provider.
//!
//! Discovery and JWKS use plain HTTP + `jsonwebtoken` rather than the
//! `openidconnect` crate: the Check path needs its own key cache with the
//! refetch limit above, and the same cache then serves the login flow.
//!
//! What a provider sends is bounded: every answer is read as a stream and
//! dropped as soon as it passes its cap ([`MAX_DOCUMENT_BYTES`],
//! [`MAX_JWKS_BYTES`]), and at most [`MAX_JWKS_KEYS`] keys are taken from a
//! JWKS. Plain `http://` is refused for issuers and for the endpoints a
//! discovery document names unless `OIDC_ALLOW_INSECURE_HTTP` is set.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::domain::{Denial, Role};
use crate::secret::Secret;

/// Largest discovery document, token endpoint answer or GitHub API answer
/// read. Real ones are a few KiB; the cap bounds what a hostile provider, or
/// anyone on the path to it, can make Gatehouse hold per request.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Largest JWKS read. Providers publish a handful of keys (a 4096-bit RSA
/// JWK with its certificate chain is under 8 KiB).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Keys taken from a JWKS, in document order; the rest are ignored unparsed.
pub const MAX_JWKS_KEYS: usize = 100;

/// One configured provider.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    /// A short name for login URLs and logs (default: "default").
    pub name: String,
    pub issuer_url: String,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// Accepted `aud` values. Empty: the client id, in `aud` or `azp`.
    pub audiences: Vec<String>,
    /// Dotted path to the role claim (a string or a list of strings).
    pub role_claim: Option<String>,
    /// Dotted path to the group claim (a string or a list of strings).
    pub group_claim: Option<String>,
    /// Claim values and the role each maps to, e.g. `gateway-admin = "admin"`.
    /// The names `viewer`, `operator` and `admin` always map to themselves.
    pub role_map: HashMap<String, Role>,
    /// A new user's role when the token has a role claim but no value maps.
    pub default_role: Role,
    /// Whether an identity seen for the first time gets an account (one
    /// whose verified email matches a verified account is linked either way).
    pub provision_users: bool,
    pub leeway_seconds: u64,
    pub refresh_interval: Duration,
    pub min_refetch_interval: Duration,
}

impl IssuerConfig {
    pub fn new(issuer_url: &str) -> Self {
        IssuerConfig {
            name: "default".into(),
            issuer_url: issuer_url.trim_end_matches('/').to_owned(),
            client_id: None,
            client_secret: None,
            audiences: Vec::new(),
            role_claim: Some("realm_access.roles".into()),
            group_claim: Some("groups".into()),
            role_map: HashMap::new(),
            default_role: Role::Viewer,
            provision_users: true,
            leeway_seconds: 30,
            refresh_interval: Duration::from_secs(600),
            min_refetch_interval: Duration::from_secs(10),
        }
    }
}

/// The parts of the discovery document Gatehouse uses.
#[derive(Clone, Debug, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    /// RFC 9207: the provider puts `iss` in its authorization responses, so
    /// the login callback requires it.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

impl Discovery {
    /// The endpoints Gatehouse calls or sends browsers to are https (or
    /// plain http when allowed for development).
    fn check_endpoints(&self, allow_insecure_http: bool) -> Result<(), OidcError> {
        let endpoints = [
            ("jwks_uri", Some(&self.jwks_uri)),
            ("authorization_endpoint", self.authorization_endpoint.as_ref()),
            ("token_endpoint", self.token_endpoint.as_ref()),
        ];
        for (field, url) in endpoints {
            if let Some(url) = url {
                check_url(url, allow_insecure_http)
                    .map_err(|e| OidcError::Insecure(format!("discovery document: {field}: {e}")))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("{0}")]
    Http(String),
    #[error("discovery document names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the provider's answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Insecure(String),
}

/// Reads a provider's documents over HTTP(S): the `gatehouse` crate's
/// client, with short timeouts and no redirects.
#[async_trait::async_trait]
pub trait Fetch: Send + Sync + 'static {
    /// The body of a successful GET of `url`, refused as soon as it passes
    /// `limit` bytes, so no more than that is ever held.
    async fn get(&self, url: &str, limit: usize) -> Result<Vec<u8>, OidcError>;
}

#[derive(Default)]
struct Keys {
    discovery: Option<Discovery>,
    by_kid: HashMap<String, Arc<KeyEntry>>,
    /// Keys without a `kid` (tried in order when a token names none).
    anonymous: Vec<Arc<KeyEntry>>,
}

/// What a verified provider token says about its subject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalIdentity {
    pub provider: String,
    pub subject: String,
    /// `None` unless the provider vouches for the email (`email_verified`
    /// is the JSON boolean `true`).
    pub verified_email: Option<String>,
    pub name: Option<String>,
    /// What the role claim maps to; `None` when the token has no role claim
    /// or none of its values maps to a role: keep the stored role.
    pub role: Option<Role>,
    /// A new user's role when `role` is `None` (`None`: the default role of
    /// self-registration).
    pub default_role: Option<Role>,
    /// Candidate groups from the group claim, in claim order.
    pub groups: Vec<String>,
    /// The claims `role` and `groups` came from, for the audit log.
    pub role_claim: Option<String>,
    pub group_claim: Option<String>,
    /// Whether the provider may create an account for an identity seen for
    /// the first time.
    pub provision: bool,
    pub expires_at: i64,
}

pub struct Issuer {
    config: IssuerConfig,
    http: Arc<dyn Fetch>,
    keys: RwLock<Keys>,
    /// Held during a fetch (one at a time); holds when the last one began.
    fetching: Mutex<Option<Instant>>,
    ready: AtomicBool,
    /// `OIDC_ALLOW_INSECURE_HTTP`: plain-http endpoints are accepted.
    allow_insecure_http: bool,
}

impl Issuer {
    pub fn new(config: IssuerConfig, http: Arc<dyn Fetch>) -> Self {
        Issuer {
            config,
            http,
            keys: RwLock::new(Keys::default()),
            fetching: Mutex::new(None),
            ready: false.into(),
            allow_insecure_http: false,
        }
    }

    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// Whether keys have been loaded at least once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub async fn discovery(&self) -> Option<Discovery> {
        self.keys.read().await.discovery.clone()
    }

    /// Loads the discovery document (first time) and the JWKS.
    pub async fn refresh(&self) -> Result<usize, OidcError> {
        let mut fetching = self.fetching.lock().await;
        self.fetch(&mut fetching).await
    }

    async fn fetch(&self, started: &mut Option<Instant>) -> Result<usize, OidcError> {
        *started = Some(Instant::now());
        let fetched = self.fetch_keys().await;
        let result = if fetched.is_ok() { "ok" } else { "error" };
        metrics::counter!("gatehouse_jwks_refreshes_total", "issuer" => self.config.issuer_url.clone(), "result" => result)
            .increment(1);
        fetched
    }

    async fn fetch_keys(&self) -> Result<usize, OidcError> {
        let discovery = match self.discovery().await {
            Some(d) => d,
            None => self.fetch_discovery().await?,
        };
        let body = self.http.get(&discovery.jwks_uri, MAX_JWKS_BYTES).await?;
        let set: CappedJwks =
            serde_json::from_slice(&body).map_err(|e| OidcError::Invalid(format!("JWKS is not valid JSON: {e}")))?;
        drop(body);
        if set.keys.ignored > 0 {
            tracing::warn!(
                issuer = %self.config.issuer_url,
                ignored = set.keys.ignored,
                "the provider's JWKS has more than {MAX_JWKS_KEYS} keys; the rest are ignored"
            );
        }
        let mut by_kid = HashMap::new();
        let mut anonymous = Vec::new();
        for jwk in &set.keys.taken {
            let Some(entry) = key_entry(jwk) else { continue };
            match &jwk.common.key_id {
                Some(kid) => {
                    by_kid.insert(kid.clone(), Arc::new(entry));
                }
                None => anonymous.push(Arc::new(entry)),
            }
        }
        let count = by_kid.len() + anonymous.len();
        *self.keys.write().await = Keys { discovery: Some(discovery), by_kid, anonymous };
        self.ready.store(true, Ordering::Release);
        tracing::info!(issuer = %self.config.issuer_url, keys = count, "loaded provider signing keys");
        Ok(count)
    }

    async fn fetch_discovery(&self) -> Result<Discovery, OidcError> {
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer_url);
        let d: Discovery = get_json(&*self.http, &url, MAX_DOCUMENT_BYTES).await?;
        if d.issuer.trim_end_matches('/') != self.config.issuer_url {
            return Err(OidcError::IssuerMismatch { expected: self.config.issuer_url.clone(), found: d.issuer });
        }
        d.check_endpoints(self.allow_insecure_http)?;
        Ok(d)
    }

    /// Loads keys until it works (with backoff), then refreshes them every
    /// `refresh_interval`, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(500);
        loop {
            let wait = match self.refresh().await {
                Ok(_) => {
                    backoff = Duration::from_millis(500);
                    self.config.refresh_interval
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.config.issuer_url, error = %e, "cannot load provider keys; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    backoff
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => return,
            }
        }
    }

    /// The key for a token header: from memory, or after one rate-limited
    /// refetch. A fetch already under way (such as the first load) is waited
    /// for, not refused.
    async fn key_for(&self, header: &Header) -> Result<Arc<KeyEntry>, Denial> {
        if let Some(entry) = self.lookup(header).await {
            return Ok(entry);
        }
        let missing = || if self.is_ready() { Denial::InvalidCredential } else { Denial::BackendUnavailable };
        let Ok(mut fetching) = tokio::time::timeout(Duration::from_secs(3), self.fetching.lock()).await else {
            return Err(missing());
        };
        if let Some(entry) = self.lookup(header).await {
            return Ok(entry);
        }
        if fetching.is_some_and(|t| t.elapsed() < self.config.min_refetch_interval) {
            return Err(missing());
        }
        match tokio::time::timeout(Duration::from_secs(3), self.fetch(&mut fetching)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(issuer = %self.config.issuer_url, error = %e, "key refetch failed"),
            Err(_) => tracing::warn!(issuer = %self.config.issuer_url, "key refetch timed out"),
        }
        drop(fetching);
        self.lookup(header).await.ok_or_else(missing)
    }

    async fn lookup(&self, header: &Header) -> Option<Arc<KeyEntry>> {
        let keys = self.keys.read().await;
        match &header.kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None => keys
                .anonymous
                .first()
                .or_else(|| (keys.by_kid.len() == 1).then(|| keys.by_kid.values().next())?)
                .cloned(),
        }
    }

    /// Verifies a token from this issuer: signature with a key from its JWKS
    /// (asymmetric algorithms only), `iss`, audience, `exp`, `nbf`.
    pub async fn verify(&self, token: &str, id_token_nonce: Option<&str>) -> Result<(Value, ExternalIdentity), Denial> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Denial::InvalidCredential)?;
        let entry = self.key_for(&header).await?;
        if !algorithm_fits(header.alg, &entry) {
            return Err(Denial::InvalidCredential);
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.config.issuer_url]);
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // `nbf` is optional, and checked (with the leeway) when present.
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway_seconds;
        let data = jsonwebtoken::decode::<Value>(token, &entry.key, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => Denial::Expired,
            _ => Denial::InvalidCredential,
        })?;
        let claims = data.claims;
        let audience_ok = match id_token_nonce {
            None => self.audience_ok(&claims),
            Some(nonce) => self.id_token_ok(&claims, nonce),
        };
        if !audience_ok {
            return Err(Denial::InvalidCredential);
        }
        let identity = self.identity(&claims)?;
        Ok((claims, identity))
    }

    /// `aud` holds a configured audience; with none configured, the client id
    /// is accepted in `aud` or, as Keycloak puts it, in `azp`.
    fn audience_ok(&self, claims: &Value) -> bool {
        let auds = strings(claims.get("aud"));
        if !self.config.audiences.is_empty() {
            return auds.iter().any(|a| self.config.audiences.iter().any(|e| e == a));
        }
        match &self.config.client_id {
            Some(id) => auds.iter().any(|a| a == id) || claims.get("azp").and_then(Value::as_str) == Some(id),
            None => false,
        }
    }

    /// An ID token is for this client (`aud`, and `azp` when several
    /// audiences) and carries the nonce of this login.
    fn id_token_ok(&self, claims: &Value, nonce: &str) -> bool {
        let Some(client_id) = &self.config.client_id else { return false };
        let auds = strings(claims.get("aud"));
        let azp = claims.get("azp").and_then(Value::as_str);
        auds.iter().any(|a| a == client_id)
            && (auds.len() == 1 || azp == Some(client_id))
            && azp.is_none_or(|a| a == client_id)
            && claims.get("nonce").and_then(Value::as_str) == Some(nonce)
    }

    fn identity(&self, claims: &Value) -> Result<ExternalIdentity, Denial> {
        let subject =
            claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(Denial::InvalidCredential)?;
        // Only the JSON boolean `true` vouches for the address: a missing
        // claim, `false` or the string "false" leave the email unverified.
        let verified = claims.get("email_verified") == Some(&Value::Bool(true));
        let email = claims.get("email").and_then(Value::as_str).filter(|_| verified).map(str::to_lowercase);
        let role_values = self.config.role_claim.as_deref().map(|p| strings(claim_at(claims, p))).unwrap_or_default();
        let groups = self.config.group_claim.as_deref().map(|p| strings(claim_at(claims, p))).unwrap_or_default();
        Ok(ExternalIdentity {
            provider: self.config.issuer_url.clone(),
            subject: subject.to_owned(),
            verified_email: email,
            name: claims.get("name").and_then(Value::as_str).map(str::to_owned),
            role: self.map_roles(&role_values),
            default_role: (!role_values.is_empty()).then_some(self.config.default_role),
            groups: groups.into_iter().map(|g| g.trim_start_matches('/').to_owned()).collect(),
            role_claim: self.config.role_claim.clone(),
            group_claim: self.config.group_claim.clone(),
            provision: self.config.provision_users,
            expires_at: claims.get("exp").and_then(Value::as_i64).unwrap_or(0),
        })
    }

    /// The highest role any claim value maps to; `None` when none maps
    /// (Keycloak's `offline_access`, say), so the stored role stays.
    fn map_roles(&self, values: &[String]) -> Option<Role> {
        values.iter().filter_map(|v| self.config.role_map.get(v).copied().or_else(|| v.parse().ok())).max()
    }
}

/// GETs a JSON document of at most `limit` bytes.
async fn get_json<T: serde::de::DeserializeOwned>(http: &dyn Fetch, url: &str, limit: usize) -> Result<T, OidcError> {
    let body = http.get(url, limit).await?;
    serde_json::from_slice(&body).map_err(|e| OidcError::Invalid(format!("not a valid JSON document: {e}")))
}

/// A provider URL Gatehouse may talk to: `https://`, or `http://` only when
/// `allow_insecure_http` (OIDC_ALLOW_INSECURE_HTTP, for development).
pub fn check_url(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must carry no user name or password".into());
    }
    if parsed.fragment().is_some() {
        return Err(format!("{url:?} must carry no fragment"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http => Ok(()),
        "http" => Err(format!(
            "{url:?} is plain http, which anyone on the path can read and rewrite: use https \
             (or set OIDC_ALLOW_INSECURE_HTTP=true, for development only)"
        )),
        other => Err(format!("{url:?}: the scheme {other:?} is not supported (use https)")),
    }
}

/// The configured providers, found by the `iss` of a token.
#[derive(Default)]
pub struct Providers {
    issuers: Vec<Arc<Issuer>>,
}

impl Providers {
    /// Refuses a plain-http issuer unless `allow_insecure_http`.
    pub fn new(configs: Vec<IssuerConfig>, allow_insecure_http: bool, http: Arc<dyn Fetch>) -> Result<Self, OidcError> {
        let mut issuers = Vec::with_capacity(configs.len());
        for config in configs {
            check_url(&config.issuer_url, allow_insecure_http)
                .map_err(|e| OidcError::Insecure(format!("OIDC issuer: {e}")))?;
            let mut issuer = Issuer::new(config, http.clone());
            issuer.allow_insecure_http = allow_insecure_http;
            issuers.push(Arc::new(issuer));
        }
        Ok(Providers { issuers })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    pub fn by_issuer(&self, iss: &str) -> Option<&Arc<Issuer>> {
        let iss = iss.trim_end_matches('/');
        self.issuers.iter().find(|i| i.config.issuer_url == iss)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Issuer>> {
        self.issuers.iter().find(|i| i.config.name == name)
    }

    pub fn all(&self) -> &[Arc<Issuer>] {
        &self.issuers
    }

    /// Issuers whose keys have not loaded yet.
    pub fn not_ready(&self) -> Vec<&str> {
        self.issuers.iter().filter(|i| !i.is_ready()).map(|i| i.config.issuer_url.as_str()).collect()
    }
}

mod claims;
mod jwks;
pub use claims::peek_issuer;
use claims::{claim_at, strings};
use jwks::*;

#[cfg(test)]
mod tests;
