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
    assert_eq!(load(&[("GATEHOUSE_REPORT_ONLY", "true")], None).unwrap().policy.mode, crate::policy::Mode::ReportOnly);
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
fn redis_timeout() {
    assert_eq!(load(&[], None).unwrap().redis_timeout, Duration::from_millis(100));
    let c = load(&[("GATEHOUSE_REDIS_TIMEOUT_MS", "40")], Some("[redis]\ntimeout_ms = 500\n")).unwrap();
    assert_eq!(c.redis_timeout, Duration::from_millis(40), "the environment wins");
    let c = load(&[], Some("[redis]\ntimeout_ms = 500\n")).unwrap();
    assert_eq!(c.redis_timeout, Duration::from_millis(500));
    for bad in ["0", "-1", "soon"] {
        let e = load(&[("GATEHOUSE_REDIS_TIMEOUT_MS", bad)], None).unwrap_err().to_string();
        assert!(e.contains("GATEHOUSE_REDIS_TIMEOUT_MS"), "{bad}: {e}");
    }
}

#[test]
fn the_example_file_is_valid_and_matches_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gatehouse.example.toml");
    let mut c = Config::load_with(Some(&path), &|_| None).unwrap();
    assert_eq!(c.config_file.take().as_deref(), Some(path.as_path()));
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

/// Every variable sets a key the file accepts (an unknown key would be
/// refused there), and every key of the example file has a variable.
#[test]
fn every_setting_has_a_file_key_and_a_variable() {
    use super::overlay::{Kind, VARS};
    for var in VARS.iter().filter(|v| !v.key.starts_with("oidc.")) {
        let value = match var.kind {
            Kind::Integer => toml::Value::Integer(1),
            Kind::Flag => toml::Value::Boolean(true),
            Kind::List => toml::Value::Array(vec![]),
            _ => toml::Value::String("x".into()),
        };
        let (table, key) = var.key.split_once('.').unwrap();
        let text = format!("[{table}]\n{key} = {value}\n");
        if let Err(e) = toml::from_str::<file::FileConfig>(&text) {
            assert!(!e.message().contains("unknown field"), "{}: {}", var.name, e.message());
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gatehouse.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut section = String::new();
    for line in text.lines().map(|l| l.trim_start_matches("# ")) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            section = name.trim_matches(|c| c == '[' || c == ']').to_owned();
        } else if let Some((key, _)) = line.split_once(" = ").filter(|(k, _)| !k.contains(' ') && !k.is_empty()) {
            let full = format!("{section}.{key}");
            if section == "roles" || section == "routes" || full == "oidc.issuer_url" || full == "oidc.audiences" {
                if section == "oidc" {
                    assert!(VARS.iter().any(|v| v.key == full), "{full}");
                }
                continue;
            }
            assert!(VARS.iter().any(|v| v.key == full), "{full} has no environment variable");
        }
    }
}

#[test]
fn the_environment_names_the_variable_it_got_wrong() {
    for (name, bad) in [
        ("GATEHOUSE_GRPC_ADDR", "nowhere"),
        ("GATEHOUSE_CACHE_TTL_SECONDS", "-5"),
        ("GATEHOUSE_CONSOLE", "maybe"),
        ("GATEHOUSE_POLICY_DEFAULT", "sometimes"),
        ("GATEHOUSE_LOGIN_RATE_LIMIT", "fast"),
        ("GATEHOUSE_ROLES_VIEWER", "read_models,fly"),
        ("GATEHOUSE_LOG_FORMAT", "xml"),
    ] {
        let e = load(&[(name, bad)], None).unwrap_err().to_string();
        assert!(e.contains(name), "{name}={bad}: {e}");
    }
    // A secret is never echoed, even when it is what is wrong.
    let e = load(&[("JWT_SECRET", "short-but-secret")], None).unwrap_err().to_string();
    assert!(!e.contains("short-but-secret"), "{e}");
}

#[test]
fn settings_once_only_in_the_environment_are_in_the_file_too() {
    let file = "[limits]\nlogin = \"5/60\"\nanonymous = \"off\"\n\n[redis]\nurl = \"redis://cache:6379\"\n\n\
        [github]\nclient_id = \"id\"\nclient_secret = \"s\"\nallowed_orgs = [\"Acme\"]\n\n\
        [accounts]\nbootstrap_admin_email = \"root@example.com\"\nbootstrap_admin_password = \"pw-long-enough-1\"\n\
        password_hash_concurrency = 3\n\n[policy]\nreload_seconds = 0\n\n[roles]\nviewer = [\"read_models\"]\n";
    let c = load(&[], Some(file)).unwrap();
    assert_eq!(c.login_limit.unwrap().requests, 5);
    assert!(c.anonymous_limit.is_none());
    assert_eq!(c.redis_url.unwrap().expose(), "redis://cache:6379");
    assert_eq!(c.github.unwrap().allowed_orgs, ["acme"]);
    assert_eq!(c.bootstrap_admin.unwrap().0, "root@example.com");
    assert_eq!(c.accounts.password_hashing.concurrency, 3);
    assert_eq!(c.policy_reload_interval, Duration::ZERO);
    assert_eq!(c.roles.viewer, PermissionSet::from_names(&["read_models".to_owned()]).unwrap());
    assert_eq!(c.roles.admin, RolePermissions::default().admin, "roles not named keep their default");
    // ...and the environment still wins over the file.
    let c =
        load(&[("GATEHOUSE_LOGIN_RATE_LIMIT", "7/60"), ("GATEHOUSE_POLICY_RELOAD_SECONDS", "9")], Some(file)).unwrap();
    assert_eq!((c.login_limit.unwrap().requests, c.policy_reload_interval.as_secs()), (7, 9));
    let e = load(&[], Some("[github]\nclient_id = \"id\"\n")).unwrap_err().to_string();
    assert!(e.contains("github.client_secret"), "{e}");
}

