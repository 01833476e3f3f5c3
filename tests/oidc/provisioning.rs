//! Who gets an account from an identity provider, and how a provider's
//! identity links to a local account: provisioning policy per provider, the
//! email-domain rule at every door, `email_verified`, pre-hijacked accounts,
//! placeholder addresses, and role or group changes from claims.

use gatehouse::domain::{AuditAction, AuditQuery, Group, Role};
use serde_json::{Value, json};
use tonic::Code;

use super::common::api::Api;
use super::common::{Backend, TestServer, free_port};
use super::{Provider, bearer, browser, fake_github, github_round_trip, interaction_uid, issuer_config};

/// A provider with extra client-credentials clients (`id -> claims`) and
/// account claims for the browser login (`login -> claims`).
async fn provider_with(clients: Value, accounts: Value, redirect_uris: &str) -> Provider {
    let mut p = Provider::new();
    p.env = vec![("EXTRA_CLIENTS", clients.to_string()), ("ACCOUNTS", accounts.to_string())];
    p.redirect_uris = redirect_uris.to_owned();
    p.spawn().await;
    p
}

/// Gatehouse trusting `provider` (login client `gatehouse` too), with a
/// `research` group, on a fixed HTTP port so the provider can redirect back.
async fn gatehouse_for(
    provider: &Provider,
    http_port: u16,
    b: Backend,
    tweak: impl FnOnce(&mut gatehouse::config::Config),
) -> TestServer {
    let mut issuer = issuer_config(&provider.issuer());
    issuer.client_id = Some("gatehouse".into());
    issuer.client_secret = Some(gatehouse::secret::Secret::new("gatehouse-secret"));
    issuer.role_map.insert("gateway-admin".into(), Role::Admin);
    let s = TestServer::start_with(b, |c| {
        c.http_addr = format!("127.0.0.1:{http_port}").parse().unwrap();
        c.public_url = format!("http://127.0.0.1:{http_port}");
        c.oidc = vec![issuer];
        tweak(c);
    })
    .await;
    s.accounts
        .create_group(Group {
            name: "research".into(),
            requests_per_period: None,
            period_seconds: None,
            burst: None,
            models: None,
            budget: Default::default(),
        })
        .await
        .unwrap();
    for _ in 0..300 {
        if reqwest::get(s.url("/readyz")).await.unwrap().status() == 200 {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the provider's keys did not load");
}

/// Logs in through the provider's pages as `login`; the callback's answer.
async fn browser_login(s: &TestServer, provider: &Provider, login: &str) -> (u16, Value) {
    let b = browser();
    let page = b.get(s.url("/auth/oidc/login")).send().await.unwrap();
    let uid = interaction_uid(page.url());
    let issuer = provider.issuer();
    let page = b
        .post(format!("{issuer}/interaction/{uid}"))
        .form(&[("prompt", "login"), ("login", login), ("password", "anything")])
        .send()
        .await
        .unwrap();
    let uid = interaction_uid(page.url());
    let done = b.post(format!("{issuer}/interaction/{uid}")).form(&[("prompt", "consent")]).send().await.unwrap();
    assert!(done.url().path().ends_with("/auth/oidc/callback"), "{}", done.url());
    let status = done.status().as_u16();
    (status, done.json().await.unwrap())
}

async fn audit(s: &TestServer, action: AuditAction) -> Vec<gatehouse::domain::AuditEvent> {
    let query = AuditQuery { action: Some(action), limit: 100, ..Default::default() };
    s.store.audit_events(&query).await.unwrap()
}

async fn linked(s: &TestServer, provider: &Provider, subject: &str) -> Option<String> {
    s.store.user_by_identity(&provider.issuer(), subject).await.unwrap().map(|u| u.id)
}

/// `email_verified` missing, `"false"` or `"true"` (a string) is not the JSON
/// boolean `true`: such a token never links to the account with that email
/// (here an admin's); it gets an account of its own, with no email.
async fn email_verified_must_be_the_boolean_true(b: Backend) {
    let boss_email = "boss@example.com";
    let clients = json!({
        "no-claim": {"email": boss_email, "realm_access": {"roles": ["viewer"]}},
        "string-false": {"email": boss_email, "email_verified": "false", "realm_access": {"roles": ["viewer"]}},
        "string-true": {"email": boss_email, "email_verified": "true", "realm_access": {"roles": ["viewer"]}},
        "boolean-false": {"email": boss_email, "email_verified": false, "realm_access": {"roles": ["viewer"]}},
    });
    let provider = provider_with(clients, json!({}), "").await;
    let s = gatehouse_for(&provider, free_port(), b, |_| {}).await;
    let boss = s.user(boss_email, Role::Admin).await;
    for client in ["no-claim", "string-false", "string-true", "boolean-false"] {
        let token = provider.token(client, None).await;
        let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await;
        assert!(c.allowed(), "{client}: {c:?}");
        let h = c.upstream_headers();
        assert_ne!(h["x-auth-user-id"], boss.id, "{client} was linked to the admin");
        assert_eq!(h["x-auth-email"], format!("{client}@127.0.0.1.idp.invalid"), "{client}");
        assert_eq!(h["x-auth-role"], "viewer", "{client}");
    }
    let boss_now = s.store.user_by_id(&boss.id).await.unwrap().unwrap();
    assert_eq!(boss_now.role, Role::Admin, "the admin is untouched");
    assert_eq!(s.store.list_users().await.unwrap().len(), 5);
    s.finish().await;
}

/// The ID token of a browser login too: an unverified email is no email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_login_with_an_unverified_email_is_not_linked() {
    let port = free_port();
    let accounts = json!({
        "eve": {"email": "boss@example.com", "email_verified": null},
        "mallory": {"email": "boss@example.com", "email_verified": "false"},
    });
    let provider = provider_with(json!({}), accounts, &format!("http://127.0.0.1:{port}/auth/oidc/callback")).await;
    let s = gatehouse_for(&provider, port, Backend::Sqlite, |_| {}).await;
    let boss = s.user("boss@example.com", Role::Admin).await;
    for login in ["eve", "mallory"] {
        let (status, body) = browser_login(&s, &provider, login).await;
        assert_eq!(status, 200, "{body}");
        assert_ne!(body["user"]["id"], boss.id.as_str(), "{login} took over the admin");
        assert_eq!(body["user"]["email"], format!("{login}@127.0.0.1.idp.invalid"));
    }
    s.finish().await;
}

/// Keycloak's usual `offline_access` maps to no role: the stored role stays
/// (the admin is not demoted). A mapped value changes it, and every change
/// that comes from claims is audited with the provider as the actor.
async fn unmapped_role_claims_keep_the_role_and_claim_changes_are_audited(b: Backend) {
    let clients = json!({
        "boss": {"email": "boss@example.com", "email_verified": true,
                 "realm_access": {"roles": ["offline_access", "uma_authorization"]}},
        "carol": {"email": "carol@example.com", "email_verified": true,
                  "realm_access": {"roles": ["offline_access", "gateway-admin"]}, "groups": ["/research"]},
    });
    let provider = provider_with(clients, json!({}), "").await;
    let s = gatehouse_for(&provider, free_port(), b, |_| {}).await;
    let boss = s.user("boss@example.com", Role::Admin).await;
    let carol = s.user("carol@example.com", Role::Viewer).await;

    let token = provider.token("boss", None).await;
    let h = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await.upstream_headers();
    assert_eq!(h["x-auth-user-id"], boss.id, "a verified email links to the admin-made account");
    assert_eq!(h["x-auth-role"], "admin", "offline_access does not demote the admin");
    assert_eq!(s.store.user_by_id(&boss.id).await.unwrap().unwrap().role, Role::Admin);
    assert!(audit(&s, AuditAction::RoleChanged).await.is_empty());

    let token = provider.token("carol", None).await;
    let h = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await.upstream_headers();
    assert_eq!(h["x-auth-user-id"], carol.id);
    assert_eq!((h["x-auth-role"].as_str(), h["x-auth-group"].as_str()), ("admin", "research"));
    let actor = format!("provider:{}", provider.issuer());
    let roles = audit(&s, AuditAction::RoleChanged).await;
    assert_eq!(roles.len(), 1, "{roles:?}");
    assert_eq!(roles[0].actor_id.as_deref(), Some(actor.as_str()));
    assert_eq!(roles[0].target.as_deref(), Some(format!("user:{}", carol.id).as_str()));
    let detail = roles[0].detail.as_deref().unwrap();
    assert!(detail.contains("viewer -> admin") && detail.contains("realm_access.roles"), "{detail}");
    let updates = audit(&s, AuditAction::UserUpdated).await;
    let group = updates.iter().find(|e| e.detail.as_deref().is_some_and(|d| d.contains("group"))).unwrap();
    assert_eq!(group.actor_id.as_deref(), Some(actor.as_str()));
    let detail = group.detail.as_deref().unwrap();
    assert!(detail.contains("default -> research") && detail.contains("claim groups"), "{detail}");
    // Linking the identity is recorded too.
    assert!(
        updates.iter().any(|e| e.target.as_deref() == Some(&format!("user:{}", boss.id))
            && e.detail.as_deref().is_some_and(|d| d.contains("linked"))),
        "{updates:?}"
    );
    // The same claims again change nothing and record nothing more.
    let again = provider.token("carol", None).await;
    assert!(s.check("GET", "/v1/models", &[("authorization", &bearer(&again))]).await.allowed());
    assert_eq!(audit(&s, AuditAction::RoleChanged).await.len(), 1);
    s.finish().await;
}

crate::backend_tests! {
    email_verified_must_be_the_boolean_true,
    unmapped_role_claims_keep_the_role_and_claim_changes_are_audited,
    pre_hijacked_accounts_are_never_linked,
}

/// An attacker registers the victim's address with a password of their own
/// and plants a key. The victim's first provider login must not be linked to
/// that account (its email was never verified here): refused, audited,
/// nothing created, until an admin verifies the account.
async fn pre_hijacked_accounts_are_never_linked(b: Backend) {
    let port = free_port();
    let clients = json!({"dana-cli": {"email": "dana@example.com", "email_verified": true}});
    let provider = provider_with(clients, json!({}), &format!("http://127.0.0.1:{port}/auth/oidc/callback")).await;
    let s = gatehouse_for(&provider, port, b, |_| {}).await;
    let api = Api::new(&s);
    let r = api.register("dana@example.com", "attacker's own password").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let squatter = s.store.user_by_email("dana@example.com").await.unwrap().unwrap();
    let planted = s.key_for(&squatter, None).await;

    // The real Dana signs in through the company's provider.
    let (status, body) = browser_login(&s, &provider, "dana").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "PERMISSION_DENIED");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("not verified") && message.contains("administrator"), "{message}");
    assert_eq!(linked(&s, &provider, "dana").await, None);
    let failures = audit(&s, AuditAction::LoginFailed).await;
    assert!(
        failures.iter().any(|e| e.target.as_deref() == Some(&format!("user:{}", squatter.id))
            && e.detail.as_deref().is_some_and(|d| d.contains("not verified"))),
        "{failures:?}"
    );
    // The same at Check, with a clear 403 rather than a 503.
    let token = provider.token("dana-cli", None).await;
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await;
    c.assert_denied(403, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(c.metadata("reason").as_deref(), Some("not_provisioned"));
    assert_eq!(linked(&s, &provider, "dana-cli").await, None);
    assert_eq!(s.store.list_users().await.unwrap().len(), 1, "no duplicate account either");
    // The squatter's account gained nothing (it is still a plain viewer).
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &planted)]).await.allowed());

    // Once an admin has verified whose account it is, the login links.
    let (_, admin_key) = s.user_with_key("root@example.com", Role::Admin, None).await;
    let r =
        api.send("PATCH", &format!("/admin/users/{}", squatter.id), None, Some(json!({"email_verified": true}))).await;
    assert_eq!(r.status, 401, "admins only");
    let r = api
        .http
        .patch(s.url(&format!("/admin/users/{}", squatter.id)))
        .header("x-api-key", &admin_key)
        .json(&json!({"email_verified": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["data"]["email_verified"], true, "{view}");
    let (status, body) = browser_login(&s, &provider, "dana").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], squatter.id.as_str());
    s.finish().await;
}

