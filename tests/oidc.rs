//! Tokens from a real OpenID Provider (the npm package `oidc-provider`, run by
//! tests/oidc/provider.mjs; scripts/test installs it) in Check.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;
#[path = "oidc/provisioning.rs"]
mod provisioning;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use common::{Backend, TestServer, free_port};
use gatehouse::authn::oidc::IssuerConfig;
use gatehouse::domain::{DEFAULT_GROUP, Group, Role};
use serde_json::Value;
use tonic::Code;

/// One oidc-provider process on a fixed port, restartable with rotated keys.
struct Provider {
    port: u16,
    redirect_uris: String,
    /// More environment for provider.mjs (`EXTRA_CLIENTS`, `ACCOUNTS`).
    env: Vec<(&'static str, String)>,
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
        Provider {
            port: free_port(),
            redirect_uris: String::new(),
            env: Vec::new(),
            keys: dir.path().join("keys.json"),
            child: None,
            _dir: dir,
        }
    }

    async fn start() -> Provider {
        let mut p = Provider::new();
        p.spawn().await;
        p
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the provider and waits until it serves. Now and then Node
    /// starts but never reaches `listen` (seen on a loaded 2-core machine:
    /// alive, silent, for minutes); such a start is stopped and tried
    /// again, at most three times. A provider that exits fails at once.
    async fn spawn(&mut self) {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match self.try_spawn(Duration::from_secs(40)).await {
                Ok(()) => return,
                Err(why) => {
                    eprintln!("oidc-provider did not start, trying again: {why}");
                    self.stop();
                    failures.push(why);
                }
            }
        }
        panic!("oidc-provider did not start in three tries: {failures:#?}");
    }

