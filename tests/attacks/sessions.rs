//! Attacks: what one session can cost, and how it ends.

use gatehouse::domain::Role;
use serde_json::json;

use crate::common::api::{Api, user_with_password};
use crate::common::{Backend, TestServer};

/// A refresh loop stores a revocation per round: it is rate-limited per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_in_a_loop_is_limited() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.refresh_limit = Some(gatehouse::ratelimit::Limit::from_parts(Some(3), Some(3600), None).unwrap());
    })
    .await;
    let api = Api::new(&s);
    let mut token = user_with_password(&s, "looper@example.com", Role::Viewer).await;
    for _ in 0..3 {
        let r = api.post("/auth/refresh", Some(&token), json!({})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        token = r.body["access_token"].as_str().unwrap().to_owned();
    }
    let r = api.post("/auth/refresh", Some(&token), json!({})).await;
    r.assert_error(429, "RATE_LIMITED");
    assert!(r.headers.contains_key("retry-after"));
    s.finish().await;
}

/// Logging out accepts every token refresh would accept: a token that
/// expired a moment ago is ended, not left refreshable for the grace window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_an_expired_token_ends_it() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.jwt.expiry_seconds = 1).await;
    let api = Api::new(&s);
    let token = user_with_password(&s, "napper@example.com", Role::Viewer).await;
    let other = api.login("napper@example.com", "correct horse battery").await;
    // Wait until Check calls the tokens expired (leeway included).
    let started = std::time::Instant::now();
    while s.check("GET", "/v1/models", &[("authorization", &format!("Bearer {token}"))]).await.allowed() {
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "the token never expired");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let r = api.post("/auth/logout", Some(&token), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.post("/auth/refresh", Some(&token), json!({})).await;
    assert_eq!(r.status, 401, "a logged-out token is never refreshed: {}", r.body);
    let r = api.post("/auth/logout/all", Some(&other), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.post("/auth/refresh", Some(&other), json!({})).await;
    assert_eq!(r.status, 401, "{}", r.body);
    s.finish().await;
}

/// Keys are rows, audit events and list entries: one user holds at most 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_a_bounded_number_of_keys() {
    let s = TestServer::start(Backend::Sqlite).await;
    let api = Api::new(&s);
    let token = user_with_password(&s, "minter@example.com", Role::Viewer).await;
    for i in 0..gatehouse::accounts::MAX_ACTIVE_KEYS_PER_USER {
        let r = api.post("/auth/keys", Some(&token), json!({ "name": format!("k{i}") })).await;
        assert_eq!(r.status, 201, "{i}: {}", r.body);
    }
    let r = api.post("/auth/keys", Some(&token), json!({"name": "one too many"})).await;
    r.assert_error(409, "CONFLICT");
    s.finish().await;
}
