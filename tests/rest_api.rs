//! The REST API over real HTTP, and its tokens in Check over real gRPC,
//! against SQLite and Postgres.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use common::api::{Api, user_with_password};
use common::{Backend, TestServer, now};
use gatehouse::domain::Role;
use serde_json::json;
use tonic::Code;

backend_tests! {
    register_login_me_and_check,
    logout_revokes_the_token_everywhere,
    wrong_credentials_look_alike_and_are_throttled,
    registration_validates_and_changes_nothing,
    refresh_rotates_tokens,
    keys_through_the_api,
    key_escalation_is_refused,
    admin_endpoints_require_manage_users,
    admin_changes_apply_to_check_at_once,
    seed_alias_paths_and_shapes,
}

async fn register_login_me_and_check(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let r = api.register("New.User@Example.com", "a sound password").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["email"], "new.user@example.com");
    assert_eq!(r.body["role"], "viewer");
    assert_eq!(r.body["user"]["email"], "new.user@example.com");
    assert!(r.body.get("password").is_none() && !r.body.to_string().contains("sound password"));

    let r =
        api.post("/auth/login", None, json!({"email": "new.user@example.com", "password": "a sound password"})).await;
    assert_eq!(r.status, 200);
    let token = r.body["access_token"].as_str().unwrap();
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 3600);
    assert!(r.body["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r.body["token"], token);
    assert_eq!(r.body["data"]["token"], token);

    let me = api.get("/auth/me", Some(token)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["email"], "new.user@example.com");
    assert_eq!(me.body["role"], "viewer");
    assert_eq!(me.body["group"], "default");
    assert_eq!(me.body["auth_method"], "jwt");
    assert!(me.body["permissions"].as_array().unwrap().contains(&json!("run_inference")));

    let c = s
        .check_body("POST", "/v1/chat/completions", &[("authorization", &format!("Bearer {token}"))], common::CHAT)
        .await;
    assert!(c.allowed(), "{c:?}");
    assert_eq!(c.upstream_headers()["x-auth-method"], "jwt");
    assert_eq!(c.upstream_headers()["x-auth-user-id"], me.body["id"].as_str().unwrap());
    assert_eq!(c.upstream_headers()["x-auth-email"], "new.user@example.com");
    assert!(!c.upstream_headers().contains_key("x-auth-key-id"));
    assert_eq!(c.removed(), vec!["authorization"]);

    let r = api.register("new.user@example.com", "another password").await;
    r.assert_error(409, "CONFLICT");
    s.finish().await;
}

async fn logout_revokes_the_token_everywhere(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let token = user_with_password(&s, "out@example.com", Role::Viewer).await;
    let bearer = format!("Bearer {token}");
    assert!(s.check("GET", "/v1/models", &[("authorization", &bearer)]).await.allowed());
    let r = api.post("/auth/logout", Some(&token), json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["success"], true);
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer)]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    assert_eq!(c.metadata("reason").as_deref(), Some("revoked"));
    api.get("/auth/me", Some(&token)).await.assert_error(401, "AUTHENTICATION_FAILED");
    api.post("/auth/refresh", Some(&token), json!({})).await.assert_error(401, "AUTHENTICATION_FAILED");
    // The revocation is in the database, so a second process sees it too.
    let revoked = s.store.revoked_tokens_since(0, now()).await.unwrap();
    assert_eq!(revoked.len(), 1);
    s.finish().await;
}

async fn wrong_credentials_look_alike_and_are_throttled(b: Backend) {
    let s = TestServer::start_with(b, |c| c.login_throttle.max_per_account = 3).await;
    let api = Api::new(&s);
    user_with_password(&s, "t@example.com", Role::Viewer).await;
    let unknown = api.post("/auth/login", None, json!({"email": "nobody@example.com", "password": "whatever1"})).await;
    let wrong = api.post("/auth/login", None, json!({"email": "t@example.com", "password": "whatever1"})).await;
    unknown.assert_error(401, "AUTHENTICATION_FAILED");
    wrong.assert_error(401, "AUTHENTICATION_FAILED");
    assert_eq!(unknown.body, wrong.body);
    for _ in 0..2 {
        api.post("/auth/login", None, json!({"email": "t@example.com", "password": "nope-nope"})).await;
    }
    // Locked out now, even with the right password.
    let r = api.post("/auth/login", None, json!({"email": "t@example.com", "password": "correct horse battery"})).await;
    r.assert_error(429, "RATE_LIMITED");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    s.finish().await;
}

