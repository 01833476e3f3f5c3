//! `gatehouse.admin.v1.KeyAdmin` over a real gRPC socket.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use common::{Backend, TestServer};
use gatehouse::domain::{AuditAction, AuditQuery, Role};
use gatehouse::grpc::admin::pb;
use gatehouse::grpc::admin::pb::key_admin_client::KeyAdminClient;
use tonic::Code;
use tonic::transport::Channel;

backend_tests! {
    admin_manages_keys_that_check_honours,
    callers_without_manage_users_are_refused,
    bad_requests_get_precise_codes,
}

async fn client(s: &TestServer) -> KeyAdminClient<Channel> {
    KeyAdminClient::connect(format!("http://{}", s.grpc)).await.unwrap()
}

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

async fn admin_manages_keys_that_check_honours(b: Backend) {
    let s = TestServer::start(b).await;
    let (_, admin_key) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let viewer = s.user("v@example.com", Role::Viewer).await;
    let mut c = client(&s).await;

    let created = c
        .create_key(with_key(
            pb::CreateKeyRequest {
                user: "v@example.com".into(),
                name: "batch".into(),
                permissions: vec!["read_models".into()],
                expires_in_days: Some(7),
                allowed_models: vec!["gpt-4o*".into()],
                token_limit: Some("100000/60".into()),
                spend_limit: None,
            },
            &admin_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let key = created.key.unwrap();
    assert_eq!((key.token_limit.as_deref(), key.spend_limit.as_deref()), (Some("100000/60"), None));
    assert_eq!(key.user_id, viewer.id);
    assert_eq!(key.permissions, vec!["read_models"]);
    assert!(!key.inherits_permissions);
    assert_eq!(key.allowed_models, vec!["gpt-4o*"]);
    assert!(key.expires_at.unwrap() > common::now() + 6 * 86_400);
    let check = s.check("GET", "/v1/models", &[("x-api-key", &created.secret)]).await;
    assert_eq!(check.upstream_headers()["x-auth-user-id"], viewer.id);

    let listed =
        c.list_keys(with_key(pb::ListKeysRequest { user: viewer.id.clone() }, &admin_key)).await.unwrap().into_inner();
    assert_eq!(listed.keys.len(), 1);
    let all = c.list_keys(with_key(pb::ListKeysRequest::default(), &admin_key)).await.unwrap().into_inner();
    assert_eq!(all.keys.len(), 2);

    let revoked =
        c.revoke_key(with_key(pb::RevokeKeyRequest { id: key.id.clone() }, &admin_key)).await.unwrap().into_inner();
    assert!(revoked.revoked_at.is_some());
    let check = s.check("GET", "/v1/models", &[("x-api-key", &created.secret)]).await;
    assert_eq!(check.http_status(), 401);

    // Both changes are in the audit log, with the admin as actor.
    let events = s.store.audit_events(&AuditQuery { limit: 50, ..Default::default() }).await.unwrap();
    let on_key: Vec<&str> =
        events.iter().filter(|e| e.target.as_deref() == Some(&format!("key:{}", key.id))).map(|e| &*e.action).collect();
    assert_eq!(on_key, ["key.revoked", "key.created"]);
    let admin_id = s.store.user_by_email("root@example.com").await.unwrap().unwrap().id;
    let on_this_key = events.iter().filter(|e| e.target.as_deref() == Some(&format!("key:{}", key.id)));
    assert!(on_this_key.clone().all(|e| e.actor_id.as_deref() == Some(&*admin_id)));
    // What was granted is recorded, and through which door.
    let created = on_this_key.clone().find(|e| e.action == "key.created").unwrap().detail.clone().unwrap();
    assert!(created.contains("permissions: read_models") && created.contains("via gRPC"), "{created}");
    assert!(on_this_key.clone().all(|e| e.client_ip.as_deref() == Some("127.0.0.1")));
    s.finish().await;
}

async fn callers_without_manage_users_are_refused(b: Backend) {
    let s = TestServer::start(b).await;
    let (_, viewer_key) = s.user_with_key("v@example.com", Role::Viewer, None).await;
    let (admin, _) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let narrow_admin_key = s.key_for(&admin, Some(&["read_models"])).await;
    let mut c = client(&s).await;
    let request = || pb::CreateKeyRequest { user: "v@example.com".into(), name: "x".into(), ..Default::default() };

    let e = c.create_key(tonic::Request::new(request())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c.create_key(with_key(request(), "gk_nonsense")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    for key in [&viewer_key, &narrow_admin_key] {
        let e = c.create_key(with_key(request(), key)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let e = c.list_keys(with_key(pb::ListKeysRequest::default(), key)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    // Nothing was created by the refused calls; each refusal is audited, a
    // refused credential too (no actor then), but not a call without one.
    assert_eq!(s.store.list_api_keys(None).await.unwrap().len(), 3);
    let denied = AuditQuery { action: Some(AuditAction::AdminDenied), limit: 50, ..Default::default() };
    let events = s.store.audit_events(&denied).await.unwrap();
    assert_eq!(events.len(), 5);
    let refused = events.iter().find(|e| e.actor_id.is_none()).unwrap();
    assert!(refused.detail.as_deref().unwrap().starts_with("credential refused"), "{refused:?}");
    assert!(events.iter().any(|e| e.target.as_deref() == Some("gRPC gatehouse.admin.v1.KeyAdmin/ListKeys")));
    s.finish().await;
}

async fn bad_requests_get_precise_codes(b: Backend) {
    let s = TestServer::start(b).await;
    let (_, admin_key) = s.user_with_key("root@example.com", Role::Admin, None).await;
    s.user("v@example.com", Role::Viewer).await;
    let mut c = client(&s).await;
    let create = |user: &str, name: &str, permissions: &[&str]| pb::CreateKeyRequest {
        user: user.into(),
        name: name.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        expires_in_days: None,
        allowed_models: vec![],
        token_limit: None,
        spend_limit: None,
    };
    let bad_budget = pb::CreateKeyRequest { spend_limit: Some("5/year".into()), ..create("v@example.com", "b", &[]) };
    let cases = [
        (bad_budget, Code::InvalidArgument),
        (create("v@example.com", "", &[]), Code::InvalidArgument),
        (create("v@example.com", "k", &["bogus"]), Code::InvalidArgument),
        (create("v@example.com", "k", &["manage_users"]), Code::PermissionDenied),
        (create("ghost@example.com", "k", &[]), Code::NotFound),
    ];
    for (request, code) in cases {
        assert_eq!(c.create_key(with_key(request, &admin_key)).await.unwrap_err().code(), code);
    }
    let e = c.revoke_key(with_key(pb::RevokeKeyRequest { id: "0000000000000000".into() }, &admin_key)).await;
    assert_eq!(e.unwrap_err().code(), Code::NotFound);
    assert_eq!(s.store.list_api_keys(None).await.unwrap().len(), 1);
    s.finish().await;
}
