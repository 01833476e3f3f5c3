//! Attacks: identities that say more than the credential may, or that an
//! upstream reads differently from Gatehouse.

use gatehouse::domain::Role;
use serde_json::{Value, json};

use crate::common::api::Api;
use crate::common::{Backend, TestServer};
use crate::table::Stack;

/// An admin's key narrowed to fewer permissions than the admin role does not
/// pass role-only rules, and the upstream is not told it is an admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowed_keys_do_not_carry_their_owners_role() {
    let stack = Stack::start(TestServer::start(Backend::Sqlite).await).await;
    let s = &stack.gatehouse;
    let admin = s.user("root@example.com", Role::Admin).await;
    let empty = s.key_for(&admin, Some(&[])).await;
    let models_only = s.key_for(&admin, Some(&["read_models"])).await;
    let full = s.key_for(&admin, None).await;
    let http = reqwest::Client::new();
    let get = |path: &str, key: &str| http.get(stack.envoy.url(path)).header("x-api-key", key).send();

    for key in [&empty, &models_only] {
        let r = get("/admin/settings", key).await.unwrap();
        assert_eq!(r.status(), 403, "a narrowed admin key passed the admin rule");
    }
    assert_eq!(get("/admin/settings", &full).await.unwrap().status(), 200);

    // Carried role: the highest whose permissions the key holds in full.
    let r = get("/v1/models", &models_only).await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert!(echo["headers"].get("x-auth-role").is_none(), "{echo}");
    let viewer_like = s.key_for(&admin, Some(&["read_models", "run_inference", "use_streaming"])).await;
    let echo: Value = get("/v1/models", &viewer_like).await.unwrap().json().await.unwrap();
    assert_eq!(echo["headers"]["x-auth-role"], "viewer", "{echo}");
    let echo: Value = get("/v1/models", &full).await.unwrap().json().await.unwrap();
    assert_eq!(echo["headers"]["x-auth-role"], "admin");
}

/// Emails that a list-parsing or address-parsing upstream would read as
/// another identity are refused wherever accounts are made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_values_cannot_be_split_or_disguised() {
    let s = TestServer::start(Backend::Sqlite).await;
    let api = Api::new(&s);
    for email in [
        "mallory,admin@example.com",
        "mallory;admin@example.com",
        "\"admin@example.com\"@evil.com",
        "Admin <admin@example.com>",
        "mallory@example.com>",
        "\u{430}dmin@example.com",
        "admin@example.com\u{200B}",
        "nobody@idp.example.com.idp.invalid",
    ] {
        let r = api.register(email, "correct horse battery").await;
        r.assert_error(400, "VALIDATION_ERROR");
        assert!(s.store.user_by_email(&email.to_lowercase()).await.unwrap().is_none(), "{email} was stored");
    }
    // The admin API and the CLI share the rule.
    let (_, admin_key) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let r = api.post("/admin/users", Some(&admin_key), json!({"email": "a,b@example.com"})).await;
    r.assert_error(400, "VALIDATION_ERROR");

    // Names: no bidi overrides or zero-width characters.
    for name in ["ci\u{202E}yek-nimda", "prod\u{200B}key", "\u{2066}key\u{2069}"] {
        let r = api.post("/auth/keys", Some(&admin_key), json!({ "name": name })).await;
        r.assert_error(400, "VALIDATION_ERROR");
    }
    s.finish().await;
}
