//! Metered LLM usage against SQLite and Postgres: the batcher and the store
//! (record, flush, every filter and grouping, a failed flush keeping its
//! batch), and the REST endpoints over real HTTP (`/auth/usage` shows only
//! the caller's own usage, `/admin/usage` needs `manage_users`, bad input is
//! a 400 in the error envelope).

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::time::Duration;

use common::api::{Api, user_with_password};
use common::{Backend, TestServer, fresh_database, now};
use gatehouse::domain::Role;
use gatehouse::store::metering::day_of;
use gatehouse::store::{DynStore, Metering, UsageEvent, UsageGroupBy, UsageQuery, UsageSum};
use serde_json::Value;

backend_tests! {
    recorded_usage_is_flushed_and_summed_by_every_filter_and_grouping,
    a_failed_flush_keeps_its_batch_for_the_next,
    own_usage_shows_only_the_callers_own,
    admin_usage_needs_manage_users_and_filters,
    bad_usage_queries_are_refused,
    the_cli_prints_usage,
    the_server_flushes_on_its_interval_and_at_shutdown,
    settled_budget_usage_reaches_the_usage_table,
}

const DAY: i64 = 86_400;

fn event(
    at: i64,
    user: &str,
    group: &str,
    key: Option<&str>,
    model: &str,
    tokens: (u64, u64),
    nano: i64,
) -> UsageEvent {
    UsageEvent {
        at,
        user_id: user.into(),
        group: group.into(),
        key_id: key.map(str::to_owned),
        model: model.into(),
        prompt_tokens: tokens.0,
        completion_tokens: tokens.1,
        cost_nano_usd: nano,
        measured: true,
    }
}

async fn store(b: Backend) -> (DynStore, common::database::TestDb, String) {
    let (url, db) = fresh_database(b).await;
    let store = gatehouse::store::connect(&url, true, Duration::from_secs(5)).await.unwrap();
    (store, db, url)
}

/// Runs one statement on the database at `url`, beside the store's pool.
async fn execute(url: &str, sql: &str) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
}

async fn sums(store: &DynStore, q: UsageQuery) -> Vec<UsageSum> {
    store.usage(&q).await.unwrap()
}

fn total(rows: &[UsageSum]) -> (i64, i64, i64, i64, i64) {
    rows.iter().fold((0, 0, 0, 0, 0), |t, r| {
        let c = &r.counters;
        (t.0 + c.requests, t.1 + c.prompt_tokens, t.2 + c.completion_tokens, t.3 + c.cost_nano_usd, t.4 + c.unmeasured)
    })
}

