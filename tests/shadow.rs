//! Shadow (report-only) mode: a rule, or the whole table, whose denials are
//! computed, logged, counted and put in the metadata, but let through with
//! `x-auth-shadow-decision: deny` for the upstream; through a real Envoy.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use common::{Backend, Envoy, TestServer, spawn_echo};
use gatehouse::domain::Role;
use gatehouse::policy::Mode;
use gatehouse::policy::spec::PolicySpec;
use serde_json::Value;
use tonic::Code;

const TABLE: &str = r#"
[[routes]]
name = "models"
methods = ["GET"]
path = "/v1/models"
permissions = ["read_models"]
mode = "report_only"

[[routes]]
name = "chat"
methods = ["POST"]
path = "/v1/chat/completions"
roles = ["admin"]
"#;

async fn shadow_denials(s: &TestServer, admin_key: &str) -> u64 {
    s.metric(admin_key, "gatehouse_check_decisions_total{", &["decision=\"shadow_deny\""]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_only_rule_lets_denials_through_marked() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.policy = PolicySpec::from_toml(TABLE).unwrap()).await;
    let upstream = spawn_echo().await;
    let envoy = Envoy::start(&s, upstream).await;
    let http = reqwest::Client::new();
    let (_, admin) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let (user, key) = s.user_with_key("dev@example.com", Role::Viewer, None).await;
    let before = shadow_denials(&s, &admin).await;

    // No credential: would be 401; goes through, marked, and forged marks are dropped.
    let r = http
        .get(envoy.url("/v1/models"))
        .header("x-auth-shadow-decision", "allow")
        .header("x-auth-user-id", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-auth-shadow-decision"], "deny");
    assert_eq!(h["x-auth-shadow-status"], "401");
    assert!(h["x-auth-shadow-reason"].as_str().unwrap().contains("credential"), "{h}");
    assert_eq!(h["x-auth-method"], "anonymous");
    assert!(h.get("x-auth-user-id").is_none(), "a forged identity never passes");

    // A bad key: through, marked, and the credential is left for the upstream.
    let bad = format!("{}x", &key[..key.len() - 1]);
    let r = http.get(envoy.url("/v1/models")).header("x-api-key", &bad).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-auth-shadow-decision"], "deny");
    assert_eq!(echo["headers"]["x-api-key"], bad.as_str());

    // A good key: a plain allow, no shadow marks, the key stripped.
    let r = http.get(envoy.url("/v1/models")).header("x-api-key", &key).send().await.unwrap();
    let echo: Value = r.json().await.unwrap();
    assert!(echo["headers"].get("x-auth-shadow-decision").is_none());
    assert_eq!(echo["headers"]["x-auth-user-id"], user.id.as_str());
    assert!(echo["headers"].get("x-api-key").is_none());

    // The enforced rule still refuses: it is for admins.
    let r = http.post(envoy.url("/v1/chat/completions")).header("x-api-key", &key).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 403);

    // Envoy's access log shows the request served (200) and the shadow deny.
    let line = envoy.access_log_with("mode=report_only").await;
    assert!(line.contains("\" 200 decision=deny reason=missing_credential route=models"), "{line}");

    // Counted apart from enforced denials, and in the metadata for Envoy.
    assert_eq!(shadow_denials(&s, &admin).await - before, 2);
    let c = s.check("GET", "/v1/models", &[]).await;
    assert!(c.allowed());
    assert_eq!(c.metadata("decision").as_deref(), Some("deny"));
    assert_eq!(c.metadata("mode").as_deref(), Some("report_only"));
    assert_eq!(c.metadata("route").as_deref(), Some("models"));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_table_in_report_only_mode() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.policy = PolicySpec::from_toml(TABLE).unwrap();
        c.policy.mode = Mode::ReportOnly;
    })
    .await;
    // The default rule (deny) and even a malformed path are only reported.
    let c = s.check("GET", "/not/in/the/table", &[]).await;
    assert!(c.allowed());
    assert_eq!(c.upstream_headers()["x-auth-shadow-reason"], "route_denied");
    let c = s.check("GET", "/v1/%2e%2e/admin", &[]).await;
    assert!(c.allowed());
    assert_eq!(c.upstream_headers()["x-auth-shadow-status"], "400");
    // A rule's own `mode` wins over the table's.
    let table = format!("{TABLE}\n[[routes]]\nname = \"strict\"\npath = \"/strict\"\nmode = \"enforce\"\n");
    let strict = TestServer::start_with(Backend::Sqlite, |c| {
        c.policy = PolicySpec::from_toml(&table).unwrap();
        c.policy.mode = Mode::ReportOnly;
    })
    .await;
    strict.check("GET", "/strict", &[]).await.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    assert!(PolicySpec::from_toml("[policy]\nmode = \"audit\"\n").is_err(), "unknown modes are refused");
    // `report_only = true` says the same as `mode = "report_only"`; both at odds are refused.
    let flag = PolicySpec::from_toml("[policy]\nreport_only = true\n").unwrap();
    assert_eq!(flag.mode, Mode::ReportOnly);
    let rule = PolicySpec::from_toml("[[routes]]\npath = \"/x\"\nreport_only = true\n").unwrap();
    assert!(gatehouse::policy::Policy::compile(&rule, &[]).unwrap().rules()[0].report_only);
    let odd = PolicySpec::from_toml("[[routes]]\npath = \"/x\"\nreport_only = true\nmode = \"enforce\"\n").unwrap();
    assert!(gatehouse::policy::Policy::compile(&odd, &[]).is_err());
    strict.finish().await;
    s.finish().await;
}
