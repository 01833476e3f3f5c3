//! `gatehouse doctor`: checks the configuration and what it points at, and
//! says what to fix. One finding per check, each with a verdict (ok, warn,
//! fail, skip) and, when something is wrong, a hint. Nothing is changed: the
//! database is read (a SQLite file read-only, never created), Redis answers
//! PING, providers are asked for their discovery document and keys.

pub mod envoy;
mod tls;
use tls::{tls, tls_refused};

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, redact_url};

/// Settings checked on their own: when the configuration does not load
/// with them, it is loaded without them and only their check fails.
const PARTS: [(&str, &[&str]); 2] = [
    ("policy", &["GATEHOUSE_POLICY_FILE"]),
    ("tls", &["GATEHOUSE_TLS_CERT_FILE", "GATEHOUSE_TLS_KEY_FILE", "GATEHOUSE_TLS_CLIENT_CA_FILE"]),
];

/// How long each network check may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Certificates must stay valid at least this long.
const CERTIFICATE_MARGIN_DAYS: i64 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Not configured, or not checkable because an earlier check failed.
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub check: String,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Finding {
    pub fn new(check: &str, status: Status, message: impl Into<String>, hint: Option<&str>) -> Finding {
        Finding { check: check.to_owned(), status, message: message.into(), hint: hint.map(str::to_owned) }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// No check failed.
    pub ok: bool,
    pub checks: Vec<Finding>,
}

impl Report {
    /// One line per check: verdict, name, what was found, and a hint.
    pub fn text(&self) -> String {
        let width = self.checks.iter().map(|f| f.check.len()).max().unwrap_or(0);
        let mut out = String::new();
        for f in &self.checks {
            let hint = f.hint.as_deref().map(|h| format!(" (fix: {h})")).unwrap_or_default();
            out.push_str(&format!("{:<4}  {:<width$}  {}{hint}\n", f.status.label(), f.check, f.message));
        }
        let failed = self.checks.iter().filter(|f| f.status == Status::Fail).count();
        let warned = self.checks.iter().filter(|f| f.status == Status::Warn).count();
        out.push_str(&match (failed, warned) {
            (0, 0) => "all checks passed\n".to_owned(),
            (0, w) => format!("no check failed; {w} warning(s)\n"),
            (f, w) => format!("{f} check(s) failed, {w} warning(s)\n"),
        });
        out
    }
}

/// Runs every check for the configuration from `file` and the environment,
/// and, given an Envoy bootstrap, the Envoy checks.
pub async fn run(file: Option<&Path>, envoy_file: Option<&Path>) -> Report {
    run_with(file, &|name| std::env::var(name).ok(), envoy_file).await
}

pub async fn run_with(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>, envoy_file: Option<&Path>) -> Report {
    let mut checks = Vec::new();
    let mut policy = None;
    let mut broken = None;
    let config = match Config::load_with(file, env) {
        Ok(config) => {
            checks.push(Finding::new("configuration", Status::Ok, loaded_from(file), None));
            match config.compile_policy() {
                Ok(compiled) => {
                    checks.push(policy_loaded(&config, compiled.rules().len()));
                    policy = Some(compiled);
                }
                Err(e) => checks.push(policy_refused(&e.to_string())),
            }
            Some(config)
        }
        Err(e) => {
            // A policy or TLS file that does not load stops the whole
            // configuration: try again without it, to check everything else.
            let retry = PARTS.iter().find_map(|(part, vars)| {
                if !vars.iter().any(|v| env(v).is_some()) {
                    return None;
                }
                let without = |name: &str| if vars.contains(&name) { None } else { env(name) };
                Config::load_with(file, &without).ok().map(|config| (*part, config))
            });
            match retry {
                Some((part, config)) => {
                    checks.push(Finding::new("configuration", Status::Ok, loaded_from(file), None));
                    checks.push(match part {
                        "policy" => policy_refused(&e.to_string()),
                        _ => tls_refused(&e.to_string()),
                    });
                    broken = Some(part);
                    Some(config)
                }
                None => {
                    checks.push(Finding::new(
                        "configuration",
                        Status::Fail,
                        e.to_string(),
                        Some("fix the named setting; `gatehouse serve` refuses to start with it"),
                    ));
                    None
                }
            }
        }
    };
    let Some(config) = config else {
        for name in ["database", "redis", "openid providers", "tls", "session tokens"] {
            checks.push(Finding::new(name, Status::Skip, "the configuration does not load", None));
        }
        return finish(checks);
    };
    checks.push(database(&config).await);
    checks.push(redis(&config).await);
    checks.extend(providers(&config).await);
    if broken != Some("tls") {
        checks.extend(tls(&config));
    }
    checks.push(session_tokens(&config));
    if let Some(path) = envoy_file {
        checks.extend(envoy_checks(&config, policy.as_ref(), path));
    }
    finish(checks)
}

fn finish(checks: Vec<Finding>) -> Report {
    Report { ok: checks.iter().all(|f| f.status != Status::Fail), checks }
}

fn loaded_from(file: Option<&Path>) -> String {
    match file {
        Some(f) => format!("{} and the environment load", f.display()),
        None => "the environment loads (no config file)".to_owned(),
    }
}

fn policy_loaded(config: &Config, rules: usize) -> Finding {
    let from = match config.policy_source() {
        Some(path) => path.display().to_string(),
        None => "the built-in table".to_owned(),
    };
    Finding::new("policy", Status::Ok, format!("{rules} rules from {from}"), None)
}

fn policy_refused(error: &str) -> Finding {
    Finding::new(
        "policy",
        Status::Fail,
        error,
        Some("fix the route table; a running gatehouse keeps its last good table and refuses this one"),
    )
}

async fn database(config: &Config) -> Finding {
    const NAME: &str = "database";
    let shown = redact_url(config.database_url.as_str());
    let status =
        match tokio::time::timeout(TIMEOUT, crate::store::schema_status(config.database_url.as_str(), TIMEOUT)).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Finding::new(
                    NAME,
                    Status::Fail,
                    format!("{shown}: {e:#}"),
                    Some("check DATABASE_URL, that the server runs and accepts this user and password"),
                );
            }
            Err(_) => {
                return Finding::new(
                    NAME,
                    Status::Fail,
                    format!("{shown}: no answer in {TIMEOUT:?}"),
                    Some("check the host and port, and any firewall in between"),
                );
            }
        };
    let auto = config.auto_migrate;
    let (how, hint) = if auto {
        (
            Status::Warn,
            "`gatehouse serve` applies them at start (GATEHOUSE_AUTO_MIGRATE=true), or run `gatehouse migrate`",
        )
    } else {
        (Status::Fail, "run `gatehouse migrate` (GATEHOUSE_AUTO_MIGRATE is off)")
    };
    if status.missing_file {
        let hint = if auto {
            "`gatehouse serve` creates and migrates it at start, or run `gatehouse migrate`"
        } else {
            "run `gatehouse migrate` to create it (GATEHOUSE_AUTO_MIGRATE is off)"
        };
        return Finding::new(NAME, how, format!("{shown}: the file does not exist yet"), Some(hint));
    }
    if !status.broken.is_empty() {
        return Finding::new(
            NAME,
            Status::Fail,
            format!("{shown}: migrations {:?} failed or differ from this build's", status.broken),
            Some("restore the migration files this database was built with, or rebuild the database"),
        );
    }
    if !status.unknown.is_empty() {
        return Finding::new(
            NAME,
            Status::Fail,
            format!("{shown}: migrated by a newer gatehouse (versions {:?} unknown here)", status.unknown),
            Some("run the gatehouse version that migrated it"),
        );
    }
    if !status.pending.is_empty() {
        return Finding::new(
            NAME,
            how,
            format!("{shown}: {} of {} migrations pending ({})", status.pending.len(), status.known, status.pending[0]),
            Some(hint),
        );
    }
    Finding::new(NAME, Status::Ok, format!("{shown}: reachable, all {} migrations applied", status.known), None)
}

