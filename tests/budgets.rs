//! Token and spend budgets at Check: reservations against key, user and
//! group budgets, OpenAI's headers and 429 body, settlement, and the
//! ledgers' exactness under concurrency (in-process, Redis, Redis Cluster).

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::sync::Arc;

use common::{Backend, TestServer, api::Api};
use gatehouse::accounts::Acting;
use gatehouse::budget::ledger::{Actual, Charge, Ledger, LocalLedger, Record, Reserved};
use gatehouse::domain::budget::BudgetUpdate;
use gatehouse::domain::{KeyUpdate, Role, UserUpdate};
use gatehouse::meter::{Metered, Usage};
use serde_json::json;

backend_tests! {
    token_budget_reserves_refuses_and_settles,
    spend_budget_is_priced_and_unknown_models_refused,
    every_budget_of_the_caller_applies,
    budgeted_streams_must_ask_for_usage,
    budgets_are_set_over_rest_and_validated,
    reservations_cover_every_choice_message_and_request,
    a_budgeted_key_cannot_mint_or_lift_budgets,
}

/// A chat request: "Hello!" (6 characters, one message: 6 + 4 + 3 template
/// tokens = 13 prompt tokens reserved) and a completion ceiling.
fn chat(max_tokens: u64) -> String {
    json!({"model": "llama-3-8b", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hello!"}]})
        .to_string()
}

async fn key_with_budget(s: &TestServer, email: &str, tokens: Option<&str>, spend: Option<&str>) -> (String, String) {
    let (_, key) = s.user_with_key(email, Role::Operator, None).await;
    let id = key[3..19].to_owned();
    let update = KeyUpdate {
        budget: BudgetUpdate {
            tokens: tokens.map(|t| Some(t.parse().unwrap())),
            spend: spend.map(|v| Some(v.parse().unwrap())),
        },
        ..KeyUpdate::default()
    };
    s.accounts.update_key(&Acting::operator(), &id, &update).await.unwrap();
    (id, key)
}

fn settle_usage(prompt: u64, completion: u64) -> Metered {
    Metered::Usage(Usage { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion })
}

async fn token_budget_reserves_refuses_and_settles(b: Backend) {
    let s = TestServer::start(b).await;
    let (id, key) = key_with_budget(&s, "t@example.com", Some("130/3600"), None).await;
    let h = [("x-api-key", key.as_str())];
    // Each request reserves 13 (prompt) + 20 (max_tokens) = 33 tokens.
    let mut allowed = Vec::new();
    for remaining in [97, 64, 31] {
        let c = s.check_body("POST", "/v1/chat/completions", &h, &chat(20)).await;
        assert!(c.allowed(), "{c:?}");
        let headers = c.client_headers();
        assert_eq!(headers["x-ratelimit-limit-tokens"], "130");
        assert_eq!(headers["x-ratelimit-remaining-tokens"], remaining.to_string());
        assert!(headers["x-ratelimit-reset-tokens"].ends_with('s'), "{headers:?}");
        let meta = c.all_metadata();
        assert_eq!(meta["budgets"], format!("key:{id}"));
        assert_eq!((meta["reserved_prompt"].as_str(), meta["reserved_completion"].as_str()), ("13", "20"));
        assert_eq!(meta["reservation"].len(), 32);
        allowed.push(meta);
    }
    let budget = Api::new(&s).get("/auth/budget", Some(&key)).await;
    assert_eq!(budget.status, 200, "{}", budget.body);
    let listed = &budget.body["data"]["budgets"][0];
    assert_eq!(listed["scope"], format!("key:{id}"));
    assert_eq!((listed["kind"].as_str(), listed["limit"].as_str()), (Some("tokens"), Some("130/3600")));
    assert_eq!((listed["used"].as_f64(), listed["remaining"].as_f64()), (Some(99.0), Some(31.0)));
    // 99 + 33 > 130: refused the way OpenAI clients expect.
    let c = s.check_body("POST", "/v1/chat/completions", &h, &chat(20)).await;
    c.assert_denied(429, tonic::Code::ResourceExhausted, "QUOTA_EXCEEDED");
    assert_eq!(c.body()["error"]["type"], "insufficient_quota");
    assert!(c.body()["error"]["message"].as_str().unwrap().contains("99 of 130"), "{}", c.body());
    let headers = c.client_headers();
    assert_eq!(headers["x-ratelimit-remaining-tokens"], "31");
    assert!(headers["retry-after"].parse::<u64>().unwrap() >= 1);
    assert_eq!(c.metadata("reason").as_deref(), Some("quota_exceeded"));
    // A smaller request (23) still fits: 122 used.
    assert!(s.check_body("POST", "/v1/chat/completions", &h, &chat(10)).await.allowed());
    // The first call really used 5 tokens: 28 come back (122 - 28 = 94).
    let now = common::now();
    assert!(s.budgets.settle(&allowed[0], &settle_usage(3, 2), now).await);
    let c = s.check_body("POST", "/v1/chat/completions", &h, &chat(20)).await;
    assert!(c.allowed(), "{c:?}");
    assert_eq!(c.client_headers()["x-ratelimit-remaining-tokens"], "3");
    // Settling again, or a reservation nobody made, changes nothing.
    assert!(!s.budgets.settle(&allowed[0], &settle_usage(0, 0), now).await);
    let mut forged = allowed[1].clone();
    forged.insert("reservation".into(), "0".repeat(32));
    assert!(!s.budgets.settle(&forged, &settle_usage(0, 0), now).await);
    // A stream that ended without usage is charged its whole reservation.
    assert!(s.budgets.settle(&allowed[1], &Metered::Unmeasured("cut"), now).await);
    let c = s.check_body("POST", "/v1/chat/completions", &h, &chat(1)).await;
    c.assert_denied(429, tonic::Code::ResourceExhausted, "QUOTA_EXCEEDED");
    s.finish().await;
}

async fn spend_budget_is_priced_and_unknown_models_refused(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        // $1000 / $2000 per million tokens: 13 prompt + 20 completion = $0.053.
        c.budgets.prices = "llama-*=1000:2000".parse().unwrap();
    })
    .await;
    let (_, key) = key_with_budget(&s, "s@example.com", None, Some("0.11/day")).await;
    let h = [("x-api-key", key.as_str())];
    for _ in 0..2 {
        let c = s.check_body("POST", "/v1/chat/completions", &h, &chat(20)).await;
        assert!(c.allowed(), "{c:?}");
        // No token budget: no token headers.
        assert!(!c.client_headers().contains_key("x-ratelimit-limit-tokens"));
    }
    let c = s.check_body("POST", "/v1/chat/completions", &h, &chat(20)).await;
    c.assert_denied(429, tonic::Code::ResourceExhausted, "QUOTA_EXCEEDED");
    assert!(c.body()["error"]["message"].as_str().unwrap().contains("$0.106 of $0.11"), "{}", c.body());
    let body = json!({"model": "gpt-4o", "max_tokens": 1, "messages": []}).to_string();
    let c = s.check_body("POST", "/v1/chat/completions", &h, &body).await;
    c.assert_denied(403, tonic::Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(c.metadata("reason").as_deref(), Some("model_not_priced"));
    s.finish().await;
}

async fn every_budget_of_the_caller_applies(b: Backend) {
    let s = TestServer::start(b).await;
    let mut group = gatehouse::domain::Group {
        name: "team".into(),
        requests_per_period: None,
        period_seconds: None,
        burst: None,
        models: None,
        budget: Default::default(),
    };
    group.budget.tokens = Some("70/60".parse().unwrap());
    s.accounts.create_group(group).await.unwrap();
    let a = s.accounts.create_user("a@example.com", None, Role::Operator, "team").await.unwrap();
    let other = s.accounts.create_user("b@example.com", None, Role::Operator, "team").await.unwrap();
    let update = UserUpdate {
        budget: BudgetUpdate { tokens: Some(Some("1000/60".parse().unwrap())), spend: None },
        ..UserUpdate::default()
    };
    s.accounts.update_user(&a.id, &update).await.unwrap();
    let key_a = s.key_for(&a, None).await;
    let key_b = s.key_for(&other, None).await;
    // The group's 70 tokens are shared: 33 + 33 fit, the third does not,
    // whoever sends it, although the user's own budget has room.
    let c = s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &key_a)], &chat(20)).await;
    assert!(c.allowed(), "{c:?}");
    assert_eq!(c.metadata("budgets").unwrap(), format!("user:{},group:team", a.id));
    assert_eq!(c.client_headers()["x-ratelimit-remaining-tokens"], "37", "the tightest budget is shown");
    assert!(s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &key_b)], &chat(20)).await.allowed());
    let c = s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &key_a)], &chat(20)).await;
    c.assert_denied(429, tonic::Code::ResourceExhausted, "QUOTA_EXCEEDED");
    assert!(c.body()["error"]["message"].as_str().unwrap().starts_with("group:team token budget"), "{}", c.body());
    s.finish().await;
}

