//! The TOML file's shape (unknown keys are errors) and how it is laid over
//! the defaults.

use super::overlay::Overlay;
use super::*;

/// The TOML file's shape. Unknown keys are errors, so a typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) server: FileServer,
    #[serde(default)]
    pub(super) tls: FileTls,
    #[serde(default)]
    pub(super) database: FileDatabase,
    #[serde(default)]
    pub(super) auth: FileAuth,
    #[serde(default)]
    pub(super) cache: FileCache,
    #[serde(default)]
    pub(super) log: FileLog,
    #[serde(default)]
    pub(super) usage: FileUsage,
    #[serde(default)]
    pub(super) jwt: FileJwt,
    #[serde(default)]
    pub(super) accounts: FileAccounts,
    #[serde(default)]
    pub(super) login: FileLogin,
    pub(super) roles: Option<FileRoles>,
    #[serde(default)]
    pub(super) oidc: Vec<FileOidc>,
    pub(super) policy: Option<PolicySettings>,
    pub(super) routes: Option<Vec<RouteSpec>>,
    #[serde(default)]
    pub(super) budgets: budgets::FileBudgets,
    #[serde(default)]
    pub(super) redis: FileRedis,
    #[serde(default)]
    pub(super) limits: FileLimits,
    pub(super) github: Option<FileGithub>,
}

/// `[redis]`: shared limits, budgets, revocations and cache invalidation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRedis {
    pub(super) url: Option<Secret>,
    pub(super) timeout_ms: Option<u64>,
}

/// `[limits]`: `REQUESTS/PERIOD` (`100/60s`), or `off`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    pub(super) default: Option<String>,
    pub(super) anonymous: Option<String>,
    pub(super) register: Option<String>,
    pub(super) login: Option<String>,
    pub(super) refresh: Option<String>,
}

/// `[github]`: GitHub OAuth login.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGithub {
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<Secret>,
    pub(super) oauth_url: Option<String>,
    pub(super) api_url: Option<String>,
    #[serde(default)]
    pub(super) allowed_orgs: Vec<String>,
}