async fn redis(config: &Config) -> Finding {
    const NAME: &str = "redis";
    let Some(url) = &config.redis_url else {
        return Finding::new(NAME, Status::Skip, "REDIS_URL is not set: rate limits are per process", None);
    };
    let shown = redact_url(url.expose());
    match tokio::time::timeout(TIMEOUT, redis_probe(url.expose())).await {
        Ok(Ok(found)) => Finding::new(NAME, Status::Ok, format!("{shown}: {found}"), None),
        Ok(Err((error, hint))) => Finding::new(NAME, Status::Fail, format!("{shown}: {error}"), Some(hint)),
        Err(_) => Finding::new(
            NAME,
            Status::Fail,
            format!("{shown}: no answer in {TIMEOUT:?}"),
            Some("check the addresses in REDIS_URL and that the servers run"),
        ),
    }
}

/// What Redis says, or the error and a hint.
async fn redis_probe(url: &str) -> Result<String, (String, &'static str)> {
    use crate::redis_target::RedisTarget;
    let target = RedisTarget::parse(url).map_err(|e| {
        (e, "REDIS_URL is redis://, rediss://, redis+cluster://host1,host2 or redis+sentinel://sentinels/SERVICE")
    })?;
    let unreachable = match &target {
        RedisTarget::Single(_) => "check the address and password, and that redis-server runs",
        RedisTarget::Cluster { .. } => {
            "check that the seed nodes run and belong to a cluster (redis-cli --cluster check)"
        }
        RedisTarget::Sentinel(_) => "check that the sentinels run and monitor SERVICE, and the data nodes' password",
    };
    let mut conn = target.connect().await.map_err(|e| (format!("cannot connect: {e}"), unreachable))?;
    let pong: String =
        redis::cmd("PING").query_async(&mut conn).await.map_err(|e| (format!("PING failed: {e}"), unreachable))?;
    match &target {
        RedisTarget::Cluster { .. } => {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .map_err(|e| (format!("CLUSTER INFO failed: {e}"), unreachable))?;
            let field = |k: &str| {
                info.lines().find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(':'))).unwrap_or("?").trim()
            };
            if field("cluster_state") != "ok" {
                return Err((
                    format!("cluster_state is {}", field("cluster_state")),
                    "every slot needs a primary: redis-cli --cluster fix",
                ));
            }
            Ok(format!("cluster of {} nodes, state ok, {pong}", field("cluster_known_nodes")))
        }
        _ => {
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query_async(&mut conn)
                .await
                .map_err(|e| (format!("ROLE failed: {e}"), unreachable))?;
            let role = match role.first() {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(redis::Value::SimpleString(s)) => s.clone(),
                _ => "unknown".to_owned(),
            };
            if role != "master" {
                return Err((
                    format!("the server is a {role}: rate limits write to Redis"),
                    "point REDIS_URL at the primary, or use redis+sentinel:// to follow failovers",
                ));
            }
            let kind = if matches!(target, RedisTarget::Sentinel(_)) {
                "primary found through the sentinels"
            } else {
                "primary"
            };
            Ok(format!("{kind}, {pong}"))
        }
    }
}

