//! Attacks by an identity provider, or by anyone on the path to one: answers
//! too large to hold, a JWKS of thousands of keys, tokens not valid yet,
//! plain http, authorization responses mixed up between providers (RFC 9207),
//! and a GitHub account whose primary email is not verified.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::routing::{get, post};
use futures_util::StreamExt;
use gatehouse::authn::oidc::IssuerConfig;
use gatehouse::domain::Role;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tonic::Code;

use crate::common::{Backend, Check, Process, TestServer, fixture, free_port, now};

const AUDIENCE: &str = "https://gateway.example";

/// What the stand-in provider's `jwks_uri` serves.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Jwks {
    /// One key, `k0`.
    Normal = 0,
    /// [`Idp::huge`] bytes of keys, streamed without a length.
    Huge = 1,
    /// The same key 5000 times, as `k0` .. `k4999` (under 1 MiB).
    Many = 2,
}

const MANY_KEYS: usize = 5000;

/// A stand-in OpenID provider: discovery, JWKS, token endpoint.
struct Idp {
    issuer: String,
    key: EncodingKey,
    jwk: Value,
    jwks: AtomicU8,
    /// Size of the `Huge` JWKS.
    huge: u64,
    /// The discovery document says `authorization_response_iss_parameter_supported`.
    advertises_iss: bool,
    /// The discovery document names this issuer instead of its own.
    claimed_issuer: Option<String>,
    discovery_requests: AtomicUsize,
    jwks_requests: AtomicUsize,
    /// Bytes of the last `Huge` JWKS handed to the connection.
    huge_sent: AtomicU64,
    /// The `Huge` body was dropped (the client went away or it ended).
    huge_done: AtomicBool,
    /// Bodies of the requests to the token endpoint.
    token_requests: Mutex<Vec<String>>,
    /// What the token endpoint answers with as `id_token`.
    id_token: Mutex<String>,
}

/// Counts what a streamed body handed over, and notices its end.
struct Sent(Arc<Idp>);

impl Sent {
    fn add(&self, n: usize) {
        self.0.huge_sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        self.0.huge_done.store(true, Ordering::Release);
    }
}

impl Idp {
    async fn start(configure: impl FnOnce(&mut Idp)) -> Arc<Idp> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let key = EncodingKey::from_ec_pem(&std::fs::read(fixture("p256.pem")).unwrap()).unwrap();
        let jwk = serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
        let mut idp = Idp {
            issuer: format!("http://{}", listener.local_addr().unwrap()),
            key,
            jwk,
            jwks: AtomicU8::new(Jwks::Normal as u8),
            huge: 64 << 20,
            advertises_iss: false,
            claimed_issuer: None,
            discovery_requests: AtomicUsize::new(0),
            jwks_requests: AtomicUsize::new(0),
            huge_sent: AtomicU64::new(0),
            huge_done: AtomicBool::new(false),
            token_requests: Mutex::new(Vec::new()),
            id_token: Mutex::new(String::new()),
        };
        configure(&mut idp);
        let idp = Arc::new(idp);
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(idp.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        idp
    }

    fn serve(&self, jwks: Jwks) {
        self.jwks.store(jwks as u8, Ordering::Release);
    }

    fn key_json(&self, kid: &str) -> Value {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = kid.into();
        jwk
    }

    /// A token signed with the provider's key under `kid`.
    fn token(&self, kid: &str, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }

    /// An access token for Gatehouse's audience.
    fn access_token(&self, kid: &str) -> String {
        self.token(kid, json!({"iss": self.issuer, "sub": "alice", "aud": AUDIENCE, "exp": now() + 600}))
    }

    fn token_requests(&self) -> Vec<String> {
        self.token_requests.lock().unwrap().clone()
    }

    fn config(&self, name: &str) -> IssuerConfig {
        let mut c = IssuerConfig::new(&self.issuer);
        c.name = name.into();
        c.audiences = vec![AUDIENCE.into()];
        c.min_refetch_interval = Duration::from_millis(100);
        c
    }
}