async fn recorded_usage_is_flushed_and_summed_by_every_filter_and_grouping(b: Backend) {
    let (store, _db, _) = store(b).await;
    let m = Metering::default();
    let d1 = 1_796_083_200; // 2026-12-01 00:00 UTC
    let d0 = d1 - 1; // 2026-11-30 23:59:59
    m.record(event(d0, "alice", "research", Some("k1"), "gpt-4o-mini", (100, 20), 1_000));
    m.record(event(d1, "alice", "research", Some("k1"), "gpt-4o-mini", (10, 2), 100));
    m.record(event(d1 + 60, "alice", "research", Some("k1"), "gpt-4o-mini", (10, 2), 100));
    m.record(event(d1 + 120, "alice", "research", None, "gpt-4o", (1, 1), 5));
    m.record(event(d1 + DAY, "bob", "default", Some("k2"), "gpt-4o", (7, 0), 70));
    let mut unmeasured = event(d1 + DAY, "bob", "default", Some("k2"), "gpt-4o", (500, 0), 5_000);
    unmeasured.measured = false;
    m.record(unmeasured);
    // 4 rows: 11-30 alice k1 mini; 12-01 alice k1 mini (2); 12-01 alice session 4o; 12-02 bob k2 4o (2).
    assert_eq!(m.pending_rows(), 4);
    m.flush(&store).await.unwrap();
    assert_eq!(m.pending_rows(), 0);
    m.flush(&store).await.unwrap(); // nothing pending: nothing written

    let all = UsageQuery::default();
    let by_day = sums(&store, all.clone()).await;
    let days: Vec<_> = by_day.iter().map(|r| (r.day.clone().unwrap(), r.counters.requests)).collect();
    assert_eq!(
        days,
        [("2026-11-30".to_owned(), 1), ("2026-12-01".to_owned(), 3), ("2026-12-02".to_owned(), 2)],
        "{by_day:?}"
    );
    assert!(by_day.iter().all(|r| r.model.is_none()));
    assert_eq!(total(&by_day), (6, 628, 25, 6_275, 1));
    let one = &by_day[1].counters;
    assert_eq!((one.prompt_tokens, one.completion_tokens, one.cost_nano_usd), (21, 5, 205));

    let by_model = sums(&store, UsageQuery { group_by: UsageGroupBy::Model, ..all.clone() }).await;
    let models: Vec<_> = by_model.iter().map(|r| (r.model.clone().unwrap(), r.counters.requests)).collect();
    assert_eq!(models, [("gpt-4o".to_owned(), 3), ("gpt-4o-mini".to_owned(), 3)]);
    assert!(by_model.iter().all(|r| r.day.is_none()));

    let both = sums(&store, UsageQuery { group_by: UsageGroupBy::DayModel, ..all.clone() }).await;
    let pairs: Vec<_> = both
        .iter()
        .map(|r| format!("{} {} {}", r.day.as_ref().unwrap(), r.model.as_ref().unwrap(), r.counters.requests))
        .collect();
    assert_eq!(
        pairs,
        ["2026-11-30 gpt-4o-mini 1", "2026-12-01 gpt-4o 1", "2026-12-01 gpt-4o-mini 2", "2026-12-02 gpt-4o 2"]
    );

    let totals = sums(&store, UsageQuery { group_by: UsageGroupBy::Total, ..all.clone() }).await;
    assert_eq!(totals.len(), 1);
    assert_eq!(total(&totals), (6, 628, 25, 6_275, 1));

    // Each filter.
    let q = |f: fn(&mut UsageQuery)| {
        let mut q = all.clone();
        f(&mut q);
        q
    };
    assert_eq!(total(&sums(&store, q(|q| q.user_id = Some("alice".into()))).await).0, 4);
    assert_eq!(total(&sums(&store, q(|q| q.user_id = Some("nobody".into()))).await).0, 0);
    assert_eq!(total(&sums(&store, q(|q| q.group = Some("default".into()))).await), (2, 507, 0, 5_070, 1));
    assert_eq!(total(&sums(&store, q(|q| q.key_id = Some("k1".into()))).await).0, 3);
    assert_eq!(total(&sums(&store, q(|q| q.key_id = Some(String::new()))).await).0, 1, "sessions: key ''");
    assert_eq!(total(&sums(&store, q(|q| q.model = Some("gpt-4o".into()))).await).0, 3);
    assert_eq!(total(&sums(&store, q(|q| q.from = Some("2026-12-01".into()))).await).0, 5);
    assert_eq!(total(&sums(&store, q(|q| q.to = Some("2026-12-01".into()))).await).0, 4);
    let one_day = q(|q| {
        q.from = Some("2026-12-01".into());
        q.to = Some("2026-12-01".into());
        q.model = Some("gpt-4o-mini".into());
        q.user_id = Some("alice".into());
    });
    assert_eq!(total(&sums(&store, one_day).await), (2, 20, 4, 200, 0));
    // No match: no rows, and a zero total.
    let none = q(|q| q.from = Some("2027-01-01".into()));
    assert!(sums(&store, none.clone()).await.is_empty());
    assert_eq!(total(&sums(&store, UsageQuery { group_by: UsageGroupBy::Total, ..none }).await).0, 0);
    // A limit.
    assert_eq!(sums(&store, q(|q| q.limit = 2)).await.len(), 2);

    // A later flush adds to the stored counters.
    m.record(event(d1, "alice", "research", Some("k1"), "gpt-4o-mini", (1, 1), 1));
    m.flush(&store).await.unwrap();
    let again = sums(&store, q(|q| q.from = Some("2026-12-01".into()))).await;
    assert_eq!(again[0].counters.requests, 4);
    assert_eq!(again[0].counters.cost_nano_usd, 206);
}

