//! Attacks: paths that mean one thing to Gatehouse and another to the
//! upstream. Envoy (`normalize_path`) resolves plain dot segments (and a raw
//! `..;`) and merges slashes, but decodes `%2e%2e;` into a literal `..;` and
//! leaves it: a prefix-routing upstream (Go's `ServeMux`, Starlette, Express,
//! nginx `location`) then dispatches `/admin/..;/v1/models` under `/admin/`,
//! where Gatehouse used to resolve it to `/v1/models`. Gatehouse refuses every
//! such spelling with 400 rather than deciding on its own reading.

use gatehouse::domain::Role;
use tonic::Code;

use crate::common::*;
use crate::table::*;

/// Spellings of "leave this prefix" and of parameters that Envoy passes on
/// to Check and to the upstream as they are (or decodes into `..;`), and
/// that upstreams read in different ways.
const DOT_PARAMETERS: &[(&str, &str)] = &[
    ("%2e%2e; (Envoy decodes it to ..;)", "/admin/%2e%2e;/v1/models"),
    ("%2E%2E; upper case", "/admin/%2E%2E;/v1/models"),
    ("%2e%2e;params", "/admin/%2e%2e;x=1/v1/models"),
    (".%2e;", "/admin/.%2e;/v1/models"),
    ("%2e.;", "/admin/%2e.;/v1/models"),
    ("encoded ;", "/admin/..%3b/v1/models"),
    ("encoded ; upper case", "/admin/..%3B/v1/models"),
    ("double-encoded dots", "/admin/%252e%252e;/v1/models"),
    ("double-encoded dots without ;", "/admin/%252e%252e/v1/models"),
    ("overlong UTF-8 dots", "/admin/%c0%ae%c0%ae;/v1/models"),
    ("%2e%2e; with a query", "/admin/%2e%2e;/v1/models?x=1"),
    ("%2e%2e; twice, from inside the allowed prefix", "/v1/models/%2e%2e;/%2e%2e;/admin/users"),
    ("; on the allowed path itself", "/v1/models;x=1"),
    ("; alone", "/admin/;/v1/models"),
    ("encoded control byte", "/admin/..%00/v1/models"),
];

/// Raw `..;` segments, which Envoy 1.40 resolves like `..` before asking
/// (so Gatehouse and the upstream both see the resolved path), with the
/// status that path gets.
const RESOLVED_BY_ENVOY: &[(&str, &str, u16)] = &[
    ("..; out of a privileged prefix", "/admin/..;/v1/models", 200),
    ("..;params", "/admin/..;x=1/v1/models", 200),
    ("..; twice, into a privileged prefix", "/v1/models/..;/..;/admin/users", 403),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_parameters_never_reach_a_privileged_prefix() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (_, key) = s.user_with_key("u@example.com", Role::Viewer, Some(&["read_models"])).await;
    let stack = Stack::start(s).await;
    let mut rows = vec![
        Attack::new("control: the key reads models", "GET", "/v1/models", 200).header("x-api-key", &key),
        Attack::new("control: one model", "GET", "/v1/models/gpt-4o", 200).header("x-api-key", &key),
        Attack::new("control: a trailing slash", "GET", "/v1/models/", 200).header("x-api-key", &key),
        // `/healthz` is public for every method; its trailing-slash spelling
        // must reach Gatehouse (which has no such page), not the upstream.
        Attack::new("health path with a slash and a body", "POST", "/healthz/", 404).body("{}"),
        Attack::new("control: the key is no admin", "GET", "/admin/users", 403).header("x-api-key", &key),
        Attack::new("control: no credential", "GET", "/v1/models", 401),
        Attack::new("plain .. is resolved by Envoy first", "GET", "/admin/x/../v1/models", 403)
            .header("x-api-key", &key),
        // Without a credential, into the public /auth/* rule (Envoy sends
        // only paths starting with /auth/ to Gatehouse's own API unchecked).
        Attack::new("%2e%2e; into the public /auth/*", "GET", "/v1/admin/%2e%2e;/%2e%2e;/auth/x", 400),
        Attack::new("%2e%2e; from /healthz", "GET", "/healthz/%2e%2e;/v1/models", 400),
        // Envoy resolves raw ..; itself: /auth/x goes to Gatehouse's own API
        // (which has no such endpoint), never to the upstream.
        Attack::new("..; into the public /auth/*", "GET", "/v1/admin/..;/..;/auth/x", 404),
    ];
    for &(name, target) in DOT_PARAMETERS {
        rows.push(Attack::new(name, "GET", target, 400).header("x-api-key", &key));
    }
    for &(name, target, want) in RESOLVED_BY_ENVOY {
        rows.push(Attack::new(name, "GET", target, want).header("x-api-key", &key));
    }
    stack.run(&rows).await;
    // Where Envoy resolved ..; and the request went through, the upstream
    // received the path Gatehouse authorized.
    let http = reqwest::Client::new();
    for &(_, target, want) in RESOLVED_BY_ENVOY.iter().filter(|r| r.2 == 200) {
        let r = http.get(stack.envoy.url(target)).header("x-api-key", &key).send().await.unwrap();
        assert_eq!(r.status(), want, "{target}");
        let echoed: serde_json::Value = r.json().await.unwrap();
        assert_eq!(echoed["path"], "/v1/models", "{target}");
    }
    stack.gatehouse.finish().await;
}

/// The same spellings, and those Envoy would already have resolved or
/// merged, sent straight to Check: Gatehouse refuses them itself, whatever
/// proxy is in front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_every_ambiguous_spelling() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (_, key) = s.user_with_key("u@example.com", Role::Viewer, Some(&["read_models"])).await;
    let headers = [("x-api-key", key.as_str())];
    assert!(s.check("GET", "/v1/models", &headers).await.allowed());
    let more = [
        "/admin/..;/v1/models",
        "/admin/..;x=1/v1/models",
        "/v1/admin/..;/..;/auth/x",
        "/v1/models/..;/..;/admin/users",
        "/admin/../v1/models",
        "/admin/./../v1/models",
        "/v1/./models",
        "/v1/models/.",
        "//admin/x",
        "/v1//models",
        "/v1/models/%ff",
        "/v1/models/%C3",
        "/v1/models/%0d%0a",
        "/v1/models/%7f",
        "/v1/models/%25",
    ];
    for path in DOT_PARAMETERS.iter().map(|(_, p)| *p).chain(more) {
        let c = s.check("GET", path, &headers).await;
        c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
        assert!(c.body()["error"]["message"].as_str().unwrap().contains("ambiguous or malformed path"), "{path}");
        assert_eq!(c.metadata("route"), None, "{path}");
    }
    s.finish().await;
}
