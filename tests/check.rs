//! Envoy ext_authz Check over a real gRPC socket, against SQLite and Postgres.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use common::{Backend, TestServer, check_request, now};
use gatehouse::domain::{NewApiKey, Role, UserUpdate};
use tonic::Code;

backend_tests! {
    allows_a_key_in_x_api_key_and_injects_identity,
    allows_a_key_as_bearer_and_strips_it,
    key_permissions_are_capped_by_the_owner_role,
    missing_credential_is_401_with_a_challenge,
    unknown_key_and_wrong_secret_look_the_same,
    malformed_credentials_are_401,
    conflicting_credentials_are_400,
    expired_key_is_401,
    revoked_key_is_denied_at_once,
    disabled_owner_is_denied,
    spoofed_identity_headers_are_replaced_or_removed,
    public_paths_need_no_credential_and_cannot_be_tricked,
    anonymous_allowed_when_auth_not_required,
    raw_header_map_is_read,
    request_without_http_attributes_is_400,
    last_used_is_recorded_off_the_hot_path,
}

async fn allows_a_key_in_x_api_key_and_injects_identity(b: Backend) {
    let s = TestServer::start(b).await;
    let (user, key) = s.user_with_key("alice@example.com", Role::Operator, None).await;
    let c = s.check_body("POST", "/v1/chat/completions", &[("x-api-key", &key)], common::CHAT).await;
    assert!(c.allowed(), "{c:?}");
    let h = c.upstream_headers();
    assert_eq!(h["x-auth-user-id"], user.id);
    assert_eq!(h["x-auth-email"], "alice@example.com");
    assert_eq!(h["x-auth-role"], "operator");
    assert_eq!(h["x-auth-group"], "default");
    assert_eq!(h["x-auth-method"], "api_key");
    assert_eq!(h["x-auth-key-id"], key[3..19]);
    assert!(h["x-auth-permissions"].contains("run_inference"));
    assert!(!h["x-auth-permissions"].contains("manage_users"));
    assert_eq!(c.removed(), vec!["x-api-key"]);
    assert_eq!(c.metadata("decision").as_deref(), Some("allow"));
    assert_eq!(c.metadata("user_id").as_deref(), Some(user.id.as_str()));
    // No header value anywhere carries the key.
    assert!(h.values().all(|v| !v.contains(&key[19..])));
    s.finish().await;
}

async fn allows_a_key_as_bearer_and_strips_it(b: Backend) {
    let s = TestServer::start(b).await;
    let (_, key) = s.user_with_key("bob@example.com", Role::Viewer, None).await;
    let c = s.check("GET", "/v1/models", &[("Authorization", &format!("Bearer {key}"))]).await;
    assert!(c.allowed(), "{c:?}");
    assert_eq!(c.upstream_headers()["x-auth-role"], "viewer");
    assert_eq!(c.removed(), vec!["authorization"]);
    // Scheme and header name are case-insensitive; the same key twice is fine.
    let c = s.check("GET", "/v1/models", &[("AUTHORIZATION", &format!("bearer {key}")), ("X-Api-Key", &key)]).await;
    assert!(c.allowed(), "{c:?}");
    let mut removed = c.removed();
    removed.sort();
    assert_eq!(removed, vec!["authorization", "x-api-key"]);
    s.finish().await;
}

async fn key_permissions_are_capped_by_the_owner_role(b: Backend) {
    let s = TestServer::start(b).await;
    let (user, key) = s.user_with_key("carol@example.com", Role::Admin, Some(&["read_models"])).await;
    let c = s.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
    assert_eq!(c.upstream_headers()["x-auth-permissions"], "read_models");
    // The owner is demoted: the key loses what the new role lacks, at once.
    let full = s.key_for(&user, None).await;
    let c = s.check("GET", "/v1/models", &[("x-api-key", &full)]).await;
    assert!(c.upstream_headers()["x-auth-permissions"].contains("manage_users"));
    s.accounts.update_user(&user.id, &UserUpdate { role: Some(Role::Viewer), ..Default::default() }).await.unwrap();
    let c = s.check("GET", "/v1/models", &[("x-api-key", &full)]).await;
    assert_eq!(c.upstream_headers()["x-auth-role"], "viewer");
    assert!(!c.upstream_headers()["x-auth-permissions"].contains("manage_users"));
    s.finish().await;
}