#[test]
fn the_environment_wins_over_a_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[policy]\ndefault = \"public\"\nmode = \"enforce\"\n").unwrap();
    let vars = HashMap::from([
        ("GATEHOUSE_POLICY_FILE".to_owned(), policy.display().to_string()),
        ("GATEHOUSE_REPORT_ONLY".to_owned(), "true".to_owned()),
    ]);
    let c = Config::load_with(None, &|k| vars.get(k).cloned()).unwrap();
    assert_eq!(c.policy.default, crate::policy::Access::Public, "the policy file's default");
    assert_eq!(c.policy.mode, crate::policy::Mode::ReportOnly, "the environment's mode");
    std::fs::write(&policy, "[policy]\nreload_seconds = 1\n").unwrap();
    assert!(Config::load_with(None, &|k| vars.get(k).cloned()).is_err(), "reload_seconds is not a policy-file key");
}

#[test]
fn a_broken_line_in_the_file_is_named_not_shown() {
    // A secret with a stray backslash, a wrong type and trailing junk: the
    // error says where, never what the line holds.
    for text in [
        "[jwt]\nsecret = \"Zk8\\q2pLmN0vB7xR4tY1uW9sE6dC3fG5hJ\"\n",
        "[database]\nurl = [\"postgres://u:DBPASS6@h/db\"]\n",
        "[redis]\nurl = \"redis://:Zk8q2pLmN0vB7@h\" x\n",
    ] {
        let e = load(&[], Some(text)).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        for secret in ["Zk8", "DBPASS6"] {
            assert!(!e.contains(secret), "{e}");
        }
    }
}

#[test]
fn urls_are_shown_without_any_password() {
    for (url, hidden) in [
        ("postgres://gate:s3cret@db/gate", "s3cret"),
        ("postgres://127.0.0.1:1/db?password=DBPASSG", "DBPASSG"),
        ("postgres:///db?host=/run&sslmode=require&password=DBPASSH", "DBPASSH"),
        ("postgres://u:DBP%40SSC@127.0.0.1:1/db", "SSC"),
        ("redis://:RP@SS1@cache:6379", "SS1"),
        ("postgres:u:DBPASSI@h", "DBPASSI"),
    ] {
        let shown = redact_url(url);
        assert!(!shown.contains(hidden), "{url} -> {shown}");
    }
    assert_eq!(redact_url("sqlite://gatehouse.db"), "sqlite://gatehouse.db");
}

#[test]
fn provider_and_public_urls_carry_no_credentials() {
    let e = load(&[("OIDC_ISSUER_URL", "https://u:ISSPASS9@idp.example/r"), ("OIDC_CLIENT_ID", "a")], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("OIDC_ISSUER_URL") && !e.contains("ISSPASS9"), "{e}");
    let github = [("GITHUB_CLIENT_ID", "id"), ("GITHUB_CLIENT_SECRET", "s")];
    let e = load(&[github[0], github[1], ("GITHUB_OAUTH_URL", "https://svc:OAUTHPASS@github.example.com")], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("GITHUB_OAUTH_URL") && !e.contains("OAUTHPASS"), "{e}");
    for bad in ["javascript:alert(1)//", "http://h/p?a=b", "http://h/#c", "https://u:p@h", "HTTP://example.com:99999"] {
        let e = load(&[("GATEHOUSE_PUBLIC_URL", bad)], None).unwrap_err().to_string();
        assert!(e.contains("GATEHOUSE_PUBLIC_URL"), "{bad}: {e}");
    }
    assert!(load(&[("GATEHOUSE_PUBLIC_URL", "https://gw.example.com/gh/")], None).is_ok());
}

#[test]
fn provider_mistakes_are_refused() {
    let two = "[[oidc]]\nname = \"dup\"\nissuer_url = \"https://a.example\"\naudiences = [\"gw\"]\n\n\
               [[oidc]]\nname = \"dup\"\nissuer_url = \"https://b.example\"\naudiences = [\"gw\"]\n";
    assert!(load(&[], Some(two)).unwrap_err().to_string().contains("dup"));
    let github = [("GITHUB_CLIENT_ID", "id"), ("GITHUB_CLIENT_SECRET", "s")];
    let named = "[[oidc]]\nname = \"github\"\nissuer_url = \"https://a.example\"\naudiences = [\"gw\"]\n";
    assert!(load(&github, Some(named)).is_err(), "an OIDC provider named like GitHub login");
    let e = load(&[("OIDC_CLIENT_SECRET", "s"), ("OIDC_CLIENT_ID", "c")], None).unwrap_err().to_string();
    assert!(e.contains("OIDC_ISSUER_URL") && !e.contains("\"s\""), "{e}");
}

#[test]
fn the_files_key_file_is_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.toml");
    std::fs::write(&path, "[jwt]\nprivate_key_file = \"keys/jwt.pem\"\n").unwrap();
    let c = Config::layered(Some(&path), &|_| None).unwrap();
    assert_eq!(c.jwt.private_key_file.unwrap(), dir.path().join("keys/jwt.pem"));
}
