//! `REDIS_URL` naming a Redis Cluster (three nodes) or a Sentinel-managed
//! primary, both started by `scripts/test`: two gatehouse processes share
//! rate limits exactly (for callers whose buckets land on different cluster
//! slots) and a revocation on one reaches the other.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Process, TestServer};
use gatehouse::domain::{Group, Role};

async fn shared_limits_and_revocations(redis_url: &str) {
    skip_without_postgres!();
    let (url, _dir) = common::fresh_database(Backend::Postgres).await;
    let setup = TestServer::start_config(common::test_config(&url)).await;
    let (_, admin) = setup.user_with_key("root@example.com", Role::Admin, None).await;
    // A group of its own, so reruns against the same Redis start afresh.
    let group = format!("shared-{}", uuid::Uuid::new_v4().simple());
    let limited = Group {
        name: group.clone(),
        requests_per_period: Some(3),
        period_seconds: Some(60),
        burst: None,
        models: None,
        budget: Default::default(),
    };
    setup.accounts.create_group(limited).await.unwrap();
    let mut keys = Vec::new();
    for i in 0..4 {
        let user = setup.accounts.create_user(&format!("u{i}@example.com"), None, Role::Viewer, &group).await.unwrap();
        keys.push(setup.key_for(&user, None).await);
    }
    setup.finish().await;

    let a = Process::start(&url, redis_url).await;
    let b = Process::start(&url, redis_url).await;
    // Each caller's budget of 3 is shared exactly by the two replicas.
    for key in &keys {
        let mut allowed = 0;
        for i in 0..8 {
            let p = if i % 2 == 0 { &a } else { &b };
            allowed += usize::from(p.check(&[("x-api-key", key)]).await.allowed());
        }
        assert_eq!(allowed, 3, "together exactly the budget; logs: {}", a.logs());
    }

    // A key revoked on one replica is refused by the other within a second.
    let (status, created) = common::post_json(
        &reqwest::Client::new(),
        &a.url("/auth/keys"),
        Some(&admin),
        &serde_json::json!({"name": "fresh"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let fresh = created["key"].as_str().unwrap().to_owned();
    assert!(b.check(&[("x-api-key", &fresh)]).await.allowed(), "cached on b");
    let r = reqwest::Client::new()
        .delete(a.url(&format!("/auth/keys/{}", &fresh[3..19])))
        .header("x-api-key", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let started = Instant::now();
    while b.check(&[("x-api-key", &fresh)]).await.allowed() {
        assert!(started.elapsed() < Duration::from_secs(1), "revocation took over a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the suite with scripts/test"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster() {
    shared_limits_and_revocations(&url("GATEHOUSE_TEST_REDIS_CLUSTER_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel() {
    shared_limits_and_revocations(&url("GATEHOUSE_TEST_REDIS_SENTINEL_URL")).await;
}