async fn missing_credential_is_401_with_a_challenge(b: Backend) {
    let s = TestServer::start(b).await;
    let c = s.check("GET", "/v1/models", &[("accept", "application/json")]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    assert_eq!(c.denied_headers()["www-authenticate"], r#"Bearer realm="gatehouse""#);
    assert_eq!(c.body()["error"]["type"], "authentication_error");
    assert!(c.body()["error"]["param"].is_null());
    assert!(c.body()["error"]["details"].is_null());
    assert_eq!(c.metadata("decision").as_deref(), Some("deny"));
    assert_eq!(c.metadata("reason").as_deref(), Some("missing_credential"));
    s.finish().await;
}

async fn unknown_key_and_wrong_secret_look_the_same(b: Backend) {
    let s = TestServer::start(b).await;
    let (_, key) = s.user_with_key("dan@example.com", Role::Viewer, None).await;
    // Well-formed (valid check digits), so these reach the lookup.
    let unknown = gatehouse::authn::api_key::assemble("0000000000000000", &key[20..63]);
    let wrong_secret = gatehouse::authn::api_key::assemble(&key[3..19], &"A".repeat(43));
    let a = s.check("GET", "/v1/models", &[("x-api-key", &unknown)]).await;
    let w = s.check("GET", "/v1/models", &[("x-api-key", &wrong_secret)]).await;
    for c in [&a, &w] {
        c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
        assert!(c.denied_headers()["www-authenticate"].contains(r#"error="invalid_token""#));
        assert!(!c.raw_body().contains(&key[20..63]), "the body must not echo the secret");
    }
    assert_eq!(a.raw_body(), w.raw_body());
    assert_eq!(a.metadata("reason"), w.metadata("reason"));
    s.finish().await;
}

async fn malformed_credentials_are_401(b: Backend) {
    let s = TestServer::start(b).await;
    let huge = "a".repeat(64 * 1024);
    let cases: Vec<(&str, String)> = vec![
        ("authorization", "Bearer".into()),
        ("authorization", "Bearer ".into()),
        ("authorization", "Basic YWxpY2U6cGFzcw==".into()),
        ("authorization", "Bearer sk-proj-abcdef".into()),
        ("x-api-key", "sk-abcdef0123456789".into()),
        ("x-api-key", "gk_short".into()),
        ("x-api-key", format!("gk_{}_{}", "z".repeat(16), "a".repeat(43))),
        ("x-api-key", "gk_\u{fffd}\u{fffd}ÿ€".into()),
        ("x-api-key", "gk_abc\u{7f}def".into()),
        ("x-api-key", huge.clone()),
        ("authorization", format!("Bearer {huge}")),
    ];
    for (name, value) in cases {
        let c = s.check("GET", "/v1/models", &[(name, &value)]).await;
        c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
        assert!(c.raw_body().len() < 1024, "the body must not echo the input");
    }
    s.finish().await;
}

async fn conflicting_credentials_are_400(b: Backend) {
    let s = TestServer::start(b).await;
    let (user, key) = s.user_with_key("erin@example.com", Role::Viewer, None).await;
    let other = s.key_for(&user, None).await;
    for headers in [
        vec![("x-api-key", key.clone()), ("authorization", format!("Bearer {other}"))],
        vec![("x-api-key", format!("{key},{other}"))],
        vec![("authorization", format!("Bearer {key}")), ("Authorization", format!("Bearer {other}"))],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let c = s.check("GET", "/v1/models", &headers).await;
        c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
        assert_eq!(c.body()["error"]["type"], "invalid_request_error");
    }
    s.finish().await;
}

async fn expired_key_is_401(b: Backend) {
    let s = TestServer::start(b).await;
    let user = s.user("frank@example.com", Role::Viewer).await;
    let generated = gatehouse::authn::api_key::generate();
    let new = NewApiKey {
        id: generated.id.clone(),
        user_id: user.id.clone(),
        name: "old".into(),
        secret_hash: generated.secret_hash,
        permissions: None,
        expires_at: Some(now() - 1),
        models: None,
        budget: Default::default(),
    };
    s.store.create_api_key(&new).await.unwrap();
    let c = s.check("GET", "/v1/models", &[("x-api-key", generated.key.expose())]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    assert_eq!(c.metadata("reason").as_deref(), Some("expired"));
    assert!(c.body()["error"]["message"].as_str().unwrap().contains("expired"));
    s.finish().await;
}

async fn revoked_key_is_denied_at_once(b: Backend) {
    let s = TestServer::start(b).await;
    let (_, key) = s.user_with_key("gina@example.com", Role::Viewer, None).await;
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &key)]).await.allowed());
    // The key is now cached; revoking must still take effect immediately.
    let revoked = s.accounts.revoke_key(&gatehouse::accounts::Acting::operator(), &key[3..19], now()).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let c = s.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    assert_eq!(c.metadata("reason").as_deref(), Some("revoked"));
    s.finish().await;
}

async fn disabled_owner_is_denied(b: Backend) {
    let s = TestServer::start(b).await;
    let (user, key) = s.user_with_key("hank@example.com", Role::Admin, None).await;
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &key)]).await.allowed());
    s.accounts.update_user(&user.id, &UserUpdate { disabled: Some(true), ..Default::default() }).await.unwrap();
    let c = s.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    assert_eq!(c.metadata("reason").as_deref(), Some("account_disabled"));
    s.finish().await;
}