async fn registration_validates_and_changes_nothing(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        c.accounts.allowed_email_domains = vec!["company.com".into()];
        c.max_body_bytes = 4096;
    })
    .await;
    let api = Api::new(&s);
    let r = api.register("x@company.com", "short").await;
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"]["field"], "password");
    api.register("not-an-email", "long enough pw").await.assert_error(400, "VALIDATION_ERROR");
    api.register("x@elsewhere.com", "long enough pw").await.assert_error(403, "PERMISSION_DENIED");
    let r = api.post("/auth/register", None, json!({"email": "x@company.com"})).await;
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"]["field"], "password");
    let r = api.post("/auth/register", None, json!({"email": 5, "password": "long enough pw"})).await;
    assert_eq!(r.body["error"]["details"]["field"], "email");
    let r = api
        .post("/auth/register", None, json!({"email": "x@company.com", "password": "long enough pw", "role": "admin"}))
        .await;
    r.assert_error(400, "VALIDATION_ERROR");
    let raw = api
        .http
        .post(format!("{}/auth/register", api.base))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let big = json!({"email": "x@company.com", "password": "p".repeat(8000)});
    api.post("/auth/register", None, big).await.assert_error(413, "PAYLOAD_TOO_LARGE");
    assert!(s.store.list_users().await.unwrap().is_empty(), "nothing may be created by a refused call");
    assert_eq!(api.register("ok@Company.com", "long enough pw").await.status, 201);
    s.finish().await;
}

