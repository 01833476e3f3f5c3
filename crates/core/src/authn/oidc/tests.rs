use super::*;

/// No provider is reachable in these tests.
struct Offline;

#[async_trait::async_trait]
impl Fetch for Offline {
    async fn get(&self, url: &str, _: usize) -> Result<Vec<u8>, OidcError> {
        Err(OidcError::Http(format!("{url}: offline")))
    }
}

#[test]
fn claim_paths_and_role_mapping() {
    let claims = serde_json::json!({"realm_access": {"roles": ["offline_access", "operator"]}, "groups": "/research"});
    assert_eq!(strings(claim_at(&claims, "realm_access.roles")), vec!["offline_access", "operator"]);
    assert_eq!(strings(claim_at(&claims, "groups")), vec!["/research"]);
    assert!(claim_at(&claims, "realm_access.missing").is_none());
    let mut config = IssuerConfig::new("https://idp.example/realms/x/");
    assert_eq!(config.issuer_url, "https://idp.example/realms/x");
    config.role_map.insert("gateway-admin".into(), Role::Admin);
    let issuer = Issuer::new(config, Arc::new(Offline));
    assert_eq!(issuer.map_roles(&["operator".into(), "viewer".into()]), Some(Role::Operator));
    assert_eq!(issuer.map_roles(&["gateway-admin".into(), "offline_access".into()]), Some(Role::Admin));
    assert_eq!(issuer.map_roles(&["offline_access".into()]), None, "nothing maps: keep the stored role");
}

#[test]
fn only_the_boolean_true_verifies_an_email() {
    let issuer = Issuer::new(IssuerConfig::new("https://idp.example"), Arc::new(Offline));
    let with = |verified: Option<Value>| {
        let mut claims = serde_json::json!({"sub": "s", "email": "Dana@Example.com"});
        if let Some(v) = verified {
            claims["email_verified"] = v;
        }
        issuer.identity(&claims).unwrap().verified_email
    };
    assert_eq!(with(Some(Value::Bool(true))).as_deref(), Some("dana@example.com"));
    for unverified in [None, Some(Value::Bool(false)), Some("false".into()), Some("true".into()), Some(1.into())] {
        assert_eq!(with(unverified.clone()), None, "{unverified:?}");
    }
}

#[test]
fn unmapped_role_claims_leave_the_role_alone() {
    let issuer = Issuer::new(IssuerConfig::new("https://idp.example"), Arc::new(Offline));
    let claims = serde_json::json!({"sub": "s", "realm_access": {"roles": ["offline_access"]}});
    let identity = issuer.identity(&claims).unwrap();
    assert_eq!((identity.role, identity.default_role), (None, Some(Role::Viewer)));
    let identity = issuer.identity(&serde_json::json!({"sub": "s"})).unwrap();
    assert_eq!((identity.role, identity.default_role), (None, None));
    assert!(identity.provision, "a configured issuer provisions by default");
}

#[test]
fn hmac_and_none_never_fit_a_jwks_key() {
    let entry = |family| KeyEntry { key: DecodingKey::from_secret(b"x"), alg: None, family };
    assert!(algorithm_fits(Algorithm::RS256, &entry(KeyFamily::Rsa)));
    assert!(algorithm_fits(Algorithm::PS256, &entry(KeyFamily::Rsa)));
    assert!(!algorithm_fits(Algorithm::HS256, &entry(KeyFamily::Rsa)));
    assert!(!algorithm_fits(Algorithm::ES256, &entry(KeyFamily::Rsa)));
    assert!(algorithm_fits(Algorithm::EdDSA, &entry(KeyFamily::Okp)));
    let pinned = KeyEntry { key: DecodingKey::from_secret(b"x"), alg: Some(Algorithm::RS256), family: KeyFamily::Rsa };
    assert!(!algorithm_fits(Algorithm::PS256, &pinned));
}

#[test]
fn at_most_the_key_cap_is_parsed() {
    let key = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
    let doc = |n: usize| format!(r#"{{"keys":[{}]}}"#, vec![key; n].join(","));
    let few: CappedJwks = serde_json::from_str(&doc(3)).unwrap();
    assert_eq!((few.keys.taken.len(), few.keys.ignored), (3, 0));
    let many: CappedJwks = serde_json::from_str(&doc(MAX_JWKS_KEYS + 900)).unwrap();
    assert_eq!((many.keys.taken.len(), many.keys.ignored), (MAX_JWKS_KEYS, 900));
    // Past the cap, entries are skipped without being read as keys.
    let tail = format!(r#"{{"keys":[{}, "not a key", 42]}}"#, vec![key; MAX_JWKS_KEYS].join(","));
    assert_eq!(serde_json::from_str::<CappedJwks>(&tail).unwrap().keys.ignored, 2);
}

#[test]
fn plain_http_needs_the_development_flag() {
    assert!(check_url("https://idp.example/realms/x", false).is_ok());
    for url in ["http://idp.example", "http://127.0.0.1:8080", "http://[::1]/x", "http://localhost"] {
        let e = check_url(url, false).unwrap_err();
        assert!(e.contains("OIDC_ALLOW_INSECURE_HTTP"), "{e}");
        assert!(check_url(url, true).is_ok());
    }
    for url in ["ftp://idp.example", "file:///etc/passwd", "idp.example", "https://"] {
        assert!(check_url(url, true).is_err(), "{url}");
    }
    // An https issuer's discovery document cannot send Gatehouse to plain http.
    let discovery = |jwks: &str, token: &str| Discovery {
        issuer: "https://idp.example".into(),
        jwks_uri: jwks.into(),
        authorization_endpoint: Some("https://idp.example/auth".into()),
        token_endpoint: Some(token.into()),
        authorization_response_iss_parameter_supported: false,
    };
    assert!(discovery("https://idp.example/jwks", "https://idp.example/token").check_endpoints(false).is_ok());
    for d in [
        discovery("http://idp.example/jwks", "https://idp.example/token"),
        discovery("https://idp.example/jwks", "http://idp.example/token"),
    ] {
        assert!(matches!(d.check_endpoints(false), Err(OidcError::Insecure(_))));
        assert!(d.check_endpoints(true).is_ok());
    }
}

#[test]
fn peeks_the_issuer() {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"iss":"https://idp"}"#);
    assert_eq!(peek_issuer(&format!("e30.{payload}.sig")).as_deref(), Some("https://idp"));
    assert_eq!(peek_issuer("garbage"), None);
}