/// Subjects whose cleaned forms coincide (`twin.a` and `twin-a`, or ones
/// differing only in case) get different placeholder addresses; and a
/// placeholder address that is taken (here by an account an operator made) is
/// refused, never linked to that account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_placeholder_address_is_never_linked() {
    let provider = provider_with(json!({"twin.a": {}, "twin-a": {}, "Twin-A": {}}), json!({}), "").await;
    let s = gatehouse_for(&provider, free_port(), Backend::Sqlite, |_| {}).await;
    let first = provider.token("twin.a", None).await;
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&first))]).await;
    let first_email = c.upstream_headers()["x-auth-email"].clone();
    assert!(first_email.starts_with("twin-a-") && first_email.ends_with("@127.0.0.1.idp.invalid"), "{first_email}");
    let owner = c.upstream_headers()["x-auth-user-id"].clone();
    let upper = provider.token("Twin-A", None).await;
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&upper))]).await;
    assert!(c.allowed(), "{c:?}");
    assert_ne!(c.upstream_headers()["x-auth-email"], first_email);

    let squatter = s.user("twin-a@127.0.0.1.idp.invalid", Role::Viewer).await;
    let second = provider.token("twin-a", None).await;
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&second))]).await;
    c.assert_denied(403, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(c.metadata("reason").as_deref(), Some("not_provisioned"));
    assert_eq!(linked(&s, &provider, "twin-a").await, None);
    assert_eq!(linked(&s, &provider, "twin.a").await, Some(owner));
    assert_ne!(linked(&s, &provider, "Twin-A").await, Some(squatter.id.clone()));
    // Refused again without another verification or audit row.
    let refusals = audit(&s, AuditAction::LoginFailed).await.len();
    assert_eq!(refusals, 1);
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&second))]).await;
    c.assert_denied(403, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(audit(&s, AuditAction::LoginFailed).await.len(), refusals);
    s.finish().await;
}

