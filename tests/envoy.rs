//! End to end: a client talks to a real Envoy, which asks gatehouse, then
//! forwards to an upstream that echoes the headers it received.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use common::{Backend, Envoy, TestServer, spawn_echo};
use gatehouse::domain::Role;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_forwards_identity_and_relays_denials() {
    let s = TestServer::start(Backend::Sqlite).await;
    let upstream = spawn_echo().await;
    let envoy = Envoy::start(&s, upstream).await;
    let http = reqwest::Client::new();
    let (user, key) = s.user_with_key("alice@example.com", Role::Operator, None).await;

    // Allowed: the upstream sees who is calling, never the key, never a forged identity.
    let r = http
        .post(envoy.url("/v1/chat/completions"))
        .header("x-api-key", &key)
        .header("x-auth-role", "admin")
        .header("x-auth-user-id", "someone-else")
        .header("x-auth-extra", "forged")
        .body(r#"{"model":"m","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(echo["path"], "/v1/chat/completions");
    assert_eq!(h["x-auth-user-id"], user.id.as_str());
    assert_eq!(h["x-auth-email"], "alice@example.com");
    assert_eq!(h["x-auth-role"], "operator");
    assert_eq!(h["x-auth-method"], "api_key");
    assert_eq!(h["x-auth-key-id"], &key[3..19]);
    assert!(h.get("x-auth-extra").is_none());
    assert!(h.get("x-api-key").is_none());
    assert!(h.get("authorization").is_none());
    assert!(!echo.to_string().contains(&key[20..]), "the key must never reach the upstream");

    // Same through Authorization: Bearer.
    let r = http.get(envoy.url("/v1/models")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert!(echo["headers"].get("authorization").is_none());
    assert_eq!(echo["headers"]["x-auth-user-id"], user.id.as_str());

    // Denied: the client gets gatehouse's status, headers and JSON body.
    let r = http.get(envoy.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["www-authenticate"], r#"Bearer realm="gatehouse""#);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "AUTHENTICATION_FAILED");
    assert_eq!(body["error"]["type"], "authentication_error");

    let bad = format!("{}{}", &key[..20], "x".repeat(43));
    let r = http.get(envoy.url("/v1/models")).header("x-api-key", &bad).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    assert!(!r.text().await.unwrap().contains(&bad[20..]));

    let other = s.key_for(&user, None).await;
    let r = http.get(envoy.url("/v1/models")).header("x-api-key", &key).bearer_auth(&other).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "VALIDATION_ERROR");

    // A public path cannot be used as a springboard: Envoy normalizes the path
    // before asking, and gatehouse matches the normalized path.
    let r = http.get(envoy.url("/healthz/../v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(envoy.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Revoked keys stop working at once.
    s.accounts.revoke_key(&gatehouse::accounts::Acting::operator(), &key[3..19], common::now()).await.unwrap();
    let r = http.get(envoy.url("/v1/models")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // The access log carries the decision context from dynamic metadata.
    let log = envoy.access_log_with("reason=revoked").await;
    assert!(log.contains(&format!("decision=allow reason=- route=chat model=m user={}", user.id)), "{log}");
    assert!(log.contains("method=api_key"), "{log}");
    assert!(log.contains("decision=deny reason=missing_credential"), "{log}");
    assert!(!log.contains(&key[20..]), "the access log must not contain the key");
    drop(envoy);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_fails_closed_when_gatehouse_is_gone() {
    let s = TestServer::start(Backend::Sqlite).await;
    let upstream = spawn_echo().await;
    let envoy = Envoy::start(&s, upstream).await;
    let (_, key) = s.user_with_key("bob@example.com", Role::Viewer, None).await;
    let http = reqwest::Client::new();
    assert_eq!(http.get(envoy.url("/v1/models")).header("x-api-key", &key).send().await.unwrap().status(), 200);
    s.finish().await;
    let r = http.get(envoy.url("/v1/models")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(r.status(), 503, "failure_mode_allow must be off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_session_flow_through_the_gateway() {
    let s = TestServer::start(Backend::Sqlite).await;
    let upstream = spawn_echo().await;
    let envoy = Envoy::start(&s, upstream).await;
    let http = reqwest::Client::new();
    let creds = serde_json::json!({"email": "dev@example.com", "password": "a long password"});
    // /auth/* goes to gatehouse's own API, without ext_authz in the way.
    let r = http.post(envoy.url("/auth/register")).json(&creds).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let login: Value = http.post(envoy.url("/auth/login")).json(&creds).send().await.unwrap().json().await.unwrap();
    let token = login["access_token"].as_str().unwrap();
    let me: Value = http.get(envoy.url("/auth/me")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["email"], "dev@example.com");

    let r = http.get(envoy.url("/v1/models")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-auth-method"], "jwt");
    assert_eq!(echo["headers"]["x-auth-user-id"], me["id"]);
    assert!(echo["headers"].get("authorization").is_none());

    let r = http.post(envoy.url("/auth/logout")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(envoy.url("/v1/models")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["message"], "credential has been revoked");
    drop(envoy);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_shows_rate_limit_headers_and_429() {
    use gatehouse::domain::Group;
    let s = TestServer::start(Backend::Sqlite).await;
    let upstream = spawn_echo().await;
    let envoy = Envoy::start(&s, upstream).await;
    let group = Group {
        name: "trial".into(),
        requests_per_period: Some(2),
        period_seconds: Some(60),
        burst: None,
        models: None,
        budget: Default::default(),
    };
    s.accounts.create_group(group).await.unwrap();
    let user = s.accounts.create_user("trial@example.com", None, Role::Viewer, "trial").await.unwrap();
    let key = s.key_for(&user, None).await;
    let http = reqwest::Client::new();
    for remaining in ["1", "0"] {
        let r = http.get(envoy.url("/v1/models")).header("x-api-key", &key).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "2");
        assert_eq!(r.headers()["x-ratelimit-remaining"], remaining);
        assert!(r.headers().contains_key("x-ratelimit-reset"));
    }
    let r = http.get(envoy.url("/v1/models")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    drop(envoy);
    s.finish().await;
}

/// Route rules that read the body: Envoy forwards it (`with_request_body`),
/// and a refusal based on it reaches the client with its status and JSON body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_relays_body_based_denials() {
    use gatehouse::domain::{Group, ModelList};
    let s = TestServer::start(Backend::Sqlite).await;
    let models = Some(ModelList::new(["llama-*"]).unwrap());
    let group = Group {
        name: "llama".into(),
        requests_per_period: None,
        period_seconds: None,
        burst: None,
        models,
        budget: Default::default(),
    };
    s.accounts.create_group(group).await.unwrap();
    let user = s.accounts.create_user("l@example.com", None, Role::Viewer, "llama").await.unwrap();
    let key = s.key_for(&user, None).await;
    let no_stream = s.key_for(&user, Some(&["run_inference"])).await;
    let upstream = spawn_echo().await;
    let envoy = Envoy::start(&s, upstream).await;
    let http = reqwest::Client::new();
    let chat = |key: &str, body: String| {
        http.post(envoy.url("/v1/chat/completions"))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let allowed = r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"hi"}]}"#.to_owned();
    let r = chat(&key, allowed.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["body"], allowed.as_str(), "the body reaches the upstream intact");

    for (key, body, status, code, param) in [
        (&key, r#"{"model":"gpt-4o","messages":[]}"#.to_owned(), 403, "PERMISSION_DENIED", "model"),
        (&no_stream, r#"{"model":"llama-3","stream":true,"messages":[]}"#.to_owned(), 403, "PERMISSION_DENIED", ""),
        (&key, r#"{"model":"llama-3","messages":[{"content":"#.to_owned(), 400, "VALIDATION_ERROR", ""),
        (
            &key,
            format!(r#"{{"model":"llama-3","prompt":"{}"}}"#, "x".repeat(10_001)),
            400,
            "VALIDATION_ERROR",
            "messages",
        ),
    ] {
        let r = chat(key, body.clone()).await.unwrap();
        assert_eq!(r.status(), status, "{body:.80}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert_eq!(v["error"]["param"].as_str().unwrap_or(""), param, "{v}");
    }

    // Larger than Envoy's max_request_bytes: Envoy refuses it before asking.
    let huge = format!(r#"{{"model":"llama-3","prompt":"{}"}}"#, "x".repeat(10 * 1024 * 1024));
    assert_eq!(chat(&key, huge).await.unwrap().status(), 413);

    let log = envoy.access_log_with("reason=prompt_too_long").await;
    assert!(log.contains("decision=deny reason=model_not_allowed route=chat model=gpt-4o"), "{log}");
    assert!(log.contains("reason=missing_permission route=chat model=llama-3"), "{log}");
    drop(envoy);
    s.finish().await;
}
