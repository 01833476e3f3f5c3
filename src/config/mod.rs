//! One validated configuration, built from (later wins): defaults, an optional
//! TOML file (`--config` / `GATEHOUSE_CONFIG`), environment variables, and
//! command-line flags. Every invalid value fails start-up with a message that
//! names the variable or key.

mod budgets;
mod file;
mod overlay;
mod summary;
mod validate;
pub use summary::Summary;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

pub use crate::accounts::AccountSettings;
use crate::authn::oidc::IssuerConfig;
use crate::authn::password::HashingLimits;
use crate::authn::throttle::ThrottleSettings;
use crate::domain::{PermissionSet, Role, RolePermissions};
use crate::policy::spec::{PolicyDocument, PolicySettings};
use crate::policy::{PathPattern, Policy, PolicySpec, RouteSpec};
use crate::ratelimit::{Limit, parse_limit};
use crate::secret::Secret;
use crate::store::cache::CacheSettings;

#[derive(Clone, Debug)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    /// Where the gRPC admin API listens. `None`: on `grpc_addr`, beside Check.
    /// Set it to keep the Check port for Envoy alone (a firewall or network
    /// policy can then let only Envoy reach Check, and only operators reach
    /// the admin API).
    pub admin_grpc_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    pub database_url: DatabaseUrl,
    pub auto_migrate: bool,
    pub database_timeout: Duration,
    /// A read-only Postgres replica for the lookups behind the caches.
    pub database_read_url: Option<Secret>,
    /// Connections per Postgres pool.
    pub database_max_connections: u32,
    /// Postgres `statement_timeout`.
    pub database_statement_timeout: Duration,
    pub require_auth: bool,
    pub public_paths: Vec<PathPattern>,
    /// Remove `authorization` / `x-api-key` before the request goes upstream.
    pub strip_credentials: bool,
    pub cache: CacheSettings,
    pub usage_flush_interval: Duration,
    /// Token and spend budgets: prices, ceilings, settlement.
    pub budgets: crate::budget::Settings,
    /// How often metered LLM usage (tokens, spend) is added to the
    /// `usage_daily` table.
    pub metering_flush_interval: Duration,
    /// Time between reporting NOT_SERVING and closing the listeners on shutdown.
    pub shutdown_delay: Duration,
    pub log_json: bool,
    /// Full email addresses in logs (default: redacted).
    pub log_emails: bool,
    /// A separate listener serving only `/metrics`, without authentication
    /// (for a scraper on a private network). Unset: `/metrics` is on the
    /// main HTTP listener, for callers holding `read_metrics`.
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the web console at `/` on the HTTP listener.
    pub console: bool,
    /// TLS on the gRPC and HTTP listeners; `None`: plain TCP.
    pub tls: Option<crate::tls::TlsFiles>,
    pub jwt: JwtConfig,
    pub roles: RolePermissions,
    pub accounts: AccountSettings,
    pub login_throttle: ThrottleSettings,
    /// Created as an admin at start-up when no user has this email.
    pub bootstrap_admin: Option<(String, Secret)>,
    /// Reverse proxies in front of the HTTP API whose `X-Forwarded-For` entry
    /// is trusted (0: use the connection's peer address).
    pub trusted_proxy_hops: usize,
    /// Largest request body the REST API reads.
    pub max_body_bytes: usize,
    /// How long an HTTP client may take to send a request's headers (and how
    /// long an idle keep-alive connection stays open).
    pub http_header_timeout: Duration,
    /// How long an HTTP request may take from its headers to the answer,
    /// reading the body included (408 past it).
    pub http_request_timeout: Duration,
    /// How often revocations made by other replicas are loaded.
    pub revocation_poll_interval: Duration,
    /// How often the change feed is read: the bound on how long any replica
    /// keeps honouring a revoked key, disabled user or changed role.
    pub change_poll_interval: Duration,
    /// External OpenID Connect providers whose tokens Check accepts.
    pub oidc: Vec<IssuerConfig>,
    /// GitHub OAuth login, when configured.
    pub github: Option<GithubConfig>,
    /// `OIDC_ALLOW_INSECURE_HTTP`: accept plain-http provider URLs (OIDC
    /// issuers, the endpoints their discovery documents name, GitHub's URLs).
    /// For development only; loopback gets no exception.
    pub oidc_allow_insecure_http: bool,
    /// The URL browsers reach Gatehouse's HTTP API at; login callbacks are
    /// built from it.
    pub public_url: String,
    /// Shared rate limits (and, later, revocations) live here when set.
    pub redis_url: Option<Secret>,
    /// How long a rate-limit decision waits for its batch to go to Redis,
    /// and then for Redis's answer, before it is decided in process.
    pub redis_timeout: Duration,
    /// For users whose group has no limit; `None`: unlimited.
    pub default_limit: Option<Limit>,
    /// Per client address, for anonymous requests (public routes).
    pub anonymous_limit: Option<Limit>,
    /// Per client address, for `POST /auth/register` (shared through Redis).
    pub register_limit: Option<Limit>,
    /// Per client address, for `POST /auth/login`, every attempt (shared
    /// through Redis); the failure lockout is `login_throttle`.
    pub login_limit: Option<Limit>,
    /// Per user, for `POST /auth/refresh` (shared through Redis): each
    /// refresh stores a revocation, so an unbounded loop would grow memory
    /// and the database.
    pub refresh_limit: Option<Limit>,
    /// The route table as configured (see [`Config::compile_policy`]).
    pub policy: PolicySpec,
    /// The config file this was loaded from.
    pub config_file: Option<PathBuf>,
    /// A separate file holding the route table.
    pub policy_file: Option<PathBuf>,
    /// Whether the config file itself has `[[routes]]`.
    pub routes_in_config: bool,
    /// How often the policy source is checked for changes (0: only on SIGHUP).
    pub policy_reload_interval: Duration,
}

