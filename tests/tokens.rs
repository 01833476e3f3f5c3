//! Session token verification in Check: every forgery and misuse is a 401,
//! for each signing algorithm; the JWKS publishes exactly the public key.
//! Ending sessions: a token is exchanged at most once, revocations outlive
//! the refresh window and restarts, a password change, disabling the user and
//! "sign out everywhere" end every session, and sessions have an absolute
//! lifetime.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::sync::Arc;

use base64::Engine;
use common::api::{Api, user_with_password};
use common::{Backend, TestServer, now};
use gatehouse::authn::jwt::Claims;
use gatehouse::domain::{Role, User};
use gatehouse::secret::Secret;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use tokio::sync::Barrier;
use tonic::Code;

backend_tests! {
    forged_and_misused_tokens_are_refused,
    concurrent_refreshes_of_one_token_make_one_session,
    revocations_last_as_long_as_a_token_can_be_refreshed,
    password_change_disable_and_sign_out_everywhere_end_sessions,
    sessions_end_at_their_absolute_lifetime,
    time_is_the_service_clocks,
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

async fn rs256_server(b: Backend) -> TestServer {
    TestServer::start_with(b, |c| {
        c.jwt.algorithm = Algorithm::RS256;
        c.jwt.private_key_file = Some(fixture("rsa.pem"));
    })
    .await
}

fn claims(user: &User, iat: i64) -> Claims {
    Claims {
        sub: user.id.clone(),
        email: user.email.clone(),
        role: "admin".into(),
        group: "default".into(),
        jti: uuid::Uuid::new_v4().to_string(),
        iat,
        auth_time: iat,
        nbf: iat,
        exp: iat + 3600,
        iss: "gatehouse".into(),
        aud: "gatehouse".into(),
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Claims) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

async fn forged_and_misused_tokens_are_refused(b: Backend) {
    let s = rs256_server(b).await;
    let user = s.user("victim@example.com", Role::Viewer).await;
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa.pem")).unwrap()).unwrap();
    let good = sign(Algorithm::RS256, &rsa, &claims(&user, now()));
    let bearer = |t: &str| format!("Bearer {t}");
    assert!(s.check("GET", "/v1/models", &[("authorization", &bearer(&good))]).await.allowed());

    let (head, rest) = good.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[10] ^= 1;
    let tampered_signature = format!("{head}.{payload}.{}", b64(&sig));
    let mut admin_claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    admin_claims["sub"] = Value::String("someone-else".into());
    let tampered_payload = format!("{head}.{}.{signature}", b64(admin_claims.to_string().as_bytes()));
    let alg_none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
    // The classic confusion: an HS256 token whose HMAC key is the RSA public key.
    let public_pem = std::fs::read(fixture("rsa.pub.pem")).unwrap();
    let hs_with_public = sign(Algorithm::HS256, &EncodingKey::from_secret(&public_pem), &claims(&user, now()));
    let other_key = EncodingKey::from_ed_pem(&std::fs::read(fixture("ed25519.pem")).unwrap()).unwrap();
    let wrong_key = sign(Algorithm::EdDSA, &other_key, &claims(&user, now()));
    let expired = sign(Algorithm::RS256, &rsa, &claims(&user, now() - 7200));
    let future = sign(Algorithm::RS256, &rsa, &claims(&user, now() + 600));
    let mut c = claims(&user, now());
    c.iss = "someone-else".into();
    let wrong_issuer = sign(Algorithm::RS256, &rsa, &c);
    let mut c = claims(&user, now());
    c.aud = "another-service".into();
    let wrong_audience = sign(Algorithm::RS256, &rsa, &c);
    let mut c = claims(&user, now());
    c.sub = "no-such-user".into();
    let unknown_subject = sign(Algorithm::RS256, &rsa, &c);

    for (name, token, reason) in [
        ("tampered signature", tampered_signature, "invalid_credential"),
        ("tampered payload", tampered_payload, "invalid_credential"),
        ("alg none", alg_none, "invalid_credential"),
        ("HS256 with the RSA public key", hs_with_public, "invalid_credential"),
        ("signed by another key", wrong_key, "invalid_credential"),
        ("expired", expired, "expired"),
        ("not yet valid", future, "invalid_credential"),
        ("wrong issuer", wrong_issuer, "invalid_credential"),
        ("wrong audience", wrong_audience, "invalid_credential"),
        ("unknown subject", unknown_subject, "invalid_credential"),
        ("garbage", "eyJ.not.a.token".to_owned(), "invalid_credential"),
    ] {
        let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await;
        c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
        assert_eq!(c.metadata("reason").as_deref(), Some(reason), "{name}");
        assert!(c.denied_headers()["www-authenticate"].contains("invalid_token"), "{name}");
    }
    // The token's role claim is not trusted: the user's stored role is.
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&good))]).await;
    assert_eq!(c.upstream_headers()["x-auth-role"], "viewer");
    s.finish().await;
}

