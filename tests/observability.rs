//! Logs and metrics of a real `gatehouse serve` process: a full session
//! (register, failed and good logins, a key, Checks, refresh, logout) leaves
//! no secret in the logs, request ids line up, and the separate metrics
//! listener serves Prometheus text without authentication.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use common::{Process, check_request, free_port};
use serde_json::{Value, json};

const PASSWORD: &str = "a sound password 1";
const WRONG: &str = "not my password 2";

async fn post(p: &Process, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(p.url(path)).json(&body).header("x-request-id", "req-api-0001");
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_logs_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("g.db").display());
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let p = Process::start_env(&[
        ("DATABASE_URL", &db),
        ("RUST_LOG", "debug"),
        ("GATEHOUSE_LOG_FORMAT", "json"),
        ("GATEHOUSE_METRICS_ADDR", &metrics_addr),
    ])
    .await;

    let (status, _) =
        post(&p, "/auth/register", None, json!({"email": "alice@example.com", "password": PASSWORD})).await;
    assert_eq!(status, 201);
    let (status, _) = post(&p, "/auth/login", None, json!({"email": "alice@example.com", "password": WRONG})).await;
    assert_eq!(status, 401);
    let (status, body) =
        post(&p, "/auth/login", None, json!({"email": "alice@example.com", "password": PASSWORD})).await;
    assert_eq!(status, 200);
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = post(&p, "/auth/keys", Some(&token), json!({"name": "laptop"})).await;
    assert_eq!(status, 201);
    let key = body["key"].as_str().unwrap().to_owned();
    let key_secret = key.rsplit('_').next().unwrap().to_owned();

    let mut with_key = check_request("GET", "/v1/models?api_key=query-secret-123", &[("x-api-key", &key)]);
    with_key.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap().id = "req-check-0001".into();
    assert!(p.check_request(with_key).await.allowed());
    assert!(p.check(&[("authorization", &format!("Bearer {token}"))]).await.allowed());
    let bad = format!("{}x", &key[..key.len() - 1]);
    assert!(!p.check(&[("x-api-key", &bad)]).await.allowed());
    assert!(!p.check(&[("authorization", "Bearer not.a.jwt")]).await.allowed());
    let (status, body) = post(&p, "/auth/refresh", Some(&token), json!({})).await;
    assert_eq!(status, 200);
    let refreshed = body["access_token"].as_str().unwrap().to_owned();
    let (status, _) = post(&p, "/auth/logout", Some(&refreshed), json!({})).await;
    assert_eq!(status, 200);

    // The separate listener serves metrics without a credential.
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("gatehouse_check_decisions_total{"), "{text}");
    assert!(text.contains("gatehouse_check_duration_seconds"), "{text}");
    assert!(text.contains("gatehouse_build_info"), "{text}");
    for series in [
        r#"gatehouse_cache_requests_total{cache="keys",result="miss"}"#,
        r#"gatehouse_cache_requests_total{cache="tokens",result="hit"}"#,
        r#"gatehouse_store_duration_seconds_bucket{cache="keys",le="0.001"}"#,
    ] {
        assert!(text.contains(series), "no {series}: {text}");
    }
    // The main listener still wants read_metrics.
    assert_eq!(reqwest::get(p.url("/metrics")).await.unwrap().status(), 401);

    let logs = p.logs();
    for secret in [PASSWORD, WRONG, &key, &key_secret, &token, &refreshed, "query-secret-123", "alice@example.com"] {
        assert!(!logs.contains(secret), "the logs hold {secret:?}:\n{logs}");
    }
    // JSON lines; request ids from Envoy and from API clients are there.
    let lines: Vec<Value> = logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("{l}"))).collect();
    assert!(logs.contains("a***@example.com"), "the failed login names the account, redacted:\n{logs}");
    let check = lines.iter().find(|l| l["fields"]["request_id"] == "req-check-0001");
    assert!(check.is_some_and(|l| l["fields"]["message"] == "allow"), "{logs}");
    let api = lines.iter().find(|l| {
        l["fields"]["message"] == "http request"
            && l["fields"]["path"] == "/auth/keys"
            && l["span"]["request_id"] == "req-api-0001"
    });
    let api = api.unwrap_or_else(|| panic!("no access log line for POST /auth/keys:\n{logs}"));
    assert_eq!(api["fields"]["status"], 201);
    assert_eq!(api["fields"]["client_ip"], "127.0.0.1");
    assert!(api["span"]["user_id"].is_string(), "{api}");
}
