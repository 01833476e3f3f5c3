//! Attacks: the password endpoints as a way to exhaust the server. Every
//! argon2id run takes 19 MiB, so parallel registrations or logins must not
//! grow the process without bound; the login throttle must hold whatever the
//! spelling of the account, however many attempts arrive at once, and per
//! client behind the shipped Envoy.

use std::sync::Arc;

use gatehouse::authn::password::HashingLimits;
use gatehouse::domain::{AuditAction, AuditQuery, Role};
use gatehouse::secret::Secret;
use serde_json::{Value, json};

use crate::common::{Backend, Process, TestServer, post_json};
use crate::table::Stack;

/// `VmHWM` (peak resident) and `VmRSS` (resident now) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {status}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Sends every body to `url` at once (released together); the statuses.
async fn all_at_once(url: &str, bodies: Vec<Value>) -> Vec<u16> {
    let client = reqwest::Client::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (client, barrier, url) = (client.clone(), barrier.clone(), url.to_owned());
            tokio::spawn(async move {
                barrier.wait().await;
                post_json(&client, &url, None, &body).await.0
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

/// The peak resident size a real `gatehouse serve` may reach under 100
/// parallel registrations and 100 parallel logins: well under the shipped
/// Kubernetes limit (256 MiB), well over the idle process (~20 MiB).
const PEAK_BOUND_KIB: u64 = 160 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_registrations_and_logins_keep_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gatehouse.db").display());
    // No per-address limit and no lockout in the way: the hashing bound
    // alone must hold the line.
    let p = Process::start_env(&[
        ("DATABASE_URL", &url),
        ("GATEHOUSE_REGISTER_RATE_LIMIT", "off"),
        ("GATEHOUSE_LOGIN_RATE_LIMIT", "off"),
        ("GATEHOUSE_LOGIN_MAX_FAILURES", "1000"),
        ("GATEHOUSE_LOGIN_MAX_FAILURES_PER_IP", "1000"),
    ])
    .await;
    let (_, idle) = memory_kib(p.pid());

    let registrations: Vec<Value> = (0..100)
        .map(|i| json!({"email": format!("user{i}@example.com"), "password": "a long enough password"}))
        .collect();
    let statuses = all_at_once(&p.url("/auth/register"), registrations).await;
    let created: Vec<usize> = (0..100).filter(|i| statuses[*i] == 201).collect();
    assert!(statuses.iter().all(|s| [201, 503].contains(s)), "{statuses:?}");
    assert!(!created.is_empty(), "some registrations are served: {statuses:?}");

    let logins: Vec<Value> = (0..100)
        .map(|i| {
            let user = created[i % created.len()];
            json!({"email": format!("user{user}@example.com"), "password": "a long enough password"})
        })
        .collect();
    let statuses = all_at_once(&p.url("/auth/login"), logins).await;
    assert!(statuses.iter().all(|s| [200, 503].contains(s)), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");

    let (peak, now) = memory_kib(p.pid());
    eprintln!("idle VmRSS {idle} KiB; after the burst VmHWM {peak} KiB, VmRSS {now} KiB");
    assert!(peak < PEAK_BOUND_KIB, "peak resident {peak} KiB (idle {idle} KiB) over {PEAK_BOUND_KIB} KiB");
}

/// A user with the password `right password`.
async fn victim(s: &TestServer, email: &str) {
    s.accounts
        .create_user_with_password(email, None, Role::Viewer, "default", Some(Secret::new("right password")))
        .await
        .unwrap();
}

fn login_body(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_an_account_shares_one_failure_budget() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.login_throttle.max_per_account = 4;
        c.login_limit = None;
    })
    .await;
    victim(&s, "victim@example.com").await;
    let client = reqwest::Client::new();
    let login = s.url("/auth/login");
    // Spellings the account lookup resolves to the victim: each a failure.
    for spelling in [
        "  victim@example.com",
        "VICTIM@Example.com\t",
        "\u{a0}victim@example.com\u{3000}",
        "\u{2003}Victim@EXAMPLE.com\u{2028}",
    ] {
        let (status, body) = post_json(&client, &login, None, &login_body(spelling, "wrong password")).await;
        assert_eq!(status, 401, "{spelling:?}: {body}");
    }
    for spelling in ["victim@example.com", " \u{85}victim@example.com", "Victim@Example.com"] {
        let response = client.post(&login).json(&login_body(spelling, "right password")).send().await.unwrap();
        assert_eq!(response.status(), 429, "{spelling:?}: the account is locked, whatever its spelling");
        assert!(response.headers().contains_key("retry-after"));
    }
    // Another account from the same address is not locked.
    victim(&s, "other@example.com").await;
    let (status, _) = post_json(&client, &login, None, &login_body("other@example.com", "right password")).await;
    assert_eq!(status, 200);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_attempts_are_checked_at_most_up_to_the_allowance() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.login_throttle.max_per_account = 5;
        c.login_throttle.max_per_ip = 1000;
        c.login_limit = None;
    })
    .await;
    victim(&s, "victim@example.com").await;
    let client = reqwest::Client::new();
    let login = s.url("/auth/login");
    // Nearly locked: three of five failures spent.
    for _ in 0..3 {
        let (status, _) = post_json(&client, &login, None, &login_body("victim@example.com", "wrong password")).await;
        assert_eq!(status, 401);
    }
    // 60 guesses at once: only the two left are checked (401); the rest are
    // refused before any password work (429).
    let guesses: Vec<Value> =
        (0..60).map(|i| login_body("victim@example.com", &format!("wrong password {i}"))).collect();
    let statuses = all_at_once(&login, guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, refused), (2, 58), "{statuses:?}");
    // The right password, now that the allowance is spent: refused too.
    let (status, body) = post_json(&client, &login, None, &login_body("victim@example.com", "right password")).await;
    assert_eq!(status, 429, "{body}");
    let failed = s
        .store
        .audit_events(&AuditQuery { action: Some(AuditAction::LoginFailed), limit: 100, ..AuditQuery::default() })
        .await
        .unwrap();
    assert_eq!(failed.len(), 5, "five passwords were checked in all");
    s.finish().await;
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is
/// local on Linux).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_envoy_each_client_has_its_own_address() {
    // As the shipped deployments run it: one trusted proxy, the shipped Envoy.
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.trusted_proxy_hops = 1;
        c.login_throttle.max_per_ip = 3;
    })
    .await;
    victim(&s, "a@example.com").await;
    victim(&s, "b@example.com").await;
    s.accounts
        .create_user_with_password("root@example.com", None, Role::Admin, "default", Some(Secret::new("root password")))
        .await
        .unwrap();
    let stack = Stack::start(s).await;
    let login = stack.envoy.url("/auth/login");
    let (a, b) = (client_from("127.0.0.2"), client_from("127.0.0.3"));

    // Client A spends its address's failures on its own account...
    for _ in 0..3 {
        let (status, _) = post_json(&a, &login, None, &login_body("a@example.com", "wrong password")).await;
        assert_eq!(status, 401);
    }
    // ...and is locked out, on any account, whatever X-Forwarded-For it sends.
    let (status, _) = post_json(&a, &login, None, &login_body("nobody@example.com", "wrong password")).await;
    assert_eq!(status, 429);
    for forged in ["127.0.0.3", "10.9.8.7", "127.0.0.3, 10.9.8.7"] {
        let response = a
            .post(&login)
            .header("x-forwarded-for", forged)
            .json(&login_body("x@example.com", "y"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429, "X-Forwarded-For: {forged}");
    }
    // Client B is not: Gatehouse sees its own address, not Envoy's.
    let (status, body) = post_json(&b, &login, None, &login_body("b@example.com", "right password")).await;
    assert_eq!(status, 200, "{body}");

    // The audit log names each client's own address.
    let root = client_from("127.0.0.4");
    let (status, body) = post_json(&root, &login, None, &login_body("root@example.com", "root password")).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let events = |action: &'static str| {
        let (root, url, token) = (root.clone(), stack.envoy.url(&format!("/auth/audit?action={action}")), token);
        async move {
            let body: Value = root.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["client_ip"].as_str().unwrap_or("-").to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(events("login.failed").await, ["127.0.0.2"; 3]);
    let mut succeeded = events("login.succeeded").await;
    succeeded.sort();
    assert_eq!(succeeded, ["127.0.0.3", "127.0.0.4"]);
}

/// A loopback address of this run's own, so reruns against the same Redis
/// start with fresh budgets.
fn fresh_loopback() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    format!("127.{}.{}.{}", b[0], b[1], b[2].clamp(1, 254))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_login_are_limited_per_address_across_replicas() {
    let redis_url =
        std::env::var("GATEHOUSE_TEST_REDIS_URL").expect("GATEHOUSE_TEST_REDIS_URL is not set: run scripts/test");
    let (url, _dir) = crate::common::fresh_database(Backend::Sqlite).await;
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("GATEHOUSE_REGISTER_RATE_LIMIT", "3/600"),
        ("GATEHOUSE_LOGIN_RATE_LIMIT", "4/600"),
    ];
    let replicas = [Process::start_env(&env).await, Process::start_env(&env).await];
    let (client, other) = (client_from(&fresh_loopback()), client_from(&fresh_loopback()));
    // One budget per address across both replicas: three registrations...
    let mut statuses = Vec::new();
    for i in 0..5 {
        let body = json!({"email": format!("r{i}@example.com"), "password": "right password"});
        let response = client.post(replicas[i % 2].url("/auth/register")).json(&body).send().await.unwrap();
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [201, 201, 201, 429, 429]);
    // ...and four logins, right or wrong.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let body = login_body("r0@example.com", if i == 0 { "wrong password" } else { "right password" });
        statuses.push(post_json(&client, &replicas[i % 2].url("/auth/login"), None, &body).await.0);
    }
    assert_eq!(statuses, [401, 200, 200, 200, 429, 429]);
    // Another address has budgets of its own.
    let body = json!({"email": "other@example.com", "password": "right password"});
    assert_eq!(post_json(&other, &replicas[1].url("/auth/register"), None, &body).await.0, 201);
    assert_eq!(post_json(&other, &replicas[0].url("/auth/login"), None, &body).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_work_over_capacity_is_503_with_retry_after() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.register_limit = None;
        c.login_limit = None;
        c.accounts.password_hashing =
            HashingLimits { concurrency: 1, queue: 1, max_wait: std::time::Duration::from_millis(200) };
    })
    .await;
    victim(&s, "victim@example.com").await;
    // The one turn, taken until released.
    let (started, running) = tokio::sync::oneshot::channel();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let hashing = s.accounts.hashing().clone();
    let holder = tokio::spawn(async move {
        hashing
            .run(move || {
                let _ = started.send(());
                let _ = held.recv();
            })
            .await
    });
    running.await.unwrap();
    let client = reqwest::Client::new();
    let register = json!({"email": "new@example.com", "password": "right password"});
    let login = login_body("victim@example.com", "right password");
    // One waits up to 200 ms and is turned away; so is the one beyond the queue, at once.
    let (waited, beyond) = tokio::join!(
        client.post(s.url("/auth/register")).json(&register).send(),
        client.post(s.url("/auth/login")).json(&login).send(),
    );
    for response in [waited.unwrap(), beyond.unwrap()] {
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "SERVER_BUSY", "{body}");
    }
    // Turned away is not a failed login: the account's budget is untouched.
    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
    assert_eq!(post_json(&client, &s.url("/auth/register"), None, &register).await.0, 201);
    for _ in 0..5 {
        let wrong = login_body("victim@example.com", "wrong password");
        assert_eq!(post_json(&client, &s.url("/auth/login"), None, &wrong).await.0, 401);
    }
    s.finish().await;
}

/// The shipped deployments put Gatehouse behind the shipped Envoy, which
/// passes the client's address, and trust exactly that one proxy.
#[test]
fn shipped_deployments_pass_the_client_address() {
    let read = |path: &str| std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for envoy in ["envoy/envoy.yaml", "envoy/envoy.compose.yaml"] {
        assert!(read(envoy).contains("\n          use_remote_address: true\n"), "{envoy}");
    }
    assert!(read("docker-compose.yml").contains("\n  GATEHOUSE_TRUSTED_PROXY_HOPS: \"1\"\n"));
    assert!(read("deploy/kubernetes/configmap.yaml").contains("\n  GATEHOUSE_TRUSTED_PROXY_HOPS: \"1\"\n"));
    assert!(read("scripts/demo").contains("\nGATEHOUSE_TRUSTED_PROXY_HOPS=1 \\\n"));
}
