//! Attacks: a stolen session outliving the password change meant to end it.

use gatehouse::domain::Role;
use serde_json::json;

use crate::backend_tests;
use crate::common::api::{Api, user_with_password};
use crate::common::{Backend, TestServer};

backend_tests! {
    changing_the_password_ends_every_session,
}

async fn allowed(s: &TestServer, token: &str) -> bool {
    s.check("GET", "/v1/models", &[("authorization", &format!("Bearer {token}"))]).await.allowed()
}

async fn changing_the_password_ends_every_session(b: Backend) {
    let s = TestServer::start(b).await;
    let api = Api::new(&s);
    let mine = user_with_password(&s, "dana@example.com", Role::Viewer).await;
    let stolen = api.login("dana@example.com", "correct horse battery").await;
    assert!(allowed(&s, &mine).await && allowed(&s, &stolen).await);

    // The current password is required, and a wrong one changes nothing.
    let wrong = json!({"current_password": "guess", "new_password": "a brand new passphrase"});
    api.post("/auth/password", Some(&stolen), wrong).await.assert_error(400, "VALIDATION_ERROR");
    assert!(allowed(&s, &stolen).await);

    let change = json!({"current_password": "correct horse battery", "new_password": "a brand new passphrase"});
    let r = api.post("/auth/password", Some(&mine), change).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = r.body["access_token"].as_str().unwrap().to_owned();
    assert!(!allowed(&s, &stolen).await, "the stolen session ended");
    assert!(!allowed(&s, &mine).await, "every session issued before the change ended");
    assert!(allowed(&s, &fresh).await);
    let r = api.post("/auth/refresh", Some(&stolen), json!({})).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r =
        api.post("/auth/login", None, json!({"email": "dana@example.com", "password": "correct horse battery"})).await;
    assert_eq!(r.status, 401);
    api.login("dana@example.com", "a brand new passphrase").await;
    // An API key cannot change the password.
    let key = s.key_for(&s.accounts.find_user("dana@example.com").await.unwrap(), None).await;
    let again = json!({"current_password": "a brand new passphrase", "new_password": "another passphrase 1"});
    api.post("/auth/password", Some(&key), again).await.assert_error(400, "VALIDATION_ERROR");
    s.finish().await;
}