async fn budgeted_streams_must_ask_for_usage(b: Backend) {
    let s = TestServer::start(b).await;
    let (_, budgeted) = key_with_budget(&s, "st@example.com", Some("10000/60"), None).await;
    let (_, free) = s.user_with_key("free@example.com", Role::Operator, None).await;
    let bare = json!({"model": "m", "stream": true, "max_tokens": 5, "messages": []}).to_string();
    let c = s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &budgeted)], &bare).await;
    c.assert_denied(400, tonic::Code::InvalidArgument, "VALIDATION_ERROR");
    assert!(c.body()["error"]["message"].as_str().unwrap().contains("include_usage"), "{}", c.body());
    let with_usage = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": []});
    let c = s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &budgeted)], &with_usage.to_string()).await;
    assert!(c.allowed(), "{c:?}");
    // No max_tokens: the default ceiling (4096) is reserved.
    assert_eq!(c.metadata("reserved_completion").as_deref(), Some("4096"));
    // Embeddings reserve no completion tokens (the route's default_max_tokens = 0).
    let embed = json!({"model": "m", "input": "abc"}).to_string();
    let c = s.check_body("POST", "/v1/embeddings", &[("x-api-key", &budgeted)], &embed).await;
    assert!(c.allowed(), "{c:?}");
    assert_eq!(
        (c.metadata("reserved_prompt").as_deref(), c.metadata("reserved_completion").as_deref()),
        (Some("3"), Some("0"))
    );
    // Without a budget a stream is only metered.
    let c = s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &free)], &bare).await;
    assert!(c.allowed(), "{c:?}");
    assert!(c.metadata("budgets").is_none());
    assert!(c.metadata("reservation").is_some());
    s.finish().await;
}