async fn spoofed_identity_headers_are_replaced_or_removed(b: Backend) {
    let s = TestServer::start(b).await;
    let (user, key) = s.user_with_key("ivy@example.com", Role::Viewer, None).await;
    let c = s
        .check(
            "GET",
            "/v1/models",
            &[
                ("x-api-key", &key),
                ("x-auth-user-id", "admin"),
                ("X-Auth-Role", "admin"),
                ("x-auth-key-id", "forged"),
                ("x-auth-anything", "forged"),
            ],
        )
        .await;
    assert!(c.allowed());
    let h = c.upstream_headers();
    assert_eq!(h["x-auth-user-id"], user.id);
    assert_eq!(h["x-auth-role"], "viewer");
    assert_eq!(h["x-auth-key-id"], key[3..19]);
    assert!(c.removed().contains(&"x-auth-anything".to_owned()), "{:?}", c.removed());
    // Set headers overwrite rather than append.
    if let Some(envoy_types::ext_authz::v3::pb::HttpResponse::OkResponse(ok)) = &c.0.http_response {
        use envoy_types::ext_authz::v3::pb::HeaderAppendAction;
        assert!(ok.headers.iter().all(|h| h.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32));
    }
    s.finish().await;
}

async fn public_paths_need_no_credential_and_cannot_be_tricked(b: Backend) {
    let s = TestServer::start(b).await;
    for path in ["/healthz", "/auth/login", "/auth/register?x=1", "/healthz/"] {
        let c = s.check("POST", path, &[("x-auth-user-id", "admin")]).await;
        assert!(c.allowed(), "{path}: {c:?}");
        assert_eq!(c.upstream_headers()["x-auth-method"], "anonymous");
        assert!(!c.upstream_headers().contains_key("x-auth-user-id"));
        assert_eq!(c.removed(), vec!["x-auth-user-id"]);
    }
    // Paths that only look like public ones do not reach them.
    for path in ["/healthz/x", "/healthzz"] {
        let c = s.check("POST", path, &[]).await;
        c.assert_denied(403, Code::PermissionDenied, "PERMISSION_DENIED");
        assert_eq!(c.metadata("reason").as_deref(), Some("route_denied"), "{path}");
    }
    // Dot segments, parameters and empty segments are refused, not resolved.
    for path in [
        "/healthz%2f..%2fv1",
        "/%2e%2e/v1/models",
        "/v1\\models",
        "/v1/%00",
        "/healthz/../v1/chat/completions",
        "/auth/login/../../v1/models",
        "/auth/login/..;/../v1/models",
        "/healthz;/../nothing",
        "//healthz",
    ] {
        let c = s.check("POST", path, &[]).await;
        c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
    }
    s.finish().await;
}

