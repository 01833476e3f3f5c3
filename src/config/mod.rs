//! One validated configuration, built from (later wins): defaults, an optional
//! TOML file (`--config` / `GATEHOUSE_CONFIG`), environment variables, and
//! command-line flags. Every invalid value fails start-up with a message that
//! names the variable or key.

mod budgets;
mod summary;
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
use crate::policy::{Access, PathPattern, Policy, PolicySpec, RouteSpec};
use crate::ratelimit::{Limit, parse_limit};
use crate::secret::Secret;
use crate::store::cache::CacheSettings;

#[derive(Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    /// Where the gRPC admin API listens. `None`: on `grpc_addr`, beside Check.
    /// Set it to keep the Check port for Envoy alone (a firewall or network
    /// policy can then let only Envoy reach Check, and only operators reach
    /// the admin API).
    pub admin_grpc_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    pub database_url: String,
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
            database_url: "sqlite://gatehouse.db".to_owned(),
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

/// Hides the database password.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("grpc_addr", &self.grpc_addr)
            .field("admin_grpc_addr", &self.admin_grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("console", &self.console)
            .field("database_url", &redact_url(&self.database_url))
            .field("database_read_url", &self.database_read_url.as_ref().map(|u| redact_url(u.expose())))
            .field("database_max_connections", &self.database_max_connections)
            .field("auto_migrate", &self.auto_migrate)
            .field("require_auth", &self.require_auth)
            .field("public_paths", &self.public_paths)
            .field("strip_credentials", &self.strip_credentials)
            .field("cache", &self.cache)
            .field("usage_flush_interval", &self.usage_flush_interval)
            .field("metering_flush_interval", &self.metering_flush_interval)
            .field("shutdown_delay", &self.shutdown_delay)
            .field("http_header_timeout", &self.http_header_timeout)
            .field("http_request_timeout", &self.http_request_timeout)
            .field("jwt", &self.jwt)
            .field("accounts", &self.accounts)
            .field("roles", &self.roles)
            .field("login_throttle", &self.login_throttle)
            .field("bootstrap_admin", &self.bootstrap_admin.as_ref().map(|(email, _)| crate::telemetry::email(email)))
            .field("oidc", &self.oidc.iter().map(|i| &i.issuer_url).collect::<Vec<_>>())
            .field("github", &self.github.as_ref().map(|g| &g.client_id))
            .field("oidc_allow_insecure_http", &self.oidc_allow_insecure_http)
            .field("public_url", &self.public_url)
            .field("redis_url", &self.redis_url.as_ref().map(|u| redact_url(u.expose())))
            .field("default_limit", &self.default_limit)
            .field("anonymous_limit", &self.anonymous_limit)
            .field("register_limit", &self.register_limit)
            .field("login_limit", &self.login_limit)
            .field("refresh_limit", &self.refresh_limit)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: invalid value {value:?}: {reason}")]
    Invalid { name: String, value: String, reason: String },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
}

/// The TOML file's shape. Unknown keys are errors, so a typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    database: FileDatabase,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    cache: FileCache,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    usage: FileUsage,
    #[serde(default)]
    jwt: FileJwt,
    #[serde(default)]
    accounts: FileAccounts,
    #[serde(default)]
    login: FileLogin,
    roles: Option<FileRoles>,
    #[serde(default)]
    oidc: Vec<FileOidc>,
    policy: Option<PolicySettings>,
    routes: Option<Vec<RouteSpec>>,
    #[serde(default)]
    budgets: budgets::FileBudgets,
}

