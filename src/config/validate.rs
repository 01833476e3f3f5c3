//! Checks across settings, once everything is layered: every invalid
//! combination fails start-up with a message naming the setting.

use super::*;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        if self.redis_timeout.is_zero() {
            return Err(invalid("GATEHOUSE_REDIS_TIMEOUT_MS", "0", "must be at least 1"));
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
        public_url(&self.public_url)?;
        for issuer in &self.oidc {
            if !issuer.issuer_url.starts_with("https://") && !issuer.issuer_url.starts_with("http://") {
                return Err(invalid("OIDC_ISSUER_URL", &redact_url(&issuer.issuer_url), "must be an http(s) URL"));
            }
            crate::authn::oidc::check_url(&issuer.issuer_url, insecure)
                .map_err(|e| invalid("OIDC_ISSUER_URL", &redact_url(&issuer.issuer_url), e))?;
            let same_name = self.oidc.iter().filter(|i| i.name == issuer.name).count() > 1;
            if same_name || (issuer.name == crate::authn::login::GITHUB && self.github.is_some()) {
                let reason = "two providers have this name: give each [[oidc]] entry its own `name`";
                return Err(invalid("oidc.name", &issuer.name, reason));
            }
            if issuer.audiences.is_empty() && issuer.client_id.is_none() {
                return Err(invalid("OIDC_AUDIENCE", "", "set OIDC_AUDIENCE or OIDC_CLIENT_ID for each issuer"));
            }
        }
        if let Some(gh) = &self.github {
            for (name, url) in [("GITHUB_OAUTH_URL", &gh.oauth_url), ("GITHUB_API_URL", &gh.api_url)] {
                crate::authn::oidc::check_url(url, insecure).map_err(|e| invalid(name, &redact_url(url), e))?;
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

    pub(super) fn validate_jwt(&self) -> Result<(), ConfigError> {
        let jwt = &self.jwt;
        if jwt.algorithm == Algorithm::HS256 {
            let short = jwt.secret.as_ref().is_some_and(|s| s.expose().len() < crate::authn::jwt::MIN_SECRET_LEN);
            if short && self.require_auth {
                return Err(invalid("JWT_SECRET", "[redacted]", "must be at least 32 bytes"));
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

/// `GATEHOUSE_PUBLIC_URL`: an http(s) origin, optionally with a path; login
/// callbacks are appended to it, so no query, fragment or credentials.
fn public_url(value: &str) -> Result<(), ConfigError> {
    let name = "GATEHOUSE_PUBLIC_URL";
    let url = url::Url::parse(value).map_err(|e| invalid(name, &redact_url(value), e))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(name, &redact_url(value), "must be an http(s) URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(name, &redact_url(value), "must carry no user name, password, query or fragment"));
    }
    Ok(())
}