async fn a_failed_flush_keeps_its_batch_for_the_next(b: Backend) {
    let (store, _db, url) = store(b).await;
    let m = Metering::default();
    let at = now();
    // The table goes away: every write fails, as in an outage.
    execute(&url, "ALTER TABLE usage_daily RENAME TO usage_daily_away").await;
    m.record(event(at, "alice", "default", Some("k1"), "m", (10, 1), 100));
    m.record(event(at, "bob", "default", None, "m", (20, 2), 200));
    assert!(m.flush(&store).await.is_err());
    assert_eq!(m.pending_rows(), 2, "the failed batch is kept");
    // Recorded meanwhile: merged with the kept batch.
    m.record(event(at, "alice", "default", Some("k1"), "m", (10, 1), 100));
    m.record(event(at, "carol", "default", None, "m", (1, 1), 1));
    assert!(m.flush(&store).await.is_err());
    assert_eq!(m.pending_rows(), 3);

    execute(&url, "ALTER TABLE usage_daily_away RENAME TO usage_daily").await;
    m.flush(&store).await.unwrap();
    assert_eq!(m.pending_rows(), 0);
    let rows = sums(&store, UsageQuery { group_by: UsageGroupBy::Total, ..UsageQuery::default() }).await;
    assert_eq!(total(&rows), (4, 41, 5, 401, 0), "nothing lost, nothing counted twice");
    let alice = sums(&store, UsageQuery { user_id: Some("alice".into()), ..UsageQuery::default() }).await;
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].day.as_deref(), Some(day_of(at).as_str()));
    assert_eq!(alice[0].counters.requests, 2);
}

async fn key_id(s: &TestServer, user_id: &str) -> String {
    s.accounts.list_keys(Some(user_id)).await.unwrap()[0].id.clone()
}

/// Alice (two requests today with her key, one with a session, one 40 days
/// ago) and Bob (one with his key); flushed through the server's own meter.
async fn seed(s: &TestServer) -> (String, String, String, String) {
    let (alice, alice_key) = s.user_with_key("alice@example.com", Role::Viewer, None).await;
    let (bob, bob_key) = s.user_with_key("bob@example.com", Role::Operator, None).await;
    let (ak, bk) = (key_id(s, &alice.id).await, key_id(s, &bob.id).await);
    let t = now();
    let m = &s.metering;
    m.record(event(t, &alice.id, "default", Some(&ak), "gpt-4o-mini", (100, 50), 123_000));
    m.record(event(t, &alice.id, "default", Some(&ak), "gpt-4o-mini", (100, 50), 123_000));
    m.record(event(t, &alice.id, "default", None, "gpt-4o", (10, 5), 1_000));
    m.record(event(t - 40 * DAY, &alice.id, "default", Some(&ak), "gpt-4o", (1, 1), 1));
    m.record(event(t, &bob.id, "default", Some(&bk), "gpt-4o", (9, 9), 9_000_000));
    m.flush(&s.store).await.unwrap();
    (alice_key, ak, bob_key, bk)
}

fn requests(body: &Value) -> Vec<(Value, Value, i64)> {
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["day"].clone(), r["model"].clone(), r["requests"].as_i64().unwrap()))
        .collect()
}

