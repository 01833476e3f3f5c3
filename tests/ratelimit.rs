//! Rate limits through Check: exact counts, headers, admin changes, the
//! anonymous per-address limit, one budget shared through Redis by two
//! gatehouse instances, concurrent decisions through two limiters exact on
//! one Redis and on a cluster, and Redis going away and coming back.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Backend, TestServer, check_request, free_port};
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use gatehouse::domain::{Group, Role, User};
use gatehouse::ratelimit::Limit;
use tonic::Code;

backend_tests! {
    group_limit_allows_exactly_n_then_429,
    user_and_key_overrides_and_route_limits,
}

async fn limited_group(s: &TestServer, name: &str, requests: i64) {
    let group = Group {
        name: name.into(),
        requests_per_period: Some(requests),
        period_seconds: Some(60),
        burst: None,
        models: None,
        budget: Default::default(),
    };
    s.accounts.create_group(group).await.unwrap();
}

async fn member(s: &TestServer, email: &str, group: &str) -> (User, String) {
    let user = s.accounts.create_user(email, None, Role::Viewer, group).await.unwrap();
    let key = s.key_for(&user, None).await;
    (user, key)
}

/// A Check from a given client address.
async fn check_from(s: &TestServer, ip: &str, path: &str, headers: &[(&str, &str)]) -> common::Check {
    let mut request = check_request("GET", path, headers);
    request.attributes.as_mut().unwrap().source = Some(Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress { address: ip.into(), ..Default::default() })),
        }),
        ..Default::default()
    });
    common::Check(s.client().await.check(request).await.unwrap().into_inner())
}

fn rate_headers(c: &common::Check) -> std::collections::HashMap<String, String> {
    match &c.0.http_response {
        Some(envoy_types::ext_authz::v3::pb::HttpResponse::OkResponse(ok)) => ok
            .response_headers_to_add
            .iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect(),
        _ => c.denied_headers(),
    }
}

async fn group_limit_allows_exactly_n_then_429(b: Backend) {
    let s = TestServer::start(b).await;
    limited_group(&s, "tight", 3).await;
    let (_, key) = member(&s, "a@example.com", "tight").await;
    let (_, other) = member(&s, "b@example.com", "tight").await;
    let now = common::now();
    for expected_remaining in ["2", "1", "0"] {
        let c = s.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
        assert!(c.allowed(), "{c:?}");
        let h = rate_headers(&c);
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], expected_remaining);
        let reset: i64 = h["x-ratelimit-reset"].parse().unwrap();
        assert!(reset > now && reset <= now + 61, "{reset}");
    }
    let c = s.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
    c.assert_denied(429, Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(c.body()["error"]["type"], "rate_limit_error");
    let h = c.denied_headers();
    assert_eq!(h["retry-after"], "20", "one request per 20 s");
    assert_eq!(h["x-ratelimit-limit"], "3");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(c.metadata("reason").as_deref(), Some("rate_limited"));
    // Another user in the same group has their own budget.
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &other)]).await.allowed());
    // An admin raises the limit: it applies at once, without a restart.
    let raised = Group {
        name: "tight".into(),
        requests_per_period: Some(100),
        period_seconds: Some(60),
        burst: None,
        models: None,
        budget: Default::default(),
    };
    s.accounts.update_group(raised).await.unwrap();
    let c = s.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
    assert!(c.allowed(), "{c:?}");
    assert_eq!(rate_headers(&c)["x-ratelimit-limit"], "100");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_are_limited_per_client_address() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.anonymous_limit = Some(Limit { requests: 2, period: Duration::from_secs(60), burst: 2 })
    })
    .await;
    for _ in 0..2 {
        assert!(check_from(&s, "203.0.113.7", "/auth/login", &[]).await.allowed());
    }
    let c = check_from(&s, "203.0.113.7", "/auth/login", &[]).await;
    c.assert_denied(429, Code::ResourceExhausted, "RATE_LIMITED");
    assert!(check_from(&s, "203.0.113.8", "/auth/login", &[]).await.allowed());
    s.finish().await;
}

