//! The one line start-up logs: what serves where, on which backends, for
//! which providers, under how many rules. No secret, no URL credentials, no
//! email address.

use std::fmt;
use std::net::SocketAddr;

use super::Config;
use crate::policy::{Access, Mode};

/// What an operator reads in the log when Gatehouse starts.
#[derive(Debug)]
pub struct Summary {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin_grpc: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    /// `sqlite` or `postgres`, and whether a read replica serves lookups.
    pub database: String,
    /// `in-process` or `redis (single|cluster|sentinel)`.
    pub limits: String,
    /// Provider names, `github` included; empty: none.
    pub providers: Vec<String>,
    pub rules: usize,
    pub default_access: Access,
    pub mode: Mode,
    pub require_auth: bool,
    /// `off`, `tls` or `mtls`.
    pub tls: &'static str,
    pub console: bool,
    pub registration: bool,
    /// Model prices configured for spend budgets.
    pub prices: usize,
}

impl Config {
    /// The start-up summary, with the listeners' bound addresses and the
    /// number of rules of the compiled policy.
    pub fn summary(&self, grpc: SocketAddr, http: SocketAddr, rules: usize) -> Summary {
        let database = match (self.database_url.split(':').next(), self.database_read_url.is_some()) {
            (Some("sqlite"), _) => "sqlite".to_owned(),
            (_, false) => "postgres".to_owned(),
            (_, true) => "postgres, read replica".to_owned(),
        };
        let limits = match &self.redis_url {
            None => "in-process".to_owned(),
            Some(url) => match crate::redis_target::RedisTarget::parse(url.expose()) {
                Ok(target) => format!("redis ({})", target.kind()),
                Err(_) => "redis".to_owned(),
            },
        };
        let mut providers: Vec<String> = self.oidc.iter().map(|o| o.name.clone()).collect();
        if self.github.is_some() {
            providers.push("github".to_owned());
        }
        let tls = match &self.tls {
            None => "off",
            Some(files) if files.client_ca_file.is_some() => "mtls",
            Some(_) => "tls",
        };
        Summary {
            grpc,
            http,
            admin_grpc: self.admin_grpc_addr,
            metrics: self.metrics_addr,
            database,
            limits,
            providers,
            rules,
            default_access: self.policy.default,
            mode: self.policy.mode,
            require_auth: self.require_auth,
            tls,
            console: self.console,
            registration: self.accounts.allow_registration,
            prices: self.budgets.prices.len(),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gRPC {} (Check", self.grpc)?;
        match self.admin_grpc {
            Some(addr) => write!(f, "; admin API on {addr})")?,
            None => write!(f, ", admin API)")?,
        }
        write!(f, ", HTTP {}", self.http)?;
        if let Some(addr) = self.metrics {
            write!(f, ", metrics {addr}")?;
        }
        write!(f, "; database {}; limits and budgets {}", self.database, self.limits)?;
        match self.providers.is_empty() {
            true => write!(f, "; no identity providers")?,
            false => write!(f, "; providers {}", self.providers.join(", "))?,
        }
        let mode = match self.mode {
            Mode::Enforce => "enforce",
            Mode::ReportOnly => "report only",
        };
        let default = match self.default_access {
            Access::Public => "public",
            Access::Authenticated => "authenticated",
            Access::Deny => "deny",
        };
        write!(f, "; policy {} rules, default {default}, {mode}", self.rules)?;
        if !self.require_auth {
            write!(f, ", anonymous callers allowed (REQUIRE_AUTH=false)")?;
        }
        write!(f, "; {} model prices", self.prices)?;
        write!(f, "; TLS {}", self.tls)?;
        write!(f, "; console {}", if self.console { "on" } else { "off" })?;
        write!(f, "; registration {}", if self.registration { "open" } else { "closed" })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn the_summary_names_no_secret_and_no_email() {
        let mut c = Config {
            database_url: super::super::DatabaseUrl(
                "postgres://gatehouse:db-password-1@db.internal:5432/gatehouse".into(),
            ),
            database_read_url: Some(Secret::new("postgres://reader:replica-password-2@replica:5432/gatehouse")),
            redis_url: Some(Secret::new("redis://:redis-password-3@cache:6379")),
            bootstrap_admin: Some(("root@example.com".into(), Secret::new("admin-password-4"))),
            ..Config::default()
        };
        c.jwt.secret = Some(Secret::new("jwt-secret-that-is-long-enough-5"));
        let line = c.summary("127.0.0.1:9191".parse().unwrap(), "127.0.0.1:8080".parse().unwrap(), 12).to_string();
        for secret in ["password", "secret", "root@", "example.com", "db.internal", "reader"] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
        assert!(line.contains("gRPC 127.0.0.1:9191"), "{line}");
        assert!(line.contains("database postgres, read replica"), "{line}");
        assert!(line.contains("limits and budgets redis (single)"), "{line}");
        assert!(line.contains("policy 12 rules"), "{line}");
        assert!(line.len() < 400, "one short line: {line}");
    }
}