async fn own_usage_shows_only_the_callers_own(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (alice, alice_key, bob, bob_key) = seed(&s).await;
    let today = day_of(now());

    let r = api.get("/auth/usage", Some(&alice)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["group_by"], "day");
    assert_eq!(r.body["to"], today.as_str());
    assert_eq!(r.body["data"]["rows"], r.body["rows"]);
    // The last 30 days: not the request 40 days ago, never Bob's.
    assert_eq!(requests(&r.body), [(Value::from(today.clone()), Value::Null, 3)]);
    let t = &r.body["totals"];
    assert_eq!(
        (t["requests"].as_i64(), t["prompt_tokens"].as_i64(), t["total_tokens"].as_i64()),
        (Some(3), Some(210), Some(315))
    );
    assert!((t["cost_usd"].as_f64().unwrap() - 0.000_247).abs() < 1e-12, "{t}");
    assert_eq!(r.body["rows"][0]["unmeasured"], 0);
    assert_eq!(r.body["truncated"], false);

    let r = api.get("/auth/usage?group_by=model", Some(&alice)).await;
    assert_eq!(requests(&r.body), [(Value::Null, "gpt-4o".into(), 1), (Value::Null, "gpt-4o-mini".into(), 2)]);
    let from = day_of(now() - 45 * DAY);
    let r = api.get(&format!("/auth/usage?group_by=day,model&from={from}&model=gpt-4o"), Some(&alice)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totals"]["requests"], 2, "{}", r.body);
    assert_eq!(r.body["rows"].as_array().unwrap().len(), 2);

    // Her own key: its usage; a session's: key_id empty.
    let r = api.get(&format!("/auth/usage?key_id={alice_key}"), Some(&alice)).await;
    assert_eq!(r.body["totals"]["requests"], 2, "{}", r.body);
    let r = api.get("/auth/usage?key_id=", Some(&alice)).await;
    assert_eq!(r.body["totals"]["requests"], 1, "{}", r.body);
    // Someone else's key, or no key at all: the same 403.
    api.get(&format!("/auth/usage?key_id={bob_key}"), Some(&alice)).await.assert_error(403, "PERMISSION_DENIED");
    api.get("/auth/usage?key_id=gk_nosuchkey", Some(&alice)).await.assert_error(403, "PERMISSION_DENIED");
    // Asking for another user is not a parameter here.
    api.get("/auth/usage?user_id=x", Some(&alice)).await.assert_error(400, "VALIDATION_ERROR");
    // Bob sees his own only.
    let r = api.get("/auth/usage", Some(&bob)).await;
    assert_eq!(r.body["totals"]["requests"], 1);
    assert!((r.body["totals"]["cost_usd"].as_f64().unwrap() - 0.009).abs() < 1e-12);
    // Without a credential: 401.
    assert_eq!(api.get("/auth/usage", None).await.status, 401);
    // The seed aliases serve it too.
    assert_eq!(api.get("/api/v1/auth/usage", Some(&alice)).await.body["totals"]["requests"], 3);
    s.finish().await;
}

async fn admin_usage_needs_manage_users_and_filters(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (alice, alice_key, bob, _) = seed(&s).await;
    let admin = user_with_password(&s, "admin@example.com", Role::Admin).await;

    // A viewer and an operator: 403, audited like any refused admin call.
    api.get("/admin/usage", Some(&alice)).await.assert_error(403, "PERMISSION_DENIED");
    api.get("/admin/usage", Some(&bob)).await.assert_error(403, "PERMISSION_DENIED");
    assert_eq!(api.get("/admin/usage", None).await.status, 401);

    let r = api.get("/admin/usage", Some(&admin)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totals"]["requests"], 4);
    let r = api.get("/admin/usage?user=alice@example.com&group_by=model", Some(&admin)).await;
    assert_eq!(r.body["totals"]["requests"], 3, "{}", r.body);
    let alice_id = s.accounts.find_user("alice@example.com").await.unwrap().id;
    let r = api.get(&format!("/admin/usage?user={alice_id}&key={alice_key}"), Some(&admin)).await;
    assert_eq!(r.body["totals"]["requests"], 2, "{}", r.body);
    let r = api.get(&format!("/admin/usage?key_id={alice_key}"), Some(&admin)).await;
    assert_eq!(r.body["totals"]["requests"], 2, "{}", r.body);
    let r = api.get("/admin/usage?group=default&model=gpt-4o", Some(&admin)).await;
    assert_eq!(r.body["totals"]["requests"], 2, "{}", r.body);
    let r = api.get("/admin/usage?group=research", Some(&admin)).await;
    assert_eq!(r.body["totals"]["requests"], 0);
    assert_eq!(r.body["rows"], Value::Array(vec![]));
    api.get("/admin/usage?user=nobody@example.com", Some(&admin)).await.assert_error(404, "NOT_FOUND");
    let r = api.get("/api/v1/admin/usage?group_by=day,model", Some(&admin)).await;
    assert_eq!(r.body["rows"].as_array().unwrap().len(), 2, "{}", r.body);

    // Prometheus has the same counters, by group only.
    let (_, admin) = s.user_with_key("metrics@example.com", Role::Operator, Some(&["read_metrics"])).await;
    let prompt = s.metric(&admin, "gatehouse_llm_tokens_total", &["kind=\"prompt\"", "group=\"default\""]).await;
    assert_eq!(prompt, 220);
    let completion = s.metric(&admin, "gatehouse_llm_tokens_total", &["kind=\"completion\""]).await;
    assert_eq!(completion, 115);
    assert_eq!(s.metric(&admin, "gatehouse_llm_spend_nano_usd_total", &["group=\"default\""]).await, 9_247_001);
    s.finish().await;
}

async fn bad_usage_queries_are_refused(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (alice, _, _, _) = seed(&s).await;
    let admin = user_with_password(&s, "admin@example.com", Role::Admin).await;
    for (query, field) in [
        ("from=2026-13-01", "from"),
        ("to=yesterday", "to"),
        ("from=2026-1-1", "from"),
        ("from=2026-12-02&to=2026-12-01", "from"),
        ("from=2025-01-01&to=2026-01-02", "from"),
        ("group_by=user", "group_by"),
        ("group_by=", "group_by"),
    ] {
        for (path, token) in [("/auth/usage", &alice), ("/admin/usage", &admin)] {
            let r = api.get(&format!("{path}?{query}"), Some(token)).await;
            r.assert_error(400, "VALIDATION_ERROR");
            assert_eq!(r.body["success"], false);
            assert_eq!(r.body["error"]["details"]["field"], field, "{path}?{query}: {}", r.body);
        }
    }
    // 366 days is the most.
    let r = api.get("/admin/usage?from=2024-01-01&to=2024-12-31", Some(&admin)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    api.get("/admin/usage?bogus=1", Some(&admin)).await.assert_error(400, "VALIDATION_ERROR");
    s.finish().await;
}

fn gatehouse(url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("GATEHOUSE_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

async fn the_cli_prints_usage(b: Backend) {
    let (store, _db, url) = store(b).await;
    let m = Metering::default();
    let d1 = 1_796_083_200; // 2026-12-01
    m.record(event(d1, "alice", "research", Some("k1"), "gpt-4o-mini", (100, 20), 1_500_000));
    m.record(event(d1 + DAY, "alice", "research", None, "gpt-4o", (10, 5), 500_000));
    m.record(event(d1 + DAY, "bob", "default", Some("k2"), "gpt-4o", (1, 1), 1));
    m.flush(&store).await.unwrap();
    let range = ["--from", "2026-11-01", "--to", "2026-12-31"];

    let out = gatehouse(&url, &[&["usage", "--json", "--by", "model", "--user", "alice"][..], &range].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["group_by"], "model");
    assert_eq!(v["rows"][0]["model"], "gpt-4o");
    assert_eq!(v["rows"][1]["model"], "gpt-4o-mini");
    assert_eq!(v["totals"]["requests"], 2);
    assert_eq!(v["totals"]["total_tokens"], 135);
    assert!((v["totals"]["cost_usd"].as_f64().unwrap() - 0.002).abs() < 1e-12);

    let out = gatehouse(&url, &[&["usage", "--by", "day,model", "--group", "research"][..], &range].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[1].starts_with("DAY") && lines[1].contains("MODEL") && lines[1].contains("COST_USD"), "{text}");
    assert!(lines[2].starts_with("2026-12-01  gpt-4o-mini") && lines[2].contains("0.001500"), "{text}");
    assert!(lines[4].starts_with("TOTAL") && lines[4].contains("0.002000"), "{text}");

    let out = gatehouse(&url, &["usage", "--key", "k2", "--json", "--from", "2026-12-02", "--to", "2026-12-02"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"][0]["day"], "2026-12-02");
    assert_eq!(v["totals"]["requests"], 1);

    for (args, says) in [
        (&["usage", "--from", "2026-13-01"][..], "--from"),
        (&["usage", "--from", "2026-12-02", "--to", "2026-12-01"][..], "--from"),
        (&["usage", "--by", "user"][..], "--by"),
    ] {
        let out = gatehouse(&url, args);
        assert!(!out.status.success() && out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

async fn the_server_flushes_on_its_interval_and_at_shutdown(b: Backend) {
    let s = TestServer::start_with(b, |c| c.metering_flush_interval = Duration::from_millis(100)).await;
    let all = UsageQuery { group_by: UsageGroupBy::Total, ..UsageQuery::default() };
    s.metering.record(event(now(), "alice", "default", None, "m", (1, 1), 1));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while total(&sums(&s.store, all.clone()).await).0 == 0 {
        assert!(std::time::Instant::now() < deadline, "not flushed within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.metering.pending_rows(), 0);
    s.finish().await;

    // An interval that never comes: only the shutdown writes.
    let mut s = TestServer::start_with(b, |c| c.metering_flush_interval = Duration::from_secs(3600)).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // past the interval's first, immediate tick
    let mut unmeasured = event(now(), "bob", "default", Some("k"), "m", (5, 0), 50);
    unmeasured.measured = false;
    s.metering.record(unmeasured);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(total(&sums(&s.store, all.clone()).await).0, 0, "nothing written before shutdown");
    s.begin_shutdown();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while total(&sums(&s.store, all.clone()).await).0 == 0 {
        assert!(std::time::Instant::now() < deadline, "not flushed at shutdown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(total(&sums(&s.store, all).await), (1, 5, 0, 50, 1));
    s.finish().await;
}

/// End to end: a Check against a token budget reserves, the settlement
/// records what was used (measured, or the reservation when nothing was
/// reported), and `/auth/usage` shows it once flushed.
async fn settled_budget_usage_reaches_the_usage_table(b: Backend) {
    use gatehouse::accounts::Acting;
    use gatehouse::domain::KeyUpdate;
    use gatehouse::domain::budget::BudgetUpdate;
    use gatehouse::meter::{Metered, Usage};

    let s = TestServer::start_with(b, |c| c.budgets.prices = "llama-*=1000:2000".parse().unwrap()).await;
    let (user, key) = s.user_with_key("budgeted@example.com", Role::Operator, None).await;
    let id = key_id(&s, &user.id).await;
    let budget = BudgetUpdate { tokens: Some(Some("1000/3600".parse().unwrap())), spend: None };
    let update = KeyUpdate { budget, ..KeyUpdate::default() };
    s.accounts.update_key(&Acting::operator(), &id, &update).await.unwrap();
    let h = [("x-api-key", key.as_str())];
    let body = r#"{"model":"llama-3-8b","max_tokens":20,"messages":[{"role":"user","content":"Hello!"}]}"#;
    let first = s.check_body("POST", "/v1/chat/completions", &h, body).await;
    let second = s.check_body("POST", "/v1/chat/completions", &h, body).await;
    assert!(first.allowed() && second.allowed(), "{first:?} {second:?}");
    let t = now();
    let used = Metered::Usage(Usage { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 });
    assert!(s.budgets.settle(&first.all_metadata(), &used, t).await);
    assert!(s.budgets.settle(&second.all_metadata(), &Metered::Unmeasured("cut"), t).await);
    s.metering.flush(&s.store).await.unwrap();

    let r = Api::new(&s).get(&format!("/auth/usage?group_by=model&key_id={id}"), Some(&key)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let row = &r.body["rows"][0];
    assert_eq!(row["model"], "llama-3-8b", "{}", r.body);
    assert_eq!(row["requests"], 2);
    // Measured: 3 + 2; unmeasured: the reservation, 13 ("Hello!" and one
    // message's template tokens) + 20.
    assert_eq!((row["prompt_tokens"].as_i64(), row["completion_tokens"].as_i64()), (Some(16), Some(22)), "{}", r.body);
    assert_eq!(row["unmeasured"], 1);
    // $1000 / $2000 per million: (16 * 1000 + 22 * 2000) / 1e6 = $0.06.
    assert!((row["cost_usd"].as_f64().unwrap() - 0.06).abs() < 1e-9, "{}", r.body);
    s.finish().await;
}
