//! The web console end to end in a real headless Chromium: sign in, create a
//! key and see it exactly once, rotate it, use it through Check, revoke it in the
//! console and see Check deny it, an admin changes a user's role; errors in
//! words; the security headers; labelled fields and a narrow window. The
//! provider login's hand-off cookie: bound to the console page that started
//! the login, used once.
//!
//! `GATEHOUSE_CONSOLE_SCREENSHOT=path.png` saves the keys page (the README's
//! picture) along the way.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::browser::Browser;
use common::{Backend, TestServer};
use gatehouse::domain::{AuditQuery, Role};
use gatehouse::secret::Secret;
use serde_json::json;
use tonic::Code;

const ADMIN: (&str, &str) = ("root@example.com", "admin password 1");
const DEV: (&str, &str) = ("dev@example.com", "dev password 12");

async fn sign_in(b: &Browser, s: &TestServer, (email, password): (&str, &str)) {
    b.goto(&s.url("/")).await;
    b.find("//h1[normalize-space()='Sign in']").await;
    b.type_into("//label[contains(., 'Email')]/input", email).await;
    // Enter in the password field submits: the form works from the keyboard.
    b.type_into("//label[contains(., 'Password')]/input", &format!("{password}\u{E007}")).await;
    b.find("//h1[normalize-space()='API keys']").await;
}

