//! The environment, laid over the file as one more TOML table. Every setting
//! has a key in the file and a variable in the environment; [`VARS`] is the
//! one table of which variable sets which key. The seed-compatible names
//! (`JWT_SECRET`, `REQUIRE_AUTH`, `DATABASE_URL`, ...) are plain rows of it.
//! Values are typed by their key's file type: a variable holds what the key
//! would, written as text (lists comma-separated, flags as true/false, 1/0,
//! yes/no or on/off).

use toml::{Table, Value};

use super::{ConfigError, invalid};

/// How a variable's text becomes the key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Trimmed text.
    Text,
    /// Text kept as given (a password or a key): never trimmed, never echoed.
    Secret,
    /// A URL that may hold a password: trimmed, never echoed.
    SecretUrl,
    Integer,
    Flag,
    /// Comma-separated; empty items dropped.
    List,
    /// A file: relative to the working directory, made absolute (keys in the
    /// file are relative to the file).
    Path,
    /// `GATEHOUSE_REPORT_ONLY`: a flag that chooses `policy.mode`.
    ReportOnly,
}

/// One variable and the key it sets.
pub(super) struct Var {
    pub(super) name: &'static str,
    pub(super) key: &'static str,
    pub(super) kind: Kind,
}

const fn var(name: &'static str, key: &'static str, kind: Kind) -> Var {
    Var { name, key, kind }
}

use Kind::*;