#[derive(Clone, Debug)]
pub struct GithubConfig {
    pub client_id: String,
    pub client_secret: Secret,
    /// Where `/login/oauth/authorize` and `/login/oauth/access_token` live.
    pub oauth_url: String,
    /// The REST API (`/user`, `/user/emails`, memberships).
    pub api_url: String,
    /// Organisations (`org`) and teams (`org/team`) whose active members get
    /// an account at their first login, and without which no GitHub login is
    /// accepted; empty: GitHub creates no accounts (it only signs in users
    /// whose verified email is an account's verified address).
    pub allowed_orgs: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub algorithm: Algorithm,
    /// HS256 secret; when unset (and no key file), a random per-process key.
    pub secret: Option<Secret>,
    pub private_key_file: Option<std::path::PathBuf>,
    pub issuer: String,
    pub audience: String,
    pub expiry_seconds: i64,
    pub leeway_seconds: i64,
    pub refresh_grace_seconds: i64,
    /// How long a session lasts from its login, however often refreshed.
    pub session_max_seconds: i64,
}

/// Between NOT_SERVING and closing the listeners: longer than the shipped
/// Envoy config takes to see a replica's health change (two failed checks a
/// second apart) and to stop sending it Checks.
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);

pub const DEFAULT_PUBLIC_PATHS: &[&str] = &["/healthz", "/auth/login", "/auth/register"];

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 9191)),
            admin_grpc_addr: None,
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            database_url: DatabaseUrl("sqlite://gatehouse.db".to_owned()),
            auto_migrate: true,
            database_timeout: Duration::from_secs(2),
            database_read_url: None,
            database_max_connections: crate::store::DEFAULT_MAX_CONNECTIONS,
            database_statement_timeout: crate::store::DEFAULT_STATEMENT_TIMEOUT,
            require_auth: true,
            public_paths: DEFAULT_PUBLIC_PATHS.iter().filter_map(|p| PathPattern::parse(p).ok()).collect(),
            strip_credentials: true,
            cache: CacheSettings {
                capacity: 100_000,
                ttl: Duration::from_secs(30),
                negative_ttl: Duration::from_secs(5),
                stale_limit: Duration::from_secs(300),
                lookup_timeout: Duration::from_millis(300),
            },
            usage_flush_interval: Duration::from_secs(10),
            budgets: crate::budget::Settings::default(),
            metering_flush_interval: Duration::from_millis(5000),
            shutdown_delay: DEFAULT_SHUTDOWN_DELAY,
            http_header_timeout: Duration::from_secs(10),
            http_request_timeout: Duration::from_secs(30),
            log_json: false,
            log_emails: false,
            metrics_addr: None,
            console: true,
            tls: None,
            jwt: JwtConfig {
                algorithm: Algorithm::HS256,
                secret: None,
                private_key_file: None,
                issuer: "gatehouse".to_owned(),
                audience: "gatehouse".to_owned(),
                expiry_seconds: 3600,
                leeway_seconds: 30,
                refresh_grace_seconds: 7 * 86_400,
                session_max_seconds: crate::authn::jwt::DEFAULT_SESSION_MAX_SECONDS,
            },
            roles: RolePermissions::default(),
            accounts: AccountSettings {
                allow_registration: true,
                allowed_email_domains: Vec::new(),
                default_role: Role::Viewer,
                password_min_length: 8,
                password_hashing: HashingLimits::default(),
            },
            login_throttle: ThrottleSettings { max_per_account: 5, max_per_ip: 50, window: Duration::from_secs(900) },
            bootstrap_admin: None,
            trusted_proxy_hops: 0,
            max_body_bytes: 64 * 1024,
            revocation_poll_interval: Duration::from_secs(2),
            change_poll_interval: Duration::from_millis(250),
            oidc: Vec::new(),
            github: None,
            oidc_allow_insecure_http: false,
            public_url: "http://localhost:8080".to_owned(),
            redis_url: None,
            redis_timeout: Duration::from_millis(100),
            default_limit: None,
            anonymous_limit: Some(Limit { requests: 120, period: Duration::from_secs(60), burst: 120 }),
            register_limit: Some(Limit { requests: 10, period: Duration::from_secs(600), burst: 10 }),
            login_limit: Some(Limit { requests: 30, period: Duration::from_secs(60), burst: 30 }),
            refresh_limit: Some(Limit { requests: 30, period: Duration::from_secs(60), burst: 30 }),
            policy: PolicySpec::default(),
            config_file: None,
            policy_file: None,
            routes_in_config: false,
            policy_reload_interval: Duration::from_secs(2),
        }
    }
}

