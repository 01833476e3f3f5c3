//! Several replicas sharing Postgres and Redis: a revocation on one reaches
//! the others within a second, far below any cache TTL.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Process, TestServer};
use gatehouse::domain::Role;

/// Polls `p` until `headers` are refused; returns how long it took.
async fn until_denied(p: &Process, headers: &[(&str, &str)]) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if !p.check(headers).await.allowed() {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still allowed after 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_replica_within_a_second() {
    skip_without_postgres!();
    let redis_url =
        std::env::var("GATEHOUSE_TEST_REDIS_URL").expect("GATEHOUSE_TEST_REDIS_URL is not set: run scripts/test");
    let (url, _dir) = common::fresh_database(Backend::Postgres).await;
    let setup = TestServer::start_config(common::test_config(&url)).await;
    let (_, admin_key) = setup.user_with_key("root@example.com", Role::Admin, None).await;
    let (user, key) = setup.user_with_key("dev@example.com", Role::Viewer, None).await;
    setup.accounts.set_password(&user.id, gatehouse::secret::Secret::new("dev password")).await.unwrap();
    setup.finish().await;

    let a = Process::start(&url, &redis_url).await;
    let b = Process::start(&url, &redis_url).await;
    let http = reqwest::Client::new();

    // An API key revoked through one replica's API.
    assert!(a.check(&[("x-api-key", &key)]).await.allowed());
    assert!(b.check(&[("x-api-key", &key)]).await.allowed(), "now cached on b");
    let r = http
        .delete(a.url(&format!("/auth/keys/{}", &key[3..19])))
        .header("x-api-key", &admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let took = until_denied(&b, &[("x-api-key", &key)]).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // A session token logged out on one replica.
    let token = common::login(&a.url("/auth/login"), "dev@example.com", "dev password").await;
    let bearer = format!("Bearer {token}");
    assert!(b.check(&[("authorization", &bearer)]).await.allowed());
    let r = http.post(a.url("/auth/logout")).header("authorization", &bearer).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let took = until_denied(&b, &[("authorization", &bearer)]).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // A user disabled on one replica.
    let key2 = {
        let r: serde_json::Value = http
            .post(a.url("/auth/keys"))
            .header("x-api-key", &admin_key)
            .json(&serde_json::json!({"name": "k2", "user": "dev@example.com"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["key"].as_str().unwrap().to_owned()
    };
    assert!(b.check(&[("x-api-key", &key2)]).await.allowed());
    let r = http
        .patch(a.url(&format!("/admin/users/{}", user.id)))
        .header("x-api-key", &admin_key)
        .json(&serde_json::json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let took = until_denied(&b, &[("x-api-key", &key2)]).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
}