async fn providers(config: &Config) -> Vec<Finding> {
    if config.oidc.is_empty() {
        return vec![Finding::new("openid providers", Status::Skip, "none configured", None)];
    }
    let providers = crate::authn::fetch::HttpFetch::new().and_then(|http| {
        crate::authn::oidc::Providers::new(
            config.oidc.clone(),
            config.oidc_allow_insecure_http,
            std::sync::Arc::new(http),
        )
    });
    let providers = match providers {
        Ok(p) => p,
        Err(e) => {
            return vec![Finding::new(
                "openid providers",
                Status::Fail,
                e.to_string(),
                Some("issuers must be https:// (OIDC_ALLOW_INSECURE_HTTP=true only for development)"),
            )];
        }
    };
    let mut out = Vec::new();
    for issuer in providers.all() {
        let c = issuer.config();
        let name = format!("openid {}", c.name);
        out.push(match tokio::time::timeout(TIMEOUT * 2, issuer.refresh()).await {
            Ok(Ok(0)) => Finding::new(
                &name,
                Status::Fail,
                format!("{}: the JWKS holds no usable signing key", c.issuer_url),
                Some("the provider must publish its asymmetric signing keys (RS*, PS*, ES*, EdDSA)"),
            ),
            Ok(Ok(keys)) => {
                Finding::new(&name, Status::Ok, format!("{}: discovery and {keys} signing key(s) loaded", c.issuer_url), None)
            }
            Ok(Err(e)) => Finding::new(
                &name,
                Status::Fail,
                format!("{}: {e}", c.issuer_url),
                Some("check OIDC_ISSUER_URL against the issuer in its /.well-known/openid-configuration, and that it answers from here"),
            ),
            Err(_) => Finding::new(
                &name,
                Status::Fail,
                format!("{}: no answer in {:?}", c.issuer_url, TIMEOUT * 2),
                Some("check that the provider is reachable from here (proxies, firewalls)"),
            ),
        });
    }
    out
}

fn session_tokens(config: &Config) -> Finding {
    const NAME: &str = "session tokens";
    let jwt = &config.jwt;
    if jwt.private_key_file.is_none() && jwt.secret.is_none() {
        return Finding::new(
            NAME,
            Status::Warn,
            "JWT_SECRET is not set: tokens are signed with a per-process key, lost on restart and refused by other replicas",
            Some("set JWT_SECRET (32+ random characters, the same on every replica) or JWT_PRIVATE_KEY_FILE"),
        );
    }
    match crate::app::jwt_keys(jwt) {
        Ok(_) => Finding::new(NAME, Status::Ok, format!("{:?} signing key loads", jwt.algorithm), None),
        Err(e) => Finding::new(
            NAME,
            Status::Fail,
            format!("{e:#}"),
            Some("JWT_PRIVATE_KEY_FILE must be a PKCS#8 PEM key of the JWT_ALGORITHM's type"),
        ),
    }
}

fn envoy_checks(config: &Config, policy: Option<&crate::policy::Policy>, path: &Path) -> Vec<Finding> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![Finding::new("envoy", Status::Fail, format!("{}: {e}", path.display()), None)],
    };
    let parsed = match envoy::parse(&text) {
        Ok(v) => v,
        Err(e) => {
            return vec![Finding::new(
                "envoy",
                Status::Fail,
                format!("{}: {e}", path.display()),
                Some("the file must be Envoy's bootstrap in YAML or JSON"),
            )];
        }
    };
    let Some(policy) = policy else {
        return vec![Finding::new("envoy", Status::Skip, "the policy does not load: nothing to compare", None)];
    };
    envoy::check(&parsed, policy, config.http_addr.port())
}