async fn discovery(State(idp): State<Arc<Idp>>) -> axum::Json<Value> {
    idp.discovery_requests.fetch_add(1, Ordering::AcqRel);
    let i = &idp.issuer;
    axum::Json(json!({
        "issuer": idp.claimed_issuer.as_deref().unwrap_or(i),
        "jwks_uri": format!("{i}/jwks"),
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "authorization_response_iss_parameter_supported": idp.advertises_iss,
    }))
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Body {
    idp.jwks_requests.fetch_add(1, Ordering::AcqRel);
    match idp.jwks.load(Ordering::Acquire) {
        0 => Body::from(json!({"keys": [idp.key_json("k0")]}).to_string()),
        2 => {
            let keys: Vec<Value> = (0..MANY_KEYS).map(|i| idp.key_json(&format!("k{i}"))).collect();
            Body::from(json!({ "keys": keys }).to_string())
        }
        _ => {
            // Valid keys, over and over, in 64 KiB chunks made once.
            let entry = format!("{},", idp.key_json("padding"));
            let chunk = Bytes::from(entry.repeat((64 << 10) / entry.len()));
            let chunks = idp.huge / chunk.len() as u64;
            idp.huge_done.store(false, Ordering::Release);
            idp.huge_sent.store(0, Ordering::Relaxed);
            let sent = Sent(idp.clone());
            let head = futures_util::stream::iter([Bytes::from_static(b"{\"keys\":[")]);
            let tail = futures_util::stream::iter([Bytes::from(format!("{}]}}", idp.key_json("last")))]);
            let body = head.chain(futures_util::stream::iter(0..chunks).map(move |_| {
                sent.add(chunk.len());
                chunk.clone()
            }));
            Body::from_stream(body.chain(tail).map(Ok::<_, std::io::Error>))
        }
    }
}

async fn token(State(idp): State<Arc<Idp>>, body: String) -> axum::Json<Value> {
    idp.token_requests.lock().unwrap().push(body);
    let id_token = idp.id_token.lock().unwrap().clone();
    axum::Json(json!({"access_token": "opaque", "token_type": "Bearer", "id_token": id_token}))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn check_token(s: &TestServer, token: &str) -> Check {
    s.check("GET", "/v1/models", &[("authorization", &bearer(token))]).await
}

async fn until_ready(url: &str) {
    for _ in 0..300 {
        if reqwest::get(url).await.unwrap().status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never became ready");
}

/// Calls `attempt` until the provider has served the JWKS more than `seen`
/// times and that answer is over (Checks with an unknown kid refetch at most
/// once per `min_refetch_interval`).
async fn refetch(idp: &Idp, seen: usize, mut attempt: impl AsyncFnMut()) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while idp.jwks_requests.load(Ordering::Acquire) <= seen {
        assert!(Instant::now() < deadline, "no JWKS refetch");
        attempt().await;
    }
    // The Check that triggered the refetch answers after it.
    attempt().await;
}

/// A JWKS far over the cap is cut off as it streams in, the keys already
/// loaded stay in use, and a made-up kid is refused; a JWKS of thousands of
/// keys yields only the first 100; `nbf` in the future is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_jwks_and_immature_tokens() {
    let idp = Idp::start(|_| {}).await;
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        let mut issuer = idp.config("hostile");
        issuer.leeway_seconds = 5;
        c.oidc = vec![issuer];
    })
    .await;
    until_ready(&s.url("/readyz")).await;
    let good = idp.access_token("k0");
    assert!(check_token(&s, &good).await.allowed());

    // `nbf`: in the future beyond the leeway, refused; within it, accepted.
    let claims = |nbf: i64| json!({"iss": idp.issuer, "sub": "alice", "aud": AUDIENCE, "exp": now() + 600, "nbf": nbf});
    let early = check_token(&s, &idp.token("k0", claims(now() + 120))).await;
    early.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    assert_eq!(early.metadata("reason").as_deref(), Some("invalid_credential"));
    assert!(check_token(&s, &idp.token("k0", claims(now() + 2))).await.allowed(), "within the leeway");

    // 64 MiB of JWKS: refused at 1 MiB, the stream abandoned.
    idp.serve(Jwks::Huge);
    let made_up = idp.access_token("made-up");
    let seen = idp.jwks_requests.load(Ordering::Acquire);
    refetch(&idp, seen, async || {
        let c = check_token(&s, &made_up).await;
        c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    })
    .await;
    for _ in 0..200 {
        if idp.huge_done.load(Ordering::Acquire) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(idp.huge_done.load(Ordering::Acquire), "the client never let go of the JWKS");
    let sent = idp.huge_sent.load(Ordering::Relaxed);
    eprintln!("{sent} bytes of the 64 MiB JWKS handed to the connection");
    assert!(sent < 24 << 20, "{sent} bytes of a 64 MiB JWKS were taken");
    assert!(check_token(&s, &good).await.allowed(), "the keys already loaded stay in use");
    let (_, admin_key) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let issuer_label = format!("issuer=\"{}\"", idp.issuer);
    let errors = s.metric(&admin_key, "gatehouse_jwks_refreshes_total{", &[&issuer_label, "result=\"error\""]).await;
    assert!(errors >= 1, "the refused JWKS counts as a failed refresh");

    // 5000 keys: only the first 100 are taken.
    idp.serve(Jwks::Many);
    let beyond = idp.access_token(&format!("k{}", MANY_KEYS - 1));
    let seen = idp.jwks_requests.load(Ordering::Acquire);
    refetch(&idp, seen, async || {
        let c = check_token(&s, &beyond).await;
        c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    })
    .await;
    assert!(check_token(&s, &idp.access_token("k99")).await.allowed(), "the 100th key was taken");
    check_token(&s, &idp.access_token("k100")).await.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    s.finish().await;
}