    async fn try_spawn(&mut self, within: Duration) -> Result<(), String> {
        let log = self.keys.with_extension("log");
        let child = Command::new("node")
            .arg(script())
            .args(["serve", self.keys.to_str().unwrap(), &self.port.to_string()])
            .env("REDIRECT_URIS", &self.redirect_uris)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        let output = || {
            let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
            format!("{}{}", read(&log), read(&log.with_extension("err")))
        };
        // Ready once it says it listens and its discovery document answers
        // (not some other server that took a reused port).
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let started = std::time::Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < within {
            if output().contains("oidc-provider listening") {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => return Ok(()),
                    Ok(r) => last = format!("discovery answered {}", r.status()),
                    Err(e) => last = format!("discovery failed: {e}"),
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("oidc-provider exited ({status}): {}", output());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let port = match std::net::TcpListener::bind(("127.0.0.1", self.port)) {
            Ok(_) => "its port is free",
            Err(_) => "its port is taken",
        };
        Err(format!("not serving after {within:?} ({last}; {port}): {}", output()))
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
        .create_group(Group {
            name: "research".into(),
            requests_per_period: None,
            period_seconds: None,
            burst: None,
            models: None,
            budget: Default::default(),
        })
        .await
        .unwrap();
    s
}

/// A client future that connects when awaited, for spawning.
fn futures_client(
    s: &TestServer,
) -> impl std::future::Future<
    Output = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
        tonic::transport::Channel,
    >,
> + Send
+ 'static {
    let url = format!("http://{}", s.grpc);
    async move {
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(url)
            .await
            .unwrap()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

backend_tests! {
    provider_tokens_pass_check_and_provision_users,
}

async fn provider_tokens_pass_check_and_provision_users(b: Backend) {
    let provider = Provider::start().await;
    let token = provider.token("gatehouse", None).await;
    let s = gatehouse(&provider, b).await;
    // Checks arriving while the keys are still loading wait for them (this
    // once failed: a Check racing the first load was refused).
    let racing: Vec<_> = (0..8)
        .map(|_| {
            let client = futures_client(&s);
            let request = common::check_request("GET", "/v1/models", &[("authorization", &bearer(&token))]);
            tokio::spawn(async move { client.await.check(request).await.unwrap().into_inner() })
        })
        .collect();
    for r in racing {
        assert!(common::Check(r.await.unwrap()).allowed());
    }
    let c = s.check_body("POST", "/v1/chat/completions", &[("authorization", &bearer(&token))], common::CHAT).await;
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
    for _ in 0..300 {
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

/// The browser side of a login: a client that keeps cookies and follows redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).build().unwrap()
}

/// The `uid` of an oidc-provider interaction page URL.
fn interaction_uid(url: &reqwest::Url) -> String {
    let path = url.path();
    assert!(path.starts_with("/interaction/"), "expected an interaction page, got {url}");
    path.trim_start_matches("/interaction/").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_the_provider_issues_a_gatehouse_token() {
    let http_port = free_port();
    let public_url = format!("http://127.0.0.1:{http_port}");
    let mut provider = Provider::new();
    provider.redirect_uris = format!("{public_url}/auth/oidc/callback");
    provider.spawn().await;
    let mut issuer = issuer_config(&provider.issuer());
    issuer.client_id = Some("gatehouse".into());
    issuer.client_secret = Some(gatehouse::secret::Secret::new("gatehouse-secret"));
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.http_addr = format!("127.0.0.1:{http_port}").parse().unwrap();
        c.public_url = public_url.clone();
        c.oidc = vec![issuer];
    })
    .await;
    for _ in 0..300 {
        if reqwest::get(s.url("/readyz")).await.unwrap().status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Gatehouse redirects to the provider with PKCE, state and nonce, and sets
    // an HttpOnly cookie; no secret is in the URL.
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirect.get(s.url("/auth/oidc/login")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    for part in [
        "response_type=code",
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "client_id=gatehouse",
    ] {
        assert!(location.contains(part), "{location}");
    }
    assert!(!location.contains("gatehouse-secret"));
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");

    // The whole flow, as a browser would do it, through the provider's login and consent pages.
    let b = browser();
    let page = b.get(s.url("/auth/oidc/login")).send().await.unwrap();
    let uid = interaction_uid(page.url());
    let issuer_url = provider.issuer();
    let page = b
        .post(format!("{issuer_url}/interaction/{uid}"))
        .form(&[("prompt", "login"), ("login", "alice"), ("password", "anything")])
        .send()
        .await
        .unwrap();
    let uid = interaction_uid(page.url());
    let done = b.post(format!("{issuer_url}/interaction/{uid}")).form(&[("prompt", "consent")]).send().await.unwrap();
    assert!(done.url().path().ends_with("/auth/oidc/callback"), "{}", done.url());
    assert_eq!(done.status(), 200);
    let body: Value = done.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(body["user"]["email"], "alice@example.com");

    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(token))]).await;
    assert!(c.allowed(), "{c:?}");
    assert_eq!(c.upstream_headers()["x-auth-method"], "jwt");
    assert_eq!(c.upstream_headers()["x-auth-email"], "alice@example.com");

    // Seed 001's validate endpoint.
    let validate = |token: String| {
        let url = s.url("/api/v1/oauth/validate");
        async move {
            let r = reqwest::Client::new().post(url).json(&serde_json::json!({"session_token": token})).send().await;
            r.unwrap().json::<Value>().await.unwrap()
        }
    };
    let v = validate(token.to_owned()).await;
    assert_eq!(v["data"]["valid"], true);
    assert_eq!(v["data"]["user_email"], "alice@example.com");
    assert_eq!(validate("nonsense".into()).await["data"]["valid"], false);

    // A callback without the login's cookie, or with another state, is refused.
    let r = reqwest::get(s.url("/auth/oidc/callback?code=abc&state=xyz")).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = b.get(s.url("/auth/oidc/login")).send().await.unwrap();
    let _ = r.text().await;
    let r = b.get(s.url("/auth/oidc/callback?code=abc&state=forged")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = reqwest::get(s.url("/auth/oidc/callback?error=access_denied&state=x")).await.unwrap();
    assert_eq!(r.status(), 401);
    s.finish().await;
}

/// A local stand-in for GitHub's three OAuth endpoints (GitHub itself cannot
/// be reached from here).
async fn fake_github(verified: bool, email: &'static str) -> std::net::SocketAddr {
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/login/oauth/access_token",
            post(|body: String| async move {
                let ok = body.contains("code=good") && body.contains("client_secret=gh-secret") && body.contains("code_verifier=");
                axum::Json(if ok {
                    serde_json::json!({"access_token": "gho_test", "token_type": "bearer", "scope": "read:user,user:email"})
                } else {
                    serde_json::json!({"error": "bad_verification_code"})
                })
            }),
        )
        .route(
            "/user",
            get(|headers: axum::http::HeaderMap| async move {
                assert_eq!(headers["authorization"], "Bearer gho_test");
                axum::Json(serde_json::json!({"id": 4242, "login": "octocat", "name": "The Octocat"}))
            }),
        )
        .route(
            "/user/emails",
            get(move || async move {
                axum::Json(serde_json::json!([
                    {"email": "old@unverified.example", "primary": false, "verified": false},
                    {"email": email, "primary": true, "verified": verified},
                ]))
            }),
        )
        // octocat: an active member of acme and of its team platform, invited
        // to (not yet in) pending-org.
        .route(
            "/user/memberships/orgs/{org}",
            get(|headers: axum::http::HeaderMap, axum::extract::Path(org): axum::extract::Path<String>| async move {
                assert_eq!(headers["authorization"], "Bearer gho_test");
                match org.as_str() {
                    "acme" => axum::Json(serde_json::json!({"state": "active", "role": "member"})).into_response(),
                    "pending-org" => axum::Json(serde_json::json!({"state": "pending", "role": "member"})).into_response(),
                    _ => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .route(
            "/orgs/{org}/teams/{team}/memberships/{user}",
            get(|headers: axum::http::HeaderMap, axum::extract::Path(p): axum::extract::Path<(String, String, String)>| async move {
                assert_eq!(headers["authorization"], "Bearer gho_test");
                if (p.0.as_str(), p.1.as_str(), p.2.as_str()) == ("acme", "platform", "octocat") {
                    axum::Json(serde_json::json!({"state": "active", "role": "member"})).into_response()
                } else {
                    axum::http::StatusCode::NOT_FOUND.into_response()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn github_gatehouse(fake: std::net::SocketAddr, domains: &[&str]) -> TestServer {
    let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
    TestServer::start_with(Backend::Sqlite, |c| {
        c.github = Some(gatehouse::config::GithubConfig {
            client_id: "gh-client".into(),
            client_secret: gatehouse::secret::Secret::new("gh-secret"),
            oauth_url: format!("http://{fake}"),
            api_url: format!("http://{fake}"),
            allowed_orgs: vec!["acme".into()],
        });
        c.accounts.allowed_email_domains = domains;
    })
    .await
}

/// Starts a GitHub login; returns the callback's answer for `code`.
async fn github_round_trip(s: &TestServer, code: &str) -> (u16, Value) {
    let client =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = client.get(s.url("/auth/github")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.path(), "/login/oauth/authorize");
    let state = location.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    assert!(location.query_pairs().any(|(k, v)| k == "client_id" && v == "gh-client"));
    let r = client.get(s.url(&format!("/auth/github/callback?code={code}&state={state}"))).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_login_uses_the_verified_primary_email() {
    let fake = fake_github(true, "Octo@Company.com").await;
    let s = github_gatehouse(fake, &["company.com"]).await;
    let (status, body) = github_round_trip(&s, "good").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email"], "octo@company.com");
    let token = body["access_token"].as_str().unwrap();
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(token))]).await;
    assert_eq!(c.upstream_headers()["x-auth-email"], "octo@company.com");
    // A second login is the same user.
    let (_, again) = github_round_trip(&s, "good").await;
    assert_eq!(again["user"]["id"], body["user"]["id"]);
    assert_eq!(s.store.list_users().await.unwrap().len(), 1);
    // A bad code is refused.
    let (status, body) = github_round_trip(&s, "bad").await;
    assert_eq!(status, 401, "{body}");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_login_refuses_other_domains_and_unverified_emails() {
    let fake = fake_github(true, "someone@elsewhere.com").await;
    let s = github_gatehouse(fake, &["company.com"]).await;
    let (status, body) = github_round_trip(&s, "good").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "PERMISSION_DENIED");
    s.finish().await;
    let fake = fake_github(false, "octo@company.com").await;
    let s = github_gatehouse(fake, &[]).await;
    let (status, _) = github_round_trip(&s, "good").await;
    assert_eq!(status, 403);
    assert!(s.store.list_users().await.unwrap().is_empty());
    let r = reqwest::get(s.url("/auth/github/callback?code=good&state=whatever")).await.unwrap();
    assert_eq!(r.status(), 400, "no login cookie");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_login_hands_the_session_over_in_a_one_time_cookie() {
    let fake = fake_github(true, "octo@company.com").await;
    let s = github_gatehouse(fake, &[]).await;
    let providers: Value = reqwest::get(s.url("/auth/providers")).await.unwrap().json().await.unwrap();
    assert_eq!(
        providers["data"],
        serde_json::json!([{"name": "github", "type": "github", "login_url": "/auth/github"}])
    );

    let client =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let nonce = "n".repeat(32);
    let r = client.get(s.url(&format!("/auth/github?console=true&console_nonce={nonce}"))).send().await.unwrap();
    let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let state = location.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let r = client.get(s.url(&format!("/auth/github/callback?code=good&state={state}"))).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/#/keys", "back to the console, no token in the URL");
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("gatehouse_session="))
        .unwrap();
    for attribute in ["Path=/auth/refresh", "HttpOnly", "SameSite=Strict", "Max-Age=120"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!r.text().await.unwrap().contains("eyJ"), "no token in the body");

    // Without X-Requested-With (what a cross-site form sends) the cookie is ignored.
    let r = client.post(s.url("/auth/refresh")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let exchange = || {
        client
            .post(s.url("/auth/refresh"))
            .header("x-requested-with", "gatehouse-console")
            .header("x-gatehouse-handoff", &nonce)
            .send()
    };
    let r = exchange().await.unwrap();
    assert_eq!(r.status(), 200);
    let cleared = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cleared.starts_with("gatehouse_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let body: Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(token))]).await;
    assert_eq!(c.upstream_headers()["x-auth-email"], "octo@company.com");
    // Once only.
    let r = exchange().await.unwrap();
    assert_eq!(r.status(), 401);
    s.finish().await;
}

/// A provider's token first seen while the database is down cannot be tied
/// to a user: refused with 503 at once (well inside the proxy's 0.5 s), not
/// after the database pool's 2 s timeout, when the proxy has long answered
/// with its own bare 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_token_first_seen_while_the_database_is_down_is_refused_in_time() {
    skip_without_postgres!();
    let provider = Provider::start().await;
    let pg = common::postgres::OwnPostgres::init();
    let mut config = common::test_config(&pg.url());
    config.oidc = vec![issuer_config(&provider.issuer())];
    let s = TestServer::start_config(config).await;
    let token = provider.token("plain", None).await;
    // The provider's keys are loaded (readiness says so) before the database goes.
    for _ in 0..100 {
        if reqwest::get(s.url("/readyz")).await.unwrap().status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg.stop();
    let started = std::time::Instant::now();
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await;
    let took = started.elapsed();
    c.assert_denied(503, Code::Unavailable, "AUTH_BACKEND_UNAVAILABLE");
    assert!(took < Duration::from_millis(450), "answered after {took:?}");
    pg.start();
    s.finish().await;
}