/// The database's URL: its password is not shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// `postgres://user:secret@host/db?password=x` -> `postgres://user:***@host/db?password=***`:
/// the password in the user information and in any query parameter that
/// can carry one. A value that is not a URL shows only its scheme.
pub fn redact_url(url: &str) -> String {
    const SECRET_PARAMS: &[&str] = &["password", "pass", "passwd", "sslpassword", "secret", "token"];
    let Ok(mut parsed) = url::Url::parse(url) else {
        return match url.split_once(':') {
            Some((scheme, _)) if scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+') => {
                format!("{scheme}:[redacted]")
            }
            _ => "[redacted]".to_owned(),
        };
    };
    if parsed.cannot_be_a_base() && (url.contains('@') || url.contains('=')) {
        return format!("{}:[redacted]", parsed.scheme());
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str());
                (k.into_owned(), if secret { "***".to_owned() } else { v.into_owned() })
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// A TOML error as "line N: what is wrong", without the line itself: the
/// line may hold a secret (a password with a stray backslash, say).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: invalid value {value:?}: {reason}")]
    Invalid { name: String, value: String, reason: String },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
}

fn invalid(name: &str, value: &str, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid { name: name.to_owned(), value: value.to_owned(), reason: reason.to_string() }
}

/// `true/false`, `1/0`, `yes/no`, `on/off`.
#[derive(Debug, Clone, Copy)]
struct Flag(bool);

impl FromStr for Flag {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Flag(true)),
            "false" | "0" | "no" | "off" => Ok(Flag(false)),
            _ => Err("expected true or false"),
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn parse_patterns(name: &str, items: &[String]) -> Result<Vec<PathPattern>, ConfigError> {
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| PathPattern::parse(s).map_err(|e| invalid(name, s, e)))
        .collect()
}

fn parse_algorithm(name: &str, value: &str) -> Result<Algorithm, ConfigError> {
    match value.trim().to_ascii_uppercase().as_str() {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "PS256" => Ok(Algorithm::PS256),
        "ES256" => Ok(Algorithm::ES256),
        "EDDSA" => Ok(Algorithm::EdDSA),
        _ => Err(invalid(name, value, "expected HS256, RS256, PS256, ES256 or EdDSA")),
    }
}

/// `github.allowed_orgs`: `org` or `org/team`, lower-cased; names of
/// letters, digits, `-` (and `_` in team slugs) only, as they go into API
/// paths.
fn github_orgs(name: &str, list: &[String]) -> Result<Vec<String>, ConfigError> {
    let name_ok = |s: &str, extra: &[u8]| {
        (1..=100).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || extra.contains(&b))
    };
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|rule| {
            let ok = match rule.split_once('/') {
                Some((org, team)) => name_ok(org, b"") && name_ok(team, b"_"),
                None => name_ok(rule, b""),
            };
            if ok {
                Ok(rule.to_ascii_lowercase())
            } else {
                Err(invalid(name, rule, "expected ORG or ORG/TEAM (letters, digits, '-')"))
            }
        })
        .collect()
}

fn normalize_domains<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    items.map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase()).filter(|d| !d.is_empty()).collect()
}

