//! `gatehouse doctor` against good and broken setups, as an operator runs it:
//! the real binary, a real SQLite file and Postgres database, the suite's
//! Redis (single, cluster, Sentinel), a real OpenID provider, TLS files, and
//! the shipped Envoy config and broken variants of it.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::free_port;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SECRET: &str = "a doctor test secret of 32+ chars";

struct Outcome {
    code: i32,
    report: Value,
    text: String,
}

impl Outcome {
    fn finding(&self, check: &str) -> &Value {
        self.report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == check)
            .unwrap_or_else(|| panic!("no {check} finding: {:#}", self.report))
    }

    /// Asserts `check`'s verdict, that its message has `needle`, and that a
    /// failure or warning comes with a hint.
    fn expect(&self, check: &str, status: &str, needle: &str) {
        let f = self.finding(check);
        assert_eq!(f["status"], status, "{check}: {f:#}\n{}", self.text);
        assert!(f["message"].as_str().unwrap().contains(needle), "{check}: {f:#}");
        if status == "fail" || status == "warn" {
            assert!(f["hint"].as_str().is_some_and(|h| !h.is_empty()), "{check} has no hint: {f:#}");
        }
    }
}

/// How many migrations the schema has (one file each, per backend).
fn migrations() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap().count()
}

/// Runs `gatehouse doctor` twice (`--json` and text) with only these
/// environment variables (and PATH).
fn doctor(env: &[(&str, &str)], args: &[&str]) -> Outcome {
    let run = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).envs(env.iter().copied());
        if json {
            cmd.arg("--json");
        }
        cmd.arg("doctor").args(args).stderr(Stdio::inherit()).output().unwrap()
    };
    let (json, text) = (run(true), run(false));
    assert_eq!(json.status.code(), text.status.code());
    let report: Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json.stdout)));
    let text = String::from_utf8(text.stdout).unwrap();
    // One line per check, then the summary.
    assert_eq!(text.lines().count(), report["checks"].as_array().unwrap().len() + 1, "{text}");
    for (line, f) in text.lines().zip(report["checks"].as_array().unwrap()) {
        let verdict = match f["status"].as_str().unwrap() {
            "ok" => "ok  ",
            "warn" => "WARN",
            "fail" => "FAIL",
            _ => "skip",
        };
        assert!(line.starts_with(verdict) && line.contains(f["check"].as_str().unwrap()), "{line}");
        if let Some(hint) = f["hint"].as_str() {
            assert!(line.contains(hint), "{line}");
        }
    }
    let code = json.status.code().unwrap();
    assert_eq!(report["ok"], code == 0, "{text}");
    Outcome { code, report, text }
}

