//! Key rotation: `POST /auth/keys/{id}/rotate` gives the same key (id,
//! permissions, owner) a new secret; the old one works for the grace period
//! (checked at an injected time), then never again; both secrets appear in
//! the audit log by fingerprint only; bad requests change nothing.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use common::api::Api;
use common::{Backend, TestServer, now};
use gatehouse::domain::{AuditQuery, Denial, Role};
use gatehouse::secret::Secret;
use serde_json::json;
use tonic::Code;

async fn valid_at(s: &TestServer, key: &str, at: i64) -> Result<(), Denial> {
    // As Check sees it (Gatehouse's own APIs refuse a replaced secret outright).
    s.authorizer.authn().authenticate(gatehouse::authn::Credential::ApiKey(key), at).await.map(|_| ())
}

async fn rotation_with_a_grace_period(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let dev = s.user("dev@example.com", Role::Operator).await;
    s.accounts.set_password(&dev.id, Secret::new("dev password 1")).await.unwrap();
    let token = api.login("dev@example.com", "dev password 1").await;
    let created = api
        .post("/auth/keys", Some(&token), json!({"name": "ci", "permissions": ["read_models"], "expires_in_days": 30}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let old = created.body["key"].as_str().unwrap().to_owned();

    let t0 = now();
    let r = api.post(&format!("/auth/keys/{id}/rotate"), Some(&token), json!({"grace_seconds": 3600})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.body["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(r.body["id"], id.as_str(), "same key id");
    assert!(new.starts_with(&format!("gk_{id}_")));
    assert_eq!(r.body["permissions"], json!(["read_models"]), "same permissions");
    assert_eq!(r.body["expires_at"], created.body["expires_at"], "same expiry");
    assert!(r.body["previous_secret_expires_at"].is_string());
    assert!(r.body["rotated_at"].is_string());

    // During the grace period both work, through Check too.
    for key in [&old, &new] {
        let c = s.check("GET", "/v1/models", &[("x-api-key", key)]).await;
        assert!(c.allowed(), "{c:?}");
        assert_eq!(c.upstream_headers()["x-auth-key-id"], id);
    }
    assert!(valid_at(&s, &old, t0 + 3590).await.is_ok());
    // After it, only the new one.
    assert_eq!(valid_at(&s, &old, t0 + 3601).await, Err(Denial::InvalidCredential));
    assert!(valid_at(&s, &new, t0 + 3601).await.is_ok());

    // Grace 0 (or a body-less call with "grace_seconds": 0): the old secret stops at once.
    let r = api.post(&format!("/auth/keys/{id}/rotate"), Some(&token), json!({"grace_seconds": 0})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let newest = r.body["key"].as_str().unwrap().to_owned();
    assert!(r.body["previous_secret_expires_at"].is_null());
    for key in [&old, &new] {
        s.check("GET", "/v1/models", &[("x-api-key", key)]).await.assert_denied(
            401,
            Code::Unauthenticated,
            "AUTHENTICATION_FAILED",
        );
    }
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &newest)]).await.allowed());

    // A call without a body takes the default grace period (24 h).
    let r = api.send("POST", &format!("/auth/keys/{id}/rotate"), Some(&token), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let latest = r.body["key"].as_str().unwrap().to_owned();
    assert!(valid_at(&s, &newest, t0 + 86_000).await.is_ok());
    assert!(valid_at(&s, &newest, now() + 86_401).await.is_err());

    // Audit: both secrets by fingerprint, never in plaintext.
    let events = s
        .store
        .audit_events(&AuditQuery { target: Some(format!("key:{id}")), limit: 20, ..Default::default() })
        .await
        .unwrap();
    let rotations: Vec<_> = events.iter().filter(|e| e.action == "key.rotated").collect();
    assert_eq!(rotations.len(), 3);
    for e in &rotations {
        let detail = e.detail.as_deref().unwrap();
        assert_eq!(detail.matches("sha256:").count(), 2, "{detail}");
        assert_eq!(e.actor_id.as_deref(), Some(&*dev.id));
        for secret in [&old, &new, &newest, &latest] {
            assert!(!detail.contains(secret.as_str()) && !detail.contains(&secret[20..]), "{detail}");
        }
    }
    assert!(rotations.iter().any(|e| e.detail.as_deref().unwrap().contains("valid until now")));
    s.finish().await;
}

async fn bad_rotations_change_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let (_, mine) = s.user_with_key("me@example.com", Role::Operator, None).await;
    let (_, theirs) = s.user_with_key("them@example.com", Role::Operator, None).await;
    let their_id = &theirs[3..19];
    let my_id = &mine[3..19];

    let r = api.post(&format!("/auth/keys/{their_id}/rotate"), Some(&mine), json!({})).await;
    assert_eq!(r.status, 404, "someone else's key is not found: {}", r.body);
    let r = api.post(&format!("/auth/keys/{my_id}/rotate"), Some(&mine), json!({"grace_seconds": 99_999_999})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["details"]["field"], "grace_seconds");
    let r = api.post(&format!("/auth/keys/{my_id}/rotate"), Some(&mine), json!({"grace": 10})).await;
    assert_eq!(r.status, 400, "unknown fields are refused");
    let r = api.post("/auth/keys/not-a-key-id/rotate", Some(&mine), json!({})).await;
    assert_eq!(r.status, 404);
    let r = api.post(&format!("/auth/keys/{my_id}/rotate"), None, json!({})).await;
    assert_eq!(r.status, 401);
    for key in [&mine, &theirs] {
        assert!(s.check("GET", "/v1/models", &[("x-api-key", key)]).await.allowed(), "unchanged");
    }
    let key = s.store.api_key(my_id).await.unwrap().unwrap();
    assert!(key.rotated_at.is_none() && key.previous_secret_expires_at.is_none());

    // A revoked key cannot be brought back by rotating it.
    let r = api.send("DELETE", &format!("/auth/keys/{their_id}"), Some(&theirs), None).await;
    assert_eq!(r.status, 204);
    let r = api.post(&format!("/auth/keys/{their_id}/rotate"), Some(&mine), json!({})).await;
    assert_eq!(r.status, 404);
    let (_, admin) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let r = api.post(&format!("/auth/keys/{their_id}/rotate"), Some(&admin), json!({})).await;
    assert_eq!(r.status, 409, "{}", r.body);
    s.finish().await;
}

backend_tests! { rotation_with_a_grace_period, bad_rotations_change_nothing }