/// Login, Check and the JWKS for each asymmetric algorithm, and HS256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_signs_verifies_and_publishes() {
    for (alg, file, kty) in [
        (Algorithm::RS256, Some("rsa.pem"), Some("RSA")),
        (Algorithm::ES256, Some("p256.pem"), Some("EC")),
        (Algorithm::EdDSA, Some("ed25519.pem"), Some("OKP")),
        // PKCS#8 v2 (RFC 5958): the public key follows the seed.
        (Algorithm::EdDSA, Some("ed25519-v2.pem"), Some("OKP")),
        (Algorithm::HS256, None, None),
    ] {
        let s = TestServer::start_with(Backend::Sqlite, |c| {
            c.jwt.algorithm = alg;
            c.jwt.private_key_file = file.map(fixture);
        })
        .await;
        let user = s.user("a@example.com", Role::Viewer).await;
        s.accounts.set_password(&user.id, gatehouse::secret::Secret::new("long enough pw")).await.unwrap();
        let http = reqwest::Client::new();
        let token = &common::login(&s.url("/auth/login"), "a@example.com", "long enough pw").await;
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.alg, alg);
        let c = s.check("GET", "/v1/models", &[("authorization", &format!("Bearer {token}"))]).await;
        assert!(c.allowed(), "{alg:?}: {c:?}");
        let jwks: Value = http.get(s.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        match kty {
            None => assert!(keys.is_empty(), "an HMAC secret is never published"),
            Some(kty) => {
                assert_eq!(keys.len(), 1);
                assert_eq!(keys[0]["kty"], kty);
                assert_eq!(keys[0]["kid"].as_str(), header.kid.as_deref());
                assert!(keys[0].get("d").is_none(), "no private material");
                // The published key verifies the token on its own.
                let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(keys[0].clone()).unwrap();
                let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
                let mut v = jsonwebtoken::Validation::new(alg);
                v.set_audience(&["gatehouse"]);
                jsonwebtoken::decode::<Claims>(token, &key, &v).unwrap();
            }
        }
        s.finish().await;
    }
}

#[test]
fn weak_or_missing_keys_stop_start_up() {
    use gatehouse::config::Config;
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    let e = Config::load_with(None, &env(&[("JWT_SECRET", "short")])).unwrap_err().to_string();
    assert!(e.contains("JWT_SECRET") && !e.contains("short"), "{e}");
    let e = Config::load_with(None, &env(&[("JWT_ALGORITHM", "RS256")])).unwrap_err().to_string();
    assert!(e.contains("JWT_PRIVATE_KEY_FILE"), "{e}");
    let e = Config::load_with(None, &env(&[("JWT_ALGORITHM", "none")])).unwrap_err().to_string();
    assert!(e.contains("JWT_ALGORITHM"), "{e}");
    assert!(Config::load_with(None, &env(&[("JWT_SECRET", "0123456789abcdef0123456789abcdef")])).is_ok());
    let bad_key = gatehouse::app::jwt_keys(&gatehouse::config::JwtConfig {
        private_key_file: Some(fixture("rsa.pub.pem")),
        algorithm: Algorithm::RS256,
        ..Config::default().jwt
    });
    assert!(bad_key.is_err());
}