/// One `[[oidc]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOidc {
    name: Option<String>,
    issuer_url: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    role_claim: Option<String>,
    group_claim: Option<String>,
    #[serde(default)]
    role_map: std::collections::HashMap<String, String>,
    default_role: Option<String>,
    provision_users: Option<bool>,
    leeway_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJwt {
    algorithm: Option<String>,
    private_key_file: Option<std::path::PathBuf>,
    issuer: Option<String>,
    audience: Option<String>,
    expiry_seconds: Option<i64>,
    leeway_seconds: Option<i64>,
    refresh_grace_seconds: Option<i64>,
    session_max_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAccounts {
    allow_registration: Option<bool>,
    allowed_email_domains: Option<Vec<String>>,
    default_role: Option<String>,
    password_min_length: Option<usize>,
    trusted_proxy_hops: Option<usize>,
    max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLogin {
    max_failures_per_account: Option<u32>,
    max_failures_per_ip: Option<u32>,
    lockout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoles {
    viewer: Vec<String>,
    operator: Vec<String>,
    admin: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    grpc_addr: Option<SocketAddr>,
    admin_grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shutdown_delay_seconds: Option<u64>,
    console: Option<bool>,
    header_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert_file: Option<std::path::PathBuf>,
    key_file: Option<std::path::PathBuf>,
    client_ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    url: Option<String>,
    auto_migrate: Option<bool>,
    timeout_ms: Option<u64>,
    read_url: Option<String>,
    max_connections: Option<u32>,
    statement_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    require_auth: Option<bool>,
    public_paths: Option<Vec<String>>,
    strip_credentials: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    capacity: Option<u64>,
    ttl_seconds: Option<u64>,
    negative_ttl_seconds: Option<u64>,
    stale_seconds: Option<u64>,
    lookup_timeout_ms: Option<u64>,
    usage_flush_seconds: Option<u64>,
}

/// `[usage]`: metered LLM usage.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUsage {
    flush_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
    emails: Option<bool>,
}

/// Reads one variable: `Ok(None)` when unset or empty, an error naming the
/// variable when set but invalid.
fn parse_var<T: FromStr>(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<T>, ConfigError>
where
    T::Err: fmt::Display,
{
    match env(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|e: T::Err| invalid(name, &v, e)),
    }
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

fn file_issuer(index: usize, o: FileOidc) -> Result<IssuerConfig, ConfigError> {
    let key = |field: &str| format!("oidc[{index}].{field}");
    let mut issuer = IssuerConfig::new(&o.issuer_url);
    issuer.name = o.name.unwrap_or_else(|| if index == 0 { "default".into() } else { format!("oidc{index}") });
    issuer.client_id = o.client_id;
    issuer.client_secret = o.client_secret.map(Secret::new);
    issuer.audiences = o.audiences;
    if o.role_claim.is_some() {
        issuer.role_claim = o.role_claim;
    }
    if o.group_claim.is_some() {
        issuer.group_claim = o.group_claim;
    }
    for (value, role) in o.role_map {
        let role = role.parse().map_err(|e| invalid(&key("role_map"), &role, e))?;
        issuer.role_map.insert(value, role);
    }
    if let Some(role) = o.default_role {
        issuer.default_role = role.parse().map_err(|e| invalid(&key("default_role"), &role, e))?;
    }
    set(&mut issuer.provision_users, o.provision_users);
    set(&mut issuer.leeway_seconds, o.leeway_seconds);
    Ok(issuer)
}

/// `GITHUB_ALLOWED_ORGS`: comma-separated `org` or `org/team`, lower-cased;
/// names of letters, digits, `-` (and `_` in team slugs) only, as they go
/// into API paths.
fn github_orgs(list: &str) -> Result<Vec<String>, ConfigError> {
    let name_ok = |s: &str, extra: &[u8]| {
        (1..=100).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || extra.contains(&b))
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|rule| {
            let ok = match rule.split_once('/') {
                Some((org, team)) => name_ok(org, b"") && name_ok(team, b"_"),
                None => name_ok(rule, b""),
            };
            if ok {
                Ok(rule.to_ascii_lowercase())
            } else {
                Err(invalid("GITHUB_ALLOWED_ORGS", rule, "expected ORG or ORG/TEAM (letters, digits, '-')"))
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

    /// Defaults, then the file, then the environment, then the policy file.
    fn layered(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = file {
            config.apply_file(path)?;
        }
        config.apply_env(env)?;
        config.apply_policy_file()?;
        config.apply_env_policy(env)?;
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
        let doc: PolicyDocument = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        if doc.policy.as_ref().is_some_and(|p| p.file.is_some()) {
            return Err(file_error("policy.file is only allowed in the main configuration file".into()));
        }
        self.policy.apply(doc);
        Ok(())
    }

    fn apply_env_policy(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(access) = parse_var::<String>(env, "GATEHOUSE_POLICY_DEFAULT")? {
            self.policy.default = match access.as_str() {
                "deny" => Access::Deny,
                "authenticated" => Access::Authenticated,
                "public" => Access::Public,
                _ => {
                    return Err(invalid("GATEHOUSE_POLICY_DEFAULT", &access, "expected deny, authenticated or public"));
                }
            };
        }
        if let Some(flag) = parse_var::<Flag>(env, "GATEHOUSE_REPORT_ONLY")? {
            self.policy.mode = crate::policy::Mode::from_flag(flag.0);
        }
        if let Some(mode) = parse_var::<String>(env, "GATEHOUSE_POLICY_MODE")? {
            self.policy.mode = mode.parse().map_err(|e: String| invalid("GATEHOUSE_POLICY_MODE", &mode, &e))?;
        }
        set(&mut self.policy.max_request_bytes, parse_var(env, "GATEHOUSE_MAX_REQUEST_BYTES")?);
        set(&mut self.policy.max_prompt_chars, parse_var(env, "GATEHOUSE_MAX_PROMPT_CHARS")?);
        set(
            &mut self.policy_reload_interval,
            parse_var::<u64>(env, "GATEHOUSE_POLICY_RELOAD_SECONDS")?.map(Duration::from_secs),
        );
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

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let file_error = |reason: String| ConfigError::File { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let mut file: FileConfig = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        self.config_file = Some(path.to_owned());
        set(&mut self.grpc_addr, file.server.grpc_addr);
        if file.server.admin_grpc_addr.is_some() {
            self.admin_grpc_addr = file.server.admin_grpc_addr;
        }
        set(&mut self.http_addr, file.server.http_addr);
        let dir = path.parent().map(ToOwned::to_owned).unwrap_or_default();
        self.tls_parts(
            file.tls.cert_file.map(|f| dir.join(f)),
            file.tls.key_file.map(|f| dir.join(f)),
            file.tls.client_ca_file.map(|f| dir.join(f)),
        );
        if file.server.metrics_addr.is_some() {
            self.metrics_addr = file.server.metrics_addr;
        }
        set(&mut self.shutdown_delay, file.server.shutdown_delay_seconds.map(Duration::from_secs));
        set(&mut self.console, file.server.console);
        set(&mut self.http_header_timeout, file.server.header_timeout_ms.map(Duration::from_millis));
        set(&mut self.http_request_timeout, file.server.request_timeout_ms.map(Duration::from_millis));
        set(&mut self.database_url, file.database.url);
        set(&mut self.auto_migrate, file.database.auto_migrate);
        set(&mut self.database_timeout, file.database.timeout_ms.map(Duration::from_millis));
        if let Some(url) = file.database.read_url {
            self.database_read_url = Some(Secret::new(url));
        }
        set(&mut self.database_max_connections, file.database.max_connections);
        set(&mut self.database_statement_timeout, file.database.statement_timeout_ms.map(Duration::from_millis));
        set(&mut self.require_auth, file.auth.require_auth);
        set(&mut self.strip_credentials, file.auth.strip_credentials);
        if let Some(paths) = file.auth.public_paths {
            self.public_paths = parse_patterns("auth.public_paths", &paths)?;
        }
        set(&mut self.cache.capacity, file.cache.capacity);
        set(&mut self.cache.ttl, file.cache.ttl_seconds.map(Duration::from_secs));
        set(&mut self.cache.negative_ttl, file.cache.negative_ttl_seconds.map(Duration::from_secs));
        set(&mut self.cache.stale_limit, file.cache.stale_seconds.map(Duration::from_secs));
        set(&mut self.cache.lookup_timeout, file.cache.lookup_timeout_ms.map(Duration::from_millis));
        set(&mut self.usage_flush_interval, file.cache.usage_flush_seconds.map(Duration::from_secs));
        set(&mut self.metering_flush_interval, file.usage.flush_ms.map(Duration::from_millis));
        if let Some(format) = file.log.format {
            self.log_json = log_json("log.format", &format)?;
        }
        set(&mut self.log_emails, file.log.emails);
        if let Some(file) = file.policy.as_mut().and_then(|p| p.file.take()) {
            // Relative to the config file, like any path a config file names.
            self.policy_file = Some(path.parent().map_or(file.clone(), |dir| dir.join(&file)));
        }
        file.budgets.apply(&mut self.budgets)?;
        self.routes_in_config = file.routes.is_some();
        self.policy.apply(PolicyDocument { policy: file.policy, routes: file.routes });
        for (i, o) in file.oidc.into_iter().enumerate() {
            self.oidc.push(file_issuer(i, o)?);
        }
        self.apply_file_accounts(file.jwt, file.accounts, file.login, file.roles)
    }

    fn apply_file_accounts(
        &mut self,
        jwt: FileJwt,
        accounts: FileAccounts,
        login: FileLogin,
        roles: Option<FileRoles>,
    ) -> Result<(), ConfigError> {
        if let Some(alg) = jwt.algorithm {
            self.jwt.algorithm = parse_algorithm("jwt.algorithm", &alg)?;
        }
        set(&mut self.jwt.private_key_file, jwt.private_key_file.map(Some));
        set(&mut self.jwt.issuer, jwt.issuer);
        set(&mut self.jwt.audience, jwt.audience);
        set(&mut self.jwt.expiry_seconds, jwt.expiry_seconds);
        set(&mut self.jwt.leeway_seconds, jwt.leeway_seconds);
        set(&mut self.jwt.refresh_grace_seconds, jwt.refresh_grace_seconds);
        set(&mut self.jwt.session_max_seconds, jwt.session_max_seconds);
        set(&mut self.accounts.allow_registration, accounts.allow_registration);
        if let Some(domains) = accounts.allowed_email_domains {
            self.accounts.allowed_email_domains = normalize_domains(domains.iter().map(String::as_str));
        }
        if let Some(role) = accounts.default_role {
            self.accounts.default_role = role.parse().map_err(|e| invalid("accounts.default_role", &role, e))?;
        }
        set(&mut self.accounts.password_min_length, accounts.password_min_length);
        set(&mut self.trusted_proxy_hops, accounts.trusted_proxy_hops);
        set(&mut self.max_body_bytes, accounts.max_body_bytes);
        set(&mut self.login_throttle.max_per_account, login.max_failures_per_account);
        set(&mut self.login_throttle.max_per_ip, login.max_failures_per_ip);
        set(&mut self.login_throttle.window, login.lockout_seconds.map(Duration::from_secs));
        if let Some(r) = roles {
            let parse = |name: &str, list: &[String]| {
                PermissionSet::from_names(list).map_err(|e| invalid(name, &list.join(","), e))
            };
            self.roles = RolePermissions {
                viewer: parse("roles.viewer", &r.viewer)?,
                operator: parse("roles.operator", &r.operator)?,
                admin: parse("roles.admin", &r.admin)?,
            };
        }
        Ok(())
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let secs = |name: &str| parse_var::<u64>(env, name).map(|v| v.map(Duration::from_secs));
        set(&mut self.grpc_addr, parse_var(env, "GATEHOUSE_GRPC_ADDR")?);
        if let Some(addr) = parse_var(env, "GATEHOUSE_ADMIN_GRPC_ADDR")? {
            self.admin_grpc_addr = Some(addr);
        }
        set(&mut self.http_addr, parse_var(env, "GATEHOUSE_HTTP_ADDR")?);
        set(&mut self.shutdown_delay, secs("GATEHOUSE_SHUTDOWN_DELAY_SECONDS")?);
        let ms = |name: &str| parse_var::<u64>(env, name).map(|v| v.map(Duration::from_millis));
        set(&mut self.http_header_timeout, ms("GATEHOUSE_HTTP_HEADER_TIMEOUT_MS")?);
        set(&mut self.http_request_timeout, ms("GATEHOUSE_HTTP_REQUEST_TIMEOUT_MS")?);
        set(&mut self.database_url, parse_var(env, "DATABASE_URL")?);
        set(&mut self.auto_migrate, parse_var::<Flag>(env, "GATEHOUSE_AUTO_MIGRATE")?.map(|f| f.0));
        set(
            &mut self.database_timeout,
            parse_var::<u64>(env, "GATEHOUSE_DATABASE_TIMEOUT_MS")?.map(Duration::from_millis),
        );
        let read_url = env("GATEHOUSE_DATABASE_READ_URL").or_else(|| env("DATABASE_READ_URL"));
        if let Some(url) = read_url.filter(|s| !s.trim().is_empty()) {
            self.database_read_url = Some(Secret::new(url.trim()));
        }
        set(&mut self.database_max_connections, parse_var(env, "GATEHOUSE_DATABASE_MAX_CONNECTIONS")?);
        set(
            &mut self.database_statement_timeout,
            parse_var::<u64>(env, "GATEHOUSE_DATABASE_STATEMENT_TIMEOUT_MS")?.map(Duration::from_millis),
        );
        set(&mut self.require_auth, parse_var::<Flag>(env, "REQUIRE_AUTH")?.map(|f| f.0));
        set(&mut self.strip_credentials, parse_var::<Flag>(env, "GATEHOUSE_STRIP_CREDENTIALS")?.map(|f| f.0));
        set(&mut self.policy_file, parse_var::<PathBuf>(env, "GATEHOUSE_POLICY_FILE")?.map(Some));
        if let Some(list) = parse_var::<String>(env, "GATEHOUSE_PUBLIC_PATHS")? {
            let items: Vec<String> = list.split(',').map(str::to_owned).collect();
            self.public_paths = parse_patterns("GATEHOUSE_PUBLIC_PATHS", &items)?;
        }
        set(&mut self.cache.capacity, parse_var(env, "GATEHOUSE_CACHE_CAPACITY")?);
        set(&mut self.cache.ttl, secs("GATEHOUSE_CACHE_TTL_SECONDS")?);
        set(&mut self.cache.negative_ttl, secs("GATEHOUSE_NEGATIVE_CACHE_TTL_SECONDS")?);
        set(&mut self.cache.stale_limit, secs("GATEHOUSE_CACHE_STALE_SECONDS")?);
        set(
            &mut self.cache.lookup_timeout,
            parse_var::<u64>(env, "GATEHOUSE_LOOKUP_TIMEOUT_MS")?.map(Duration::from_millis),
        );
        set(&mut self.usage_flush_interval, secs("GATEHOUSE_USAGE_FLUSH_SECONDS")?);
        budgets::apply_env(&mut self.budgets, env)?;
        set(
            &mut self.metering_flush_interval,
            parse_var::<u64>(env, "GATEHOUSE_USAGE_FLUSH_MS")?.map(Duration::from_millis),
        );
        if let Some(format) = parse_var::<String>(env, "GATEHOUSE_LOG_FORMAT")? {
            self.log_json = log_json("GATEHOUSE_LOG_FORMAT", &format)?;
        }
        set(&mut self.log_emails, parse_var(env, "GATEHOUSE_LOG_EMAILS")?);
        self.tls_parts(
            parse_var(env, "GATEHOUSE_TLS_CERT_FILE")?,
            parse_var(env, "GATEHOUSE_TLS_KEY_FILE")?,
            parse_var(env, "GATEHOUSE_TLS_CLIENT_CA_FILE")?,
        );
        if let Some(addr) = parse_var(env, "GATEHOUSE_METRICS_ADDR")? {
            self.metrics_addr = Some(addr);
        }
        set(&mut self.console, parse_var(env, "GATEHOUSE_CONSOLE")?);
        self.apply_env_accounts(env)
    }

    fn apply_env_accounts(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(alg) = parse_var::<String>(env, "JWT_ALGORITHM")? {
            self.jwt.algorithm = parse_algorithm("JWT_ALGORITHM", &alg)?;
        }
        set(&mut self.jwt.secret, env("JWT_SECRET").filter(|s| !s.is_empty()).map(|s| Some(Secret::new(s))));
        set(&mut self.jwt.private_key_file, parse_var(env, "JWT_PRIVATE_KEY_FILE")?.map(Some));
        set(&mut self.jwt.issuer, parse_var(env, "JWT_ISSUER")?);
        set(&mut self.jwt.audience, parse_var(env, "JWT_AUDIENCE")?);
        set(&mut self.jwt.expiry_seconds, parse_var(env, "JWT_EXPIRY_SECONDS")?);
        set(&mut self.jwt.leeway_seconds, parse_var(env, "JWT_LEEWAY_SECONDS")?);
        set(&mut self.jwt.refresh_grace_seconds, parse_var(env, "JWT_REFRESH_GRACE_SECONDS")?);
        set(&mut self.jwt.session_max_seconds, parse_var(env, "GATEHOUSE_SESSION_MAX_SECONDS")?);
        set(
            &mut self.accounts.allow_registration,
            parse_var::<Flag>(env, "GATEHOUSE_ALLOW_REGISTRATION")?.map(|f| f.0),
        );
        if let Some(list) = parse_var::<String>(env, "ALLOWED_EMAIL_DOMAINS")? {
            self.accounts.allowed_email_domains = normalize_domains(list.split(','));
        }
        set(&mut self.accounts.default_role, parse_var(env, "GATEHOUSE_DEFAULT_ROLE")?);
        set(&mut self.accounts.password_min_length, parse_var(env, "GATEHOUSE_PASSWORD_MIN_LENGTH")?);
        let hashing = &mut self.accounts.password_hashing;
        set(&mut hashing.concurrency, parse_var(env, "GATEHOUSE_PASSWORD_HASH_CONCURRENCY")?);
        set(&mut hashing.queue, parse_var(env, "GATEHOUSE_PASSWORD_HASH_QUEUE")?);
        set(
            &mut hashing.max_wait,
            parse_var::<u64>(env, "GATEHOUSE_PASSWORD_HASH_WAIT_MS")?.map(Duration::from_millis),
        );
        set(&mut self.login_throttle.max_per_account, parse_var(env, "GATEHOUSE_LOGIN_MAX_FAILURES")?);
        set(&mut self.login_throttle.max_per_ip, parse_var(env, "GATEHOUSE_LOGIN_MAX_FAILURES_PER_IP")?);
        set(
            &mut self.login_throttle.window,
            parse_var::<u64>(env, "GATEHOUSE_LOGIN_LOCKOUT_SECONDS")?.map(Duration::from_secs),
        );
        set(&mut self.trusted_proxy_hops, parse_var(env, "GATEHOUSE_TRUSTED_PROXY_HOPS")?);
        set(&mut self.max_body_bytes, parse_var(env, "GATEHOUSE_MAX_BODY_BYTES")?);
        set(
            &mut self.revocation_poll_interval,
            parse_var::<u64>(env, "GATEHOUSE_REVOCATION_POLL_SECONDS")?.map(Duration::from_secs),
        );
        set(
            &mut self.change_poll_interval,
            parse_var::<u64>(env, "GATEHOUSE_CHANGE_POLL_MS")?.map(Duration::from_millis),
        );
        if let Some(url) = parse_var::<String>(env, "OIDC_ISSUER_URL")? {
            let mut issuer = IssuerConfig::new(&url);
            issuer.client_id = parse_var(env, "OIDC_CLIENT_ID")?;
            issuer.client_secret = env("OIDC_CLIENT_SECRET").filter(|s| !s.is_empty()).map(Secret::new);
            if let Some(list) = parse_var::<String>(env, "OIDC_AUDIENCE")? {
                issuer.audiences = list.split(',').map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect();
            }
            if let Some(claim) = parse_var::<String>(env, "OIDC_ROLE_CLAIM")? {
                issuer.role_claim = Some(claim);
            }
            if let Some(claim) = parse_var::<String>(env, "OIDC_GROUP_CLAIM")? {
                issuer.group_claim = Some(claim);
            }
            set(&mut issuer.leeway_seconds, parse_var(env, "OIDC_LEEWAY_SECONDS")?);
            set(&mut issuer.provision_users, parse_var::<Flag>(env, "OIDC_PROVISION_USERS")?.map(|f| f.0));
            // The environment's issuer replaces a file entry for the same URL.
            self.oidc.retain(|i| i.issuer_url != issuer.issuer_url);
            self.oidc.push(issuer);
        }
        set(&mut self.oidc_allow_insecure_http, parse_var::<Flag>(env, "OIDC_ALLOW_INSECURE_HTTP")?.map(|f| f.0));
        set(
            &mut self.redis_url,
            env("REDIS_URL").filter(|s| !s.trim().is_empty()).map(|s| Some(Secret::new(s.trim()))),
        );
        for (name, slot) in [
            ("GATEHOUSE_DEFAULT_RATE_LIMIT", &mut self.default_limit),
            ("GATEHOUSE_ANONYMOUS_RATE_LIMIT", &mut self.anonymous_limit),
            ("GATEHOUSE_REGISTER_RATE_LIMIT", &mut self.register_limit),
            ("GATEHOUSE_LOGIN_RATE_LIMIT", &mut self.login_limit),
            ("GATEHOUSE_REFRESH_RATE_LIMIT", &mut self.refresh_limit),
        ] {
            match parse_var::<String>(env, name)?.as_deref() {
                None => {}
                Some("off" | "none") => *slot = None,
                Some(v) => *slot = Some(parse_limit(v).map_err(|e| invalid(name, v, e))?),
            }
        }
        set(
            &mut self.public_url,
            parse_var::<String>(env, "GATEHOUSE_PUBLIC_URL")?.map(|u| u.trim_end_matches('/').to_owned()),
        );
        let github_id = parse_var::<String>(env, "GITHUB_CLIENT_ID")?;
        let github_secret = env("GITHUB_CLIENT_SECRET").filter(|s| !s.is_empty());
        match (github_id, github_secret) {
            (Some(client_id), Some(secret)) => {
                let url = |name: &str, default: &str| -> Result<String, ConfigError> {
                    Ok(parse_var::<String>(env, name)?
                        .unwrap_or_else(|| default.to_owned())
                        .trim_end_matches('/')
                        .to_owned())
                };
                self.github = Some(GithubConfig {
                    client_id,
                    client_secret: Secret::new(secret),
                    oauth_url: url("GITHUB_OAUTH_URL", "https://github.com")?,
                    api_url: url("GITHUB_API_URL", "https://api.github.com")?,
                    allowed_orgs: github_orgs(&parse_var::<String>(env, "GITHUB_ALLOWED_ORGS")?.unwrap_or_default())?,
                });
            }
            (None, None) => {}
            _ => return Err(invalid("GITHUB_CLIENT_ID", "", "set both GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET")),
        }
        let email = parse_var::<String>(env, "GATEHOUSE_BOOTSTRAP_ADMIN_EMAIL")?;
        let password = env("GATEHOUSE_BOOTSTRAP_ADMIN_PASSWORD").filter(|s| !s.is_empty());
        match (email, password) {
            (Some(email), Some(password)) => self.bootstrap_admin = Some((email, Secret::new(password))),
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "GATEHOUSE_BOOTSTRAP_ADMIN_EMAIL",
                    "",
                    "set both GATEHOUSE_BOOTSTRAP_ADMIN_EMAIL and GATEHOUSE_BOOTSTRAP_ADMIN_PASSWORD",
                ));
            }
        }
        Ok(())
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
            url: self.database_url.clone(),
            read_url: self.database_read_url.as_ref().map(|u| u.expose().to_owned()),
            acquire_timeout: self.database_timeout,
            max_connections: self.database_max_connections,
            statement_timeout: self.database_statement_timeout,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        budgets::validate(&self.budgets)?;
        if let Some(tls) = &self.tls {
            let missing = |p: &std::path::Path| p.as_os_str().is_empty();
            if missing(&tls.cert_file) || missing(&tls.key_file) {
                return Err(invalid(
                    "GATEHOUSE_TLS_CERT_FILE",
                    "",
                    "TLS needs both GATEHOUSE_TLS_CERT_FILE and GATEHOUSE_TLS_KEY_FILE",
                ));
            }
            crate::tls::server_configs(tls).map_err(|e| invalid("GATEHOUSE_TLS_CERT_FILE", "", e.to_string()))?;
        }
        let url = &self.database_url;
        if !["sqlite:", "postgres:", "postgresql:"].iter().any(|s| url.starts_with(s)) {
            return Err(invalid("DATABASE_URL", &redact_url(url), "must start with sqlite: or postgres:"));
        }
        if let Some(read) = &self.database_read_url {
            let read = read.expose();
            if !url.starts_with("postgres") || !["postgres:", "postgresql:"].iter().any(|s| read.starts_with(s)) {
                return Err(invalid(
                    "GATEHOUSE_DATABASE_READ_URL",
                    &redact_url(read),
                    "a read replica needs postgres: URLs, for it and for DATABASE_URL",
                ));
            }
        }
        if self.database_max_connections == 0 {
            return Err(invalid("GATEHOUSE_DATABASE_MAX_CONNECTIONS", "0", "must be at least 1"));
        }
        if self.database_statement_timeout.is_zero() {
            return Err(invalid("GATEHOUSE_DATABASE_STATEMENT_TIMEOUT_MS", "0", "must be at least 1"));
        }
        if self.cache.capacity == 0 {
            return Err(invalid("GATEHOUSE_CACHE_CAPACITY", "0", "must be at least 1"));
        }
        if self.cache.lookup_timeout.is_zero() {
            return Err(invalid("GATEHOUSE_LOOKUP_TIMEOUT_MS", "0", "must be at least 1"));
        }
        if self.usage_flush_interval.is_zero() {
            return Err(invalid("GATEHOUSE_USAGE_FLUSH_SECONDS", "0", "must be at least 1"));
        }
        if self.metering_flush_interval.is_zero() {
            return Err(invalid("GATEHOUSE_USAGE_FLUSH_MS", "0", "must be at least 1"));
        }
        self.validate_jwt()?;
        if self.accounts.password_min_length < 8 {
            let n = self.accounts.password_min_length.to_string();
            return Err(invalid("GATEHOUSE_PASSWORD_MIN_LENGTH", &n, "must be at least 8"));
        }
        let insecure = self.oidc_allow_insecure_http;
        for issuer in &self.oidc {
            if !issuer.issuer_url.starts_with("https://") && !issuer.issuer_url.starts_with("http://") {
                return Err(invalid("OIDC_ISSUER_URL", &issuer.issuer_url, "must be an http(s) URL"));
            }
            crate::authn::oidc::check_url(&issuer.issuer_url, insecure)
                .map_err(|e| invalid("OIDC_ISSUER_URL", &issuer.issuer_url, e))?;
            if issuer.audiences.is_empty() && issuer.client_id.is_none() {
                return Err(invalid("OIDC_AUDIENCE", "", "set OIDC_AUDIENCE or OIDC_CLIENT_ID for each issuer"));
            }
        }
        if let Some(gh) = &self.github {
            for (name, url) in [("GITHUB_OAUTH_URL", &gh.oauth_url), ("GITHUB_API_URL", &gh.api_url)] {
                crate::authn::oidc::check_url(url, insecure).map_err(|e| invalid(name, url, e))?;
            }
        }
        if !(10..=1000).contains(&self.change_poll_interval.as_millis()) {
            let value = self.change_poll_interval.as_millis().to_string();
            return Err(invalid("GATEHOUSE_CHANGE_POLL_MS", &value, "must be between 10 and 1000"));
        }
        if self.http_header_timeout.is_zero() {
            return Err(invalid("GATEHOUSE_HTTP_HEADER_TIMEOUT_MS", "0", "must be at least 1"));
        }
        if self.http_request_timeout.is_zero() {
            return Err(invalid("GATEHOUSE_HTTP_REQUEST_TIMEOUT_MS", "0", "must be at least 1"));
        }
        if self.accounts.password_hashing.concurrency == 0 {
            return Err(invalid("GATEHOUSE_PASSWORD_HASH_CONCURRENCY", "0", "must be at least 1"));
        }
        for (name, max) in [
            ("GATEHOUSE_LOGIN_MAX_FAILURES", self.login_throttle.max_per_account),
            ("GATEHOUSE_LOGIN_MAX_FAILURES_PER_IP", self.login_throttle.max_per_ip),
        ] {
            if max == 0 {
                return Err(invalid(name, "0", "must be at least 1"));
            }
        }
        if self.revocation_poll_interval.is_zero() {
            return Err(invalid("GATEHOUSE_REVOCATION_POLL_SECONDS", "0", "must be at least 1"));
        }
        self.compile_policy()?;
        Ok(())
    }

    fn validate_jwt(&self) -> Result<(), ConfigError> {
        let jwt = &self.jwt;
        if jwt.algorithm == Algorithm::HS256 {
            let short = jwt.secret.as_ref().is_some_and(|s| s.expose().len() < crate::authn::jwt::MIN_SECRET_LEN);
            if short && self.require_auth {
                return Err(invalid("JWT_SECRET", "[redacted]", "must be at least 32 characters"));
            }
        } else if jwt.private_key_file.is_none() {
            return Err(invalid(
                "JWT_PRIVATE_KEY_FILE",
                "",
                format!("required with JWT_ALGORITHM={:?}", jwt.algorithm),
            ));
        }
        for (name, value) in [
            ("JWT_EXPIRY_SECONDS", jwt.expiry_seconds),
            ("JWT_LEEWAY_SECONDS", jwt.leeway_seconds + 1),
            ("JWT_REFRESH_GRACE_SECONDS", jwt.refresh_grace_seconds + 1),
            ("GATEHOUSE_SESSION_MAX_SECONDS", jwt.session_max_seconds),
        ] {
            if value <= 0 {
                return Err(invalid(name, &value.to_string(), "must not be negative (expiry: positive)"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)], file: Option<&str>) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        Config::load_with(file.map(|_| path.as_path()), &|k| vars.get(k).cloned())
    }

    #[test]
    fn a_policy_reload_reads_the_policy_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        let cert = dir.path().join("missing-cert.pem");
        let key = dir.path().join("missing-key.pem");
        let text = format!(
            "[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n\n[[routes]]\npath = \"/v1/models\"\naccess = \"public\"\n"
        );
        std::fs::write(&path, text).unwrap();
        let env = |_: &str| None;
        // Start-up reads the certificate (here: it is being replaced, absent)...
        assert!(Config::load_with(Some(&path), &env).is_err());
        // ...a policy reload does not.
        let policy = Config::load_policy_with(Some(&path), &env).unwrap();
        assert!(!policy.rules().is_empty());
        // A policy that does not compile is still refused.
        std::fs::write(&path, "[[routes]]\npath = \"no-slash\"\naccess = \"public\"\n").unwrap();
        assert!(Config::load_policy_with(Some(&path), &env).is_err());
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = load(&[], None).unwrap();
        assert!(c.database_url.starts_with("sqlite:"));
        assert!(c.require_auth);
        assert_eq!(c.grpc_addr.port(), 9191);
        assert_eq!(c.http_addr.port(), 8080);
        assert_eq!(c.public_paths.len(), 3);
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            &[("REQUIRE_AUTH", "false"), ("GATEHOUSE_GRPC_ADDR", "127.0.0.1:7000")],
            Some("[auth]\nrequire_auth = true\npublic_paths = [\"/x\", \"/docs/*\"]\n[server]\ngrpc_addr = \"127.0.0.1:6000\"\n"),
        )
        .unwrap();
        assert!(!c.require_auth);
        assert_eq!(c.grpc_addr.port(), 7000);
        let shown: Vec<&str> = c.public_paths.iter().map(PathPattern::as_str).collect();
        assert_eq!(shown, ["/x", "/docs/*"]);
    }

    #[test]
    fn plain_http_providers_need_the_development_flag() {
        let issuer = [("OIDC_ISSUER_URL", "http://idp.example/realms/x"), ("OIDC_AUDIENCE", "gw")];
        for url in ["http://idp.example/realms/x", "http://127.0.0.1:8081", "http://localhost:8081"] {
            let e = load(&[("OIDC_ISSUER_URL", url), ("OIDC_AUDIENCE", "gw")], None).unwrap_err().to_string();
            assert!(e.contains("OIDC_ISSUER_URL") && e.contains("OIDC_ALLOW_INSECURE_HTTP"), "{e}");
        }
        let file = "[[oidc]]\nissuer_url = \"http://idp.example\"\naudiences = [\"gw\"]\n";
        let e = load(&[], Some(file)).unwrap_err().to_string();
        assert!(e.contains("OIDC_ALLOW_INSECURE_HTTP"), "{e}");
        let github = [("GITHUB_CLIENT_ID", "id"), ("GITHUB_CLIENT_SECRET", "secret")];
        for name in ["GITHUB_OAUTH_URL", "GITHUB_API_URL"] {
            let vars = [github[0], github[1], (name, "http://ghe.example")];
            let e = load(&vars, None).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("OIDC_ALLOW_INSECURE_HTTP"), "{e}");
        }
        let allowed = [issuer[0], issuer[1], github[0], github[1], ("GITHUB_API_URL", "http://ghe.example")];
        let c = load(&[allowed.as_slice(), &[("OIDC_ALLOW_INSECURE_HTTP", "true")]].concat(), None).unwrap();
        assert!(c.oidc_allow_insecure_http);
        assert!(load(&[("OIDC_ISSUER_URL", "https://idp.example"), ("OIDC_AUDIENCE", "gw")], None).is_ok());
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let e = load(&[("REQUIRE_AUTH", "maybe")], None).unwrap_err().to_string();
        assert!(e.contains("REQUIRE_AUTH"), "{e}");
        let e = load(&[("GATEHOUSE_HTTP_ADDR", "nowhere")], None).unwrap_err().to_string();
        assert!(e.contains("GATEHOUSE_HTTP_ADDR"), "{e}");
        let e = load(&[("DATABASE_URL", "mysql://u:pw@h/db")], None).unwrap_err().to_string();
        assert!(e.contains("DATABASE_URL") && !e.contains("pw"), "{e}");
        let e = load(&[], Some("[auth]\nrequire_auht = true\n")).unwrap_err().to_string();
        assert!(e.contains("require_auht"), "{e}");
        let e = load(&[("GATEHOUSE_DATABASE_READ_URL", "postgres://r:pw@replica/db")], None).unwrap_err().to_string();
        assert!(e.contains("GATEHOUSE_DATABASE_READ_URL") && !e.contains("pw"), "a replica needs Postgres: {e}");
        let e = load(&[("GATEHOUSE_DATABASE_MAX_CONNECTIONS", "0")], None).unwrap_err().to_string();
        assert!(e.contains("GATEHOUSE_DATABASE_MAX_CONNECTIONS"), "{e}");
        let c = load(
            &[
                ("DATABASE_URL", "postgres://p@primary/db"),
                ("GATEHOUSE_DATABASE_READ_URL", "postgres://p@replica/db"),
                ("GATEHOUSE_DATABASE_MAX_CONNECTIONS", "40"),
                ("GATEHOUSE_DATABASE_STATEMENT_TIMEOUT_MS", "1500"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            load(&[("GATEHOUSE_REPORT_ONLY", "true")], None).unwrap().policy.mode,
            crate::policy::Mode::ReportOnly
        );
        let settings = c.database_settings();
        assert_eq!(settings.read_url.as_deref(), Some("postgres://p@replica/db"));
        assert_eq!((settings.max_connections, settings.statement_timeout), (40, Duration::from_millis(1500)));
    }

    #[test]
    fn usage_flush_interval() {
        assert_eq!(load(&[], None).unwrap().metering_flush_interval, Duration::from_secs(5));
        let c = load(&[("GATEHOUSE_USAGE_FLUSH_MS", "250")], Some("[usage]\nflush_ms = 1000\n")).unwrap();
        assert_eq!(c.metering_flush_interval, Duration::from_millis(250), "the environment wins");
        let c = load(&[], Some("[usage]\nflush_ms = 1000\n")).unwrap();
        assert_eq!(c.metering_flush_interval, Duration::from_secs(1));
        for bad in ["0", "-1", "soon"] {
            let e = load(&[("GATEHOUSE_USAGE_FLUSH_MS", bad)], None).unwrap_err().to_string();
            assert!(e.contains("GATEHOUSE_USAGE_FLUSH_MS"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_example_file_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gatehouse.example.toml");
        let c = Config::load_with(Some(&path), &|_| None).unwrap();
        let d = Config::default();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn budget_settings_from_the_environment_and_the_file() {
        let c = load(
            &[
                ("GATEHOUSE_MODEL_PRICES", "gpt-4o*=2.5:10,*=1:4"),
                ("GATEHOUSE_BUDGET_DEFAULT_MAX_TOKENS", "1000"),
                ("GATEHOUSE_BUDGET_UNMEASURED_STREAMS", "charge"),
                ("GATEHOUSE_BUDGET_SETTLE_TIMEOUT_SECONDS", "60"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.budgets.prices.len(), 2);
        assert_eq!(c.budgets.default_max_tokens, 1000);
        assert_eq!(c.budgets.unmeasured_streams, crate::budget::UnmeasuredStreams::Charge);
        assert_eq!(c.budgets.settle_timeout, Duration::from_secs(60));
        for (name, bad) in [
            ("GATEHOUSE_MODEL_PRICES", "gpt-4o=x:1"),
            ("GATEHOUSE_BUDGET_DEFAULT_MAX_TOKENS", "0"),
            ("GATEHOUSE_BUDGET_CHARS_PER_TOKEN", "0"),
            ("GATEHOUSE_BUDGET_SETTLE_TIMEOUT_SECONDS", "1"),
            ("GATEHOUSE_BUDGET_UNMEASURED_STREAMS", "maybe"),
        ] {
            let e = load(&[(name, bad)], None).unwrap_err().to_string();
            assert!(e.contains(name), "{name}={bad}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "[budgets]\nprices = \"m=1:2\"\nchars_per_token = 4\n").unwrap();
        let c = Config::load_with(Some(&path), &|_| None).unwrap();
        assert_eq!((c.budgets.prices.len(), c.budgets.chars_per_token), (1, 4));
        std::fs::write(&path, "[budgets]\nprice = \"m=1:2\"\n").unwrap();
        assert!(Config::load_with(Some(&path), &|_| None).is_err(), "unknown keys are errors");
    }

    #[test]
    fn provider_provisioning_settings() {
        let github = [("GITHUB_CLIENT_ID", "id"), ("GITHUB_CLIENT_SECRET", "secret")];
        let c = load(&github, None).unwrap();
        assert!(c.github.unwrap().allowed_orgs.is_empty(), "GitHub provisions no one by default");
        let c = load(&[github[0], github[1], ("GITHUB_ALLOWED_ORGS", " Acme, acme/Platform_1 ,")], None).unwrap();
        assert_eq!(c.github.unwrap().allowed_orgs, ["acme", "acme/platform_1"]);
        for bad in ["acme/../../user", "ac me", "acme/", "/team", "a/b/c"] {
            let e = load(&[github[0], github[1], ("GITHUB_ALLOWED_ORGS", bad)], None).unwrap_err().to_string();
            assert!(e.contains("GITHUB_ALLOWED_ORGS"), "{bad}: {e}");
        }
        let oidc = [("OIDC_ISSUER_URL", "https://idp.example"), ("OIDC_AUDIENCE", "gw")];
        assert!(load(&oidc, None).unwrap().oidc[0].provision_users, "a configured issuer provisions by default");
        let c = load(&[oidc[0], oidc[1], ("OIDC_PROVISION_USERS", "false")], None).unwrap();
        assert!(!c.oidc[0].provision_users);
        let file = "[[oidc]]\nissuer_url = \"https://idp.example\"\naudiences = [\"gw\"]\nprovision_users = false\n";
        assert!(!load(&[], Some(file)).unwrap().oidc[0].provision_users);
    }

    #[test]
    fn debug_hides_the_database_password() {
        let c = load(&[("DATABASE_URL", "postgres://gate:s3cret@db/gate")], None).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("gate:***@db"), "{shown}");
    }
}