fn migrate(database_url: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("migrate")
        .env("DATABASE_URL", database_url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn fixture(name: &str) -> String {
    common::fixture(name)
}

/// A real OpenID provider (tests/oidc/provider.mjs on oidc-provider).
struct Provider {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Provider {
    async fn start() -> Provider {
        let dir = tempfile::tempdir().unwrap();
        let oidc = Path::new(ROOT).join("tests/oidc");
        assert!(oidc.join("node_modules/oidc-provider").exists(), "oidc-provider is not installed: run scripts/test");
        let port = free_port();
        let child = Command::new("node")
            .arg(oidc.join("provider.mjs"))
            .args(["serve", dir.path().join("keys.json").to_str().unwrap(), &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Provider { port, child, _dir: dir };
        let url = format!("{}/.well-known/openid-configuration", p.issuer());
        for _ in 0..300 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("oidc-provider did not start");
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shipped_envoy() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("envoy/envoy.yaml")).unwrap()
}

/// Writes `text` into `dir/name`; the path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A self-signed certificate for localhost valid for `days`: (cert, key).
fn certificate(dir: &Path, days: u32) -> (String, String) {
    let (cert, key) = common::self_signed_certificate(dir, days);
    (cert.display().to_string(), key.display().to_string())
}

/// Everything configured and healthy: every check passes, including the
/// shipped Envoy config against the built-in policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_every_check() {
    let redis = std::env::var("GATEHOUSE_TEST_REDIS_URL").expect("GATEHOUSE_TEST_REDIS_URL: run scripts/test");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("g.db").display());
    migrate(&db);
    let provider = Provider::start().await;
    let issuer = provider.issuer();
    let (cert, key) = (fixture("tls-server.pem"), fixture("tls-server.key"));
    let ca = fixture("tls-ca.pem");
    let envoy = Path::new(ROOT).join("envoy/envoy.yaml");
    let out = doctor(
        &[
            ("DATABASE_URL", &db),
            ("REDIS_URL", &redis),
            ("JWT_SECRET", SECRET),
            ("OIDC_ISSUER_URL", &issuer),
            ("OIDC_CLIENT_ID", "gatehouse"),
            ("OIDC_ALLOW_INSECURE_HTTP", "true"),
            ("GATEHOUSE_TLS_CERT_FILE", &cert),
            ("GATEHOUSE_TLS_KEY_FILE", &key),
            ("GATEHOUSE_TLS_CLIENT_CA_FILE", &ca),
        ],
        &["--envoy", envoy.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}", out.text);
    for f in out.report["checks"].as_array().unwrap() {
        assert_eq!(f["status"], "ok", "{f:#}\n{}", out.text);
    }
    out.expect("database", "ok", &format!("all {} migrations applied", migrations()));
    out.expect("redis", "ok", "primary, PONG");
    out.expect("openid default", "ok", "signing key(s) loaded");
    out.expect("tls certificate", "ok", "more days");
    out.expect("envoy Gatehouse API", "ok", "/auth/* /api/v1/auth/*");
    assert!(out.text.ends_with("all checks passed\n"), "{}", out.text);
}

/// Postgres, and Redis as a cluster and behind Sentinel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_redis_cluster_and_sentinel() {
    skip_without_postgres!();
    let (db, _dir) = common::database::empty(common::Backend::Postgres).await;
    let before = doctor(&[("DATABASE_URL", &db), ("JWT_SECRET", SECRET), ("GATEHOUSE_AUTO_MIGRATE", "false")], &[]);
    before.expect("database", "fail", &format!("{0} of {0} migrations pending", migrations()));
    assert_eq!(before.code, 1);
    let auto = doctor(&[("DATABASE_URL", &db), ("JWT_SECRET", SECRET)], &[]);
    auto.expect("database", "warn", "pending");
    assert_eq!(auto.code, 0, "a warning is not a failure");
    migrate(&db);
    for (var, says) in [
        ("GATEHOUSE_TEST_REDIS_CLUSTER_URL", "cluster of 3 nodes, state ok"),
        ("GATEHOUSE_TEST_REDIS_SENTINEL_URL", "primary found through the sentinels"),
    ] {
        let redis = std::env::var(var).unwrap_or_else(|_| panic!("{var}: run scripts/test"));
        let out = doctor(&[("DATABASE_URL", &db), ("JWT_SECRET", SECRET), ("REDIS_URL", &redis)], &[]);
        out.expect("database", "ok", &format!("all {} migrations applied", migrations()));
        out.expect("redis", "ok", says);
        assert_eq!(out.code, 0, "{}", out.text);
    }
    let down = format!("postgres://gatehouse:hunter2@127.0.0.1:{}/gatehouse", free_port());
    let out = doctor(&[("DATABASE_URL", &down), ("JWT_SECRET", SECRET)], &[]);
    out.expect("database", "fail", "postgres://gatehouse:***@127.0.0.1");
    assert!(!out.text.contains("hunter2"), "the password is not printed: {}", out.text);
}

/// Each broken piece fails its own check, with a hint, and the exit status is 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_setups_fail_their_check_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = format!("sqlite://{}", d.join("g.db").display());
    migrate(&db);
    let base = [("DATABASE_URL", db.as_str()), ("JWT_SECRET", SECRET)];
    let with = |extra: &[(&'static str, &str)]| -> Vec<(&str, String)> {
        base.iter().chain(extra).map(|(k, v)| (*k, (*v).to_owned())).collect()
    };
    let run = |env: Vec<(&str, String)>, args: &[&str]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        doctor(&env, args)
    };

    // The database: none there, not migrated, or migrated by a newer build.
    let empty = format!("sqlite://{}", d.join("new.db").display());
    let out = run(vec![("DATABASE_URL", empty.clone()), ("GATEHOUSE_AUTO_MIGRATE", "false".into())], &[]);
    out.expect("database", "fail", "does not exist yet");
    assert!(!d.join("new.db").exists(), "the doctor creates nothing");
    let newer = format!("sqlite://{}", d.join("newer.db").display());
    migrate(&newer);
    let pool = sqlx::SqlitePool::connect(&newer).await.unwrap();
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990101000000, 'future', true, x'00', 0)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let out = run(vec![("DATABASE_URL", newer)], &[]);
    out.expect("database", "fail", "newer gatehouse");

    // Redis down.
    let redis = format!("redis://127.0.0.1:{}", free_port());
    let out = run(with(&[("REDIS_URL", &redis)]), &[]);
    out.expect("redis", "fail", "cannot connect");
    assert_eq!(out.code, 1);

    // OpenID providers: down, and one whose discovery names another issuer.
    let provider = Provider::start().await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let out = run(
        with(&[("OIDC_ISSUER_URL", &down), ("OIDC_CLIENT_ID", "gatehouse"), ("OIDC_ALLOW_INSECURE_HTTP", "true")]),
        &[],
    );
    out.expect("openid default", "fail", &down);
    let other = provider.issuer().replace("127.0.0.1", "localhost");
    let out = run(
        with(&[("OIDC_ISSUER_URL", &other), ("OIDC_CLIENT_ID", "gatehouse"), ("OIDC_ALLOW_INSECURE_HTTP", "true")]),
        &[],
    );
    out.expect("openid default", "fail", &provider.issuer());
    drop(provider);

    // TLS: a key that is not the certificate's; a certificate expiring in 10 days.
    let (cert, key) = (fixture("tls-server.pem"), fixture("tls-client.key"));
    let out = run(with(&[("GATEHOUSE_TLS_CERT_FILE", &cert), ("GATEHOUSE_TLS_KEY_FILE", &key)]), &[]);
    out.expect("tls", "fail", "");
    let (cert, key) = certificate(d, 10);
    let out = run(with(&[("GATEHOUSE_TLS_CERT_FILE", &cert), ("GATEHOUSE_TLS_KEY_FILE", &key)]), &[]);
    out.expect("tls certificate", "fail", "days (");
    let message = out.finding("tls certificate")["message"].as_str().unwrap().to_owned();
    assert!(message.contains("expires in 9 days") || message.contains("expires in 10 days"), "{message}");
    let (cert, key) = certificate(d, 45);
    let out = run(with(&[("GATEHOUSE_TLS_CERT_FILE", &cert), ("GATEHOUSE_TLS_KEY_FILE", &key)]), &[]);
    out.expect("tls certificate", "ok", "more days");
    let message = out.finding("tls certificate")["message"].as_str().unwrap().to_owned();
    assert!(message.contains("valid for 44 more days") || message.contains("valid for 45 more days"), "{message}");

    // A policy file that does not load: the other checks still run.
    let policy = write(d, "policy.toml", "[[routes]]\nname = 'x'\npaths = ['/v1/*']\naccess = 'maybe'\n");
    let out = run(with(&[("GATEHOUSE_POLICY_FILE", policy.to_str().unwrap())]), &[]);
    out.expect("policy", "fail", "policy.toml");
    out.expect("database", "ok", &format!("all {} migrations applied", migrations()));

    // A configuration that does not load: nothing else can be checked.
    let out = run(vec![("DATABASE_URL", db.clone()), ("JWT_SECRET", "short".into())], &[]);
    out.expect("configuration", "fail", "JWT_SECRET");
    out.expect("database", "skip", "");
    assert_eq!(out.code, 1);

    // No JWT secret: a warning, not a failure.
    let out = run(vec![("DATABASE_URL", db.clone())], &[]);
    out.expect("session tokens", "warn", "per-process key");
    assert_eq!(out.code, 0);
}

/// Broken Envoy configs: each mistake fails the check it concerns.
#[test]
fn broken_envoy_configs_fail_the_check_they_concern() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = format!("sqlite://{}", d.join("g.db").display());
    migrate(&db);
    let shipped = shipped_envoy();
    let edit = |from: &str, to: &str| {
        assert!(shipped.contains(from), "envoy/envoy.yaml changed: {from}");
        shipped.replacen(from, to, 1)
    };
    let cases = [
        (
            "an API prefix sent to the upstream",
            edit(
                "- match: { path_separated_prefix: \"/api/auth\" }",
                "- match: { path_separated_prefix: \"/api/authx\" }",
            ),
            "envoy Gatehouse API",
            "/api/auth: gateway sends it to upstream",
        ),
        (
            "a catch-all ahead of the API routes",
            edit(
                "              routes:\n",
                "              routes:\n              - match: { prefix: \"/\" }\n                route: { cluster: upstream }\n",
            ),
            "envoy Gatehouse API",
            "/auth: gateway sends it to upstream (prefix: /)",
        ),
        (
            "fail open",
            edit("failure_mode_allow: false", "failure_mode_allow: true"),
            "envoy fail closed",
            "failure_mode_allow is true",
        ),
        (
            "a JSON route without its body",
            edit(
                "- match: { path_separated_prefix: \"/v1/embeddings\" }\n                route: *inference\n                request_headers_to_remove: *uncompressed\n                typed_per_filter_config: *with_body",
                "- match: { path_separated_prefix: \"/v1/embeddings\" }\n                route: *inference",
            ),
            "envoy JSON bodies",
            "/v1/embeddings (path_separated_prefix: /v1/embeddings, rule embeddings): the body is not sent",
        ),
        (
            "partial bodies",
            edit("  allow_partial_message: false", "  allow_partial_message: true"),
            "envoy JSON bodies",
            "allow_partial_message is true",
        ),
        (
            "query strings in the access log",
            edit("%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
            "envoy access log",
            "prints the query string",
        ),
    ];
    for (what, config, check, needle) in cases {
        let path = write(d, "envoy.yaml", &config);
        let out = doctor(&[("DATABASE_URL", &db), ("JWT_SECRET", SECRET)], &["--envoy", path.to_str().unwrap()]);
        assert_eq!(out.code, 1, "{what}: {}", out.text);
        out.expect(check, "fail", needle);
        let failed: Vec<&str> = out.report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["status"] == "fail")
            .map(|f| f["check"].as_str().unwrap())
            .collect();
        // A catch-all ahead of everything also takes the JSON routes.
        let also: &[&str] = if what.starts_with("a catch-all") { &["envoy JSON bodies"] } else { &[] };
        assert_eq!(failed, [&[check][..], also].concat(), "{what}: only its own check fails\n{}", out.text);
    }

    // A policy whose API gained a path the Envoy config does not route.
    let policy = std::fs::read_to_string(Path::new(ROOT).join("policy.toml")).unwrap().replacen(
        "\"/.well-known/jwks.json\"]",
        "\"/.well-known/jwks.json\", \"/api/v2/auth/*\"]",
        1,
    );
    assert!(policy.contains("/api/v2/auth/*"));
    let policy = write(d, "policy.toml", &policy);
    let envoy = Path::new(ROOT).join("envoy/envoy.yaml");
    let out = doctor(
        &[("DATABASE_URL", &db), ("JWT_SECRET", SECRET), ("GATEHOUSE_POLICY_FILE", policy.to_str().unwrap())],
        &["--envoy", envoy.to_str().unwrap()],
    );
    out.expect("envoy Gatehouse API", "fail", "/api/v2/auth: gateway sends it to upstream");

    // Not an Envoy config at all.
    let path = write(d, "envoy.yaml", "static_resources: [1, 2");
    let out = doctor(&[("DATABASE_URL", &db), ("JWT_SECRET", SECRET)], &["--envoy", path.to_str().unwrap()]);
    out.expect("envoy", "fail", "envoy.yaml");
}

/// The shipped Envoy configs (and the compose twin) pass the doctor's checks
/// against the built-in policy: the product check and the deployment agree.
#[test]
fn the_shipped_envoy_configs_pass() {
    let policy = gatehouse::policy::Policy::compile(&gatehouse::policy::PolicySpec::default(), &[]).unwrap();
    for file in ["envoy/envoy.yaml", "envoy/envoy.compose.yaml"] {
        let config =
            gatehouse::doctor::envoy::parse(&std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap()).unwrap();
        let findings = gatehouse::doctor::envoy::check(&config, &policy, 8080);
        assert_eq!(findings.len(), 4, "{file}");
        for f in findings {
            assert_eq!(f.status, gatehouse::doctor::Status::Ok, "{file}: {f:?}");
        }
    }
}