/// `ALLOWED_EMAIL_DOMAINS` at Check too: a provider's token is accepted only
/// with a verified email in an allowed domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_email_domain_rule_applies_to_provider_tokens_at_check() {
    let clients = json!({
        "insider": {"email": "in@company.com", "email_verified": true},
        "outsider": {"email": "out@elsewhere.com", "email_verified": true},
        "unverified": {"email": "un@company.com"},
    });
    let provider = provider_with(clients, json!({}), "").await;
    let s = gatehouse_for(&provider, free_port(), Backend::Sqlite, |c| {
        c.accounts.allowed_email_domains = vec!["company.com".into()]
    })
    .await;
    let token = provider.token("insider", None).await;
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await;
    assert_eq!(c.upstream_headers()["x-auth-email"], "in@company.com");
    for client in ["outsider", "unverified", "gatehouse"] {
        let token = provider.token(client, None).await;
        let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await;
        c.assert_denied(403, Code::PermissionDenied, "PERMISSION_DENIED");
        assert_eq!(c.metadata("reason").as_deref(), Some("not_provisioned"), "{client}");
        assert!(c.body()["error"]["message"].as_str().unwrap().contains("domain"), "{client}");
    }
    assert_eq!(s.store.list_users().await.unwrap().len(), 1);
    s.finish().await;
}