async fn anonymous_allowed_when_auth_not_required(b: Backend) {
    let s = TestServer::start_with(b, |c| c.require_auth = false).await;
    // Anonymous holds no role and no permission: a rule that asks for any
    // still needs a credential, with a challenge.
    let c = s.check("GET", "/v1/models", &[("x-auth-role", "admin")]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    assert!(c.denied_headers().contains_key("www-authenticate"));
    // A public rule lets anonymous through, without the spoofed identity.
    let c = s.check("GET", "/healthz", &[("x-auth-role", "admin")]).await;
    assert!(c.allowed());
    assert_eq!(c.upstream_headers()["x-auth-method"], "anonymous");
    assert_eq!(c.removed(), vec!["x-auth-role"]);
    // A credential that is present is still verified.
    let c = s.check("GET", "/v1/models", &[("x-api-key", "gk_bogus")]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    let (_, key) = s.user_with_key("jo@example.com", Role::Viewer, None).await;
    let c = s.check("GET", "/v1/models", &[("x-api-key", &key)]).await;
    assert_eq!(c.upstream_headers()["x-auth-method"], "api_key");
    s.finish().await;
}

async fn raw_header_map_is_read(b: Backend) {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let s = TestServer::start(b).await;
    let (_, key) = s.user_with_key("kim@example.com", Role::Viewer, None).await;
    let mut request = check_request("GET", "/v1/models", &[]);
    let http = request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.header_map = Some(HeaderMap {
        headers: vec![HeaderValue {
            key: "x-api-key".into(),
            value: String::new(),
            raw_value: key.clone().into_bytes(),
        }],
    });
    let c = common::Check(s.client().await.check(request.clone()).await.unwrap().into_inner());
    assert!(c.allowed(), "{c:?}");
    // Bytes that are not UTF-8 are not a credential.
    let http = request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.header_map.as_mut().unwrap().headers[0].raw_value = vec![0xff, 0xfe, b'g', b'k'];
    let c = common::Check(s.client().await.check(request).await.unwrap().into_inner());
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    s.finish().await;
}

async fn request_without_http_attributes_is_400(b: Backend) {
    let s = TestServer::start(b).await;
    let request = envoy_types::ext_authz::v3::pb::CheckRequest::default();
    let c = common::Check(s.client().await.check(request).await.unwrap().into_inner());
    c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
    s.finish().await;
}

async fn last_used_is_recorded_off_the_hot_path(b: Backend) {
    let s = TestServer::start_with(b, |c| c.usage_flush_interval = std::time::Duration::from_millis(200)).await;
    let (_, key) = s.user_with_key("lee@example.com", Role::Viewer, None).await;
    let id = &key[3..19];
    assert_eq!(s.store.api_key(id).await.unwrap().unwrap().last_used_at, None);
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &key)]).await.allowed());
    let mut recorded = None;
    for _ in 0..50 {
        recorded = s.store.api_key(id).await.unwrap().unwrap().last_used_at;
        if recorded.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recorded.is_some_and(|t| (t - now()).abs() < 60));
    s.finish().await;
}
