//! Route policy through Check: the route table, path and host matching,
//! request-body rules, dynamic metadata, and reloading the table.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::time::Duration;

use common::{Backend, CHAT, Check, Process, TestServer, check_request_with_body};
use gatehouse::domain::{Group, ModelList, Role};
use gatehouse::policy::PolicySpec;
use serde_json::json;
use tonic::Code;

backend_tests! {
    route_table_decides_by_method_host_and_path,
    normalized_paths_reach_the_rule_they_name,
    roles_and_permissions_of_a_rule,
    deny_metadata_carries_the_decision_context,
    model_allowlists_of_group_and_key,
    streaming_needs_use_streaming,
    prompt_length_body_size_and_shape,
}

const TABLE: &str = r#"
[policy]
default = "deny"
max_request_bytes = 2000
max_prompt_chars = 50

[[routes]]
name = "models"
methods = ["GET"]
paths = ["/v1/models", "/v1/models/{id}"]
permissions = ["read_models"]

[[routes]]
name = "internal"
host = "*.internal.example"
path = "/*"
roles = ["operator", "admin"]

[[routes]]
name = "docs"
path = "/docs/*"
access = "public"

[[routes]]
name = "blocked"
path = "/v1/files/*"
access = "deny"

[[routes]]
name = "chat"
methods = ["POST"]
path = "/v1/chat/completions"
permissions = ["run_inference"]
body = "json"

[[routes]]
name = "short"
methods = ["POST"]
path = "/v1/short"
body = "json"
max_prompt_chars = 5

[[routes]]
name = "admin"
path = "/admin/*"
roles = ["admin"]
"#;

async fn server(b: Backend) -> TestServer {
    TestServer::start_with(b, |c| c.policy = PolicySpec::from_toml(TABLE).unwrap()).await
}