fn log_json(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "json" => Ok(true),
        "text" | "pretty" => Ok(false),
        _ => Err(invalid(name, value, "expected text or json")),
    }
}

impl Config {
    /// Loads from an optional TOML file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with(file, &|name| std::env::var(name).ok())
    }

    /// Loads with an explicit environment, for tests.
    pub fn load_with(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let config = Config::layered(file, env)?;
        config.validate()?;
        Ok(config)
    }

    /// The route table alone, layered as at start-up (the file, the
    /// environment, the policy file). Nothing else is validated or read:
    /// a policy reload is not refused because a TLS certificate or a key
    /// file is being replaced at that moment.
    pub fn load_policy(file: Option<&Path>) -> Result<Policy, ConfigError> {
        Config::load_policy_with(file, &|name| std::env::var(name).ok())
    }

    pub fn load_policy_with(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Policy, ConfigError> {
        Config::layered(file, env)?.compile_policy()
    }

    /// Defaults, then the file with the environment laid over it, then the
    /// policy file, then the environment's `[policy]` keys again (they win
    /// over a policy file too).
    fn layered(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let overlay = overlay::Overlay::read(env)?;
        let mut config = Config::default();
        let table = match file {
            None => toml::Table::new(),
            Some(path) => {
                let file_error = |reason: String| ConfigError::File { path: path.display().to_string(), reason };
                let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
                // The file alone first, so that its errors carry line numbers.
                toml::from_str::<file::FileConfig>(&text).map_err(|e| file_error(toml_error(&text, &e)))?;
                config.config_file = Some(path.to_owned());
                toml::from_str(&text).map_err(|e| file_error(toml_error(&text, &e)))?
            }
        };
        let settings: file::FileConfig = overlay.deserialize(&table)?;
        let dir = file.and_then(Path::parent).unwrap_or(Path::new(""));
        config.apply_file(settings, dir, &overlay)?;
        config.apply_policy_file()?;
        let policy: PolicySettings = overlay.deserialize_policy()?;
        config.policy.apply(PolicyDocument { policy: Some(policy), routes: None });
        Ok(config)
    }

    /// The route table from `GATEHOUSE_POLICY_FILE` / `[policy] file`.
    fn apply_policy_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.policy_file else { return Ok(()) };
        let file_error = |reason: String| ConfigError::File { path: path.display().to_string(), reason };
        if self.routes_in_config {
            return Err(file_error("routes are defined both here and in the config file; keep one table".into()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let doc: PolicyDocument = toml::from_str(&text).map_err(|e| file_error(toml_error(&text, &e)))?;
        if doc.policy.as_ref().is_some_and(|p| p.file.is_some() || p.reload_seconds.is_some()) {
            return Err(file_error(
                "policy.file and policy.reload_seconds belong in the main configuration file".into(),
            ));
        }
        self.policy.apply(doc);
        Ok(())
    }

    /// The route table, with the public paths first.
    pub fn compile_policy(&self) -> Result<Policy, ConfigError> {
        let source = self.policy_file.as_ref().or(self.config_file.as_ref()).map(|p| p.display().to_string());
        Policy::compile(&self.policy, &self.public_paths).map_err(|reason| match source {
            Some(path) => ConfigError::File { path, reason },
            None => invalid("policy", "", reason),
        })
    }

    /// The file the route table is read from, if any: watched for changes.
    pub fn policy_source(&self) -> Option<&Path> {
        if self.policy_file.is_some() { self.policy_file.as_deref() } else { self.config_file.as_deref() }
    }

    /// Overrides the TLS files that are given; the rest stay.
    fn tls_parts(
        &mut self,
        cert: Option<std::path::PathBuf>,
        key: Option<std::path::PathBuf>,
        client_ca: Option<std::path::PathBuf>,
    ) {
        if cert.is_none() && key.is_none() && client_ca.is_none() {
            return;
        }
        let tls = self.tls.get_or_insert_with(Default::default);
        set(&mut tls.cert_file, cert);
        set(&mut tls.key_file, key);
        if client_ca.is_some() {
            tls.client_ca_file = client_ca;
        }
    }

    /// How to reach the database, for the store.
    pub fn database_settings(&self) -> crate::store::DatabaseSettings {
        crate::store::DatabaseSettings {
            url: self.database_url.0.clone(),
            read_url: self.database_read_url.as_ref().map(|u| u.expose().to_owned()),
            acquire_timeout: self.database_timeout,
            max_connections: self.database_max_connections,
            statement_timeout: self.database_statement_timeout,
        }
    }
}

#[cfg(test)]
mod tests;