const SECRET: &str = "a shared test secret of at least 32 chars";
const PASSWORD: &str = "correct horse battery";

/// A server signing with `SECRET`, so its tokens survive a restart and are
/// accepted by a second server on the same database.
fn shared_config(url: &str) -> gatehouse::config::Config {
    let mut c = common::test_config(url);
    c.jwt.secret = Some(Secret::new(SECRET));
    c
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn allowed(s: &TestServer, token: &str) -> bool {
    s.check("GET", "/v1/models", &[("authorization", &bearer(token))]).await.allowed()
}

/// Waits (up to 10 s) until Check on `s` refuses `token` with `reason`.
async fn until_refused(s: &TestServer, token: &str, reason: &str) {
    let mut last = None;
    for _ in 0..100 {
        let c = s.check("GET", "/v1/models", &[("authorization", &bearer(token))]).await;
        if !c.allowed() && c.metadata("reason").as_deref() == Some(reason) {
            c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
            return;
        }
        last = Some(c);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("Check did not refuse the token as {reason}: {last:?}");
}

async fn refresh(api: &Api, token: &str) -> common::api::Reply {
    api.post("/auth/refresh", Some(token), serde_json::json!({})).await
}

/// A token's claims, read without verification.
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn concurrent_refreshes_of_one_token_make_one_session(b: Backend) {
    const RACERS: usize = 30;
    let s = TestServer::start(b).await;
    let token = user_with_password(&s, "racer@example.com", Role::Viewer).await;
    let jti = payload(&token)["jti"].as_str().unwrap().to_owned();
    let barrier = Arc::new(Barrier::new(RACERS));
    let url = s.url("/auth/refresh");
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let (barrier, url, token) = (barrier.clone(), url.clone(), token.clone());
            tokio::spawn(async move {
                // A client (and connection) of its own, so the requests really overlap.
                let http = reqwest::Client::new();
                let request = http.post(&url).bearer_auth(&token);
                barrier.wait().await;
                let r = request.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut fresh = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            200 => fresh.push(body["access_token"].as_str().unwrap().to_owned()),
            401 => assert_eq!(body["error"]["code"], "AUTHENTICATION_FAILED", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(fresh.len(), 1, "exactly one of {RACERS} concurrent refreshes of one token wins");
    assert!(allowed(&s, &fresh[0]).await);
    assert!(!allowed(&s, &token).await, "the exchanged token is revoked");
    let rows = s.store.revoked_tokens_since(0, 0).await.unwrap();
    assert_eq!(rows.iter().filter(|(j, _)| *j == jti).count(), 1);
    s.finish().await;
}

async fn revocations_last_as_long_as_a_token_can_be_refreshed(b: Backend) {
    let (url, _dir) = common::fresh_database(b).await;
    let s = TestServer::start_config(shared_config(&url)).await;
    let api = Api::new(&s);
    let user = s.user("leaver@example.com", Role::Viewer).await;
    let jwt = s.authorizer.authn().jwt().clone();
    // Both expired 400 s ago: past what Check accepts and past the old
    // in-memory window (expiry + 300 s), well inside the refresh grace
    // window (7 days).
    let t0 = now() - 3600 - 400;
    let exchanged = jwt.issue(&user, t0).unwrap();
    let logged_out = jwt.issue(&user, t0).unwrap();
    assert_eq!(refresh(&api, exchanged.token.expose()).await.status, 200);
    refresh(&api, exchanged.token.expose()).await.assert_error(401, "AUTHENTICATION_FAILED");
    // Logged out while it was valid, an hour ago: long gone from memory, the
    // database still refuses it.
    assert!(s.store.revoke_token(&logged_out.jti, &user.id, logged_out.expires_at, t0 + 60).await.unwrap());
    assert!(!s.authorizer.authn().revocations().is_revoked(&logged_out.jti, s.accounts.clock().now()));
    refresh(&api, logged_out.token.expose()).await.assert_error(401, "AUTHENTICATION_FAILED");
    // A live session logged out now.
    let live = user_with_password(&s, "stayer@example.com", Role::Viewer).await;
    assert_eq!(api.post("/auth/logout", Some(&live), serde_json::json!({})).await.status, 200);
    s.finish().await;

    // After a restart all three are still refused: the live one at Check
    // (revocations of tokens Check could accept are loaded at start-up), all
    // of them at refresh.
    let s = TestServer::start_config(shared_config(&url)).await;
    let api = Api::new(&s);
    assert!(!allowed(&s, &live).await);
    for token in [exchanged.token.expose(), logged_out.token.expose(), live.as_str()] {
        refresh(&api, token).await.assert_error(401, "AUTHENTICATION_FAILED");
    }
    s.finish().await;
}

/// Sets the password with `gatehouse users set-password` on the database,
/// as an operator would: another process, no server involved.
fn cli_set_password(url: &str, email: &str, password: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["users", "set-password", email])
        .env("DATABASE_URL", url)
        .env_remove("GATEHOUSE_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    assert!(child.wait().unwrap().success());
}

async fn password_change_disable_and_sign_out_everywhere_end_sessions(b: Backend) {
    let (url, _dir) = common::fresh_database(b).await;
    let s = TestServer::start_config(shared_config(&url)).await;
    // A second replica on the same database learns of every change through
    // the change feed.
    let replica = TestServer::start_config(shared_config(&url)).await;
    let api = Api::new(&s);
    let (_, admin_key) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let email = "dev@example.com";
    let dev = s.accounts.create_user_with_password(email, None, Role::Viewer, "default", Some(Secret::new(PASSWORD)));
    let dev = dev.await.unwrap();
    let dev_key = s.key_for(&dev, None).await;
    let key_works = || async { s.check("GET", "/v1/models", &[("x-api-key", &dev_key)]).await.allowed() };

    // A password change (the CLI) ends every session, on every replica, at
    // Check and at refresh; a login right after works at once.
    let (a, a_spare) = (api.login(email, PASSWORD).await, api.login(email, PASSWORD).await);
    assert!(allowed(&s, &a).await && allowed(&replica, &a).await);
    cli_set_password(&url, email, "a new password 123");
    until_refused(&s, &a, "revoked").await;
    until_refused(&replica, &a, "revoked").await;
    refresh(&api, &a_spare).await.assert_error(401, "AUTHENTICATION_FAILED");
    let password = "a new password 123";
    let fresh = api.login(email, password).await;
    assert!(allowed(&s, &fresh).await, "a token issued after the change works");
    assert!(key_works().await, "API keys are not sessions");

    // Disabled, then enabled again: the old sessions stay ended.
    let (b1, b2) = (api.login(email, password).await, api.login(email, password).await);
    let patch = |disabled: bool| {
        let http = reqwest::Client::new();
        let r = http.patch(s.url(&format!("/admin/users/{}", dev.id))).header("x-api-key", &admin_key);
        async move { r.json(&serde_json::json!({ "disabled": disabled })).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(patch(true).await, 200);
    until_refused(&s, &b1, "account_disabled").await;
    assert_eq!(patch(false).await, 200);
    until_refused(&s, &b1, "revoked").await;
    until_refused(&replica, &b1, "revoked").await;
    refresh(&api, &b2).await.assert_error(401, "AUTHENTICATION_FAILED");
    assert!(allowed(&s, &api.login(email, password).await).await, "enabled again, a new login works");

    // Sign out everywhere: this session and every other one.
    let (c1, c2) = (api.login(email, password).await, api.login(email, password).await);
    let r = api.post("/auth/logout/all", Some(&c1), serde_json::json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for token in [&c1, &c2] {
        until_refused(&s, token, "revoked").await;
        until_refused(&replica, token, "revoked").await;
    }
    refresh(&api, &c2).await.assert_error(401, "AUTHENTICATION_FAILED");
    assert!(key_works().await, "API keys keep working");
    api.post("/auth/logout/all", None, serde_json::json!({})).await.assert_error(401, "AUTHENTICATION_FAILED");
    let r = api.send("POST", "/auth/logout/all", None, None).await;
    assert_eq!(r.status, 401);
    let r = reqwest::Client::new().post(s.url("/auth/logout/all")).header("x-api-key", &dev_key).send().await;
    assert_eq!(r.unwrap().status(), 400, "an API key has no session to end");
    for alias in ["/api/v1/auth/logout/all", "/api/auth/logout/all"] {
        let token = api.login(email, password).await;
        let r = api.post(alias, Some(&token), serde_json::json!({})).await;
        assert_eq!(r.status, 200, "{alias}: {}", r.body);
        until_refused(&s, &token, "revoked").await;
    }
    assert!(allowed(&s, &api.login(email, password).await).await);
    replica.finish().await;
    s.finish().await;
}

async fn sessions_end_at_their_absolute_lifetime(b: Backend) {
    let (url, _dir) = common::fresh_database(b).await;
    let mut config = shared_config(&url);
    config.jwt.session_max_seconds = 600;
    let s = TestServer::start_config(config).await;
    let api = Api::new(&s);
    let user = s.user("long@example.com", Role::Viewer).await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());

    // Refreshed within its lifetime: the new token carries the login time
    // on, and does not outlive the session.
    let t0 = now() - 300;
    let first = s.authorizer.authn().jwt().issue(&user, t0).unwrap();
    assert_eq!(payload(first.token.expose())["exp"], t0 + 600);
    let r = refresh(&api, first.token.expose()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let next = payload(r.body["access_token"].as_str().unwrap());
    assert_eq!(next["auth_time"], t0);
    assert!(next["exp"].as_i64().unwrap() <= t0 + 600, "{next}");

    // Past its lifetime it is refused, though the token itself is fresh.
    let mut old = claims(&user, now() - 10);
    old.auth_time = now() - 601;
    let old = sign(Algorithm::HS256, &key, &old);
    assert!(allowed(&s, &old).await, "usable until it expires");
    refresh(&api, &old).await.assert_error(401, "AUTHENTICATION_FAILED");
    // A token without a login time (from before sessions had one) is not refreshed.
    let mut legacy = serde_json::to_value(claims(&user, now() - 10)).unwrap();
    legacy.as_object_mut().unwrap().remove("auth_time");
    let legacy = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &legacy, &key).unwrap();
    refresh(&api, &legacy).await.assert_error(401, "AUTHENTICATION_FAILED");
    s.finish().await;
}

#[test]
fn the_session_lifetime_is_configurable() {
    use gatehouse::config::Config;
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    assert_eq!(Config::load_with(None, &env(&[])).unwrap().jwt.session_max_seconds, 30 * 86_400);
    let c = Config::load_with(None, &env(&[("GATEHOUSE_SESSION_MAX_SECONDS", "86400")])).unwrap();
    assert_eq!(c.jwt.session_max_seconds, 86_400);
    let e = Config::load_with(None, &env(&[("GATEHOUSE_SESSION_MAX_SECONDS", "0")])).unwrap_err().to_string();
    assert!(e.contains("GATEHOUSE_SESSION_MAX_SECONDS"), "{e}");
}

/// Every door reads the time from the clock the service was given: REST
/// issues a session at the clock's time, and Check judges its expiry by the
/// same clock (here, a clock 70 years ahead of the system's).
async fn time_is_the_service_clocks(b: Backend) {
    let (url, db) = common::fresh_database(b).await;
    let clock = Arc::new(gatehouse::clock::ManualClock::new(4_000_000_000));
    let s = TestServer::start_clocked(common::test_config(&url), clock.clone(), |_| {}).await;
    let token = user_with_password(&s, "clocked@example.com", Role::Viewer).await;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["iat"], 4_000_000_000_i64, "{claims}");
    let bearer = format!("Bearer {token}");
    assert!(s.check("GET", "/v1/models", &[("authorization", &bearer)]).await.allowed());
    // Past its expiry and the leeway on the service's clock: refused, though
    // the system's clock is decades before its issue.
    clock.advance(3600 + 30 + 1);
    s.check("GET", "/v1/models", &[("authorization", &bearer)]).await.assert_denied(
        401,
        Code::Unauthenticated,
        "AUTHENTICATION_FAILED",
    );
    s.finish().await;
    drop(db);
}
