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
    // "Hello!" in one message (6 + 7 template) + max_tokens 20: 33 tokens
    // reserved each; 330 holds 10.
    let update = KeyUpdate {
        budget: BudgetUpdate { tokens: Some(Some("330/3600".parse().unwrap())), spend: None },
        ..KeyUpdate::default()
    };
    setup.accounts.update_key(&Acting::operator(), &key[3..19], &update).await.unwrap();
    setup.finish().await;

    let a = Process::start(&url, &redis_url).await;
    let b = Process::start(&url, &redis_url).await;
    // Each answer reports 11 + 22 = 33 tokens: what was reserved.
    let upstream = common::llm::spawn_llm().await;
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
    // Every settlement is recorded once (whichever replica made it), and
    // the total stays within the budget.
    let mut totals = serde_json::Value::Null;
    for _ in 0..300 {
        let r = http.get(a.url("/auth/usage")).header("x-api-key", &key).send().await.unwrap();
        totals = r.json::<serde_json::Value>().await.unwrap()["totals"].clone();
        if totals["requests"] == 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(totals["requests"], 10, "{totals}");
    assert_eq!(totals["total_tokens"], 330, "{totals}");
    assert_eq!(totals["unmeasured"], 0, "{totals}");
    drop(envoy);
}

/// The caller's budget of this kind as `GET /auth/budget` shows it.
async fn used(s: &TestServer, key: &str, kind: &str) -> f64 {
    let r = common::api::Api::new(s).get("/auth/budget", Some(key)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"]["budgets"].as_array().unwrap().iter().find(|b| b["kind"] == kind).unwrap()["used"].as_f64().unwrap()
}

/// Waits (10 s at most) until the budget shows `want` used.
async fn until_used(s: &TestServer, key: &str, kind: &str, want: f64) {
    for _ in 0..200 {
        if (used(s, key, kind).await - want).abs() < 1e-9 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{kind} used is {} after 10 s, not {want}", used(s, key, kind).await);
}

/// Through Envoy and a fake OpenAI upstream: reservations are replaced by
/// the usage the upstream reports (JSON and streamed), a cut stream is
/// charged its reservation, streams must ask for usage, spend is priced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_settles_reservations_with_reported_usage() {
    use common::llm::{JSON_USAGE, SSE_USAGE, spawn_llm};
    let (url, _db) = common::fresh_database(Backend::Sqlite).await;
    let mut config = common::test_config(&url);
    // $1 / $2 per million tokens.
    config.budgets.prices = "*=1:2".parse().unwrap();
    let s = TestServer::start_config(config).await;
    let (_, key) = s.user_with_key("dev@example.com", Role::Operator, None).await;
    let update = KeyUpdate {
        budget: BudgetUpdate {
            tokens: Some(Some("1000/3600".parse().unwrap())),
            spend: Some(Some("1/day".parse().unwrap())),
        },
        ..KeyUpdate::default()
    };
    s.accounts.update_key(&Acting::operator(), &key[3..19], &update).await.unwrap();
    let envoy = Envoy::start(&s, spawn_llm().await).await;
    let http = reqwest::Client::new();
    let chat = |body: serde_json::Value| {
        http.post(envoy.url("/v1/chat/completions")).header("x-api-key", &key).json(&body).send()
    };

    // JSON: "hi" in one message (2 + 7 template) + max_tokens 91 reserve 100;
    // the upstream reports 11 + 22.
    let r =
        chat(json!({"model": "m", "max_tokens": 91, "messages": [{"role": "user", "content": "hi"}]})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "1000");
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "900");
    let json_tokens = (JSON_USAGE.0 + JSON_USAGE.1) as f64;
    until_used(&s, &key, "tokens", json_tokens).await;
    let json_cost = (JSON_USAGE.0 as f64 + 2.0 * JSON_USAGE.1 as f64) / 1e6;
    until_used(&s, &key, "spend", json_cost).await;

    // A stream must ask for its usage.
    let r = chat(json!({"model": "m", "stream": true, "max_tokens": 5, "messages": []})).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("include_usage"), "{body}");

    // A stream that does: its last chunk's usage is what counts.
    let streamed = json!({"model": "chunks-5", "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 100, "messages": []});
    let r = chat(streamed).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    let sse_tokens = (SSE_USAGE.0 + SSE_USAGE.1) as f64;
    until_used(&s, &key, "tokens", json_tokens + sse_tokens).await;

    // A stream the upstream cuts is charged its whole reservation (200).
    let cut = json!({"model": "cut", "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 200, "messages": []});
    let r = chat(cut).await.unwrap();
    let _ = r.text().await;
    until_used(&s, &key, "tokens", json_tokens + sse_tokens + 200.0).await;

    // What is left (1000 - 33 - 77 - 200 = 690) cannot hold 700: OpenAI's 429.
    let r = chat(json!({"model": "m", "max_tokens": 700, "messages": []})).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "690");
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["type"].as_str()),
        (Some("QUOTA_EXCEEDED"), Some("insufficient_quota"))
    );
    drop(envoy);
    s.finish().await;
}