async fn sign_out(b: &Browser) {
    b.click("//button[normalize-space()='Sign out']").await;
    b.find("//h1[normalize-space()='Sign in']").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_end_to_end() {
    let s = TestServer::start(Backend::Sqlite).await;
    let admin = s.user(ADMIN.0, Role::Admin).await;
    s.accounts.set_password(&admin.id, Secret::new(ADMIN.1)).await.unwrap();
    let dev = s.user(DEV.0, Role::Operator).await;
    s.accounts.set_password(&dev.id, Secret::new(DEV.1)).await.unwrap();
    let b = Browser::start().await;

    // A wrong password: the API's error in words, not JSON, and no session.
    b.goto(&s.url("/")).await;
    b.type_into("//label[contains(., 'Email')]/input", DEV.0).await;
    b.type_into("//label[contains(., 'Password')]/input", "wrong password").await;
    b.click("//button[normalize-space()='Sign in']").await;
    let alert = b.wait_for_text("//*[@id='alert']", "nvalid").await;
    assert!(!alert.contains('{') && !alert.contains("AUTHENTICATION_FAILED"), "words, not JSON: {alert}");
    assert_eq!(b.count("//h1[normalize-space()='API keys']").await, 0);

    // Sign in; create a key with one permission and an expiry.
    sign_in(&b, &s, DEV).await;
    b.type_into("//label[normalize-space()='Name']/input", "console key").await;
    b.click("//input[@name='permission' and @value='read_models']").await;
    b.select("//label[contains(., 'Expires')]/select", "30").await;
    b.click("//button[normalize-space()='Create key']").await;
    let key = b.text("//*[@id='new-key']").await;
    assert!(key.starts_with("gk_"), "the new key is shown: {key}");
    let warning = b.text("//section[contains(@class, 'secret')]").await;
    assert!(warning.contains("shown only once"), "{warning}");
    let row = b.wait_for_text("//tr[td[normalize-space()='console key']]", "read_models").await;
    assert!(row.contains("active"), "{row}");
    assert!(!row.contains(&key), "the list shows the prefix, never the key");
    if let Ok(path) = std::env::var("GATEHOUSE_CONSOLE_SCREENSHOT") {
        b.set_window(1100, 1250).await;
        b.screenshot(std::path::Path::new(&path)).await;
        b.set_window(1280, 900).await;
    }

    // Exactly once: dismissed, it is gone from the page, and a new visit
    // (which needs a new sign-in: the token lives in memory only) never shows it.
    b.click("//button[normalize-space()='I have saved it']").await;
    assert!(!b.page_html().await.contains(&key));
    sign_in(&b, &s, DEV).await;
    b.find("//tr[td[normalize-space()='console key']]").await;
    assert!(!b.page_html().await.contains(&key), "the key is never shown again");

    // Rotated in the console: a new secret shown once; the old one keeps
    // working for the chosen grace period.
    b.click("//button[@aria-label='Rotate console key']").await;
    b.select("//select[@aria-label='Old secret of console key keeps working for']", "3600").await;
    b.click("//button[normalize-space()='Rotate now']").await;
    let rotated = b.text("//*[@id='new-key']").await;
    assert!(rotated.starts_with(&key[..20]) && rotated != key, "same key id, new secret: {rotated}");
    b.wait_for_text("//section[contains(@class, 'secret')]", "keeps working until").await;
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &rotated)]).await.allowed());

    // The key works through Check, with the chosen permission only.
    let c = s.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
    assert!(c.allowed(), "{c:?}");
    assert_eq!(c.upstream_headers()["x-auth-email"], DEV.0);
    let c =
        s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &key)], r#"{"model":"m","messages":[]}"#).await;
    assert_eq!(c.http_status(), 403, "the key holds read_models only");

    // A key with a token budget, used once: the usage page shows the budget
    // (what is used and left) and a chart of the day's tokens per model.
    b.type_into("//label[normalize-space()='Name']/input", "budget key").await;
    b.type_into("//label[contains(., 'Token budget')]/input", "5000/3600").await;
    b.click("//button[normalize-space()='Create key']").await;
    // The rotated secret is still on the page until the new key replaces it.
    b.wait_for_text("//*[@id='secret-title']", "budget key").await;
    let budgeted = b.text("//*[@id='new-key']").await;
    b.click("//button[normalize-space()='I have saved it']").await;
    b.wait_for_text("//tr[td[normalize-space()='budget key']]", "5000/3600").await;
    let body = r#"{"model":"llama-3-8b","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
    let c = s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &budgeted)], body).await;
    assert!(c.allowed(), "{c:?}");
    let usage = gatehouse::meter::Usage { prompt_tokens: 7, completion_tokens: 5, total_tokens: 12 };
    assert!(s.budgets.settle(&c.all_metadata(), &gatehouse::meter::Metered::Usage(usage), common::now()).await);
    s.metering.flush(&s.store).await.unwrap();
    b.click("//a[normalize-space()='Usage']").await;
    let row = b.wait_for_text(&format!("//tr[@data-budget='key:{}:tokens']", &budgeted[3..19]), "5000/3600").await;
    assert!(row.contains("12") && row.contains("4988"), "used and left: {row}");
    b.find("//figure[contains(@class, 'chart')]//*[local-name()='rect' and @data-model='llama-3-8b']").await;
    b.wait_for_text("//table[not(@id)]", "llama-3-8b").await;
    b.click("//a[normalize-space()='API keys']").await;

    // Revoke in the console, with a confirmation; Check denies it at once.
    b.click("//button[@aria-label='Revoke console key']").await;
    b.click("//button[normalize-space()='Cancel']").await;
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &key)]).await.allowed(), "cancel changes nothing");
    b.click("//button[@aria-label='Revoke console key']").await;
    b.click("//button[normalize-space()='Yes, revoke']").await;
    b.wait_for_text("//*[@id='status']", "revoked").await;
    b.wait_for_text("//tr[td[normalize-space()='console key']]", "revoked").await;
    for k in [&key, &rotated] {
        let c = s.check("GET", "/v1/models", &[("x-api-key", k)]).await;
        c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    }

    // An operator has no admin pages.
    assert!(
        b.execute("return document.querySelector(\"a[href='#/users']\").hidden;", json!([])).await.as_bool().unwrap()
    );
    sign_out(&b).await;

    // An admin changes the developer's role.
    sign_in(&b, &s, ADMIN).await;
    b.click("//a[normalize-space()='Users']").await;
    b.select(&format!("//select[@aria-label='Role of {}']", DEV.0), "viewer").await;
    b.click(&format!("//tr[@data-user='{}']//button[normalize-space()='Save']", DEV.0)).await;
    b.wait_for_text("//*[@id='status']", "role viewer").await;
    assert_eq!(s.accounts.find_user(&dev.id).await.unwrap().role, Role::Viewer, "stored");
    let events = s
        .accounts
        .store()
        .audit_events(&AuditQuery { target: Some(format!("user:{}", dev.id)), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.action == "user.role_changed" && e.actor_id.as_deref() == Some(&*admin.id)));

    // The audit log page lists it, filtered.
    b.click("//a[normalize-space()='Audit log']").await;
    b.select("//label[contains(., 'Action')]/select", "user.role_changed").await;
    b.click("//button[normalize-space()='Filter']").await;
    b.wait_for_text("//table", "operator -> viewer").await;

    // Groups: a rate limit and a model list saved through the console.
    b.click("//a[normalize-space()='Groups']").await;
    b.type_into("//label[normalize-space()='Name']/input", "research").await;
    b.type_into("//input[@aria-label='Requests per period for the new group']", "100").await;
    b.type_into("//input[@aria-label='Period in seconds for the new group']", "60").await;
    b.type_into("//input[@aria-label='Allowed models for the new group']", "gpt-4o*, llama-3").await;
    b.type_into("//input[@aria-label='Token budget for the new group']", "100000/60").await;
    b.type_into("//input[@aria-label='Spend budget for the new group']", "50/month").await;
    b.click("//button[normalize-space()='Create group']").await;
    b.find("//tr[@data-group='research']").await;
    let group = s.accounts.store().group("research").await.unwrap().unwrap();
    assert_eq!(group.requests_per_period, Some(100));
    assert_eq!(group.models.unwrap().names(), ["gpt-4o*", "llama-3"]);
    assert_eq!(group.budget.tokens.unwrap().to_string(), "100000/60");
    assert_eq!(group.budget.spend.unwrap().to_string(), "50/month");

    // Accessible: every field has a label; a narrow window does not scroll sideways.
    b.click("//a[normalize-space()='Users']").await;
    b.find("//tr[@data-user]").await;
    let unlabelled = b
        .execute(
            "return [...document.querySelectorAll('input,select')].filter(e => !e.closest('label') && !e.getAttribute('aria-label')).length;",
            json!([]),
        )
        .await;
    assert_eq!(unlabelled, 0);
    b.set_window(400, 800).await;
    let overflow = b
        .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", json!([]))
        .await;
    assert!(overflow.as_i64().unwrap() <= 0, "no sideways scrolling at 400 px: {overflow}");
    b.close().await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_is_served_with_a_strict_policy() {
    let s = TestServer::start(Backend::Sqlite).await;
    let client = reqwest::Client::new();
    let page = client.get(s.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains(" style="), "no inline script or style");
    for (path, kind) in [("/console/app.js", "text/javascript"), ("/console/app.css", "text/css")] {
        let r = client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(kind));
        let body = r.text().await.unwrap();
        assert!(!body.contains("innerHTML"), "{path} builds the page with textContent only");
    }
    s.finish().await;

    // Switched off, `/` is not found.
    let s = TestServer::start_with(Backend::Sqlite, |c| c.console = false).await;
    assert_eq!(client.get(s.url("/")).send().await.unwrap().status(), 404);
    assert_eq!(client.get(s.url("/console/app.js")).send().await.unwrap().status(), 404);
    s.finish().await;
}

