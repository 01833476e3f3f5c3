//! Attacks: the REST API's own surface. Logs and the audit log cannot be
//! forged or grown cheaply, cross-site pages cannot post JSON, half a request
//! does not hold a connection, secrets are not cached, a disabled account's
//! password is not confirmed, and the validate endpoint is no oracle.

use std::time::{Duration, Instant};

use gatehouse::domain::{AuditAction, AuditQuery, Role};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend_tests;
use crate::common::api::{Api, user_with_password};
use crate::common::{Backend, Process, TestServer};

backend_tests! {
    refused_admin_calls_are_stored_within_a_bound_per_caller,
    refused_credentials_on_admin_routes_are_audited_within_a_bound,
    json_endpoints_refuse_bodies_not_declared_json,
    answers_carrying_secrets_are_not_cached,
    a_disabled_account_fails_like_a_wrong_password,
    validate_answers_only_the_holder_or_an_administrator,
    registration_conflicts_do_not_echo_the_address,
}

const CAP: usize = gatehouse::telemetry::PATH_CAP;

async fn denied_events(s: &TestServer) -> Vec<gatehouse::domain::AuditEvent> {
    let query = AuditQuery { action: Some(AuditAction::AdminDenied), limit: 500, ..Default::default() };
    s.store.audit_events(&query).await.unwrap()
}

/// Minutes from `start` to now, both counted: the per-minute bound applies in each.
fn minutes_spanned(start: i64) -> i64 {
    crate::common::now().div_euclid(60) - start.div_euclid(60) + 1
}

async fn refused_admin_calls_are_stored_within_a_bound_per_caller(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (viewer, key) = s.user_with_key("viewer@example.com", Role::Viewer, None).await;
    let (_, admin) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let start = crate::common::now();
    // A 60 KB path: refused, and stored cut to the cap.
    let long = format!("/admin/users/{}", "a".repeat(60_000));
    api.get(&long, Some(&key)).await.assert_error(403, "PERMISSION_DENIED");
    let events = denied_events(&s).await;
    let target = events[0].target.as_deref().unwrap();
    assert!(target.len() <= CAP + 32 && target.ends_with("…(60017 bytes)"), "{} bytes: {target}", target.len());

    // 200 more refusals, all at once.
    let calls = (0..200).map(|_| api.get("/admin/users", Some(&key)));
    for r in futures_util::future::join_all(calls).await {
        r.assert_error(403, "PERMISSION_DENIED");
    }
    let stored = denied_events(&s).await.iter().filter(|e| e.actor_id.as_deref() == Some(&viewer.id)).count();
    let bound = gatehouse::audit::DENIED_PER_MINUTE as usize * minutes_spanned(start) as usize;
    assert!((1..=bound).contains(&stored), "{stored} rows stored for 201 refusals (bound {bound})");
    let left_out = s.metric(&admin, "gatehouse_audit_suppressed_total", &["admin.denied"]).await;
    assert_eq!(left_out as usize + stored, 201);
    s.finish().await;
}

async fn refused_credentials_on_admin_routes_are_audited_within_a_bound(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (user, key) = s.user_with_key("gone@example.com", Role::Admin, None).await;
    let id = &key[3..19];
    s.accounts.revoke_key(&gatehouse::accounts::Acting::operator(), id, crate::common::now()).await.unwrap();
    let start = crate::common::now();

    // No credential: refused, nothing to audit.
    api.get("/admin/users", None).await.assert_error(401, "AUTHENTICATION_FAILED");
    assert!(denied_events(&s).await.is_empty());
    // A revoked key and a made-up one: refused and audited, charged to the address.
    api.get("/admin/users", Some(&key)).await.assert_error(401, "AUTHENTICATION_FAILED");
    api.get("/admin/groups", Some("not-a-real-token")).await.assert_error(401, "AUTHENTICATION_FAILED");
    let events = denied_events(&s).await;
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e.actor_id, None);
        assert_eq!(e.client_ip.as_deref(), Some("127.0.0.1"));
        assert!(e.detail.as_deref().unwrap().starts_with("credential refused"), "{e:?}");
    }
    assert_eq!(events[1].target.as_deref(), Some("GET /admin/users"));
    assert!(!events.iter().any(|e| e.actor_id.as_deref() == Some(&user.id)));

    // Many of them: bounded like any caller's refusals.
    let calls = (0..100).map(|_| api.get("/admin/users", Some("not-a-real-token")));
    futures_util::future::join_all(calls).await;
    let stored = denied_events(&s).await.len();
    let bound = gatehouse::audit::DENIED_PER_MINUTE as usize * minutes_spanned(start) as usize;
    assert!(stored <= bound, "{stored} rows for 102 refused credentials (bound {bound})");
    s.finish().await;
}