/// Metered routes ask the upstream for an uncompressed answer, so its usage
/// can be read (the OpenAI SDKs send `accept-encoding: gzip`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metered_routes_reach_the_upstream_without_accept_encoding() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (_, key) = s.user_with_key("gz@example.com", Role::Operator, None).await;
    let envoy = Envoy::start(&s, common::spawn_echo().await).await;
    let http = reqwest::Client::new();
    for path in ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/v1/inference"] {
        let r = http
            .post(envoy.url(path))
            .header("x-api-key", &key)
            .header("accept-encoding", "gzip, deflate, br")
            .json(&json!({"model": "m", "max_tokens": 1, "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let echoed: serde_json::Value = r.json().await.unwrap();
        assert!(echoed["headers"].get("accept-encoding").is_none(), "{path}: {echoed}");
    }
    drop(envoy);
    s.finish().await;
}

/// A proxy that runs ext_proc waiting for answers (not in observability
/// mode, as Envoy Gateway does) is told to go on after each message: the
/// response reaches the client unchanged and is still settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metering_works_when_the_proxy_waits_for_answers() {
    use common::llm::{SSE_USAGE, spawn_llm};
    let s = TestServer::start(Backend::Sqlite).await;
    let (_, key) = s.user_with_key("wait@example.com", Role::Operator, None).await;
    let update = KeyUpdate {
        budget: BudgetUpdate { tokens: Some(Some("10000/3600".parse().unwrap())), spend: None },
        ..KeyUpdate::default()
    };
    s.accounts.update_key(&Acting::operator(), &key[3..19], &update).await.unwrap();
    let upstream = spawn_llm().await;
    let port = common::free_port();
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/envoy.yaml")).unwrap();
    assert!(shipped.contains("observability_mode: true"));
    let config = shipped
        .replace("observability_mode: true", "observability_mode: false")
        .replace("port_value: 10000", &format!("port_value: {port}"))
        .replace("port_value: 9901", &format!("port_value: {}", common::free_port()))
        .replace("port_value: 9191", &format!("port_value: {}", s.grpc.port()))
        .replace("port_value: 8080", &format!("port_value: {}", s.http.port()))
        .replace("port_value: 9000", &format!("port_value: {}", upstream.port()))
        .replace("address: 0.0.0.0", "address: 127.0.0.1");
    let envoy = Envoy::run(port, &config).await;
    let http = reqwest::Client::new();
    let streamed = json!({"model": "chunks-30", "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 100, "messages": []});
    let r =
        http.post(envoy.url("/v1/chat/completions")).header("x-api-key", &key).json(&streamed).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("word29") && text.ends_with("data: [DONE]\n\n"), "{text}");
    until_used(&s, &key, "tokens", (SSE_USAGE.0 + SSE_USAGE.1) as f64).await;
    // Routes without a reservation pass too.
    let r = http.get(envoy.url("/v1/models")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(envoy);
    s.finish().await;
}

/// A redis-server of the test's own, persisting every write (AOF, fsync
/// always), so it can be restarted mid-run.
struct PersistentRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PersistentRedis {
    fn start() -> PersistentRedis {
        let mut r = PersistentRedis { port: common::free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir.path().to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PersistentRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis restart in the middle of a run (with persistence, as budgets on
/// Redis should run) changes nothing: the counters and every recorded
/// settlement are where they were, and the budget still ends where it should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_run_changes_nothing_recorded() {
    let mut redis = PersistentRedis::start();
    let (url, _db) = common::fresh_database(Backend::Sqlite).await;
    let mut config = common::test_config(&url);
    config.redis_url = Some(gatehouse::secret::Secret::new(redis.url()));
    let s = TestServer::start_config(config).await;
    let (_, key) = s.user_with_key("restart@example.com", Role::Operator, None).await;
    let update = KeyUpdate {
        budget: BudgetUpdate { tokens: Some(Some("330/3600".parse().unwrap())), spend: None },
        ..KeyUpdate::default()
    };
    s.accounts.update_key(&Acting::operator(), &key[3..19], &update).await.unwrap();
    let envoy = Envoy::start(&s, common::llm::spawn_llm().await).await;
    let http = reqwest::Client::new();
    // 13 + 20 reserved, 11 + 22 reported: 33 each, 10 fit.
    let body = json!({"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello!"}]});
    // Sends one request; while Redis is away budgeted calls are refused
    // (503, fail closed) and sent again.
    let send = || async {
        for _ in 0..200 {
            let r = http.post(envoy.url("/v1/chat/completions")).header("x-api-key", &key).json(&body).send().await;
            let r = r.unwrap();
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            if status != 503 {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("Redis never came back");
    };
    for _ in 0..4 {
        assert_eq!(send().await, 200);
    }
    until_used(&s, &key, "tokens", 132.0).await;
    redis.kill();
    redis.spawn();
    for _ in 0..6 {
        assert_eq!(send().await, 200);
    }
    assert_eq!(send().await, 429, "the budget ends where it should");
    until_used(&s, &key, "tokens", 330.0).await;
    s.metering.flush(&s.store).await.unwrap();
    let r = common::api::Api::new(&s).get("/auth/usage", Some(&key)).await;
    let totals = &r.body["data"]["totals"];
    assert_eq!((totals["requests"].as_i64(), totals["total_tokens"].as_i64()), (Some(10), Some(330)), "{}", r.body);
    drop(envoy);
    s.finish().await;
}