/// A redis-server of the test's own, so it can be stopped and started.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test");
        OwnRedis { port, child: Some(child) }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_redis(s: &TestServer, want: &str) {
    for _ in 0..300 {
        let body: serde_json::Value = reqwest::get(s.url("/readyz")).await.unwrap().json().await.unwrap();
        if body["redis"].as_str().is_some_and(|r| r.starts_with(want)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("redis never became {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_budget_through_redis() {
    let redis_url =
        std::env::var("GATEHOUSE_TEST_REDIS_URL").expect("GATEHOUSE_TEST_REDIS_URL is not set: run scripts/test");
    let (url, _dir) = common::fresh_database(Backend::Sqlite).await;
    // Set up users and keys through one instance, then let two processes serve.
    let setup = TestServer::start_config(common::test_config(&url)).await;
    // A group name of its own, so reruns against the same Redis start afresh.
    let group = format!("shared-{}", uuid::Uuid::new_v4().simple());
    limited_group(&setup, &group, 5).await;
    let (_, key) = member(&setup, "shared@example.com", &group).await;
    setup.finish().await;
    let a = common::Process::start(&url, &redis_url).await;
    let b = common::Process::start(&url, &redis_url).await;
    let mut allowed = 0;
    for i in 0..12 {
        let p = if i % 2 == 0 { &a } else { &b };
        allowed += usize::from(p.check(&[("x-api-key", &key)]).await.allowed());
    }
    assert_eq!(allowed, 5, "together exactly the budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_falls_back_and_recovers() {
    let mut redis = OwnRedis::start(free_port());
    let url = redis.url();
    let s = TestServer::start_with(Backend::Sqlite, |c| c.redis_url = Some(gatehouse::secret::Secret::new(&url))).await;
    limited_group(&s, "g", 3).await;
    let (_, key) = member(&s, "r@example.com", "g").await;
    wait_redis(&s, "ok").await;
    let count = |n: usize| {
        let key = key.clone();
        let s = &s;
        async move {
            let mut allowed = 0;
            for _ in 0..n {
                let c = s.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
                assert!(c.allowed() || c.http_status() == 429, "always answered: {c:?}");
                allowed += usize::from(c.allowed());
            }
            allowed
        }
    };
    assert_eq!(count(4).await, 3);
    redis.stop();
    // Checks keep being answered, now limited by this process alone.
    assert_eq!(count(4).await, 3);
    wait_redis(&s, "unavailable").await;
    let (_, ops) = s.user_with_key("ops@example.com", Role::Operator, None).await;
    let metrics = |key: String| {
        let url = s.url("/metrics");
        async move { reqwest::Client::new().get(url).header("x-api-key", key).send().await.unwrap().text().await.unwrap() }
    };
    let m = metrics(ops.clone()).await;
    assert!(m.contains("gatehouse_ratelimit_redis_available 0"), "{m}");
    assert!(m.contains("gatehouse_ratelimit_fallback_total"), "{m}");
    assert!(m.contains("gatehouse_check_decisions_total{decision=\"deny\",reason=\"rate_limited\""), "{m}");
    let ready = reqwest::get(s.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["status"], "degraded");
    // Redis comes back (empty): shared limiting resumes.
    let _redis = OwnRedis::start(redis.port);
    let mut resumed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if count(1).await == 1 {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "the fresh Redis bucket lets requests through again");
    wait_redis(&s, "ok").await;
    assert_eq!(count(3).await, 2, "the shared budget of 3 again, one already spent");
    assert!(metrics(ops).await.contains("gatehouse_ratelimit_redis_available 1"));
    // Only holders of read_metrics may read them.
    let r = reqwest::Client::new().get(s.url("/metrics")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(reqwest::get(s.url("/metrics")).await.unwrap().status(), 401);
    s.finish().await;
}

/// 240 decisions at once on four buckets of 10 (two buckets on one subject's
/// routes, so two hash tags, and two more subjects), through two limiters as
/// two replicas would: exactly 10 allowed in each (a limiter deciding alone
/// would allow 10 of its own), each remaining count handed out once.
async fn concurrent_decisions_are_exact(url: &str) {
    use gatehouse::ratelimit::Limiter;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let buckets: Vec<String> =
        ["user:a", "user:a|route:chat", "user:b", "key:c"].iter().map(|b| format!("{b}-{run}")).collect();
    let limit = Limit { requests: 10, period: Duration::from_secs(3600), burst: 10 };
    let replicas = [
        common::connected_redis_limiter(url, Duration::from_secs(5)).await,
        common::connected_redis_limiter(url, Duration::from_secs(5)).await,
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..240 {
        let (limiter, bucket) = (replicas[(i / 4) % 2].clone(), buckets[i % 4].clone());
        tasks.spawn(async move { (bucket.clone(), limiter.check(&bucket, limit).await.unwrap()) });
    }
    let mut allowed: std::collections::HashMap<String, Vec<u32>> = std::collections::HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (bucket, outcome) = done.unwrap();
        if outcome.allowed {
            allowed.entry(bucket).or_default().push(outcome.remaining);
        } else {
            assert!(outcome.retry_after > Duration::from_secs(300), "{outcome:?}");
        }
    }
    for bucket in &buckets {
        let mut remaining = allowed.remove(bucket).unwrap_or_default();
        remaining.sort_unstable();
        assert_eq!(remaining, (0..10).collect::<Vec<u32>>(), "{bucket}: exactly 10, one after the other");
    }
}

/// Checks given up while their decision waits in a batch or is out in one
/// (as when Envoy's timeout cancels them) neither stall the decisions behind
/// them nor let too many through: the rest are all answered by Redis, with
/// at most 10 allowed, and the bucket is spent for the next caller.
async fn cancelled_decisions_leave_the_rest_answered(url: &str) {
    use gatehouse::ratelimit::Limiter;
    let bucket = format!("user:cancel-{}", uuid::Uuid::new_v4().simple());
    let limit = Limit { requests: 10, period: Duration::from_secs(3600), burst: 10 };
    let limiter = common::connected_redis_limiter(url, Duration::from_secs(5)).await;
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let (limiter, bucket) = (limiter.clone(), bucket.clone());
        tasks.push(tokio::spawn(async move { limiter.check(&bucket, limit).await.unwrap() }));
    }
    // Every third one is cancelled, a few at a time, wherever it is by then.
    for (i, task) in tasks.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        if i % 30 == 0 {
            tokio::task::yield_now().await;
        }
        task.abort();
    }
    let mut allowed = 0;
    for task in tasks {
        match task.await {
            Ok(outcome) => allowed += usize::from(outcome.allowed),
            Err(e) => assert!(e.is_cancelled(), "{e}"),
        }
    }
    assert!(!limiter.is_degraded(), "every decision that finished came from Redis");
    assert!(allowed <= 10, "{allowed} allowed");
    let next = limiter.check(&bucket, limit).await.unwrap();
    assert!(!next.allowed && next.retry_after > Duration::from_secs(300), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_decisions_neither_stall_nor_overshoot_on_a_cluster_and_on_one_redis() {
    for var in ["GATEHOUSE_TEST_REDIS_CLUSTER_URL", "GATEHOUSE_TEST_REDIS_URL"] {
        let url = std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/test"));
        cancelled_decisions_leave_the_rest_answered(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_decisions_stay_exact_across_replicas_on_a_cluster_and_on_one_redis() {
    for var in ["GATEHOUSE_TEST_REDIS_CLUSTER_URL", "GATEHOUSE_TEST_REDIS_URL"] {
        let url = std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/test"));
        concurrent_decisions_are_exact(&url).await;
    }
}

async fn user_and_key_overrides_and_route_limits(b: Backend) {
    use gatehouse::domain::UserUpdate;
    // The shipped table, with one chat completion per minute per caller.
    let mut policy = gatehouse::policy::PolicySpec::default();
    policy.routes.iter_mut().find(|r| r.name.as_deref() == Some("chat")).unwrap().limit = Some("1/60".into());
    let s = TestServer::start_with(b, |c| c.policy = policy).await;
    limited_group(&s, "roomy", 100).await;
    let (user, k1) = member(&s, "o@example.com", "roomy").await;
    let k2 = s.key_for(&user, None).await;
    let k3 = s.key_for(&user, None).await;

    // The admin API sets a user's own limit; every key of theirs shares it.
    let (_, admin_key) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let http = reqwest::Client::new();
    let patch = |path: String, body: serde_json::Value| {
        let req = http.patch(s.url(&path)).header("x-api-key", &admin_key).json(&body);
        async move { req.send().await.unwrap() }
    };
    let r = patch(format!("/admin/users/{}", user.id), serde_json::json!({"rate_limit": "2/60"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["rate_limit"], "2/60/2");
    assert_eq!(
        patch(format!("/admin/users/{}", user.id), serde_json::json!({"rate_limit": "lots"})).await.status(),
        400
    );
    let c = s.check("GET", "/v1/models", &[("x-api-key", &k1)]).await;
    assert_eq!(rate_headers(&c)["x-ratelimit-limit"], "2");
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &k2)]).await.allowed());
    s.check("GET", "/v1/models", &[("x-api-key", &k1)]).await.assert_denied(
        429,
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );

    // A key's own limit gives it a budget of its own.
    let r = patch(format!("/admin/keys/{}", &k3[3..19]), serde_json::json!({"rate_limit": "5/60"})).await;
    assert_eq!(r.status(), 200);
    let c = s.check("GET", "/v1/models", &[("x-api-key", &k3)]).await;
    assert!(c.allowed(), "{c:?}");
    assert_eq!(rate_headers(&c)["x-ratelimit-limit"], "5");

    // Removing the user's limit brings back the group's.
    s.accounts.update_user(&user.id, &UserUpdate { rate_limit: Some(None), ..Default::default() }).await.unwrap();
    let c = s.check("GET", "/v1/models", &[("x-api-key", &k1)]).await;
    assert_eq!(rate_headers(&c)["x-ratelimit-limit"], "100");

    // The route's own budget: one chat completion per minute, on top of the rest.
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let c = s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &k1)], chat).await;
    assert!(c.allowed(), "{c:?}");
    assert_eq!(rate_headers(&c)["x-ratelimit-remaining"], "0", "the tighter budget is reported");
    let c = s.check_body("POST", "/v1/completions", &[("x-api-key", &k2)], chat).await;
    c.assert_denied(429, Code::ResourceExhausted, "RATE_LIMITED");
    assert_eq!(c.metadata("route").as_deref(), Some("chat"), "one budget per rule, whatever its path");
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &k1)]).await.allowed());
    s.finish().await;
}