/// With registration disabled, the provider decides: a configured OpenID
/// issuer provisions first-time users unless told not to; then only accounts
/// an admin made (with a verified email) can sign in through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_disabled_provisions_only_where_the_provider_allows() {
    let port = free_port();
    let clients = json!({"known": {"email": "known@example.com", "email_verified": true}});
    let provider = provider_with(clients, json!({}), &format!("http://127.0.0.1:{port}/auth/oidc/callback")).await;
    let s = gatehouse_for(&provider, port, Backend::Sqlite, |c| c.accounts.allow_registration = false).await;
    let token = provider.token("gatehouse", None).await;
    assert!(s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await.allowed());
    let (status, body) = browser_login(&s, &provider, "alice").await;
    assert_eq!((status, body["user"]["email"].as_str()), (200, Some("alice@example.com")), "{body}");
    assert_eq!(s.store.list_users().await.unwrap().len(), 2, "provisioned by the configured issuer");
    s.finish().await;

    let s = gatehouse_for(&provider, port, Backend::Sqlite, |c| {
        c.accounts.allow_registration = false;
        c.oidc[0].provision_users = false;
    })
    .await;
    let token = provider.token("gatehouse", None).await;
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await;
    c.assert_denied(403, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(c.metadata("reason").as_deref(), Some("not_provisioned"));
    let (status, body) = browser_login(&s, &provider, "alice").await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("administrator"), "{body}");
    assert!(s.store.list_users().await.unwrap().is_empty());
    // An account an admin made links.
    let known = s.user("known@example.com", Role::Operator).await;
    let token = provider.token("known", None).await;
    let c = s.check("GET", "/v1/models", &[("authorization", &bearer(&token))]).await;
    assert_eq!(c.upstream_headers()["x-auth-user-id"], known.id);
    s.finish().await;
}

async fn github_with(orgs: &[&str], tweak: impl FnOnce(&mut gatehouse::config::Config)) -> TestServer {
    let fake = fake_github(true, "octo@company.com").await;
    let orgs: Vec<String> = orgs.iter().map(|o| o.to_string()).collect();
    TestServer::start_with(Backend::Sqlite, |c| {
        c.github = Some(gatehouse::config::GithubConfig {
            client_id: "gh-client".into(),
            client_secret: gatehouse::secret::Secret::new("gh-secret"),
            oauth_url: format!("http://{fake}"),
            api_url: format!("http://{fake}"),
            allowed_orgs: orgs,
        });
        c.accounts.allow_registration = false;
        tweak(c);
    })
    .await
}