/// Peak resident size of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A `gatehouse serve` whose provider answers with 256 MiB of JWKS (one
/// unauthenticated Check could once make the process hold it all, and more):
/// every fetch stops at the cap, the process stays small, Checks fail closed,
/// and the keys load once the provider behaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_jwks_never_grows_the_process() {
    let idp = Idp::start(|i| i.huge = 256 << 20).await;
    idp.serve(Jwks::Huge);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("g.db").display());
    let p = Process::start_env(&[
        ("DATABASE_URL", &db),
        ("OIDC_ISSUER_URL", &idp.issuer),
        ("OIDC_AUDIENCE", AUDIENCE),
        ("OIDC_ALLOW_INSECURE_HTTP", "true"),
    ])
    .await;
    let token = idp.access_token("k0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while idp.jwks_requests.load(Ordering::Acquire) < 3 {
        assert!(Instant::now() < deadline, "the keys were not fetched again");
        // Not loaded yet: 503, never an allow.
        let c = p.check(&[("authorization", &bearer(&token))]).await;
        c.assert_denied(503, Code::Unavailable, "AUTH_BACKEND_UNAVAILABLE");
        let peak = peak_rss(p.pid());
        assert!(peak < 96 << 20, "peak resident size {} MiB", peak >> 20);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = peak_rss(p.pid());
    eprintln!(
        "peak resident size after {} JWKS fetches: {} MiB",
        idp.jwks_requests.load(Ordering::Acquire),
        peak >> 20
    );
    assert!(peak < 96 << 20, "peak resident size {} MiB", peak >> 20);
    let logs = p.logs();
    assert!(logs.contains("larger than 1048576 bytes"), "{logs}");
    assert_eq!(reqwest::get(p.url("/readyz")).await.unwrap().status(), 503);

    idp.serve(Jwks::Normal);
    until_ready(&p.url("/readyz")).await;
    assert!(p.check(&[("authorization", &bearer(&token))]).await.allowed());
    let c = p.check(&[("authorization", &bearer(&idp.access_token("made-up")))]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    assert!(peak_rss(p.pid()) < 96 << 20);
}

/// Plain http to a provider is refused at start-up unless allowed for
/// development, and the message says how.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_providers_are_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("g.db").display());
    for (name, value) in [("OIDC_ISSUER_URL", "http://127.0.0.1:9/realms/x"), ("GITHUB_API_URL", "http://127.0.0.1:9")]
    {
        let grpc = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["serve", "--grpc-addr", &grpc, "--http-addr", &http])
            .env("DATABASE_URL", &db)
            .env("JWT_SECRET", "a shared test secret of at least 32 chars")
            .env("OIDC_AUDIENCE", AUDIENCE)
            .env("GITHUB_CLIENT_ID", "id")
            .env("GITHUB_CLIENT_SECRET", "secret")
            .env(name, value)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gatehouse started with {name}={value}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success());
        assert!(stderr.contains(name) && stderr.contains("OIDC_ALLOW_INSECURE_HTTP"), "{stderr}");
    }
}

