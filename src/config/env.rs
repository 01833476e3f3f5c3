//! Environment variables, laid over the file: the seed-compatible names
//! (`JWT_SECRET`, `REQUIRE_AUTH`, `DATABASE_URL`, ...) and `GATEHOUSE_*`.

use super::*;

impl Config {
    pub(super) fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
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

    pub(super) fn apply_env_accounts(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
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
}