async fn json_endpoints_refuse_bodies_not_declared_json(b: Backend) {
    let s = TestServer::start(b).await;
    let http = reqwest::Client::new();
    let body = r#"{"email":"csrf@example.com","password":"a long password"}"#;
    // What a cross-site page can send without a preflight: no type, text, a form.
    for content_type in [None, Some("text/plain;charset=UTF-8"), Some("application/x-www-form-urlencoded")] {
        let mut request = http.post(s.url("/auth/register")).body(body);
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 415, "{content_type:?}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "UNSUPPORTED_MEDIA_TYPE", "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("application/json"), "{answer}");
    }
    assert!(s.store.user_by_email("csrf@example.com").await.unwrap().is_none());
    // Declared JSON (with parameters, or a +json type) is read.
    let r = http
        .post(s.url("/auth/register"))
        .header("content-type", "application/vnd.api+json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // An optional body may be left out altogether.
    let (_, key) = s.user_with_key("k@example.com", Role::Viewer, None).await;
    let id = &key[3..19];
    let r = http.post(s.url(&format!("/auth/keys/{id}/rotate"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.finish().await;
}

async fn answers_carrying_secrets_are_not_cached(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let no_store = |what: &str, r: &crate::common::api::Reply| {
        assert_eq!(r.headers.get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"), "{what}");
        assert_eq!(r.headers.get("pragma").map(|v| v.to_str().unwrap()), Some("no-cache"), "{what}");
    };
    let r = api.register("cache@example.com", "a long password").await;
    assert_eq!(r.status, 201);
    no_store("register", &r);
    let r = api.post("/auth/login", None, json!({"email": "cache@example.com", "password": "a long password"})).await;
    no_store("login", &r);
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    let r = api.post("/auth/refresh", Some(&token), json!({})).await;
    assert_eq!(r.status, 200);
    no_store("refresh", &r);
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    let r = api.post("/auth/keys", Some(&token), json!({"name": "k"})).await;
    assert_eq!(r.status, 201);
    no_store("key creation", &r);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = api.post(&format!("/api/v1/auth/api-keys/{id}/rotate"), Some(&token), json!({})).await;
    assert_eq!(r.status, 200);
    no_store("key rotation", &r);
    let r = api.post("/api/v1/oauth/validate", None, json!({"session_token": token})).await;
    no_store("validate", &r);
    let (_, admin) = s.user_with_key("root@example.com", Role::Admin, None).await;
    no_store("admin", &api.get("/admin/users", Some(&admin)).await);
    s.finish().await;
}

async fn a_disabled_account_fails_like_a_wrong_password(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let password = "correct horse battery";
    user_with_password(&s, "off@example.com", Role::Viewer).await;
    let user = s.accounts.find_user("off@example.com").await.unwrap();
    let update = gatehouse::domain::UserUpdate { disabled: Some(true), ..Default::default() };
    s.accounts.update_user(&user.id, &update).await.unwrap();

    let attempt = |email: &'static str, password: &'static str| {
        let api = &api;
        async move {
            let r = api.post("/auth/login", None, json!({"email": email, "password": password})).await;
            let challenge = r.headers.get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
            (r.status, r.body, challenge)
        }
    };
    let disabled = attempt("off@example.com", password).await;
    let wrong = attempt("off@example.com", "not the password").await;
    let unknown = attempt("nobody@example.com", password).await;
    assert_eq!(disabled.0, 401);
    assert_eq!(disabled, wrong);
    assert_eq!(disabled, unknown);
    assert!(!disabled.1.to_string().contains("disabled"), "{}", disabled.1);
    // The audit log still tells them apart.
    let failed = AuditQuery { action: Some(AuditAction::LoginFailed), limit: 10, ..Default::default() };
    let events = s.store.audit_events(&failed).await.unwrap();
    assert!(events.iter().any(|e| e.detail.as_deref() == Some("account disabled")), "{events:?}");
    s.finish().await;
}

async fn validate_answers_only_the_holder_or_an_administrator(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (_, alice_key) = s.user_with_key("alice@example.com", Role::Viewer, None).await;
    let bob_session = user_with_password(&s, "bob@example.com", Role::Viewer).await;
    let (_, admin) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let validate = |caller: Option<String>, token: String| {
        let api = &api;
        async move { api.post("/api/v1/oauth/validate", caller.as_deref(), json!({ "session_token": token })).await }
    };
    let (alice, bob, admin) = (Some(alice_key.clone()), Some(bob_session.clone()), Some(admin));

    // Seed 001's call: a session token, no other credential.
    let r = validate(None, bob_session.clone()).await;
    assert_eq!((r.status.as_u16(), &r.body["data"]["valid"]), (200, &json!(true)), "{}", r.body);
    assert_eq!(r.body["data"]["user_email"], "bob@example.com");
    assert_eq!(validate(None, "nonsense".into()).await.body["data"]["valid"], false);
    // An API key is not confirmed to whoever holds its text...
    let r = validate(None, alice_key.clone()).await;
    r.assert_error(401, "AUTHENTICATION_FAILED");
    assert!(!r.body.to_string().contains("alice"), "{}", r.body);
    // ...nor to another user, valid or not: the same refusal either way.
    let other = validate(bob.clone(), alice_key.clone()).await;
    other.assert_error(403, "PERMISSION_DENIED");
    assert!(!other.body.to_string().contains("alice"), "{}", other.body);
    let bogus = validate(bob, "gk_0000000000000000_notakey".into()).await;
    assert_eq!((bogus.status, &bogus.body), (other.status, &other.body));
    // Its holder and an administrator get the answer.
    let r = validate(alice, alice_key.clone()).await;
    assert_eq!(r.body["data"]["user_email"], "alice@example.com", "{}", r.body);
    let r = validate(admin, alice_key).await;
    assert_eq!(r.body["data"]["user_email"], "alice@example.com", "{}", r.body);
    s.finish().await;
}

async fn registration_conflicts_do_not_echo_the_address(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    assert_eq!(api.register("taken@example.com", "a long password").await.status, 201);
    let r = api.register("taken@example.com", "a long password").await;
    r.assert_error(409, "CONFLICT");
    assert!(!r.body.to_string().contains("taken@"), "{}", r.body);
    s.finish().await;
}

/// Sends `head` and waits (at most `deadline`) for the server to close the
/// connection; returns what it answered and how long it took.
async fn until_closed(addr: std::net::SocketAddr, head: &[u8], deadline: Duration) -> (String, Duration) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(deadline, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection is still open after {deadline:?}");
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_does_not_hold_a_connection() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.http_header_timeout = Duration::from_millis(500);
        c.http_request_timeout = Duration::from_millis(1000);
    })
    .await;
    // Half a header.
    let (answer, took) =
        until_closed(s.http, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow:", Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(400), "closed after {took:?}: {answer}");
    assert!(!answer.contains("200 OK"), "{answer}");
    // Whole headers, half a body: answered 408 and closed.
    let head = b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\"";
    let (answer, took) = until_closed(s.http, head, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // An idle keep-alive connection is closed too.
    let (answer, _) = until_closed(s.http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A request sent in time is served as before.
    assert_eq!(reqwest::get(s.url("/healthz")).await.unwrap().status(), 200);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_values_cannot_forge_or_flood_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("g.db").display());
    let p = Process::start_env(&[
        ("DATABASE_URL", &db),
        ("RUST_LOG", "info"),
        ("GATEHOUSE_BOOTSTRAP_ADMIN_EMAIL", "founder@example.com"),
        ("GATEHOUSE_BOOTSTRAP_ADMIN_PASSWORD", "a long admin password"),
    ])
    .await;
    let http = p.http_client();
    // A provider's error, forged into the callback URL: a line break and an ESC.
    let forged =
        "/auth/oidc/callback?error=x%0a2099-01-01T00:00:00Z%20ERROR%20gatehouse:%20FORGED&error_description=%1b%5b2J";
    assert_eq!(http.get(p.url(forged)).send().await.unwrap().status(), 401);
    // A 60 KB path, with and without a credential.
    let long = format!("/admin/users/{}", "b".repeat(60_000));
    assert_eq!(http.get(p.url(&long)).send().await.unwrap().status(), 401);
    assert_eq!(http.get(p.url(&long)).bearer_auth("not-a-real-token").send().await.unwrap().status(), 401);
    // An email in a path.
    let login = json!({"email": "founder@example.com", "password": "a long admin password"});
    let r = http.post(p.url("/auth/login")).json(&login).send().await.unwrap();
    let token = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let r = http.get(p.url("/admin/users/founder@example.com")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let mut logs = p.logs();
    for _ in 0..100 {
        if logs.contains("/admin/users/f***@example.com") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        logs = p.logs();
    }
    assert!(logs.contains("provider refused the login"), "{logs}");
    assert!(!logs.lines().any(|l| l.starts_with("2099-01-01")), "a forged line:\n{logs}");
    assert!(logs.contains("\\u{a}2099-01-01"), "the line break is shown escaped:\n{logs}");
    assert!(!logs.contains('\u{1b}'), "an escape sequence reached the log:\n{logs}");
    let about_it = logs.lines().filter(|l| l.contains("bbbbbbbb"));
    let longest = about_it.map(str::len).max().unwrap();
    assert!(longest < 1024, "a {longest}-byte log line for a long path");
    assert!(logs.contains("…(60013 bytes)"), "{logs}");
    // Emails: neither the start-up configuration nor request paths show them.
    assert!(!logs.contains("founder@example.com"), "{logs}");
    assert!(logs.contains("/admin/users/f***@example.com"), "{logs}");
}