async fn budgets_are_set_over_rest_and_validated(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let admin = common::api::user_with_password(&s, "root@example.com", Role::Admin).await;
    let own = common::api::user_with_password(&s, "u@example.com", Role::Operator).await;
    let user = s.store.user_by_email("u@example.com").await.unwrap().unwrap();
    let key = s.key_for(&user, None).await;
    let id = &key[3..19];
    let r = api
        .send(
            "PATCH",
            &format!("/admin/keys/{id}"),
            Some(&admin),
            Some(json!({"token_limit": "500/60", "spend_limit": "2.5/month"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["token_limit"], "500/60");
    assert_eq!(r.body["data"]["spend_limit"], "2.5/month");
    for (bad, field) in [
        (json!({"token_limit": "500"}), "token_limit"),
        (json!({"token_limit": "-5/60"}), "token_limit"),
        (json!({"spend_limit": "5/year"}), "spend_limit"),
        (json!({"spend_limit": "1e9/day"}), "spend_limit"),
        (json!({"token_limit": 500}), ""),
    ] {
        let r = api.send("PATCH", &format!("/admin/keys/{id}"), Some(&admin), Some(bad.clone())).await;
        assert_eq!(r.status, 400, "{bad} {}", r.body);
        if !field.is_empty() {
            assert_eq!(r.body["error"]["details"]["field"], field, "{}", r.body);
        }
    }
    let stored = s.store.api_key(id).await.unwrap().unwrap();
    assert_eq!(stored.budget.tokens.unwrap().to_string(), "500/60", "a refused change changes nothing");
    // The key's owner cannot lift it.
    let r = api.send("PATCH", &format!("/admin/keys/{id}"), Some(&own), Some(json!({"token_limit": null}))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = api.send("PATCH", &format!("/admin/keys/{id}"), Some(&admin), Some(json!({"token_limit": null}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["data"]["token_limit"].is_null());
    assert_eq!(r.body["data"]["spend_limit"], "2.5/month", "left out: unchanged");
    // Users and groups.
    let r = api
        .send("PATCH", &format!("/admin/users/{}", user.id), Some(&admin), Some(json!({"spend_limit": "10/week"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["spend_limit"], "10/week");
    let r = api.post("/admin/groups", Some(&admin), json!({"name": "ml", "token_limit": "100000/60"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.send("PATCH", "/admin/groups/ml", Some(&admin), Some(json!({"spend_limit": "100/month"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["token_limit"], "100000/60");
    assert_eq!(r.body["data"]["spend_limit"], "100/month");
    // At key creation.
    let r = api.post("/auth/keys", Some(&admin), json!({"name": "b", "token_limit": "1000/60"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["data"]["token_limit"], "1000/60");
    s.finish().await;
}

fn record(id: usize, amount: i64, limit: i64, deadline: i64) -> Record {
    Record {
        id: format!("r{id}"),
        user_id: "u".into(),
        group: "g".into(),
        key_id: None,
        model: "m".into(),
        prompt: 0,
        completion: u64::try_from(amount).unwrap(),
        price: (0, 0),
        deadline,
        charges: vec![Charge {
            counter: format!("test-{}|tokens|60", uuid_like()),
            bucket: 100,
            oldest: 50,
            amount,
            limit,
            spend: false,
            retention: 120,
        }],
    }
}

fn uuid_like() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

/// 50 concurrent reservations against a budget for 10: exactly 10 are
/// granted; settling gives back what was not used, once.
async fn exact_under_concurrency(ledger: Arc<dyn Ledger>) {
    let counter = record(0, 10, 100, i64::MAX / 2).charges[0].counter.clone();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let ledger = ledger.clone();
            let mut r = record(i, 10, 100, i64::MAX / 2);
            r.id = format!("{counter}-{i}");
            r.charges[0].counter = counter.clone();
            tokio::spawn(async move { (r.id.clone(), ledger.reserve(&r, 0).await.unwrap()) })
        })
        .collect();
    let mut granted = Vec::new();
    for t in tasks {
        let (id, outcome) = t.await.unwrap();
        if matches!(outcome, Reserved::Granted { .. }) {
            granted.push(id);
        }
    }
    assert_eq!(granted.len(), 10);
    assert_eq!(ledger.used(&counter, 50).await.unwrap(), 100);
    let actual = Some(Actual { tokens: 4, nano_usd: 0 });
    for id in &granted {
        assert!(ledger.settle(id, actual).await.unwrap().is_some());
        assert!(ledger.settle(id, actual).await.unwrap().is_none(), "settled twice");
    }
    assert_eq!(ledger.used(&counter, 50).await.unwrap(), 40);
    // Past its deadline, an open reservation is charged as reserved, once.
    let mut late = record(99, 10, 100, 5);
    late.charges[0].counter = counter.clone();
    late.id = format!("{counter}-late");
    assert!(matches!(ledger.reserve(&late, 0).await.unwrap(), Reserved::Granted { .. }));
    let expired = ledger.expire(10, 100).await.unwrap();
    assert_eq!(expired.iter().filter(|r| r.id == late.id).count(), 1);
    assert!(ledger.settle(&late.id, actual).await.unwrap().is_none());
    assert_eq!(ledger.used(&counter, 50).await.unwrap(), 50);
    // Buckets older than the window no longer count.
    assert_eq!(ledger.used(&counter, 101).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_ledger_is_exact_under_concurrency() {
    exact_under_concurrency(Arc::new(LocalLedger::default())).await;
}

async fn redis_ledger(url: &str) -> Arc<dyn Ledger> {
    let limiter = common::connected_redis_limiter(url, std::time::Duration::from_secs(2)).await;
    Arc::new(gatehouse::budget::redis::RedisLedger::new(limiter, std::time::Duration::from_secs(2)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_ledger_is_exact_under_concurrency() {
    let url = std::env::var("GATEHOUSE_TEST_REDIS_URL").expect("GATEHOUSE_TEST_REDIS_URL is not set: run scripts/test");
    exact_under_concurrency(redis_ledger(&url).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_ledger_is_exact_under_concurrency() {
    let url = std::env::var("GATEHOUSE_TEST_REDIS_CLUSTER_URL")
        .expect("GATEHOUSE_TEST_REDIS_CLUSTER_URL is not set: run scripts/test");
    exact_under_concurrency(redis_ledger(&url).await).await;
}

/// What a request may cost is reserved in full: a default ceiling for each
/// choice, template tokens for each message, a custom role, and at least one
/// token for any request.
async fn reservations_cover_every_choice_message_and_request(b: Backend) {
    let s = TestServer::start(b).await;
    let (_, key) = key_with_budget(&s, "n@example.com", Some("100000/3600"), None).await;
    let h = [("x-api-key", key.as_str())];
    let reserved = |c: &common::Check| {
        assert!(c.allowed(), "{c:?}");
        (c.metadata("reserved_prompt").unwrap(), c.metadata("reserved_completion").unwrap())
    };
    let c = s
        .check_body("POST", "/v1/chat/completions", &h, &json!({"model": "m", "n": 3, "messages": []}).to_string())
        .await;
    assert_eq!(reserved(&c), ("0".into(), "12288".into()), "3 choices of the 4096 default");
    let c = s
        .check_body("POST", "/v1/completions", &h, &json!({"model": "m", "best_of": 2, "prompt": "ab"}).to_string())
        .await;
    assert_eq!(reserved(&c), ("2".into(), "8192".into()));
    let empty = json!({"model": "m", "max_tokens": 1, "messages": [{}, {}, {}]}).to_string();
    let c = s.check_body("POST", "/v1/chat/completions", &h, &empty).await;
    assert_eq!(reserved(&c), ("15".into(), "1".into()), "3 + 4 per message");
    let custom =
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "x".repeat(50), "content": "hi"}]}).to_string();
    let c = s.check_body("POST", "/v1/chat/completions", &h, &custom).await;
    assert_eq!(reserved(&c), ("59".into(), "1".into()), "a custom role is text the model reads");
    let docs = json!({"model": "m", "max_tokens": 1, "documents": [{"title": "t", "text": "abcd"}]}).to_string();
    let c = s.check_body("POST", "/v1/chat/completions", &h, &docs).await;
    assert!(c.metadata("reserved_prompt").unwrap().parse::<u64>().unwrap() >= 5, "{c:?}");
    let nothing = json!({"model": "m", "input": ""}).to_string();
    let c = s.check_body("POST", "/v1/embeddings", &h, &nothing).await;
    assert_eq!(reserved(&c), ("0".into(), "1".into()), "every request costs at least one token");
    s.finish().await;
}

/// A key with a budget of its own manages no budgets and makes no keys: a
/// sibling without its budget would be a way around it.
async fn a_budgeted_key_cannot_mint_or_lift_budgets(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (admin, admin_key) = s.user_with_key("boss@example.com", Role::Admin, None).await;
    let update = KeyUpdate {
        budget: BudgetUpdate { tokens: Some(Some("100/3600".parse().unwrap())), spend: None },
        ..KeyUpdate::default()
    };
    s.accounts.update_key(&Acting::operator(), &admin_key[3..19], &update).await.unwrap();
    let r = api.post("/auth/keys", Some(&admin_key), json!({"name": "escape"})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = api.post("/auth/keys", Some(&admin_key), json!({"name": "escape", "token_limit": "100000000/3600"})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let (_, other) = s.user_with_key("o@example.com", Role::Operator, None).await;
    let r = api
        .send(
            "PATCH",
            &format!("/admin/keys/{}", &other[3..19]),
            Some(&admin_key),
            Some(json!({"token_limit": "5/60"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = api
        .send("PATCH", &format!("/admin/users/{}", admin.id), Some(&admin_key), Some(json!({"token_limit": null})))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(s.store.list_api_keys(Some(&admin.id)).await.unwrap().len(), 1, "nothing was made");
    // Its other powers are untouched: it still lists users.
    assert_eq!(api.get("/admin/users", Some(&admin_key)).await.status, 200);
    s.finish().await;
}
