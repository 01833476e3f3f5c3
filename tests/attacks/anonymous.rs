//! Attacks: with `REQUIRE_AUTH=false`, anonymous callers must be a caller
//! with no role and no permissions, never one that skips the rules. Through
//! the shipped Envoy.

use crate::common::{Backend, TestServer};
use crate::table::{Attack, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_is_held_to_every_rule() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.require_auth = false).await;
    let stack = Stack::start(s).await;
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    stack
        .run(&[
            Attack::new("admin rule needs the admin role", "GET", "/admin/x", 401),
            Attack::new("model deletion needs delete_models", "DELETE", "/v1/models/m", 401),
            Attack::new("metrics need read_metrics", "GET", "/metrics", 401),
            Attack::new("models need read_models", "GET", "/v1/models", 401),
            Attack::new("inference needs run_inference", "POST", "/v1/chat/completions", 401)
                .header("content-type", "application/json")
                .body(chat),
            Attack::new("public health stays open", "GET", "/healthz", 200),
        ])
        .await;
}

/// A rule that asks for no permission: anonymous passes, but the body rules
/// still hold it (streaming needs a credential; the default group's models).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_on_an_open_rule_still_meets_the_body_rules() {
    const TABLE: &str = r#"
        [[routes]]
        name = "open-chat"
        methods = ["POST"]
        path = "/v1/chat/completions"
        access = "authenticated"
        body = "json"
    "#;
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.require_auth = false;
        c.policy = gatehouse::policy::PolicySpec::from_toml(TABLE).unwrap();
    })
    .await;
    let mut group = s.store.group("default").await.unwrap().unwrap();
    group.models = Some(gatehouse::domain::ModelList::new(&["small".to_owned()]).unwrap());
    s.accounts.update_group(group).await.unwrap();
    let open = r#"{"model":"small","messages":[{"role":"user","content":"hi"}]}"#;
    let streamed = r#"{"model":"small","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let other_model = r#"{"model":"large","messages":[{"role":"user","content":"hi"}]}"#;
    let c = s.check_body("POST", "/v1/chat/completions", &[("content-type", "application/json")], open).await;
    assert!(c.allowed(), "{c:?}");
    let c = s.check_body("POST", "/v1/chat/completions", &[("content-type", "application/json")], streamed).await;
    assert_eq!(c.http_status(), 401, "streaming needs use_streaming, which anonymous lacks");
    let c = s.check_body("POST", "/v1/chat/completions", &[("content-type", "application/json")], other_model).await;
    assert_eq!(c.http_status(), 403, "anonymous is held to the default group's models");
}
