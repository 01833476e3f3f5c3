//! `examples/` keep working: the official OpenAI Python SDK and curl, through
//! the shipped Envoy config, against Gatehouse and the examples' stand-in
//! OpenAI-compatible upstream, with a Gatehouse key that may use one model
//! and has a rate limit: allowed, refused, not authenticated, rate limited,
//! and what the SDK raises for each.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Backend, Envoy, TestServer, free_port};
use gatehouse::domain::{Group, ModelList, Role};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The suite's Python, with tests/requirements.txt installed (scripts/test).
fn python() -> PathBuf {
    let python = std::env::var_os("GATEHOUSE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join(".venv-test/bin/python"));
    let ok = Command::new(&python).args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    assert!(ok, "{} cannot import openai: run scripts/test (it installs tests/requirements.txt)", python.display());
    python
}

/// The examples' stand-in upstream, killed on drop.
struct Upstream(std::process::Child, u16);

impl Upstream {
    async fn start() -> Upstream {
        let port = free_port();
        let child = Command::new("python3")
            .arg(Path::new(ROOT).join("examples/upstream.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let u = Upstream(child, port);
        for _ in 0..100 {
            if reqwest::get(format!("http://127.0.0.1:{port}/v1/models")).await.is_ok_and(|r| r.status() == 200) {
                return u;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("examples/upstream.py did not start");
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Gatehouse behind the shipped Envoy, a group allowed `llama-*` at five
/// requests a minute, and a key for each of two users in it.
async fn stack() -> (TestServer, Upstream, Envoy, [String; 2]) {
    let server = TestServer::start(Backend::Sqlite).await;
    let models = Some(ModelList::new(["llama-*"]).unwrap());
    let group = Group {
        name: "examples".into(),
        requests_per_period: Some(5),
        period_seconds: Some(60),
        burst: None,
        models,
        budget: Default::default(),
    };
    server.accounts.create_group(group).await.unwrap();
    let mut keys = Vec::new();
    for email in ["sdk@example.com", "curl@example.com"] {
        let user = server.accounts.create_user(email, None, Role::Viewer, "examples").await.unwrap();
        keys.push(server.key_for(&user, None).await);
    }
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(&server, format!("127.0.0.1:{}", upstream.1).parse().unwrap()).await;
    (server, upstream, envoy, keys.try_into().unwrap())
}

fn run(mut cmd: Command, envoy: &Envoy, key: &str) -> (bool, String) {
    let out = cmd
        .env("GATEWAY_URL", envoy.url(""))
        .env("GATEHOUSE_API_KEY", key)
        .env("MAX_CALLS", "20")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

fn line<'a>(out: &'a str, case: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(&format!("{case}: "))).unwrap_or_else(|| panic!("no {case} line:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_through_envoy() {
    let python = python();
    let (_server, _upstream, envoy, [key, _]) = stack().await;
    let mut cmd = Command::new(python);
    cmd.arg(Path::new(ROOT).join("examples/openai_sdk.py"));
    let (ok, out) = run(cmd, &envoy, &key);
    assert!(ok, "examples/openai_sdk.py failed:\n{out}");

    // The upstream answered and saw the caller's identity, not the key.
    assert_eq!(
        line(&out, "allowed"),
        "allowed: llama-3: Hello sdk@example.com (role viewer, by api_key); credential seen upstream: no"
    );
    let refused = line(&out, "refused");
    assert!(refused.starts_with("refused: PermissionDeniedError 403 PERMISSION_DENIED (permission_error): "), "{out}");
    assert!(refused.contains("gpt-4o"), "{refused}");
    let unauthenticated = line(&out, "unauthenticated");
    assert!(
        unauthenticated
            .starts_with("unauthenticated: AuthenticationError 401 AUTHENTICATION_FAILED (authentication_error)"),
        "{out}"
    );
    assert!(out.contains("unauthenticated: WWW-Authenticate: Bearer realm=\"gatehouse\""), "{out}");
    assert!(
        line(&out, "rate limited").starts_with("rate limited: RateLimitError 429 RATE_LIMITED (rate_limit_error)"),
        "{out}"
    );
    // Five a minute: the chat and four model lists, then 429 with its headers.
    let after = out.lines().find(|l| l.starts_with("rate limited: after")).unwrap();
    assert!(after.starts_with("rate limited: after 4 calls; Retry-After: "), "{after}");
    assert!(after.contains("X-RateLimit-Limit: 5, X-RateLimit-Remaining: 0"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_envoy() {
    let (_server, _upstream, envoy, [_, key]) = stack().await;
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(ROOT).join("examples/curl.sh"));
    let (ok, out) = run(cmd, &envoy, &key);
    assert!(ok, "examples/curl.sh failed:\n{out}");
    let allowed = line(&out, "allowed");
    assert!(allowed.starts_with("allowed: 200 {"), "{out}");
    assert!(allowed.contains("Hello curl@example.com (role viewer, by api_key); credential seen upstream: no"));
    let refused = line(&out, "refused");
    assert!(refused.starts_with("refused: 403 {\"error\":{\"code\":\"PERMISSION_DENIED\""), "{out}");
    assert!(refused.contains("\"param\":\"model\""), "{refused}");
    assert!(
        line(&out, "unauthenticated")
            .starts_with("unauthenticated: 401 {\"error\":{\"code\":\"AUTHENTICATION_FAILED\"")
    );
    assert!(out.contains("unauthenticated: www-authenticate: Bearer realm=\"gatehouse\""), "{out}");
    assert!(line(&out, "rate limited").starts_with("rate limited: 429 {\"error\":{\"code\":\"RATE_LIMITED\""), "{out}");
    assert!(out.to_ascii_lowercase().contains("rate limited: retry-after: "), "{out}");
}
