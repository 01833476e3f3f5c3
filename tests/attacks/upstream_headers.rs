//! What an allowed request carries to the upstream, and what Envoy's log
//! keeps: forged identity headers spelled with underscores, credentials on
//! public routes, a credential in a denied request's query string, and the
//! login-state cookie.

use gatehouse::domain::Role;
use gatehouse::policy::{Mode, PolicySpec};
use serde_json::Value;

use crate::common::*;
use crate::table::*;

/// `x_auth_user_id` is another header than `x-auth-user-id` to Envoy, but the
/// same `HTTP_X_AUTH_USER_ID` to a CGI/WSGI upstream.
const UNDERSCORED: [(&str, &str); 4] = [
    ("x_auth_user_id", "00000000-0000-0000-0000-000000000000"),
    ("X_AUTH_ROLE", "admin"),
    ("x-auth_permissions", "admin_users"),
    ("x_auth-email", "root@example.com"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscored_identity_headers_are_refused_by_envoy() {
    let stack = Stack::start(TestServer::start(Backend::Sqlite).await).await;
    let (_, key) = stack.gatehouse.user_with_key("u@example.com", Role::Operator, None).await;
    let mut rows = vec![
        Attack::new("control: a key, no forged header", "GET", "/v1/models", 200).header("x-api-key", key.clone()),
        Attack::new("control: public route", "GET", "/v1/health", 200),
    ];
    for (name, value) in UNDERSCORED {
        rows.push(
            Attack::new("underscored identity with a key", "GET", "/v1/models", 400)
                .header("x-api-key", key.clone())
                .header(name, value),
        );
        rows.push(Attack::new("underscored identity on a public route", "GET", "/v1/health", 400).header(name, value));
        rows.push(Attack::new("underscored identity to Gatehouse's API", "GET", "/auth/me", 400).header(name, value));
    }
    stack.run(&rows).await;
}

/// Whatever proxy sits in front, Gatehouse removes them itself: on allow, on
/// a public route, and when a report-only denial is let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatehouse_removes_underscored_identity_headers() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (user, key) = s.user_with_key("u@example.com", Role::Viewer, None).await;
    let forged = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        UNDERSCORED.iter().copied().chain(extra.iter().copied()).collect()
    };
    let want_removed = ["x_auth_user_id", "x_auth_role", "x-auth_permissions", "x_auth-email"];

    let mut headers = forged(&[("x-auth-role", "admin")]);
    headers.push(("x-api-key", &key));
    let c = s.check("GET", "/v1/models", &headers).await;
    assert!(c.allowed(), "{:?}", c.0);
    let removed = c.removed();
    for name in want_removed {
        assert!(removed.contains(&name.to_owned()), "{name} not removed: {removed:?}");
    }
    let set = c.upstream_headers();
    assert_eq!(set["x-auth-role"], "viewer", "the dashed name is overwritten with the real role");
    assert_eq!(set["x-auth-user-id"], user.id);

    let c = s.check("GET", "/v1/health", &forged(&[])).await;
    assert!(c.allowed(), "{:?}", c.0);
    assert_eq!(c.upstream_headers()["x-auth-method"], "anonymous");
    for name in want_removed {
        assert!(c.removed().contains(&name.to_owned()), "public route: {name} not removed: {:?}", c.removed());
    }

    // A report-only denial reaches the upstream too: same removals.
    let shadow = TestServer::start_with(Backend::Sqlite, |c| c.policy.mode = Mode::ReportOnly).await;
    let c = shadow.check("GET", "/v1/models", &forged(&[])).await;
    assert!(c.allowed(), "{:?}", c.0);
    assert_eq!(c.upstream_headers()["x-auth-shadow-decision"], "deny");
    for name in want_removed {
        assert!(c.removed().contains(&name.to_owned()), "report-only: {name} not removed: {:?}", c.removed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_query_credential_stays_out_of_envoys_log() {
    let stack = Stack::start(TestServer::start(Backend::Sqlite).await).await;
    let (_, key) = stack.gatehouse.user_with_key("u@example.com", Role::Operator, None).await;
    stack
        .run(&[
            Attack::new("no credential but one in the query", "GET", "/v1/models?api_key=SECRET-DENIED-1", 401),
            Attack::new("refused route, credential in the query", "GET", "/nowhere?api_key=SECRET-DENIED-2", 403),
            Attack::new("allowed, something secret in the query", "GET", "/v1/models?token=SECRET-ALLOWED-3", 200)
                .header("x-api-key", key),
        ])
        .await;
    let log = stack.envoy.access_log_with("\"GET /v1/models\" 200").await;
    assert!(log.contains("\"GET /v1/models\" 401") && log.contains("\"GET /nowhere\" 403"), "{log}");
    assert!(!log.contains("SECRET"), "a query string reached Envoy's access log:\n{log}");
}

/// Public routes let anyone through, so a credential sent to one is nobody's
/// business upstream: stripped like any other when stripping is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_do_not_forward_credentials() {
    let stack = Stack::start(TestServer::start(Backend::Sqlite).await).await;
    let (_, key) = stack.gatehouse.user_with_key("u@example.com", Role::Operator, None).await;
    let http = reqwest::Client::new();
    for (name, value) in [("authorization", format!("Bearer {key}")), ("x-api-key", key.clone())] {
        let r = http.get(stack.envoy.url("/v1/health")).header(name, &value).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let echo: Value = r.json().await.unwrap();
        assert_eq!(echo["path"], "/v1/health", "{echo}");
        assert_eq!(echo["headers"]["x-auth-method"], "anonymous");
        assert!(echo["headers"].get(name).is_none(), "{name} reached the upstream on a public route: {echo}");
    }
    let c = stack.gatehouse.check("GET", "/v1/health", &[("authorization", "Bearer x"), ("x-api-key", "y")]).await;
    assert!(c.allowed());
    assert!(c.removed().contains(&"authorization".to_owned()) && c.removed().contains(&"x-api-key".to_owned()));

    // Gatehouse's own API authenticates callers itself: its rule forwards them
    // (`forward_credentials`), for proxies that do ask before routing there.
    let c = stack.gatehouse.check("GET", "/auth/me", &[("authorization", "Bearer x"), ("x-api-key", "y")]).await;
    assert!(c.allowed());
    assert!(c.removed().is_empty(), "{:?}", c.removed());

    // With stripping off, public routes keep them as before.
    let keep = TestServer::start_with(Backend::Sqlite, |c| c.strip_credentials = false).await;
    let c = keep.check("GET", "/v1/health", &[("authorization", "Bearer x"), ("x-api-key", "y")]).await;
    assert!(c.allowed());
    assert!(c.removed().is_empty(), "{:?}", c.removed());

    // The option on a rule of one's own, authenticated too: the key is checked
    // and still forwarded.
    let spec = PolicySpec::from_toml(
        "[[routes]]\nname = \"passthrough\"\npath = \"/v1/*\"\nforward_credentials = true\n\n\
         [[routes]]\nname = \"open\"\npath = \"/open\"\naccess = \"public\"\nforward_credentials = true\n",
    )
    .unwrap();
    let own = TestServer::start_with(Backend::Sqlite, |c| c.policy = spec).await;
    let (_, key) = own.user_with_key("u@example.com", Role::Operator, None).await;
    let c = own.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
    assert!(c.allowed(), "{:?}", c.0);
    assert!(c.removed().is_empty(), "{:?}", c.removed());
    let c = own.check("GET", "/open", &[("authorization", "Bearer x")]).await;
    assert!(c.allowed() && c.removed().is_empty(), "{:?}", c.0);
    assert!(PolicySpec::from_toml("[[routes]]\npath = \"/x\"\nforward_credentials = \"yes\"\n").is_err(), "a boolean");
}

/// The provider login's state cookie goes back to the callback, under
/// `/auth`, and never with requests to the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_state_cookie_stays_on_gatehouses_paths() {
    let gatehouse = TestServer::start_with(Backend::Sqlite, |c| {
        c.github = Some(gatehouse::config::GithubConfig {
            client_id: "gh-client".into(),
            client_secret: gatehouse::secret::Secret::new("gh-secret"),
            // Never reached: the test stops at the callback's state check.
            oauth_url: "http://127.0.0.1:9".into(),
            api_url: "http://127.0.0.1:9".into(),
            allowed_orgs: Vec::new(),
        });
    })
    .await;
    let stack = Stack::start(gatehouse).await;
    let browser =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();

    let r = browser.get(stack.envoy.url("/auth/github")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("gatehouse_login="), "{cookie}");
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).skip(1).collect();
    assert!(attributes.contains(&"Path=/auth"), "{cookie}");

    // Not sent to the upstream...
    let echo: Value = browser.get(stack.envoy.url("/v1/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(echo["path"], "/v1/health", "{echo}");
    assert!(echo["headers"].get("cookie").is_none(), "the login cookie reached the upstream: {echo}");

    // ...but to the callback, which reads it (a wrong state is then the
    // complaint, not a missing cookie).
    let r = browser.get(stack.envoy.url("/auth/github/callback?code=c&state=wrong")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("does not match"), "{body}");
}