/// A Check with a host.
async fn check_host(s: &TestServer, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Check {
    let mut request = common::check_request(method, path, headers);
    request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap().host = host.into();
    Check(s.client().await.check(request).await.unwrap().into_inner())
}

async fn route_table_decides_by_method_host_and_path(b: Backend) {
    let s = server(b).await;
    let (_, viewer) = s.user_with_key("v@example.com", Role::Viewer, None).await;
    let (_, operator) = s.user_with_key("o@example.com", Role::Operator, None).await;
    // (method, host, path, key, allowed?, HTTP status when denied, rule)
    let cases: &[(&str, &str, &str, &str, bool, i32, &str)] = &[
        ("GET", "gw", "/v1/models", &viewer, true, 0, "models"),
        ("GET", "gw", "/v1/models/llama-3", &viewer, true, 0, "models"),
        ("get", "gw", "/v1/models/", &viewer, true, 0, "models"),
        ("GET", "gw", "/v1/models/a/b", &viewer, false, 403, "default"),
        ("POST", "gw", "/v1/models", &viewer, false, 403, "default"),
        ("DELETE", "gw", "/v1/models/llama-3", &operator, false, 403, "default"),
        ("GET", "gw", "/docs", "", true, 0, "docs"),
        ("GET", "gw", "/docs/intro?x=1", "", true, 0, "docs"),
        ("GET", "gw", "/v1/files/f1", &operator, false, 403, "blocked"),
        ("GET", "gw", "/v1/files", &operator, false, 403, "blocked"),
        ("GET", "gw", "/nowhere", &operator, false, 403, "default"),
        ("GET", "gw", "/nowhere", "", false, 403, "default"),
        ("GET", "api.internal.example", "/anything", &operator, true, 0, "internal"),
        ("GET", "API.Internal.Example.:443", "/anything", &operator, true, 0, "internal"),
        ("GET", "api.internal.example", "/anything", &viewer, false, 403, "internal"),
        ("GET", "internal.example", "/anything", &operator, false, 403, "default"),
        ("GET", "api.internal.example.evil", "/anything", &operator, false, 403, "default"),
        ("GET", "api.internal.example", "/anything", "", false, 401, "internal"),
        ("GET", "gw", "/healthz", "", true, 0, "public /healthz"),
    ];
    for &(method, host, path, key, allowed, status, rule) in cases {
        let headers: Vec<(&str, &str)> = if key.is_empty() { vec![] } else { vec![("x-api-key", key)] };
        let c = check_host(&s, method, host, path, &headers).await;
        assert_eq!(c.allowed(), allowed, "{method} {host}{path}: {c:?}");
        assert_eq!(c.http_status(), status, "{method} {host}{path}");
        assert_eq!(c.metadata("route").as_deref(), Some(rule), "{method} {host}{path}");
    }
    // A public rule needs no credential; one sent anyway is kept from the
    // upstream like any other (credentials are stripped by default).
    let c = s.check("GET", "/docs/x", &[("x-api-key", &viewer)]).await;
    assert_eq!(c.removed(), ["x-api-key"], "{c:?}");
    s.finish().await;
}

async fn normalized_paths_reach_the_rule_they_name(b: Backend) {
    let s = server(b).await;
    let (_, viewer) = s.user_with_key("v@example.com", Role::Viewer, None).await;
    for (path, allowed, rule) in [
        ("/v1/%6Dodels", true, "models"),
        ("/v1/models/", true, "models"),
        ("/v1/models#frag", true, "models"),
        ("/v1/models?x=/../admin;", true, "models"),
        ("/%61dmin/users", false, "admin"),
    ] {
        let c = s.check("GET", path, &[("x-api-key", &viewer)]).await;
        assert_eq!(c.allowed(), allowed, "{path}: {c:?}");
        assert_eq!(c.metadata("route").as_deref(), Some(rule), "{path}");
    }
    // Dot segments, parameters, empty segments and encodings whose meaning
    // depends on the reader are refused, not resolved, cut or guessed.
    for path in [
        "//v1//models",
        "/v1/./models",
        "/v1/models;x=1",
        "/docs/../v1/models",
        "/docs/../admin/users",
        "/docs/..;/admin/users",
        "/v1/models/../../admin",
        "/../../../admin",
        "/docs/./../v1/files/f",
        "/docs%2f..%2fadmin",
        "/docs/%2e%2e/admin",
        "/docs/%2E./admin",
        "/docs\\..\\admin",
        "/docs/%5c../admin",
        "/docs/%00",
        "/docs/%zz",
        "/docs/\u{7f}",
        "v1/models",
    ] {
        let c = s.check("GET", path, &[("x-api-key", &viewer)]).await;
        c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
        assert_eq!(c.metadata("route"), None, "{path}");
    }
    s.finish().await;
}

async fn roles_and_permissions_of_a_rule(b: Backend) {
    let s = server(b).await;
    let (_, admin) = s.user_with_key("a@example.com", Role::Admin, None).await;
    let (_, operator) = s.user_with_key("o@example.com", Role::Operator, None).await;
    let (_, narrow) = s.user_with_key("n@example.com", Role::Admin, Some(&["run_inference"])).await;
    assert!(s.check("GET", "/admin/users", &[("x-api-key", &admin)]).await.allowed());
    let c = s.check("GET", "/admin/users", &[("x-api-key", &operator)]).await;
    c.assert_denied(403, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(c.metadata("reason").as_deref(), Some("role_required"));
    assert!(c.body()["error"]["message"].as_str().unwrap().contains("admin"));
    // A key's narrowed permissions count, not its owner's role's.
    let c = s.check("GET", "/v1/models", &[("x-api-key", &narrow)]).await;
    c.assert_denied(403, Code::PermissionDenied, "PERMISSION_DENIED");
    assert!(c.body()["error"]["message"].as_str().unwrap().contains("read_models"));
    assert!(s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &narrow)], CHAT).await.allowed());
    s.finish().await;
}

async fn deny_metadata_carries_the_decision_context(b: Backend) {
    let s = server(b).await;
    let (user, key) = s.user_with_key("v@example.com", Role::Viewer, None).await;
    let c = s.check("GET", "/admin/x", &[("x-api-key", &key)]).await;
    assert!(!c.allowed());
    for (field, want) in [
        ("decision", "deny"),
        ("reason", "role_required"),
        ("route", "admin"),
        ("method", "api_key"),
        ("user_id", user.id.as_str()),
        ("role", "viewer"),
        ("group", "default"),
        ("key_id", &key[3..19]),
    ] {
        assert_eq!(c.metadata(field).as_deref(), Some(want), "{field}");
    }
    let c = s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &key)], CHAT).await;
    assert!(c.allowed());
    assert_eq!(c.metadata("decision").as_deref(), Some("allow"));
    assert_eq!(c.metadata("route").as_deref(), Some("chat"));
    assert_eq!(c.metadata("model").as_deref(), Some("llama-3-8b"));
    assert_eq!(c.metadata("user_id").as_deref(), Some(user.id.as_str()));
    s.finish().await;
}

