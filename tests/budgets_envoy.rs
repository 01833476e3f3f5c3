//! Budgets through a real Envoy running the shipped config, in front of two
//! replicas sharing Postgres and Redis.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use common::{Backend, Envoy, Process, TestServer};
use gatehouse::accounts::Acting;
use gatehouse::domain::budget::BudgetUpdate;
use gatehouse::domain::{KeyUpdate, Role};
use serde_json::json;

/// 50 concurrent requests, round-robin over two replicas sharing Redis,
/// against a key budget that holds 10 of them: exactly 10 pass, the others
/// get OpenAI's 429 with the token headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_through_envoy_never_exceed_a_shared_budget() {
    skip_without_postgres!();
    let redis_url =
        std::env::var("GATEHOUSE_TEST_REDIS_URL").expect("GATEHOUSE_TEST_REDIS_URL is not set: run scripts/test");
    let (url, _dir) = common::fresh_database(Backend::Postgres).await;
    let setup = TestServer::start_config(common::test_config(&url)).await;
    let (_, key) = setup.user_with_key("team@example.com", Role::Operator, None).await;
    // "Hello!" (6) + max_tokens 20: 26 tokens reserved each; 260 holds 10.
    let update = KeyUpdate {
        budget: BudgetUpdate { tokens: Some(Some("260/3600".parse().unwrap())), spend: None },
        ..KeyUpdate::default()
    };
    setup.accounts.update_key(&Acting::operator(), &key[3..19], &update).await.unwrap();
    setup.finish().await;

    let a = Process::start(&url, &redis_url).await;
    let b = Process::start(&url, &redis_url).await;
    let upstream = common::spawn_echo().await;
    let envoy = Envoy::start_replicas(&[a.grpc, b.grpc], &[a.http, b.http], upstream).await;
    let http = reqwest::Client::new();
    let body = json!({"model": "llama-3-8b", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello!"}]});
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let request = http
                .post(envoy.url("/v1/chat/completions"))
                .header("x-api-key", &key)
                .header("content-type", "application/json")
                .body(body.to_string());
            tokio::spawn(async move {
                let r = request.send().await.unwrap();
                let status = r.status().as_u16();
                let remaining = r.headers().get("x-ratelimit-remaining-tokens").map(|v| v.to_str().unwrap().to_owned());
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                (status, remaining, body)
            })
        })
        .collect();
    let mut allowed = 0;
    for call in calls {
        let (status, remaining, body) = call.await.unwrap();
        match status {
            200 => {
                allowed += 1;
                assert!(remaining.is_some(), "an allowed answer carries x-ratelimit-remaining-tokens");
            }
            429 => {
                assert_eq!(body["error"]["code"], "QUOTA_EXCEEDED", "{body}");
                assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
                assert!(remaining.is_some(), "a refusal carries x-ratelimit-remaining-tokens");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(allowed, 10, "exactly what the budget holds");
    drop(envoy);
}
