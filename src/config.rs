//! One validated configuration, built from (later wins): defaults, an optional
//! TOML file (`--config` / `GATEHOUSE_CONFIG`), environment variables, and
//! command-line flags. Every invalid value fails start-up with a message that
//! names the variable or key.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::policy::PathPattern;
use crate::store::cache::CacheSettings;

#[derive(Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub auto_migrate: bool,
    pub database_timeout: Duration,
    pub require_auth: bool,
    pub public_paths: Vec<PathPattern>,
    /// Remove `authorization` / `x-api-key` before the request goes upstream.
    pub strip_credentials: bool,
    pub cache: CacheSettings,
    pub usage_flush_interval: Duration,
    /// Time between reporting NOT_SERVING and closing the listeners on shutdown.
    pub shutdown_delay: Duration,
    pub log_json: bool,
}

pub const DEFAULT_PUBLIC_PATHS: &[&str] = &["/healthz", "/auth/login", "/auth/register"];

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 9191)),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            database_url: "sqlite://gatehouse.db".to_owned(),
            auto_migrate: true,
            database_timeout: Duration::from_secs(2),
            require_auth: true,
            public_paths: DEFAULT_PUBLIC_PATHS.iter().filter_map(|p| PathPattern::parse(p).ok()).collect(),
            strip_credentials: true,
            cache: CacheSettings {
                capacity: 100_000,
                ttl: Duration::from_secs(30),
                negative_ttl: Duration::from_secs(5),
            },
            usage_flush_interval: Duration::from_secs(10),
            shutdown_delay: Duration::ZERO,
            log_json: false,
        }
    }
}

/// Hides the database password.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("database_url", &redact_url(&self.database_url))
            .field("auto_migrate", &self.auto_migrate)
            .field("require_auth", &self.require_auth)
            .field("public_paths", &self.public_paths)
            .field("strip_credentials", &self.strip_credentials)
            .field("cache", &self.cache)
            .field("shutdown_delay", &self.shutdown_delay)
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
    database: FileDatabase,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    cache: FileCache,
    #[serde(default)]
    log: FileLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    shutdown_delay_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    url: Option<String>,
    auto_migrate: Option<bool>,
    timeout_ms: Option<u64>,
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
    usage_flush_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
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
        let mut config = Config::default();
        if let Some(path) = file {
            config.apply_file(path)?;
        }
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let file_error = |reason: String| ConfigError::File { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        set(&mut self.grpc_addr, file.server.grpc_addr);
        set(&mut self.http_addr, file.server.http_addr);
        set(&mut self.shutdown_delay, file.server.shutdown_delay_seconds.map(Duration::from_secs));
        set(&mut self.database_url, file.database.url);
        set(&mut self.auto_migrate, file.database.auto_migrate);
        set(&mut self.database_timeout, file.database.timeout_ms.map(Duration::from_millis));
        set(&mut self.require_auth, file.auth.require_auth);
        set(&mut self.strip_credentials, file.auth.strip_credentials);
        if let Some(paths) = file.auth.public_paths {
            self.public_paths = parse_patterns("auth.public_paths", &paths)?;
        }
        set(&mut self.cache.capacity, file.cache.capacity);
        set(&mut self.cache.ttl, file.cache.ttl_seconds.map(Duration::from_secs));
        set(&mut self.cache.negative_ttl, file.cache.negative_ttl_seconds.map(Duration::from_secs));
        set(&mut self.usage_flush_interval, file.cache.usage_flush_seconds.map(Duration::from_secs));
        if let Some(format) = file.log.format {
            self.log_json = log_json("log.format", &format)?;
        }
        Ok(())
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let secs = |name: &str| parse_var::<u64>(env, name).map(|v| v.map(Duration::from_secs));
        set(&mut self.grpc_addr, parse_var(env, "GATEHOUSE_GRPC_ADDR")?);
        set(&mut self.http_addr, parse_var(env, "GATEHOUSE_HTTP_ADDR")?);
        set(&mut self.shutdown_delay, secs("GATEHOUSE_SHUTDOWN_DELAY_SECONDS")?);
        set(&mut self.database_url, parse_var(env, "DATABASE_URL")?);
        set(&mut self.auto_migrate, parse_var::<Flag>(env, "GATEHOUSE_AUTO_MIGRATE")?.map(|f| f.0));
        set(
            &mut self.database_timeout,
            parse_var::<u64>(env, "GATEHOUSE_DATABASE_TIMEOUT_MS")?.map(Duration::from_millis),
        );
        set(&mut self.require_auth, parse_var::<Flag>(env, "REQUIRE_AUTH")?.map(|f| f.0));
        set(&mut self.strip_credentials, parse_var::<Flag>(env, "GATEHOUSE_STRIP_CREDENTIALS")?.map(|f| f.0));
        if let Some(list) = parse_var::<String>(env, "GATEHOUSE_PUBLIC_PATHS")? {
            let items: Vec<String> = list.split(',').map(str::to_owned).collect();
            self.public_paths = parse_patterns("GATEHOUSE_PUBLIC_PATHS", &items)?;
        }
        set(&mut self.cache.capacity, parse_var(env, "GATEHOUSE_CACHE_CAPACITY")?);
        set(&mut self.cache.ttl, secs("GATEHOUSE_CACHE_TTL_SECONDS")?);
        set(&mut self.cache.negative_ttl, secs("GATEHOUSE_NEGATIVE_CACHE_TTL_SECONDS")?);
        set(&mut self.usage_flush_interval, secs("GATEHOUSE_USAGE_FLUSH_SECONDS")?);
        if let Some(format) = parse_var::<String>(env, "GATEHOUSE_LOG_FORMAT")? {
            self.log_json = log_json("GATEHOUSE_LOG_FORMAT", &format)?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.database_url;
        if !["sqlite:", "postgres:", "postgresql:"].iter().any(|s| url.starts_with(s)) {
            return Err(invalid("DATABASE_URL", &redact_url(url), "must start with sqlite: or postgres:"));
        }
        if self.cache.capacity == 0 {
            return Err(invalid("GATEHOUSE_CACHE_CAPACITY", "0", "must be at least 1"));
        }
        if self.usage_flush_interval.is_zero() {
            return Err(invalid("GATEHOUSE_USAGE_FLUSH_SECONDS", "0", "must be at least 1"));
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
        assert_eq!(c.public_paths, vec![PathPattern::Exact("/x".into()), PathPattern::Prefix("/docs".into())]);
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
    }

    #[test]
    fn the_example_file_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gatehouse.example.toml");
        let c = Config::load_with(Some(&path), &|_| None).unwrap();
        let d = Config::default();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn debug_hides_the_database_password() {
        let c = load(&[("DATABASE_URL", "postgres://gate:s3cret@db/gate")], None).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("gate:***@db"), "{shown}");
    }
}