/// Every environment variable. Later rows win over earlier ones for the same
/// key (`GATEHOUSE_DATABASE_READ_URL` over `DATABASE_READ_URL`). The `oidc.*`
/// rows describe one provider, added to the file's `[[oidc]]` list (replacing
/// an entry with the same issuer) when `OIDC_ISSUER_URL` is set.
#[rustfmt::skip]
pub(super) const VARS: &[Var] = &[
    var("GATEHOUSE_GRPC_ADDR", "server.grpc_addr", Text),
    var("GATEHOUSE_ADMIN_GRPC_ADDR", "server.admin_grpc_addr", Text),
    var("GATEHOUSE_HTTP_ADDR", "server.http_addr", Text),
    var("GATEHOUSE_METRICS_ADDR", "server.metrics_addr", Text),
    var("GATEHOUSE_SHUTDOWN_DELAY_SECONDS", "server.shutdown_delay_seconds", Integer),
    var("GATEHOUSE_CONSOLE", "server.console", Flag),
    var("GATEHOUSE_HTTP_HEADER_TIMEOUT_MS", "server.header_timeout_ms", Integer),
    var("GATEHOUSE_HTTP_REQUEST_TIMEOUT_MS", "server.request_timeout_ms", Integer),
    var("GATEHOUSE_PUBLIC_URL", "server.public_url", Text),
    var("GATEHOUSE_TLS_CERT_FILE", "tls.cert_file", Path),
    var("GATEHOUSE_TLS_KEY_FILE", "tls.key_file", Path),
    var("GATEHOUSE_TLS_CLIENT_CA_FILE", "tls.client_ca_file", Path),
    var("DATABASE_URL", "database.url", SecretUrl),
    var("GATEHOUSE_AUTO_MIGRATE", "database.auto_migrate", Flag),
    var("GATEHOUSE_DATABASE_TIMEOUT_MS", "database.timeout_ms", Integer),
    var("DATABASE_READ_URL", "database.read_url", SecretUrl),
    var("GATEHOUSE_DATABASE_READ_URL", "database.read_url", SecretUrl),
    var("GATEHOUSE_DATABASE_MAX_CONNECTIONS", "database.max_connections", Integer),
    var("GATEHOUSE_DATABASE_STATEMENT_TIMEOUT_MS", "database.statement_timeout_ms", Integer),
    var("REDIS_URL", "redis.url", SecretUrl),
    var("GATEHOUSE_REDIS_TIMEOUT_MS", "redis.timeout_ms", Integer),
    var("REQUIRE_AUTH", "auth.require_auth", Flag),
    var("GATEHOUSE_STRIP_CREDENTIALS", "auth.strip_credentials", Flag),
    var("GATEHOUSE_PUBLIC_PATHS", "auth.public_paths", List),
    var("OIDC_ALLOW_INSECURE_HTTP", "auth.oidc_allow_insecure_http", Flag),
    var("GATEHOUSE_CACHE_CAPACITY", "cache.capacity", Integer),
    var("GATEHOUSE_CACHE_TTL_SECONDS", "cache.ttl_seconds", Integer),
    var("GATEHOUSE_NEGATIVE_CACHE_TTL_SECONDS", "cache.negative_ttl_seconds", Integer),
    var("GATEHOUSE_CACHE_STALE_SECONDS", "cache.stale_seconds", Integer),
    var("GATEHOUSE_LOOKUP_TIMEOUT_MS", "cache.lookup_timeout_ms", Integer),
    var("GATEHOUSE_USAGE_FLUSH_SECONDS", "cache.usage_flush_seconds", Integer),
    var("GATEHOUSE_REVOCATION_POLL_SECONDS", "cache.revocation_poll_seconds", Integer),
    var("GATEHOUSE_CHANGE_POLL_MS", "cache.change_poll_ms", Integer),
    var("GATEHOUSE_USAGE_FLUSH_MS", "usage.flush_ms", Integer),
    var("GATEHOUSE_LOG_FORMAT", "log.format", Text),
    var("GATEHOUSE_LOG_EMAILS", "log.emails", Flag),
    var("JWT_ALGORITHM", "jwt.algorithm", Text),
    var("JWT_SECRET", "jwt.secret", Secret),
    var("JWT_PRIVATE_KEY_FILE", "jwt.private_key_file", Text),
    var("JWT_ISSUER", "jwt.issuer", Text),
    var("JWT_AUDIENCE", "jwt.audience", Text),
    var("JWT_EXPIRY_SECONDS", "jwt.expiry_seconds", Integer),
    var("JWT_LEEWAY_SECONDS", "jwt.leeway_seconds", Integer),
    var("JWT_REFRESH_GRACE_SECONDS", "jwt.refresh_grace_seconds", Integer),
    var("GATEHOUSE_SESSION_MAX_SECONDS", "jwt.session_max_seconds", Integer),
    var("GATEHOUSE_ALLOW_REGISTRATION", "accounts.allow_registration", Flag),
    var("ALLOWED_EMAIL_DOMAINS", "accounts.allowed_email_domains", List),
    var("GATEHOUSE_DEFAULT_ROLE", "accounts.default_role", Text),
    var("GATEHOUSE_PASSWORD_MIN_LENGTH", "accounts.password_min_length", Integer),
    var("GATEHOUSE_PASSWORD_HASH_CONCURRENCY", "accounts.password_hash_concurrency", Integer),
    var("GATEHOUSE_PASSWORD_HASH_QUEUE", "accounts.password_hash_queue", Integer),
    var("GATEHOUSE_PASSWORD_HASH_WAIT_MS", "accounts.password_hash_wait_ms", Integer),
    var("GATEHOUSE_TRUSTED_PROXY_HOPS", "accounts.trusted_proxy_hops", Integer),
    var("GATEHOUSE_MAX_BODY_BYTES", "accounts.max_body_bytes", Integer),
    var("GATEHOUSE_BOOTSTRAP_ADMIN_EMAIL", "accounts.bootstrap_admin_email", Text),
    var("GATEHOUSE_BOOTSTRAP_ADMIN_PASSWORD", "accounts.bootstrap_admin_password", Secret),
    var("GATEHOUSE_LOGIN_MAX_FAILURES", "login.max_failures_per_account", Integer),
    var("GATEHOUSE_LOGIN_MAX_FAILURES_PER_IP", "login.max_failures_per_ip", Integer),
    var("GATEHOUSE_LOGIN_LOCKOUT_SECONDS", "login.lockout_seconds", Integer),
    var("GATEHOUSE_ROLES_VIEWER", "roles.viewer", List),
    var("GATEHOUSE_ROLES_OPERATOR", "roles.operator", List),
    var("GATEHOUSE_ROLES_ADMIN", "roles.admin", List),
    var("GATEHOUSE_DEFAULT_RATE_LIMIT", "limits.default", Text),
    var("GATEHOUSE_ANONYMOUS_RATE_LIMIT", "limits.anonymous", Text),
    var("GATEHOUSE_REGISTER_RATE_LIMIT", "limits.register", Text),
    var("GATEHOUSE_LOGIN_RATE_LIMIT", "limits.login", Text),
    var("GATEHOUSE_REFRESH_RATE_LIMIT", "limits.refresh", Text),
    var("GATEHOUSE_MODEL_PRICES", "budgets.prices", Text),
    var("GATEHOUSE_BUDGET_DEFAULT_MAX_TOKENS", "budgets.default_max_tokens", Integer),
    var("GATEHOUSE_BUDGET_CHARS_PER_TOKEN", "budgets.chars_per_token", Integer),
    var("GATEHOUSE_BUDGET_SETTLE_TIMEOUT_SECONDS", "budgets.settle_timeout_seconds", Integer),
    var("GATEHOUSE_BUDGET_UNMEASURED_STREAMS", "budgets.unmeasured_streams", Text),
    var("GATEHOUSE_POLICY_FILE", "policy.file", Path),
    var("GATEHOUSE_POLICY_DEFAULT", "policy.default", Text),
    var("GATEHOUSE_REPORT_ONLY", "policy.mode", ReportOnly),
    var("GATEHOUSE_POLICY_MODE", "policy.mode", Text),
    var("GATEHOUSE_MAX_REQUEST_BYTES", "policy.max_request_bytes", Integer),
    var("GATEHOUSE_MAX_PROMPT_CHARS", "policy.max_prompt_chars", Integer),
    var("GATEHOUSE_POLICY_RELOAD_SECONDS", "policy.reload_seconds", Integer),
    var("GITHUB_CLIENT_ID", "github.client_id", Text),
    var("GITHUB_CLIENT_SECRET", "github.client_secret", Secret),
    var("GITHUB_OAUTH_URL", "github.oauth_url", Text),
    var("GITHUB_API_URL", "github.api_url", Text),
    var("GITHUB_ALLOWED_ORGS", "github.allowed_orgs", List),
    var("OIDC_ISSUER_URL", "oidc.issuer_url", Text),
    var("OIDC_CLIENT_ID", "oidc.client_id", Text),
    var("OIDC_CLIENT_SECRET", "oidc.client_secret", Secret),
    var("OIDC_AUDIENCE", "oidc.audiences", List),
    var("OIDC_ROLE_CLAIM", "oidc.role_claim", Text),
    var("OIDC_GROUP_CLAIM", "oidc.group_claim", Text),
    var("OIDC_LEEWAY_SECONDS", "oidc.leeway_seconds", Integer),
    var("OIDC_PROVISION_USERS", "oidc.provision_users", Flag),
];

