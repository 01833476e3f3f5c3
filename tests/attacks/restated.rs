//! Attacks: a request that says one thing to Gatehouse and another to the
//! upstream through headers the upstream may honour instead of the request
//! line (method overrides, `X-Forwarded-Host`), or a model name an upstream
//! may read as another model.

use gatehouse::domain::Role;

use crate::common::{Backend, TestServer};
use crate::table::{Attack, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restatements_that_disagree_are_refused() {
    const TABLE: &str = r#"
        [[routes]]
        name = "internal"
        host = "internal.example.com"
        path = "/*"
        access = "deny"
        [[routes]]
        name = "models"
        methods = ["GET"]
        paths = ["/v1/models", "/v1/models/{model}"]
        permissions = ["read_models"]
        [[routes]]
        name = "chat"
        methods = ["POST"]
        path = "/v1/chat/completions"
        permissions = ["run_inference"]
        body = "json"
    "#;
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.policy = gatehouse::policy::PolicySpec::from_toml(TABLE).unwrap();
    })
    .await;
    let (_, viewer) = s.user_with_key("viewer@example.com", Role::Viewer, None).await;
    let mut group = s.store.group("default").await.unwrap().unwrap();
    group.models = Some(gatehouse::domain::ModelList::new(&["llama-*".to_owned()]).unwrap());
    s.accounts.update_group(group).await.unwrap();
    let stack = Stack::start(s).await;
    let model = |name: &str| {
        format!(r#"{{"model":{},"messages":[{{"role":"user","content":"hi"}}]}}"#, serde_json::json!(name))
    };
    let get = |name, target, want| Attack::new(name, "GET", target, want).header("x-api-key", viewer.clone());
    let chat = |name, body: String, want| {
        Attack::new(name, "POST", "/v1/chat/completions", want)
            .header("x-api-key", viewer.clone())
            .header("content-type", "application/json")
            .body(body)
    };
    stack
        .run(&[
            get("X-HTTP-Method-Override: DELETE", "/v1/models/llama-3", 400).header("X-HTTP-Method-Override", "DELETE"),
            get("X-Method-Override: DELETE", "/v1/models/llama-3", 400).header("X-Method-Override", "DELETE"),
            get("X-HTTP-Method: DELETE", "/v1/models/llama-3", 400).header("X-HTTP-Method", "delete"),
            get("_method=DELETE in the query", "/v1/models/llama-3?_method=DELETE", 400),
            get("an override that agrees", "/v1/models/llama-3", 200).header("X-HTTP-Method-Override", "get"),
            get("X-Forwarded-Host names a denied host", "/v1/models", 400)
                .header("X-Forwarded-Host", "internal.example.com"),
            get("X-Forwarded-Host as a list", "/v1/models", 400)
                .header("X-Forwarded-Host", "gateway.test, internal.example.com"),
            get("X-Forwarded-Host that agrees", "/v1/models", 200).header("X-Forwarded-Host", "GATEWAY.test"),
            chat("a model name with a NUL", model("llama-3\u{0}gpt-4"), 400),
            chat("a model name with dot segments", model("llama-3/../gpt-4"), 400),
            chat("a model name with an escape", model("llama-3%2F..%2Fgpt-4"), 400),
            chat("an allowed model", model("llama-3"), 200),
            chat("a model outside the list", model("gpt-4"), 403),
        ])
        .await;
}