/// A discovery document that names another issuer is refused: no keys, so
/// Checks fail closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_for_another_issuer_is_refused() {
    let idp = Idp::start(|i| i.claimed_issuer = Some("https://someone-else.example".into())).await;
    let s = TestServer::start_with(Backend::Sqlite, |c| c.oidc = vec![idp.config("liar")]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while idp.discovery_requests.load(Ordering::Acquire) < 3 {
        assert!(Instant::now() < deadline, "the discovery document was not asked for again");
        let c = check_token(&s, &idp.access_token("k0")).await;
        c.assert_denied(503, Code::Unavailable, "AUTH_BACKEND_UNAVAILABLE");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(idp.jwks_requests.load(Ordering::Acquire), 0, "its JWKS was never asked for");
    assert_eq!(reqwest::get(s.url("/readyz")).await.unwrap().status(), 503);
    s.finish().await;
}

/// Two providers share the callback. A login begun with provider `a` whose
/// answer comes back saying it is from `b` is refused before any code
/// exchange; the code only ever goes to the provider the login began with;
/// a provider that advertises `iss` must send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_responses_are_bound_to_their_provider() {
    let a = Idp::start(|_| {}).await;
    let b = Idp::start(|i| i.advertises_iss = true).await;
    let http_port = free_port();
    let public_url = format!("http://127.0.0.1:{http_port}");
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.http_addr = format!("127.0.0.1:{http_port}").parse().unwrap();
        c.public_url = public_url.clone();
        let mut ca = a.config("a");
        ca.client_id = Some("client-a".into());
        let mut cb = b.config("b");
        cb.client_id = Some("client-b".into());
        c.oidc = vec![ca, cb];
    })
    .await;
    until_ready(&s.url("/readyz")).await;

    /// Begins a login with `provider`; a browser and the state and nonce it was sent with.
    async fn begin(s: &TestServer, provider: &str) -> (reqwest::Client, String, String) {
        let browser =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let r = browser.get(s.url(&format!("/auth/oidc/login?provider={provider}"))).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        let param = |name: &str| location.query_pairs().find(|(k, _)| k == name).unwrap().1.into_owned();
        (browser, param("state"), param("nonce"))
    }
    async fn callback(s: &TestServer, browser: &reqwest::Client, query: &[(&str, &str)]) -> (u16, Value) {
        let r = browser.get(s.url("/auth/oidc/callback")).query(query).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    let id_token = |idp: &Idp, client: &str, nonce: &str| {
        let claims = json!({
            "iss": idp.issuer, "sub": client, "aud": client, "nonce": nonce, "exp": now() + 600,
            "email": format!("{client}@example.com"), "email_verified": true,
        });
        *idp.id_token.lock().unwrap() = idp.token("k0", claims);
    };

    // a's state, b's code and `iss`: refused, and no token endpoint hears of it.
    let (browser, state, nonce) = begin(&s, "a").await;
    id_token(&a, "client-a", &nonce);
    let (status, body) =
        callback(&s, &browser, &[("code", "code-from-b"), ("state", &state), ("iss", &b.issuer)]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
    assert!(a.token_requests().is_empty() && b.token_requests().is_empty(), "a code left for a token endpoint");
    // With a's own `iss` (or none: a does not advertise it), the code goes to a only.
    let (status, body) =
        callback(&s, &browser, &[("code", "code-from-a"), ("state", &state), ("iss", &a.issuer)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email"], "client-a@example.com");
    let sent = a.token_requests();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains("code=code-from-a") && sent[0].contains("code_verifier="), "{}", sent[0]);
    let (browser, state, nonce) = begin(&s, "a").await;
    id_token(&a, "client-a", &nonce);
    let (status, body) = callback(&s, &browser, &[("code", "code-from-a"), ("state", &state)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.token_requests().len(), 2);

    // b advertises `iss`: an answer without it is refused, with it accepted.
    let (browser, state, nonce) = begin(&s, "b").await;
    id_token(&b, "client-b", &nonce);
    let (status, body) = callback(&s, &browser, &[("code", "code-from-b"), ("state", &state)]).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        callback(&s, &browser, &[("code", "code-from-b"), ("state", &state), ("iss", &a.issuer)]).await;
    assert_eq!(status, 400, "{body}");
    assert!(b.token_requests().is_empty());
    let (status, body) =
        callback(&s, &browser, &[("code", "code-from-b"), ("state", &state), ("iss", &b.issuer)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((a.token_requests().len(), b.token_requests().len()), (2, 1));
    s.finish().await;
}

/// A stand-in for GitHub: the code exchange, `/user` and `/user/emails`.
async fn fake_github(emails: Value, user_bytes: usize) -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/login/oauth/access_token",
            post(|| async { axum::Json(json!({"access_token": "gho_test", "token_type": "bearer"})) }),
        )
        .route(
            "/user",
            get(move || async move {
                let mut user = json!({"id": 4242, "login": "octocat", "name": "The Octocat"});
                if user_bytes > 0 {
                    user["bio"] = "x".repeat(user_bytes).into();
                }
                // Streamed, so no length announces the size.
                let text = Bytes::from(user.to_string());
                let chunks: Vec<Bytes> = (0..text.len())
                    .step_by(16 << 10)
                    .map(|i| text.slice(i..(i + (16 << 10)).min(text.len())))
                    .collect();
                Body::from_stream(futures_util::stream::iter(chunks).map(Ok::<_, std::io::Error>))
            }),
        )
        .route("/user/emails", get(move || async move { axum::Json(emails) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A GitHub login against `fake`; `existing` accounts are made first (GitHub
/// creates no accounts without `GITHUB_ALLOWED_ORGS`, it signs in existing ones).
async fn github_login(fake: SocketAddr, existing: &[&str]) -> (TestServer, u16, Value) {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.github = Some(gatehouse::config::GithubConfig {
            client_id: "gh-client".into(),
            client_secret: gatehouse::secret::Secret::new("gh-secret"),
            oauth_url: format!("http://{fake}"),
            api_url: format!("http://{fake}"),
            allowed_orgs: Vec::new(),
        });
    })
    .await;
    for email in existing {
        s.user(email, gatehouse::domain::Role::Viewer).await;
    }
    let browser =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = browser.get(s.url("/auth/github")).send().await.unwrap();
    let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let state = location.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let r =
        browser.get(s.url("/auth/github/callback")).query(&[("code", "good"), ("state", &state)]).send().await.unwrap();
    let status = r.status().as_u16();
    (s, status, r.json().await.unwrap_or(Value::Null))
}

/// GitHub: a verified secondary address does not stand in for an unverified
/// primary one; an answer over the cap is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_uses_only_a_verified_primary_email_and_bounded_answers() {
    let emails = json!([
        {"email": "octo@company.com", "primary": true, "verified": false},
        {"email": "octo@verified-elsewhere.example", "primary": false, "verified": true},
    ]);
    let (s, status, body) = github_login(fake_github(emails, 0).await, &[]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "PERMISSION_DENIED");
    assert!(s.store.list_users().await.unwrap().is_empty(), "nobody was provisioned");
    s.finish().await;

    let emails = json!([{"email": "octo@company.com", "primary": true, "verified": true}]);
    let (s, status, body) = github_login(fake_github(emails.clone(), 100).await, &["octo@company.com"]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email"], "octo@company.com");
    s.finish().await;
    let (s, status, body) = github_login(fake_github(emails, 1 << 20).await, &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(s.store.list_users().await.unwrap().is_empty());
    s.finish().await;
}