/// One `[[oidc]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileOidc {
    pub(super) name: Option<String>,
    pub(super) issuer_url: String,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<Secret>,
    #[serde(default)]
    pub(super) audiences: Vec<String>,
    pub(super) role_claim: Option<String>,
    pub(super) group_claim: Option<String>,
    #[serde(default)]
    pub(super) role_map: std::collections::HashMap<String, String>,
    pub(super) default_role: Option<String>,
    pub(super) provision_users: Option<bool>,
    pub(super) leeway_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileJwt {
    pub(super) algorithm: Option<String>,
    pub(super) secret: Option<Secret>,
    pub(super) private_key_file: Option<std::path::PathBuf>,
    pub(super) issuer: Option<String>,
    pub(super) audience: Option<String>,
    pub(super) expiry_seconds: Option<i64>,
    pub(super) leeway_seconds: Option<i64>,
    pub(super) refresh_grace_seconds: Option<i64>,
    pub(super) session_max_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAccounts {
    pub(super) allow_registration: Option<bool>,
    pub(super) allowed_email_domains: Option<Vec<String>>,
    pub(super) default_role: Option<String>,
    pub(super) password_min_length: Option<usize>,
    pub(super) password_hash_concurrency: Option<usize>,
    pub(super) password_hash_queue: Option<usize>,
    pub(super) password_hash_wait_ms: Option<u64>,
    /// Created as an admin at start-up when no user has this email.
    pub(super) bootstrap_admin_email: Option<String>,
    pub(super) bootstrap_admin_password: Option<Secret>,
    pub(super) trusted_proxy_hops: Option<usize>,
    pub(super) max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLogin {
    pub(super) max_failures_per_account: Option<u32>,
    pub(super) max_failures_per_ip: Option<u32>,
    pub(super) lockout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoles {
    pub(super) viewer: Option<Vec<String>>,
    pub(super) operator: Option<Vec<String>>,
    pub(super) admin: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServer {
    pub(super) grpc_addr: Option<SocketAddr>,
    pub(super) admin_grpc_addr: Option<SocketAddr>,
    pub(super) http_addr: Option<SocketAddr>,
    pub(super) metrics_addr: Option<SocketAddr>,
    pub(super) shutdown_delay_seconds: Option<u64>,
    pub(super) console: Option<bool>,
    pub(super) header_timeout_ms: Option<u64>,
    pub(super) request_timeout_ms: Option<u64>,
    /// The URL browsers reach the HTTP API at (login callbacks).
    pub(super) public_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTls {
    pub(super) cert_file: Option<std::path::PathBuf>,
    pub(super) key_file: Option<std::path::PathBuf>,
    pub(super) client_ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDatabase {
    pub(super) url: Option<String>,
    pub(super) auto_migrate: Option<bool>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) read_url: Option<Secret>,
    pub(super) max_connections: Option<u32>,
    pub(super) statement_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    pub(super) require_auth: Option<bool>,
    pub(super) public_paths: Option<Vec<String>>,
    pub(super) strip_credentials: Option<bool>,
    /// Accept plain-http provider URLs (development only).
    pub(super) oidc_allow_insecure_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCache {
    pub(super) capacity: Option<u64>,
    pub(super) ttl_seconds: Option<u64>,
    pub(super) negative_ttl_seconds: Option<u64>,
    pub(super) stale_seconds: Option<u64>,
    pub(super) lookup_timeout_ms: Option<u64>,
    pub(super) usage_flush_seconds: Option<u64>,
    pub(super) revocation_poll_seconds: Option<u64>,
    pub(super) change_poll_ms: Option<u64>,
}

/// `[usage]`: metered LLM usage.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUsage {
    pub(super) flush_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLog {
    pub(super) format: Option<String>,
    pub(super) emails: Option<bool>,
}

pub(super) fn file_issuer(index: usize, o: FileOidc) -> Result<IssuerConfig, ConfigError> {
    let key = |field: &str| format!("oidc[{index}].{field}");
    let mut issuer = IssuerConfig::new(&o.issuer_url);
    issuer.name = o.name.unwrap_or_else(|| if index == 0 { "default".into() } else { format!("oidc{index}") });
    issuer.client_id = o.client_id;
    issuer.client_secret = o.client_secret;
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

impl Config {
    /// Lays the file's settings (the environment's included) over `self`.
    /// Paths in the file are relative to `dir`, the file's directory.
    pub(super) fn apply_file(&mut self, mut file: FileConfig, dir: &Path, names: &Overlay) -> Result<(), ConfigError> {
        // Relative to the file, like every path a file names.
        file.jwt.private_key_file = file.jwt.private_key_file.map(|f| dir.join(f));
        let FileConfig { server, tls, database, auth, cache, log, usage, jwt, accounts, login, roles, .. } = file;
        set(&mut self.grpc_addr, server.grpc_addr);
        if server.admin_grpc_addr.is_some() {
            self.admin_grpc_addr = server.admin_grpc_addr;
        }
        set(&mut self.http_addr, server.http_addr);
        self.tls_parts(
            tls.cert_file.map(|f| dir.join(f)),
            tls.key_file.map(|f| dir.join(f)),
            tls.client_ca_file.map(|f| dir.join(f)),
        );
        if server.metrics_addr.is_some() {
            self.metrics_addr = server.metrics_addr;
        }
        set(&mut self.shutdown_delay, server.shutdown_delay_seconds.map(Duration::from_secs));
        set(&mut self.console, server.console);
        set(&mut self.http_header_timeout, server.header_timeout_ms.map(Duration::from_millis));
        set(&mut self.http_request_timeout, server.request_timeout_ms.map(Duration::from_millis));
        set(&mut self.public_url, server.public_url.map(|u| u.trim_end_matches('/').to_owned()));
        set(&mut self.database_url, database.url.map(DatabaseUrl));
        set(&mut self.auto_migrate, database.auto_migrate);
        set(&mut self.database_timeout, database.timeout_ms.map(Duration::from_millis));
        if database.read_url.is_some() {
            self.database_read_url = database.read_url;
        }
        set(&mut self.database_max_connections, database.max_connections);
        set(&mut self.database_statement_timeout, database.statement_timeout_ms.map(Duration::from_millis));
        if file.redis.url.is_some() {
            self.redis_url = file.redis.url;
        }
        set(&mut self.redis_timeout, file.redis.timeout_ms.map(Duration::from_millis));
        set(&mut self.require_auth, auth.require_auth);
        set(&mut self.strip_credentials, auth.strip_credentials);
        if let Some(paths) = auth.public_paths {
            self.public_paths = parse_patterns(&names.of("auth.public_paths"), &paths)?;
        }
        set(&mut self.oidc_allow_insecure_http, auth.oidc_allow_insecure_http);
        set(&mut self.cache.capacity, cache.capacity);
        set(&mut self.cache.ttl, cache.ttl_seconds.map(Duration::from_secs));
        set(&mut self.cache.negative_ttl, cache.negative_ttl_seconds.map(Duration::from_secs));
        set(&mut self.cache.stale_limit, cache.stale_seconds.map(Duration::from_secs));
        set(&mut self.cache.lookup_timeout, cache.lookup_timeout_ms.map(Duration::from_millis));
        set(&mut self.usage_flush_interval, cache.usage_flush_seconds.map(Duration::from_secs));
        set(&mut self.revocation_poll_interval, cache.revocation_poll_seconds.map(Duration::from_secs));
        set(&mut self.change_poll_interval, cache.change_poll_ms.map(Duration::from_millis));
        set(&mut self.metering_flush_interval, usage.flush_ms.map(Duration::from_millis));
        if let Some(format) = log.format {
            self.log_json = log_json(&names.of("log.format"), &format)?;
        }
        set(&mut self.log_emails, log.emails);
        let mut policy = file.policy;
        if let Some(file) = policy.as_mut().and_then(|p| p.file.take()) {
            // Relative to the config file, like any path a config file names.
            self.policy_file = Some(dir.join(file));
        }
        set(&mut self.policy_reload_interval, policy.as_ref().and_then(|p| p.reload_seconds).map(Duration::from_secs));
        file.budgets.apply(&mut self.budgets, names)?;
        self.routes_in_config = file.routes.is_some();
        self.policy.apply(PolicyDocument { policy, routes: file.routes });
        for (i, o) in file.oidc.into_iter().enumerate() {
            self.oidc.push(file_issuer(i, o)?);
        }
        self.apply_limits(file.limits, names)?;
        if let Some(github) = file.github {
            self.apply_github(github, names)?;
        }
        self.apply_file_accounts(jwt, accounts, login, roles, names)
    }

    fn apply_limits(&mut self, limits: FileLimits, names: &Overlay) -> Result<(), ConfigError> {
        for (key, value, slot) in [
            ("limits.default", limits.default, &mut self.default_limit),
            ("limits.anonymous", limits.anonymous, &mut self.anonymous_limit),
            ("limits.register", limits.register, &mut self.register_limit),
            ("limits.login", limits.login, &mut self.login_limit),
            ("limits.refresh", limits.refresh, &mut self.refresh_limit),
        ] {
            match value.as_deref().map(str::trim) {
                None => {}
                Some("off" | "none") => *slot = None,
                Some(v) => *slot = Some(parse_limit(v).map_err(|e| invalid(&names.of(key), v, e))?),
            }
        }
        Ok(())
    }

    fn apply_github(&mut self, github: FileGithub, names: &Overlay) -> Result<(), ConfigError> {
        let (client_id, client_secret) = match (github.client_id, github.client_secret) {
            (Some(id), Some(secret)) => (id, secret),
            (None, None) => return Ok(()),
            _ => {
                let (id, secret) = (names.of("github.client_id"), names.of("github.client_secret"));
                return Err(invalid(&id, "", format!("set both {id} and {secret}")));
            }
        };
        let url =
            |value: Option<String>, default: &str| value.as_deref().unwrap_or(default).trim_end_matches('/').to_owned();
        self.github = Some(GithubConfig {
            client_id,
            client_secret,
            oauth_url: url(github.oauth_url, "https://github.com"),
            api_url: url(github.api_url, "https://api.github.com"),
            allowed_orgs: github_orgs(&names.of("github.allowed_orgs"), &github.allowed_orgs)?,
        });
        Ok(())
    }

    pub(super) fn apply_file_accounts(
        &mut self,
        jwt: FileJwt,
        accounts: FileAccounts,
        login: FileLogin,
        roles: Option<FileRoles>,
        names: &Overlay,
    ) -> Result<(), ConfigError> {
        if let Some(alg) = jwt.algorithm {
            self.jwt.algorithm = parse_algorithm(&names.of("jwt.algorithm"), &alg)?;
        }
        if jwt.secret.as_ref().is_some_and(|s| !s.expose().is_empty()) {
            self.jwt.secret = jwt.secret;
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
            self.accounts.default_role =
                role.parse().map_err(|e| invalid(&names.of("accounts.default_role"), &role, e))?;
        }
        set(&mut self.accounts.password_min_length, accounts.password_min_length);
        let hashing = &mut self.accounts.password_hashing;
        set(&mut hashing.concurrency, accounts.password_hash_concurrency);
        set(&mut hashing.queue, accounts.password_hash_queue);
        set(&mut hashing.max_wait, accounts.password_hash_wait_ms.map(Duration::from_millis));
        match (accounts.bootstrap_admin_email, accounts.bootstrap_admin_password) {
            (Some(email), Some(password)) => self.bootstrap_admin = Some((email, password)),
            (None, None) => {}
            _ => {
                let email = names.of("accounts.bootstrap_admin_email");
                let password = names.of("accounts.bootstrap_admin_password");
                return Err(invalid(&email, "", format!("set both {email} and {password}")));
            }
        }
        set(&mut self.trusted_proxy_hops, accounts.trusted_proxy_hops);
        set(&mut self.max_body_bytes, accounts.max_body_bytes);
        set(&mut self.login_throttle.max_per_account, login.max_failures_per_account);
        set(&mut self.login_throttle.max_per_ip, login.max_failures_per_ip);
        set(&mut self.login_throttle.window, login.lockout_seconds.map(Duration::from_secs));
        if let Some(r) = roles {
            for (key, list, slot) in [
                ("roles.viewer", r.viewer, &mut self.roles.viewer),
                ("roles.operator", r.operator, &mut self.roles.operator),
                ("roles.admin", r.admin, &mut self.roles.admin),
            ] {
                if let Some(list) = list {
                    *slot =
                        PermissionSet::from_names(&list).map_err(|e| invalid(&names.of(key), &list.join(","), e))?;
                }
            }
        }
        Ok(())
    }
}
