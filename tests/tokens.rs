//! Session token verification in Check: every forgery and misuse is a 401,
//! for each signing algorithm; the JWKS publishes exactly the public key.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use base64::Engine;
use common::{Backend, TestServer, now};
use gatehouse::authn::jwt::Claims;
use gatehouse::domain::{Role, User};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use tonic::Code;

backend_tests! {
    forged_and_misused_tokens_are_refused,
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