/// The variables that are set (and not empty), with their values as the
/// file would hold them, in table order.
pub(super) struct Overlay {
    set: Vec<(&'static Var, Value)>,
}

impl Overlay {
    pub(super) fn read(env: &dyn Fn(&str) -> Option<String>) -> Result<Overlay, ConfigError> {
        let mut set = Vec::new();
        for var in VARS {
            let Some(raw) = env(var.name).filter(|v| !v.trim().is_empty()) else { continue };
            set.push((var, value(var, &raw)?));
        }
        // A client secret without its issuer: a typo in the issuer's name
        // would otherwise leave the provider silently unset. (The other
        // OIDC_* variables alone are ignored, as compose files set defaults.)
        let secret = set.iter().find(|(v, _)| v.key == "oidc.client_secret");
        if let Some((var, _)) = secret.filter(|_| !set.iter().any(|(v, _)| v.key == "oidc.issuer_url")) {
            return Err(invalid(var.name, "", "set OIDC_ISSUER_URL too: the OIDC_* variables describe one provider"));
        }
        Ok(Overlay { set })
    }

    /// The variable that set `key`, if one did: errors about the value then
    /// name it, as the operator wrote it there.
    pub(super) fn origin(&self, key: &str) -> Option<&'static str> {
        self.set.iter().rev().find(|(v, _)| v.key == key).map(|(v, _)| v.name)
    }

    /// Names `key` in an error: the variable that set it, or the key.
    pub(super) fn of(&self, key: &str) -> String {
        self.origin(key).map_or_else(|| key.to_owned(), str::to_owned)
    }

