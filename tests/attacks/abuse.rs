//! Attacks: the password endpoints as a way to exhaust the server. Every
//! argon2id run takes 19 MiB, so parallel registrations or logins must not
//! grow the process without bound; the login throttle must hold whatever the
//! spelling of the account, however many attempts arrive at once, and per
//! client behind the shipped Envoy.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::common::{Process, post_json};

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
