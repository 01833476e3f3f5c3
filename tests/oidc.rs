//! Tokens from a real OpenID Provider (the npm package `oidc-provider`, run by
//! tests/oidc/provider.mjs; scripts/test installs it) in Check.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Backend, TestServer, free_port};
use gatehouse::authn::oidc::IssuerConfig;
use gatehouse::domain::{DEFAULT_GROUP, Group, Role};
use serde_json::Value;
use tonic::Code;

/// One oidc-provider process on a fixed port, restartable with rotated keys.
struct Provider {
    port: u16,
    keys: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    assert!(dir.join("node_modules/oidc-provider").exists(), "oidc-provider is not installed: run scripts/test");
    dir.join("provider.mjs")
}

impl Provider {
    fn new() -> Provider {
        let dir = tempfile::tempdir().unwrap();
        Provider { port: free_port(), keys: dir.path().join("keys.json"), child: None, _dir: dir }
    }

    async fn start() -> Provider {
        let mut p = Provider::new();
        p.spawn().await;
        p
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("node")
            .arg(script())
            .args(["serve", self.keys.to_str().unwrap(), &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        for _ in 0..100 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("oidc-provider did not start");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn rotate(&mut self) {
        self.stop();
        let status = Command::new("node").arg(script()).args(["rotate", self.keys.to_str().unwrap()]).status().unwrap();
        assert!(status.success());
        self.spawn().await;
    }

    /// An access token by the client credentials grant.
    async fn token(&self, client: &str, resource: Option<&str>) -> String {
        let secret = format!("{client}-secret");
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", &secret),
            ("scope", "api"),
        ];
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        let r: Value = reqwest::Client::new()
            .post(format!("{}/token", self.issuer()))
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["access_token"].as_str().unwrap_or_else(|| panic!("no token: {r}")).to_owned()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn issuer_config(issuer: &str) -> IssuerConfig {
    let mut c = IssuerConfig::new(issuer);
    c.audiences = vec!["https://gateway.example".into()];
    c.leeway_seconds = 0;
    c.min_refetch_interval = Duration::from_millis(200);
    c
}

async fn gatehouse(provider: &Provider, b: Backend) -> TestServer {
    let config = issuer_config(&provider.issuer());
    let s = TestServer::start_with(b, |c| c.oidc = vec![config]).await;
    s.accounts
        .create_group(Group { name: "research".into(), requests_per_period: None, period_seconds: None, burst: None })
        .await
        .unwrap();
    s
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

backend_tests! {
    provider_tokens_pass_check_and_provision_users,
}

async fn provider_tokens_pass_check_and_provision_users(b: Backend) {
    let provider = Provider::start().await;
    let s = gatehouse(&provider, b).await;
    let token = provider.token("gatehouse", None).await;
    let c = s.check("POST", "/v1/chat/completions", &[("authorization", &bearer(&token))]).await;
    assert!(c.allowed(), "{c:?}");
    let h = c.upstream_headers();
    assert_eq!(h["x-auth-method"], "oidc");
    assert_eq!(h["x-auth-role"], "operator", "from realm_access.roles");
    assert_eq!(h["x-auth-group"], "research", "from groups");
    assert_eq!(h["x-auth-email"], "gatehouse@127.0.0.1.idp.invalid");
    let user_id = h["x-auth-user-id"].clone();
    // The same subject with a new token is the same user.
    let again = provider.token("gatehouse", None).await;
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&again))]).await;
    assert_eq!(c.upstream_headers()["x-auth-user-id"], user_id);
    let user = s.store.user_by_id(&user_id).await.unwrap().unwrap();
    assert_eq!((user.role, user.group.as_str()), (Role::Operator, "research"));
    // Provisioned users can hold keys like anyone else.
    let key = s.key_for(&user, None).await;
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &key)]).await.allowed());

    // No role or group claims: the defaults.
    let plain = provider.token("plain", None).await;
    let h = s.check("GET", "/v1/models", &[("authorization", &bearer(&plain))]).await.upstream_headers();
    assert_eq!((h["x-auth-role"].as_str(), h["x-auth-group"].as_str()), ("viewer", DEFAULT_GROUP));
    assert_eq!(s.store.list_users().await.unwrap().len(), 2);

    // Disabling the provisioned user applies to their provider tokens too.
    s.accounts
        .update_user(&user_id, &gatehouse::domain::UserUpdate { disabled: Some(true), ..Default::default() })
        .await
        .unwrap();
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&again))]).await;
    assert_eq!(c.metadata("reason").as_deref(), Some("account_disabled"));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_audience_other_issuer_and_expired_are_401() {
    let provider = Provider::start().await;
    let stranger = Provider::start().await;
    let s = gatehouse(&provider, Backend::Sqlite).await;
    let cases = [
        ("wrong audience", provider.token("gatehouse", Some("https://other.example")).await, "invalid_credential"),
        ("other issuer", stranger.token("gatehouse", None).await, "invalid_credential"),
    ];
    for (name, token, reason) in cases {
        let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await;
        c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
        assert_eq!(c.metadata("reason").as_deref(), Some(reason), "{name}");
    }
    let short = provider.token("short-lived", None).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&short))]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    assert_eq!(c.metadata("reason").as_deref(), Some("expired"));
    assert!(s.store.list_users().await.unwrap().is_empty(), "refused tokens provision nobody");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_key_rotation_needs_no_restart() {
    let mut provider = Provider::start().await;
    let s = gatehouse(&provider, Backend::Sqlite).await;
    let before = provider.token("gatehouse", None).await;
    assert!(s.check("GET", "/v1/models", &[("authorization", &bearer(&before))]).await.allowed());
    provider.rotate().await;
    let after = provider.token("gatehouse", None).await;
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid;
    assert_ne!(kid(&before), kid(&after), "the provider signs with a new key");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(s.check("GET", "/v1/models", &[("authorization", &bearer(&after))]).await.allowed());
    assert!(s.check("GET", "/v1/models", &[("authorization", &bearer(&before))]).await.allowed());
    // A made-up kid is refused, and costs at most one refetch per interval.
    let forged = {
        use base64::Engine;
        let parts: Vec<&str> = after.split('.').collect();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"RS256","typ":"at+jwt","kid":"made-up"}"#);
        format!("{header}.{}.{}", parts[1], parts[2])
    };
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&forged))]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_at_start_then_up_and_down_again() {
    let mut provider = Provider::new();
    let s = gatehouse(&provider, Backend::Sqlite).await;
    let r = reqwest::get(s.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("identity provider"));
    provider.spawn().await;
    let mut ready = false;
    for _ in 0..100 {
        if reqwest::get(s.url("/readyz")).await.unwrap().status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "keys load in the background once the provider is up");
    let token = provider.token("gatehouse", None).await;
    // With the keys cached, the provider going away does not matter.
    provider.stop();
    let started = std::time::Instant::now();
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await;
    assert!(c.allowed(), "{c:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "no wait on the provider");
    s.finish().await;
}