    /// What an error may show of the value behind `key`.
    pub(super) fn shown(&self, key: &str) -> Option<String> {
        let (var, value) = self.set.iter().rev().find(|(v, _)| v.key == key)?;
        Some(if matches!(var.kind, Secret | SecretUrl) { "[redacted]".into() } else { display(value) })
    }

    /// `file` with the environment laid over it, as the file's type. When
    /// that fails, the error names the first variable whose value does not
    /// fit its key (the file alone has been read already).
    pub(super) fn deserialize<T: serde::de::DeserializeOwned>(&self, file: &Table) -> Result<T, ConfigError> {
        self.over(file, self.set.len()).try_into().map_err(|whole: toml::de::Error| {
            for n in 1..=self.set.len() {
                if let Err(e) = self.over(file, n).try_into::<T>() {
                    let (var, _) = &self.set[n - 1];
                    return invalid(var.name, &self.shown(var.key).unwrap_or_default(), e.message());
                }
            }
            invalid("environment", "", whole.message())
        })
    }

    /// The environment's `[policy]` keys, as the policy file's type (their
    /// values were checked with the rest of the file's).
    pub(super) fn deserialize_policy<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        Value::Table(self.policy()).try_into().map_err(|e: toml::de::Error| invalid("environment", "", e.message()))
    }

    /// `file` with the first `n` set variables laid over it.
    pub(super) fn over(&self, file: &Table, n: usize) -> Table {
        let mut table = file.clone();
        let mut issuer = Table::new();
        for (var, value) in &self.set[..n] {
            match var.key.strip_prefix("oidc.") {
                Some(field) => {
                    issuer.insert(field.to_owned(), value.clone());
                }
                None => insert(&mut table, var.key, value.clone()),
            }
        }
        if let Some(url) = issuer.get("issuer_url").and_then(Value::as_str).map(str::to_owned) {
            issuer.insert("name".into(), Value::String("default".into()));
            let same = |v: &Value| {
                v.get("issuer_url").and_then(Value::as_str).map(|u| u.trim_end_matches('/'))
                    == Some(url.trim_end_matches('/'))
            };
            let list = table.entry("oidc").or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = list {
                items.retain(|v| !same(v));
                items.push(Value::Table(issuer));
            }
        }
        table
    }

    /// The `[policy]` keys the environment set: laid over a policy file too.
    fn policy(&self) -> Table {
        let mut table = Table::new();
        for (var, value) in &self.set {
            if let Some(field) = var.key.strip_prefix("policy.").filter(|f| *f != "file") {
                table.insert(field.to_owned(), value.clone());
            }
        }
        table
    }
}

fn value(var: &Var, raw: &str) -> Result<Value, ConfigError> {
    let text = raw.trim();
    Ok(match var.kind {
        Text | SecretUrl => Value::String(text.to_owned()),
        Secret => Value::String(raw.to_owned()),
        Integer => Value::Integer(text.parse().map_err(|_| invalid(var.name, text, "expected a whole number"))?),
        Flag => Value::Boolean(text.parse::<super::Flag>().map_err(|e| invalid(var.name, text, e))?.0),
        List => Value::Array(
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.into())).collect(),
        ),
        Path => {
            let path = std::path::absolute(text).map_err(|e| invalid(var.name, text, e))?;
            Value::String(path.to_string_lossy().into_owned())
        }
        ReportOnly => {
            let flag: super::Flag = text.parse().map_err(|e| invalid(var.name, text, e))?;
            Value::String(if flag.0 { "report_only" } else { "enforce" }.into())
        }
    })
}

fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(display).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Sets `a.b.c` in `table`, making the tables on the way.
fn insert(table: &mut Table, key: &str, value: Value) {
    let (path, last) = key.rsplit_once('.').map_or((None, key), |(p, l)| (Some(p), l));
    let mut at = table;
    for part in path.into_iter().flat_map(|p| p.split('.')) {
        let next = at.entry(part).or_insert_with(|| Value::Table(Table::new()));
        if !next.is_table() {
            *next = Value::Table(Table::new());
        }
        let Value::Table(t) = next else { unreachable!() };
        at = t;
    }
    at.insert(last.to_owned(), value);
}