/// A GitHub whose authorize page sends the browser straight back with a
/// code, for the same account every time.
async fn fake_github() -> std::net::SocketAddr {
    use axum::extract::Query;
    use axum::response::Redirect;
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/login/oauth/authorize",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                Redirect::to(&format!("{}?code=good&state={}", q["redirect_uri"], q["state"]))
            }),
        )
        .route("/login/oauth/access_token", post(|| async { axum::Json(json!({"access_token": "gho_test"})) }))
        .route("/user", get(|| async { axum::Json(json!({"id": 7, "login": "octo", "name": "Octo"})) }))
        .route(
            "/user/emails",
            get(|| async { axum::Json(json!([{"email": "octo@example.com", "primary": true, "verified": true}])) }),
        )
        .route("/user/memberships/orgs/acme", get(|| async { axum::Json(json!({"state": "active"})) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A server with GitHub login, reachable at its public URL (the provider
/// sends the browser back there).
async fn github_server() -> TestServer {
    let fake = fake_github().await;
    let port = common::free_port();
    TestServer::start_with(Backend::Sqlite, |c| {
        c.http_addr = format!("127.0.0.1:{port}").parse().unwrap();
        c.public_url = format!("http://127.0.0.1:{port}");
        c.github = Some(gatehouse::config::GithubConfig {
            client_id: "gh-client".into(),
            client_secret: Secret::new("gh-secret"),
            oauth_url: format!("http://{fake}"),
            api_url: format!("http://{fake}"),
            allowed_orgs: vec!["acme".into()],
        });
    })
    .await
}

/// A console login through GitHub made by an HTTP client (someone else's
/// browser), started with `nonce`: the hand-off cookie it ends with.
async fn handoff_cookie(s: &TestServer, nonce: &str) -> String {
    let client =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = client.get(s.url(&format!("/auth/github?console=true&console_nonce={nonce}"))).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let state = location.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let r = client.get(s.url(&format!("/auth/github/callback?code=good&state={state}"))).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned());
    let cookie = cookie.into_iter().find_map(|c| c.strip_prefix("gatehouse_session=").map(str::to_owned)).unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// Presents a hand-off cookie as the console does, with `nonce` if given.
async fn exchange(s: &TestServer, cookie: &str, nonce: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(s.url("/auth/refresh"))
        .header("cookie", format!("gatehouse_session={cookie}"))
        .header("x-requested-with", "gatehouse-console");
    if let Some(nonce) = nonce {
        request = request.header("x-gatehouse-handoff", nonce);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hand_off_cookie_is_bound_to_its_login_and_used_once() {
    const RACERS: usize = 30;
    let s = github_server().await;
    let r = reqwest::get(s.url("/auth/github?console=true")).await.unwrap();
    assert_eq!(r.status(), 400, "a console login needs the console's nonce");

    let nonce = "a".repeat(43);
    let cookie = handoff_cookie(&s, &nonce).await;
    // Without the nonce, or with another one: refused, and the cookie cleared.
    for wrong in [None, Some("b".repeat(43).as_str())] {
        let r = exchange(&s, &cookie, wrong).await;
        assert_eq!(r.status(), 401, "{wrong:?}");
        let cleared = r.headers()["set-cookie"].to_str().unwrap();
        assert!(cleared.starts_with("gatehouse_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    }
    let r = reqwest::Client::new().post(s.url("/auth/refresh")).bearer_auth(&cookie).send().await.unwrap();
    assert_eq!(r.status(), 401, "the cookie is not a session token");
    // Nor does it carry one inside: whoever reads it (a service on another
    // port of this host receives it too) finds nothing to present.
    use base64::Engine;
    let payload = cookie.split('.').nth(1).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    let payload = String::from_utf8(payload).unwrap();
    assert!(!payload.contains("eyJ"), "no token inside the hand-off cookie: {payload}");

    // Presented 30 times at once with the right nonce: one session.
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let s = Arc::new(s);
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let (s, barrier, cookie, nonce) = (s.clone(), barrier.clone(), cookie.clone(), nonce.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let r = exchange(&s, &cookie, Some(&nonce)).await;
                (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
            })
        })
        .collect();
    let mut sessions = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            200 => sessions.push(body["access_token"].as_str().unwrap().to_owned()),
            401 => {}
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(sessions.len(), 1, "the hand-off is used once, however many present it at once");
    let c = s.check("GET", "/v1/models", &[("authorization", &format!("Bearer {}", sessions[0]))]).await;
    assert_eq!(c.upstream_headers()["x-auth-email"], "octo@example.com");
    Arc::into_inner(s).unwrap().finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_hand_off_cookie_cannot_sign_the_console_in() {
    let s = github_server().await;
    let b = Browser::start().await;
    // The victim opens the console's sign-in page.
    b.goto(&s.url("/")).await;
    b.find("//a[normalize-space()='Login with GitHub']").await;

    // A page on another port of the same host plants the attacker's own
    // hand-off cookie (cookies do not keep ports apart), then sends the
    // victim to the console.
    let attacker = handoff_cookie(&s, &"m".repeat(43)).await;
    let elsewhere = common::spawn_echo().await;
    b.goto(&format!("http://127.0.0.1:{}/", elsewhere.port())).await;
    b.execute("document.cookie = 'gatehouse_session=' + arguments[0] + '; path=/auth/refresh';", json!([attacker]))
        .await;
    b.goto(&s.url("/")).await;
    b.find("//h1[normalize-space()='Sign in']").await;
    assert_eq!(b.count("//h1[normalize-space()='API keys']").await, 0, "not signed in as anyone");

    // The victim's own provider login still signs them in.
    b.click("//a[normalize-space()='Login with GitHub']").await;
    b.find("//h1[normalize-space()='API keys']").await;
    b.click("//a[normalize-space()='Profile']").await;
    b.wait_for_text("//main", "octo@example.com").await;
    b.close().await;
    s.finish().await;
}