async fn refresh_rotates_tokens(b: Backend) {
    use gatehouse::authn::jwt::{Jwt, JwtKeys, JwtSettings};
    let secret = "0123456789abcdef0123456789abcdef-refresh";
    let s = TestServer::start_with(b, |c| {
        c.jwt.secret = Some(gatehouse::secret::Secret::new(secret));
        c.jwt.refresh_grace_seconds = 3600;
    })
    .await;
    let api = Api::new(&s);
    let token = user_with_password(&s, "r@example.com", Role::Operator).await;
    let r = api.post("/auth/refresh", Some(&token), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = r.body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, token);
    assert!(s.check("GET", "/v1/models", &[("authorization", &format!("Bearer {fresh}"))]).await.allowed());
    let old = s.check("GET", "/v1/models", &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(old.metadata("reason").as_deref(), Some("revoked"));

    // Tokens signed with the same key but issued in the past.
    let jwt = Jwt::new(
        JwtKeys::hmac(&gatehouse::secret::Secret::new(secret)).unwrap(),
        JwtSettings {
            algorithm: jsonwebtoken::Algorithm::HS256,
            issuer: "gatehouse".into(),
            audience: "gatehouse".into(),
            expiry_seconds: 3600,
            leeway_seconds: 30,
            refresh_grace_seconds: 3600,
        },
    );
    let user = s.store.user_by_email("r@example.com").await.unwrap().unwrap();
    let expired_recently = jwt.issue(&user, now() - 3600 - 600).unwrap();
    let expired_long_ago = jwt.issue(&user, now() - 3600 - 7200).unwrap();
    let c = s
        .check("GET", "/v1/models", &[("authorization", &format!("Bearer {}", expired_recently.token.expose()))])
        .await;
    assert_eq!(c.metadata("reason").as_deref(), Some("expired"));
    let r = api.post("/auth/refresh", Some(expired_recently.token.expose()), json!({})).await;
    assert_eq!(r.status, 200, "within the grace window: {}", r.body);
    let r = api.post("/auth/refresh", Some(expired_long_ago.token.expose()), json!({})).await;
    r.assert_error(401, "AUTHENTICATION_FAILED");
    // API keys cannot be refreshed.
    let key = s.key_for(&user, None).await;
    api.post("/auth/refresh", Some(&key), json!({})).await.assert_error(400, "VALIDATION_ERROR");
    s.finish().await;
}

async fn keys_through_the_api(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let token = user_with_password(&s, "k@example.com", Role::Operator).await;
    let body =
        json!({"name": "Production App", "permissions": ["read_models", "run_inference"], "expires_in_days": 90});
    let r = api.post("/auth/keys", Some(&token), body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.body["key"].as_str().unwrap().to_owned();
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("gk_") && key.contains(&id));
    assert_eq!(r.body["name"], "Production App");
    assert_eq!(r.body["permissions"], json!(["read_models", "run_inference"]));
    assert!(r.body["expires_at"].is_string() && r.body["created_at"].is_string());

    let c = s.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
    assert_eq!(c.upstream_headers()["x-auth-permissions"], "read_models,run_inference");

    // The seed's alias path and shape work too; listings never show secrets.
    let r = api.post("/api/v1/auth/api-keys", Some(&token), json!({"name": "second"})).await;
    assert_eq!(r.status, 201);
    assert!(r.body["permissions"].as_array().unwrap().contains(&json!("manage_cache")));
    let list = api.get("/auth/keys", Some(&token)).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(list.body["keys"], list.body["data"]);
    assert_eq!(list.body["object"], "list");
    assert!(!list.body.to_string().contains(&key[20..]));

    let r = api.send("DELETE", &format!("/auth/keys/{id}"), Some(&token), None).await;
    assert_eq!(r.status, 204);
    let c = s.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    api.send("DELETE", "/auth/keys/ffffffffffffffff", Some(&token), None).await.assert_error(404, "NOT_FOUND");
    api.get("/auth/keys", None).await.assert_error(401, "AUTHENTICATION_FAILED");
    let r = api.post("/auth/keys", Some(&token), json!({"name": "x", "permisions": ["read_models"]})).await;
    r.assert_error(400, "VALIDATION_ERROR");
    s.finish().await;
}

async fn key_escalation_is_refused(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let viewer = user_with_password(&s, "v@example.com", Role::Viewer).await;
    let other = user_with_password(&s, "o@example.com", Role::Viewer).await;
    let r = api.post("/auth/keys", Some(&viewer), json!({"name": "x", "permissions": ["manage_users"]})).await;
    r.assert_error(403, "PERMISSION_DENIED");
    let r = api.post("/auth/keys", Some(&viewer), json!({"name": "x", "user": "o@example.com"})).await;
    r.assert_error(403, "PERMISSION_DENIED");
    // A narrow key cannot mint a broader one, nor one that inherits everything.
    let narrow = api.post("/auth/keys", Some(&viewer), json!({"name": "n", "permissions": ["read_models"]})).await;
    let narrow = narrow.body["key"].as_str().unwrap().to_owned();
    let r = api.post("/auth/keys", Some(&narrow), json!({"name": "w", "permissions": ["run_inference"]})).await;
    r.assert_error(403, "PERMISSION_DENIED");
    let r = api.post("/auth/keys", Some(&narrow), json!({"name": "w"})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["permissions"], json!(["read_models"]));
    // Someone else's key is not found, and stays active.
    let theirs = api.post("/auth/keys", Some(&other), json!({"name": "theirs"})).await;
    let their_id = theirs.body["id"].as_str().unwrap();
    api.send("DELETE", &format!("/auth/keys/{their_id}"), Some(&viewer), None).await.assert_error(404, "NOT_FOUND");
    assert!(s.store.api_key(their_id).await.unwrap().unwrap().revoked_at.is_none());
    api.get("/auth/keys?all=true", Some(&viewer)).await.assert_error(403, "PERMISSION_DENIED");
    api.get("/auth/keys?all=maybe", Some(&viewer)).await.assert_error(400, "VALIDATION_ERROR");
    api.get("/auth/keys?bogus=1", Some(&viewer)).await.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(s.store.list_api_keys(None).await.unwrap().len(), 3);
    s.finish().await;
}

async fn admin_endpoints_require_manage_users(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let viewer = user_with_password(&s, "v@example.com", Role::Viewer).await;
    let operator = user_with_password(&s, "op@example.com", Role::Operator).await;
    let v_id = s.store.user_by_email("v@example.com").await.unwrap().unwrap().id;
    for token in [&viewer, &operator] {
        api.get("/admin/users", Some(token)).await.assert_error(403, "PERMISSION_DENIED");
        let r = api.post("/admin/users", Some(token), json!({"email": "evil@example.com", "role": "admin"})).await;
        r.assert_error(403, "PERMISSION_DENIED");
        let r = api.send("PATCH", &format!("/admin/users/{v_id}"), Some(token), Some(json!({"role": "admin"}))).await;
        r.assert_error(403, "PERMISSION_DENIED");
        api.post("/admin/groups", Some(token), json!({"name": "vip"})).await.assert_error(403, "PERMISSION_DENIED");
    }
    api.get("/admin/users", None).await.assert_error(401, "AUTHENTICATION_FAILED");
    let users = s.store.list_users().await.unwrap();
    assert_eq!(users.len(), 2);
    assert!(users.iter().all(|u| u.role != Role::Admin));
    assert_eq!(s.store.list_groups().await.unwrap().len(), 1);
    s.finish().await;
}

async fn admin_changes_apply_to_check_at_once(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let admin = user_with_password(&s, "root@example.com", Role::Admin).await;
    let r = api
        .post(
            "/admin/users",
            Some(&admin),
            json!({"email": "w@example.com", "password": "worker password", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let w_id = r.body["id"].as_str().unwrap().to_owned();
    let w_token = api.login("w@example.com", "worker password").await;
    let w_key = s.key_for(&s.store.user_by_id(&w_id).await.unwrap().unwrap(), None).await;
    let bearer = format!("Bearer {w_token}");
    assert_eq!(
        s.check("GET", "/v1/models", &[("authorization", &bearer)]).await.upstream_headers()["x-auth-role"],
        "viewer"
    );

    let r = api
        .post(
            "/admin/groups",
            Some(&admin),
            json!({"name": "research", "requests_per_period": 100, "period_seconds": 60}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api
        .send(
            "PATCH",
            &format!("/admin/users/{w_id}"),
            Some(&admin),
            Some(json!({"role": "operator", "group": "research"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h = s.check("GET", "/v1/models", &[("authorization", &bearer)]).await.upstream_headers();
    assert_eq!((h["x-auth-role"].as_str(), h["x-auth-group"].as_str()), ("operator", "research"));
    let h = s.check("GET", "/v1/models", &[("x-api-key", &w_key)]).await.upstream_headers();
    assert_eq!(h["x-auth-role"], "operator");

    let r = api.send("PATCH", &format!("/admin/users/{w_id}"), Some(&admin), Some(json!({"disabled": true}))).await;
    assert_eq!(r.body["disabled"], true);
    for headers in [[("authorization", bearer.as_str())], [("x-api-key", w_key.as_str())]] {
        let c = s.check("GET", "/v1/models", &headers).await;
        assert_eq!(c.metadata("reason").as_deref(), Some("account_disabled"));
    }
    let r = api
        .send(
            "PATCH",
            "/admin/groups/research",
            Some(&admin),
            Some(json!({"requests_per_period": 5, "period_seconds": 1})),
        )
        .await;
    assert_eq!(r.body["requests_per_period"], 5);
    let root = s.store.user_by_email("root@example.com").await.unwrap().unwrap().id;
    let r = api.send("PATCH", &format!("/admin/users/{root}"), Some(&admin), Some(json!({"role": "viewer"}))).await;
    r.assert_error(400, "VALIDATION_ERROR");
    let r = api.send("PATCH", &format!("/admin/users/{w_id}"), Some(&admin), Some(json!({"group": "nope"}))).await;
    r.assert_error(400, "VALIDATION_ERROR");
    api.get("/admin/users/nobody", Some(&admin)).await.assert_error(404, "NOT_FOUND");
    assert_eq!(api.get("/admin/users", Some(&admin)).await.body["users"].as_array().unwrap().len(), 2);
    s.finish().await;
}

async fn seed_alias_paths_and_shapes(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    user_with_password(&s, "admin@company.com", Role::Admin).await;
    // Seed 001: username + password on /api/v1/auth/login, token at .data.token.
    let r = api
        .post("/api/v1/auth/login", None, json!({"username": "admin@company.com", "password": "correct horse battery"}))
        .await;
    assert_eq!(r.status, 200);
    let token = r.body["data"]["token"].as_str().unwrap().to_owned();
    assert_eq!(r.body["success"], true);
    let me = api.get("/api/v1/auth/me", Some(&token)).await;
    assert_eq!(me.body["data"]["role"], "admin");
    assert_eq!(me.body["data"]["email"], "admin@company.com");
    let r = api.post("/api/v1/auth/refresh", Some(&token), json!({})).await;
    let token = r.body["data"]["token"].as_str().unwrap().to_owned();
    let r = api.post("/api/v1/auth/logout", Some(&token), json!({})).await;
    assert_eq!(r.body["message"], "Logged out successfully");
    // Seed 004: /api/auth/register with username and email.
    let r = api
        .post(
            "/api/auth/register",
            None,
            json!({"username": "u@company.com", "email": "u@company.com", "password": "secure_password"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body["user_id"].is_string());
    // Errors have one shape everywhere.
    let r = api.get("/api/v1/auth/me", None).await;
    r.assert_error(401, "AUTHENTICATION_FAILED");
    assert_eq!(r.body["success"], false);
    assert!(r.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let r = api.send("PUT", "/auth/login", None, None).await;
    assert_eq!(r.status, 405);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_admin_is_created_once() {
    let (url, _dir) = common::fresh_database(Backend::Sqlite).await;
    let config = || {
        let mut c = common::test_config(&url);
        c.bootstrap_admin = Some(("boss@example.com".into(), gatehouse::secret::Secret::new("bootstrap password")));
        c
    };
    let s = TestServer::start_config(config()).await;
    let api = Api::new(&s);
    let token = api.login("boss@example.com", "bootstrap password").await;
    assert_eq!(api.get("/auth/me", Some(&token)).await.body["role"], "admin");
    s.finish().await;
    // A restart with the same settings keeps the existing account.
    let s = TestServer::start_config(config()).await;
    assert_eq!(s.store.list_users().await.unwrap().len(), 1);
    s.finish().await;
}