async fn model_allowlists_of_group_and_key(b: Backend) {
    let s = server(b).await;
    let models = Some(ModelList::new(["llama-*", "mistral-7b"]).unwrap());
    let group = Group {
        name: "oss".into(),
        requests_per_period: None,
        period_seconds: None,
        burst: None,
        models,
        budget: Default::default(),
    };
    s.accounts.create_group(group).await.unwrap();
    let user = s.accounts.create_user("m@example.com", None, Role::Viewer, "oss").await.unwrap();
    let key = s.key_for(&user, None).await;
    let (_, admin) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let ask = |key: String, body: String| {
        let s = &s;
        async move { s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &key)], &body).await }
    };
    for (model, allowed) in [
        ("llama-3-8b", true),
        ("mistral-7b", true),
        ("mistral-7b-instruct", false),
        ("gpt-4o", false),
        ("LLAMA-3", false),
    ] {
        let c = ask(key.clone(), chat(model)).await;
        assert_eq!(c.allowed(), allowed, "{model}: {c:?}");
        if !allowed {
            c.assert_denied(403, Code::PermissionDenied, "PERMISSION_DENIED");
            assert_eq!(c.body()["error"]["param"], "model");
            assert_eq!(c.metadata("reason").as_deref(), Some("model_not_allowed"));
            assert_eq!(c.metadata("model").as_deref(), Some(model));
        }
    }
    // With a list in force, a request must name its model.
    let c = ask(key.clone(), r#"{"messages":[]}"#.into()).await;
    c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
    // A member of a group without a list may use any model.
    let (_, free) = s.user_with_key("f@example.com", Role::Viewer, None).await;
    assert!(ask(free.clone(), chat("gpt-4o")).await.allowed());

    // A key's own list narrows further, set at creation through the REST API...
    let http = reqwest::Client::new();
    let r = http
        .post(s.url("/auth/keys"))
        .header("x-api-key", &admin)
        .json(&json!({"name": "one model", "user": "m@example.com", "allowed_models": ["mistral-7b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(created["allowed_models"], json!(["mistral-7b"]));
    let narrow = created["key"].as_str().unwrap().to_owned();
    assert!(ask(narrow.clone(), chat("mistral-7b")).await.allowed());
    assert!(!ask(narrow.clone(), chat("llama-3-8b")).await.allowed(), "the group allows it, the key does not");
    // ...and changed by an admin, effective at once.
    let id = &narrow[3..19];
    let r = http
        .patch(s.url(&format!("/admin/keys/{id}")))
        .header("x-api-key", &admin)
        .json(&json!({"allowed_models": ["llama-*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(ask(narrow.clone(), chat("llama-3-8b")).await.allowed());
    assert!(!ask(narrow.clone(), chat("mistral-7b")).await.allowed());
    // A key made with a narrowed key cannot widen its models.
    let r = http
        .post(s.url("/auth/keys"))
        .header("x-api-key", &narrow)
        .json(&json!({"name": "wider", "allowed_models": ["gpt-4o"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Invalid lists are refused and change nothing.
    for bad in [json!([]), json!(["has space"]), json!("llama"), json!([1])] {
        let r = http
            .patch(s.url("/admin/groups/oss"))
            .header("x-api-key", &admin)
            .json(&json!({"allowed_models": bad}))
            .send()
            .await
            .unwrap();
        assert!([400, 422].contains(&r.status().as_u16()), "{bad}: {}", r.status());
    }
    // The group's list changes through the admin API; limits left out keep the list.
    let r = http
        .patch(s.url("/admin/groups/oss"))
        .header("x-api-key", &admin)
        .json(&json!({"allowed_models": ["gpt-*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["allowed_models"], json!(["gpt-*"]));
    assert!(ask(key.clone(), chat("gpt-4o")).await.allowed());
    assert!(!ask(key.clone(), chat("llama-3-8b")).await.allowed());
    let r = http
        .patch(s.url("/admin/groups/oss"))
        .header("x-api-key", &admin)
        .json(&json!({"requests_per_period": 100, "period_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["allowed_models"], json!(["gpt-*"]));
    let stored = s.store.group("oss").await.unwrap().unwrap();
    assert_eq!(stored.models.unwrap().to_string(), "gpt-*");
    s.finish().await;
}

async fn streaming_needs_use_streaming(b: Backend) {
    let s = server(b).await;
    let (user, streamer) = s.user_with_key("v@example.com", Role::Viewer, None).await;
    let plain = s.key_for(&user, Some(&["run_inference"])).await;
    let body = |stream: &str| format!(r#"{{"model":"m","stream":{stream},"messages":[]}}"#);
    for (key, stream, allowed) in
        [(&streamer, "true", true), (&plain, "false", true), (&plain, "null", true), (&plain, "true", false)]
    {
        let c = s.check_body("POST", "/v1/chat/completions", &[("x-api-key", key)], &body(stream)).await;
        assert_eq!(c.allowed(), allowed, "stream={stream}: {c:?}");
        if !allowed {
            c.assert_denied(403, Code::PermissionDenied, "PERMISSION_DENIED");
            assert!(c.body()["error"]["message"].as_str().unwrap().contains("use_streaming"));
        }
    }
    let c = s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &plain)], &body("\"yes\"")).await;
    c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
    s.finish().await;
}

async fn prompt_length_body_size_and_shape(b: Backend) {
    let s = server(b).await;
    let (_, key) = s.user_with_key("v@example.com", Role::Viewer, None).await;
    let h = [("x-api-key", key.as_str())];
    let at_limit = format!(
        r#"{{"model":"m","messages":[{{"content":"{}"}},{{"content":"{}"}}]}}"#,
        "é".repeat(25),
        "x".repeat(25)
    );
    assert!(s.check_body("POST", "/v1/chat/completions", &h, &at_limit).await.allowed(), "50 characters is the limit");
    let over = at_limit.replacen("xx", "xxx", 1);
    let c = s.check_body("POST", "/v1/chat/completions", &h, &over).await;
    c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
    assert_eq!(c.metadata("reason").as_deref(), Some("prompt_too_long"));
    // A rule's own, tighter prompt limit.
    let c = s.check_body("POST", "/v1/short", &h, r#"{"prompt":"123456"}"#).await;
    assert_eq!(c.metadata("reason").as_deref(), Some("prompt_too_long"));
    assert!(s.check_body("POST", "/v1/short", &h, r#"{"prompt":"12345"}"#).await.allowed());

    for (body, content_type, reason) in [
        ("{not json", "application/json", "invalid_body"),
        ("", "application/json", "invalid_body"),
        ("[]", "application/json", "invalid_body"),
        (r#"{"model":"a","model":"b"}"#, "application/json", "invalid_body"),
        (r#"{"model":"m"}"#, "text/plain", "invalid_body"),
        (r#"{"model":"m"}"#, "application/x-www-form-urlencoded", "invalid_body"),
    ] {
        let c = s
            .check_body("POST", "/v1/chat/completions", &[("x-api-key", &key), ("content-type", content_type)], body)
            .await;
        c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
        assert_eq!(c.metadata("reason").as_deref(), Some(reason), "{body}");
    }
    // Over max_request_bytes, by the declared size or the bytes received.
    let big = format!(r#"{{"model":"m","x":"{}"}}"#, "a".repeat(2000));
    let c = s.check_body("POST", "/v1/chat/completions", &h, &big).await;
    c.assert_denied(413, Code::InvalidArgument, "PAYLOAD_TOO_LARGE");
    let mut declared = check_request_with_body("POST", "/v1/chat/completions", &h, CHAT);
    declared.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap().size = 1_000_000;
    let c = Check(s.client().await.check(declared).await.unwrap().into_inner());
    c.assert_denied(413, Code::InvalidArgument, "PAYLOAD_TOO_LARGE");
    // Also on routes that do not read the body.
    let c = s.check_body("GET", "/v1/models", &h, &big).await;
    c.assert_denied(413, Code::InvalidArgument, "PAYLOAD_TOO_LARGE");
    // A body Envoy cut short (allow_partial_message) is never judged on its start.
    let mut partial = check_request_with_body("POST", "/v1/chat/completions", &h, CHAT);
    let http = partial.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.headers.insert("x-envoy-auth-partial-body".into(), "true".into());
    let c = Check(s.client().await.check(partial).await.unwrap().into_inner());
    c.assert_denied(413, Code::InvalidArgument, "PAYLOAD_TOO_LARGE");
    // A body the proxy did not forward cannot be checked: refused, not waved through.
    for (header, value) in [("content-length", "40"), ("transfer-encoding", "chunked")] {
        let mut missing = common::check_request("POST", "/v1/chat/completions", &h);
        let http = missing.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
        http.headers.insert(header.into(), value.into());
        let c = Check(s.client().await.check(missing).await.unwrap().into_inner());
        c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
        assert!(c.body()["error"]["message"].as_str().unwrap().contains("not forwarded"), "{header}");
    }
    // A POST without a body: a JSON route needs one (Envoy sends no marker
    // for a chunked body it did not buffer, so this is what a bypass looks like).
    let c = s.check("POST", "/v1/chat/completions", &h).await;
    c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
    s.finish().await;
}

/// The table reloads when its file changes and on SIGHUP; an invalid file is
/// refused and the running table stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_file_reloads_and_invalid_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("g.db").display());
    let file = dir.path().join("policy.toml");
    let open = "[policy]\ndefault = \"deny\"\n[[routes]]\nname = \"open\"\npath = \"/open\"\naccess = \"public\"\n";
    std::fs::write(&file, open).unwrap();
    let p = Process::start_env(&[
        ("DATABASE_URL", &db),
        ("GATEHOUSE_POLICY_FILE", file.to_str().unwrap()),
        ("GATEHOUSE_POLICY_RELOAD_SECONDS", "1"),
        ("RUST_LOG", "info"),
    ])
    .await;
    let get = |path: &str| p.check_request(common::check_request("GET", path, &[]));
    assert!(get("/open").await.allowed());
    assert_eq!(get("/later").await.http_status(), 403);

    // A changed file is picked up by the watcher.
    std::fs::write(&file, open.replace("/open", "/later")).unwrap();
    wait_until(|| async { get("/later").await.allowed() }).await;
    assert_eq!(get("/open").await.http_status(), 403, "the whole table is replaced");

    // An invalid file is refused; the running table stays, Checks keep being answered.
    for broken in
        ["[[routes]]\npath = \"/x\"\npermissions = [\"fly\"]\n", "[[routes]\n", "[policy]\ndefault = \"open\"\n"]
    {
        std::fs::write(&file, broken).unwrap();
        let errors = p.logs().matches("policy rejected").count();
        wait_until(|| async { p.logs().matches("policy rejected").count() > errors }).await;
        assert!(get("/later").await.allowed(), "the old table stays after {broken:?}");
    }
    assert!(p.logs().contains("fly"), "the error names the problem: {}", p.logs());

    // SIGHUP reloads at once (and a valid file again takes effect).
    std::fs::write(&file, open).unwrap();
    let status = std::process::Command::new("kill").args(["-HUP", &p.pid().to_string()]).status().unwrap();
    assert!(status.success());
    wait_until(|| async { get("/open").await.allowed() }).await;
    assert!(p.logs().contains("trigger=\"SIGHUP\"") || p.logs().contains("SIGHUP"), "{}", p.logs());
    assert_eq!(reqwest::get(format!("http://127.0.0.1:{}/healthz", p.http)).await.unwrap().status(), 200);
}

async fn wait_until<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not met in 10 s");
}

/// A file that does not load at start-up stops start-up, naming the problem.
#[test]
fn an_invalid_policy_file_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, "[[routes]]\npath = \"/a%2fb\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve"])
        .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("g.db").display()))
        .env("GATEHOUSE_POLICY_FILE", &file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes[0]") && stderr.contains("policy.toml"), "{stderr}");
}
