//! A flood of unknown keys costs a bounded number of database queries,
//! counted by the store's own query metric (this file is its own test
//! process, so the counts are this test's alone).

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use common::{Backend, TestServer, check_request};
use gatehouse::authn::api_key;
use gatehouse::domain::Role;

async fn key_grant_queries(s: &TestServer, key: &str) -> u64 {
    s.metric(key, "gatehouse_store_queries_total{", &["query=\"key_grant\""]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_keys_costs_bounded_queries() {
    skip_without_postgres!();
    let s = TestServer::start(Backend::Postgres).await;
    let (_, ops) = s.user_with_key("ops@example.com", Role::Operator, None).await;
    let before = key_grant_queries(&s, &ops).await;
    let client = s.client().await;

    // Random keys: the check digits refuse them before any lookup.
    let random: Vec<String> = (0..500)
        .map(|_| {
            format!(
                "gk_{}_{}",
                &api_key::generate().id,
                api_key::random_base62(api_key::SECRET_LEN + api_key::CHECK_LEN)
            )
        })
        .collect();
    // Well-formed keys for 20 ids that do not exist, each sent 25 times, many at once.
    let unknown: Vec<String> = (0..20)
        .map(|_| api_key::assemble(&api_key::generate().id, &api_key::random_base62(api_key::SECRET_LEN)))
        .collect();
    let mut flood: Vec<&String> = random.iter().collect();
    for _ in 0..25 {
        flood.extend(unknown.iter());
    }
    let tasks: Vec<_> = flood
        .chunks(100)
        .map(|batch| {
            let batch: Vec<String> = batch.iter().map(|k| k.to_string()).collect();
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut denied = 0;
                for key in batch {
                    let response =
                        client.check(check_request("GET", "/v1/models", &[("x-api-key", &key)])).await.unwrap();
                    denied += usize::from(common::Check(response.into_inner()).http_status() == 401);
                }
                denied
            })
        })
        .collect();
    let mut denied = 0;
    for t in tasks {
        denied += t.await.unwrap();
    }
    assert_eq!(denied, 1000, "every made-up key is refused");
    let queries = key_grant_queries(&s, &ops).await - before;
    assert!(queries <= 20, "1000 refusals cost {queries} lookups, at most one per distinct well-formed id");
    s.finish().await;
}