/// GitHub provisions no one unless `GITHUB_ALLOWED_ORGS` names organisations
/// or teams, and then only their active members (asked of GitHub's API with
/// the user's token, which needs `read:org`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_provisions_only_members_of_allowed_organisations() {
    let s = github_with(&[], |_| {}).await;
    let (status, body) = github_round_trip(&s, "good").await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("administrator"), "{body}");
    assert!(s.store.list_users().await.unwrap().is_empty(), "any GitHub user got an account");
    // An account an admin made for that verified address links.
    let octo = s.user("octo@company.com", Role::Viewer).await;
    let (status, body) = github_round_trip(&s, "good").await;
    assert_eq!((status, body["user"]["id"].as_str()), (200, Some(octo.id.as_str())), "{body}");
    s.finish().await;

    for (orgs, allowed) in [
        (&["acme"][..], true),
        (&["Other-Org", "acme/platform"][..], true),
        (&["other-org"][..], false),
        (&["pending-org"][..], false),
        (&["acme/ghosts"][..], false),
    ] {
        let s = github_with(orgs, |_| {}).await;
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let r = client.get(s.url("/auth/github")).send().await.unwrap();
        let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        let scope = location.query_pairs().find(|(k, _)| k == "scope").unwrap().1.into_owned();
        assert!(scope.split(' ').any(|s| s == "read:org"), "{scope}");
        let (status, body) = github_round_trip(&s, "good").await;
        if allowed {
            assert_eq!(status, 200, "{orgs:?}: {body}");
            assert_eq!(body["user"]["email"], "octo@company.com");
        } else {
            assert_eq!(status, 403, "{orgs:?}: {body}");
            assert!(body["error"]["message"].as_str().unwrap().contains("organisation"), "{body}");
            assert!(s.store.list_users().await.unwrap().is_empty());
            let failures = audit(&s, AuditAction::LoginFailed).await;
            assert_eq!(failures.len(), 1, "{failures:?}");
        }
        s.finish().await;
    }
    // The domain rule applies to GitHub's new users as well.
    let s = github_with(&["acme"], |c| c.accounts.allowed_email_domains = vec!["elsewhere.com".into()]).await;
    let (status, body) = github_round_trip(&s, "good").await;
    assert_eq!(status, 403, "{body}");
    assert!(s.store.list_users().await.unwrap().is_empty());
    s.finish().await;
}

/// Upgrading: accounts from before `users.email_verified` count as verified
/// only when nothing suggests they registered themselves (no password, an
/// admin, or linked to a provider already); placeholders never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_accounts_are_verified_unless_they_may_have_registered_themselves() {
    use std::str::FromStr;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let mut before = sqlx::migrate::Migrator::new(source).await.unwrap();
    let older: Vec<_> = before.migrations.iter().filter(|m| m.version < 10).cloned().collect();
    before.migrations = older.into();
    before.run(&pool).await.unwrap();
    let rows = [
        ("registered@example.com", Some("hash"), "viewer", None),
        ("made-by-admin@example.com", None, "operator", None),
        ("root@example.com", Some("hash"), "admin", None),
        ("linked@example.com", Some("hash"), "viewer", Some("sub-1")),
        ("sub-2@idp.example.idp.invalid", None, "viewer", Some("sub-2")),
    ];
    for (i, (email, hash, role, subject)) in rows.iter().enumerate() {
        sqlx::query(
            "INSERT INTO users (id, email, role, group_name, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, 'default', $4, 0, 0)",
        )
        .bind(i.to_string())
        .bind(email)
        .bind(role)
        .bind(hash)
        .execute(&pool)
        .await
        .unwrap();
        if let Some(subject) = subject {
            sqlx::query("INSERT INTO user_identities (provider, subject, user_id, created_at) VALUES ('p', $1, $2, 0)")
                .bind(subject)
                .bind(i.to_string())
                .execute(&pool)
                .await
                .unwrap();
        }
    }
    pool.close().await;
    let store = gatehouse::store::connect(&url, true, std::time::Duration::from_secs(5)).await.unwrap();
    for ((email, ..), verified) in rows.iter().zip([false, true, true, true, false]) {
        assert_eq!(store.user_by_email(email).await.unwrap().unwrap().email_verified, verified, "{email}");
    }
}
