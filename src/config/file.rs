//! The TOML file's shape (unknown keys are errors) and how it is laid over
//! the defaults.

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
}

/// One `[[oidc]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileOidc {
    pub(super) name: Option<String>,
    pub(super) issuer_url: String,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<String>,
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
    pub(super) viewer: Vec<String>,
    pub(super) operator: Vec<String>,
    pub(super) admin: Vec<String>,
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
    pub(super) read_url: Option<String>,
    pub(super) max_connections: Option<u32>,
    pub(super) statement_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    pub(super) require_auth: Option<bool>,
    pub(super) public_paths: Option<Vec<String>>,
    pub(super) strip_credentials: Option<bool>,
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

impl Config {
    pub(super) fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
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

    pub(super) fn apply_file_accounts(
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
}
