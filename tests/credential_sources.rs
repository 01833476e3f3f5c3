//! Credentials from a query parameter or a cookie, on the routes that enable
//! them (off by default), through a real Envoy: accepted there, removed before
//! the upstream (and so from Envoy's access log), refused elsewhere.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use common::{Backend, Envoy, TestServer, spawn_echo};
use gatehouse::domain::Role;
use gatehouse::policy::spec::PolicySpec;
use serde_json::Value;

const TABLE: &str = r#"
[[routes]]
name = "models"
methods = ["GET"]
path = "/v1/models"
permissions = ["read_models"]
credential_query = "api_key"
credential_cookie = "gatehouse_key"

[[routes]]
name = "chat"
methods = ["POST"]
path = "/v1/chat/completions"
permissions = ["run_inference"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_cookie_credentials_where_enabled() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.policy = PolicySpec::from_toml(TABLE).unwrap()).await;
    let upstream = spawn_echo().await;
    let envoy = Envoy::start(&s, upstream).await;
    let http = reqwest::Client::new();
    let (user, key) = s.user_with_key("dev@example.com", Role::Operator, None).await;
    let secret = &key[20..];

    // In the query: accepted, and the parameter (only it) never reaches the upstream.
    let r = http.get(envoy.url(&format!("/v1/models?limit=5&api_key={key}&order=asc"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-auth-user-id"], user.id.as_str());
    assert_eq!(echo["query"], "limit=5&order=asc");
    assert!(!echo.to_string().contains(secret));
    let line = envoy.access_log_with("order=asc").await;
    assert!(!line.contains(secret) && line.contains("decision=allow"), "not in Envoy's access log: {line}");

    // In a cookie: accepted, and that cookie (only it) is removed.
    let r = http
        .get(envoy.url("/v1/models"))
        .header("cookie", format!("theme=dark; gatehouse_key={key}; lang=en"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-auth-user-id"], user.id.as_str());
    assert_eq!(echo["headers"]["cookie"], "theme=dark; lang=en");
    assert!(!echo.to_string().contains(secret));

    // Not on a route that does not enable them.
    let r = http.post(envoy.url(&format!("/v1/chat/completions?api_key={key}"))).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(envoy.url("/v1/chat/completions"))
        .header("cookie", format!("gatehouse_key={key}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Two different credentials (header and query) are refused, not chosen between.
    let (_, other) = s.user_with_key("other@example.com", Role::Operator, None).await;
    let r = http.get(envoy.url(&format!("/v1/models?api_key={other}"))).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // A bad key in the query is refused like one in a header.
    let r = http.get(envoy.url("/v1/models?api_key=gk_nope")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    s.finish().await;
}

#[test]
fn sources_are_checked_when_the_table_loads() {
    let bad_name = "[[routes]]\npath = \"/x\"\ncredential_query = \"api key\"\n";
    let err = gatehouse::policy::Policy::compile(&PolicySpec::from_toml(bad_name).unwrap(), &[]).unwrap_err();
    assert!(err.contains("credential_query"), "{err}");
    let public = "[[routes]]\npath = \"/x\"\naccess = \"public\"\ncredential_cookie = \"k\"\n";
    assert!(gatehouse::policy::Policy::compile(&PolicySpec::from_toml(public).unwrap(), &[]).is_err());
}
