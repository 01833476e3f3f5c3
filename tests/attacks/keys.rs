//! Attacks: a credential acting beyond itself on API keys. A narrow or leaked
//! key must not rotate, revoke or mint keys broader than itself, through any
//! door (REST, gRPC admin API); a replaced secret in its grace period manages
//! nothing.

use gatehouse::domain::Role;
use gatehouse::grpc::admin::pb;
use gatehouse::grpc::admin::pb::key_admin_client::KeyAdminClient;
use serde_json::json;
use tonic::Code;

use crate::backend_tests;
use crate::common::api::{Api, user_with_password};
use crate::common::{Backend, TestServer};

backend_tests! {
    narrow_keys_cannot_manage_broader_keys,
    a_replaced_secret_manages_nothing,
    manage_users_alone_does_not_mint_or_take_over_broader_keys,
    manage_users_alone_does_not_make_or_promote_accounts_beyond_itself,
    a_model_restricted_key_cannot_lift_model_restrictions,
}

fn id(key: &str) -> &str {
    &key[3..19]
}

async fn allowed(s: &TestServer, key: &str) -> bool {
    s.check("GET", "/v1/models", &[("x-api-key", key)]).await.allowed()
}

async fn narrow_keys_cannot_manage_broader_keys(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let session = user_with_password(&s, "boss@example.com", Role::Admin).await;
    let boss = s.accounts.find_user("boss@example.com").await.unwrap();
    let full = s.key_for(&boss, None).await;
    let narrow = s.key_for(&boss, Some(&["read_models"])).await;

    // The narrow key cannot rotate (and so receive) or revoke the full key.
    let r = api.post(&format!("/auth/keys/{}/rotate", id(&full)), Some(&narrow), json!({})).await;
    r.assert_error(403, "PERMISSION_DENIED");
    assert!(r.body.get("key").is_none() && !r.body.to_string().contains("gk_"), "{}", r.body);
    api.send("DELETE", &format!("/auth/keys/{}", id(&full)), Some(&narrow), None)
        .await
        .assert_error(403, "PERMISSION_DENIED");
    // Nor mint a broader one for its owner (explicitly or by inheriting).
    let r = api.post("/auth/keys", Some(&narrow), json!({"name": "wider", "permissions": ["manage_users"]})).await;
    r.assert_error(403, "PERMISSION_DENIED");
    let r = api.post("/auth/keys", Some(&narrow), json!({"name": "inherit"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["permissions"], json!(["read_models"]), "{}", r.body);
    assert!(allowed(&s, &full).await, "the full key is untouched");

    // A key may manage keys it covers: the full key revokes the narrow one.
    let r = api.send("DELETE", &format!("/auth/keys/{}", id(&narrow)), Some(&full), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    // The owner's session may manage every key of theirs.
    let r = api.post(&format!("/auth/keys/{}/rotate", id(&full)), Some(&session), json!({"grace_seconds": 0})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!allowed(&s, &full).await);

    // Refusals are audited.
    let denied = s
        .store
        .audit_events(&gatehouse::domain::AuditQuery {
            action: Some(gatehouse::domain::AuditAction::AdminDenied),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(denied.iter().any(|e| e.target.as_deref() == Some(&format!("key:{}", id(&full)))), "{denied:?}");
    s.finish().await;
}

async fn a_replaced_secret_manages_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (_, old) = s.user_with_key("dev@example.com", Role::Operator, None).await;
    // Rotated with a grace period: the old secret still calls the API...
    let r = api.post(&format!("/auth/keys/{}/rotate", id(&old)), Some(&old), json!({"grace_seconds": 3600})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.body["key"].as_str().unwrap().to_owned();
    assert!(allowed(&s, &old).await && allowed(&s, &new).await);
    // ...but a leaked old secret cannot rotate again to kill the new one,
    // revoke, or mint keys.
    let r = api.post(&format!("/auth/keys/{}/rotate", id(&old)), Some(&old), json!({"grace_seconds": 0})).await;
    r.assert_error(403, "PERMISSION_DENIED");
    api.send("DELETE", &format!("/auth/keys/{}", id(&old)), Some(&old), None)
        .await
        .assert_error(403, "PERMISSION_DENIED");
    api.post("/auth/keys", Some(&old), json!({"name": "backdoor"})).await.assert_error(403, "PERMISSION_DENIED");
    assert!(allowed(&s, &new).await, "the new secret survives");

    // Nor anything else Gatehouse's own APIs do: accounts, groups, the audit log.
    let (_, admin_old) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let r = api.post(&format!("/auth/keys/{}/rotate", id(&admin_old)), Some(&admin_old), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (method, path, body) in [
        (
            "POST",
            "/admin/users",
            Some(json!({"email": "evil@example.com", "role": "admin", "password": "evil password 123"})),
        ),
        ("PATCH", "/admin/groups/default", Some(json!({"allowed_models": null}))),
        ("GET", "/admin/users", None),
        ("GET", "/auth/audit", None),
        ("GET", "/auth/me", None),
    ] {
        let r = api.send(method, path, Some(&admin_old), body).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
    }
    assert!(s.store.user_by_email("evil@example.com").await.unwrap().is_none());
    assert!(allowed(&s, &admin_old).await, "the replaced secret still works at Check in its grace period");
    s.finish().await;
}

async fn manage_users_alone_does_not_mint_or_take_over_broader_keys(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (admin, admin_full) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let (_, helpdesk) = s.user_with_key("helpdesk@example.com", Role::Admin, Some(&["manage_users"])).await;

    // REST: no rotating (and receiving) another admin's full key...
    let r = api.post(&format!("/auth/keys/{}/rotate", id(&admin_full)), Some(&helpdesk), json!({})).await;
    r.assert_error(403, "PERMISSION_DENIED");
    // ...no key for that admin inheriting the admin role, or naming what the caller lacks.
    let r = api.post("/auth/keys", Some(&helpdesk), json!({"name": "x", "user": admin.id})).await;
    r.assert_error(403, "PERMISSION_DENIED");
    let r = api
        .post("/auth/keys", Some(&helpdesk), json!({"name": "x", "user": admin.id, "permissions": ["read_models"]}))
        .await;
    r.assert_error(403, "PERMISSION_DENIED");

    // gRPC: the same rules.
    let mut grpc = KeyAdminClient::connect(format!("http://{}", s.grpc)).await.unwrap();
    let mut request = tonic::Request::new(pb::CreateKeyRequest {
        user: admin.id.clone(),
        name: "minted".into(),
        ..Default::default()
    });
    request.metadata_mut().insert("authorization", format!("Bearer {helpdesk}").parse().unwrap());
    let e = grpc.create_key(request).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut request = tonic::Request::new(pb::CreateKeyRequest {
        user: admin.id.clone(),
        name: "scoped".into(),
        permissions: vec!["manage_users".into()],
        ..Default::default()
    });
    request.metadata_mut().insert("authorization", format!("Bearer {helpdesk}").parse().unwrap());
    let created = grpc.create_key(request).await.unwrap().into_inner();
    assert_eq!(created.key.unwrap().permissions, ["manage_users"]);

    // Revoking grants nothing: manage_users may revoke any key.
    let r = api.send("DELETE", &format!("/auth/keys/{}", id(&admin_full)), Some(&helpdesk), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(!allowed(&s, &admin_full).await);
    s.finish().await;
}

async fn manage_users_alone_does_not_make_or_promote_accounts_beyond_itself(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (_, helpdesk) = s.user_with_key("helpdesk@example.com", Role::Admin, Some(&["manage_users"])).await;
    let victim = s.user("victim@example.com", Role::Viewer).await;
    let boss = s.user("boss@example.com", Role::Admin).await;

    let r = api
        .post(
            "/admin/users",
            Some(&helpdesk),
            json!({"email": "evil@example.com", "password": "evil password 123", "role": "admin"}),
        )
        .await;
    r.assert_error(403, "PERMISSION_DENIED");
    assert!(s.store.user_by_email("evil@example.com").await.unwrap().is_none());
    // Not even a viewer: that role's permissions are not the caller's either.
    let r = api.post("/admin/users", Some(&helpdesk), json!({"email": "v2@example.com", "role": "viewer"})).await;
    r.assert_error(403, "PERMISSION_DENIED");
    let r = api
        .send("PATCH", &format!("/admin/users/{}", victim.id), Some(&helpdesk), Some(json!({"role": "admin"})))
        .await;
    r.assert_error(403, "PERMISSION_DENIED");
    let r =
        api.send("PATCH", &format!("/admin/users/{}", boss.id), Some(&helpdesk), Some(json!({"disabled": true}))).await;
    r.assert_error(403, "PERMISSION_DENIED");
    assert_eq!(s.accounts.find_user(&victim.id).await.unwrap().role, Role::Viewer);
    assert!(!s.accounts.find_user(&boss.id).await.unwrap().disabled);

    // A full admin credential may.
    let (_, admin) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let r = api
        .send("PATCH", &format!("/admin/users/{}", victim.id), Some(&admin), Some(json!({"role": "operator"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.finish().await;
}

async fn a_model_restricted_key_cannot_lift_model_restrictions(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (_, admin) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let r = api.post("/auth/keys", Some(&admin), json!({"name": "restricted", "allowed_models": ["llama-3"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let restricted = r.body["key"].as_str().unwrap().to_owned();
    let other = s.key_for(&s.accounts.find_user("root@example.com").await.unwrap(), None).await;

    // Its own list, another key's list, a group's list: never wider than its own.
    for (path, body) in [
        (format!("/admin/keys/{}", id(&restricted)), json!({"allowed_models": null})),
        (format!("/admin/keys/{}", id(&restricted)), json!({"rate_limit": "100000/1"})),
        (format!("/admin/keys/{}", id(&other)), json!({"allowed_models": ["*"]})),
        (format!("/admin/keys/{}", id(&other)), json!({"allowed_models": ["gpt-4"]})),
        ("/admin/groups/default".to_owned(), json!({"allowed_models": ["gpt-4"]})),
    ] {
        let r = api.send("PATCH", &path, Some(&restricted), Some(body.clone())).await;
        assert_eq!(r.status, 403, "PATCH {path} {body}: {}", r.body);
    }
    // Within its own list is fine.
    let r = api
        .send(
            "PATCH",
            &format!("/admin/keys/{}", id(&other)),
            Some(&restricted),
            Some(json!({"allowed_models": ["llama-3"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.finish().await;
}
