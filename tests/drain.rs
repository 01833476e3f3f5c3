//! Replicas restarted under load behind the shipped Envoy config: a rolling
//! restart with SIGTERM (the default drain delay, Envoy's active health
//! check) and a replica killed outright (Envoy's retries on another replica)
//! cost no request.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Backend, Envoy, Process, TestServer, free_port, spawn_echo};
use gatehouse::domain::Role;
use tokio::task::JoinSet;

const REPLICAS: usize = 3;

struct Cluster {
    replicas: Vec<Process>,
    ports: Vec<(u16, u16)>,
    env: Vec<(String, String)>,
    envoy: Envoy,
    key: String,
    _db: common::database::TestDb,
}

impl Cluster {
    /// Three replicas on one Postgres database (no drain delay set: the
    /// default), behind the shipped Envoy config; a viewer's API key.
    async fn start() -> Cluster {
        let (url, db) = common::fresh_database(Backend::Postgres).await;
        let setup = TestServer::start_config(common::test_config(&url)).await;
        let (_, key) = setup.user_with_key("load@example.com", Role::Viewer, None).await;
        setup.finish().await;
        let env = vec![("DATABASE_URL".to_owned(), url)];
        let ports: Vec<(u16, u16)> = (0..REPLICAS).map(|_| (free_port(), free_port())).collect();
        let mut replicas = Vec::new();
        for &(grpc, http) in &ports {
            replicas.push(Process::start_at(grpc, http, &borrowed(&env)).await);
        }
        let upstream = spawn_echo().await;
        let grpc: Vec<u16> = ports.iter().map(|p| p.0).collect();
        let http: Vec<u16> = ports.iter().map(|p| p.1).collect();
        let envoy = Envoy::start_replicas(&grpc, &http, upstream).await;
        for (&g, &h) in grpc.iter().zip(&http) {
            envoy.wait_health("gatehouse_grpc", g, true).await;
            envoy.wait_health("gatehouse_http", h, true).await;
        }
        Cluster { replicas, ports, env, envoy, key, _db: db }
    }

    /// Starts replica `i` again on its ports and waits until Envoy sends it Checks.
    async fn restart(&mut self, i: usize) {
        let (grpc, http) = self.ports[i];
        self.replicas[i] = Process::start_at(grpc, http, &borrowed(&self.env)).await;
        self.envoy.wait_health("gatehouse_grpc", grpc, true).await;
        self.envoy.wait_health("gatehouse_http", http, true).await;
    }
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Steady load through Envoy until `stop`: API key Checks (with and without
/// a body) and, with `rest`, REST calls, from 8 clients at once. The count
/// of each answer.
fn load(envoy: &Envoy, key: &str, rest: bool, stop: Arc<AtomicBool>) -> JoinSet<BTreeMap<String, u64>> {
    let mut set = JoinSet::new();
    for c in 0..8 {
        let (models, chat, me) = (envoy.url("/v1/models"), envoy.url("/v1/chat/completions"), envoy.url("/auth/me"));
        let (key, stop) = (key.to_owned(), stop.clone());
        set.spawn(async move {
            let http = reqwest::Client::new();
            let mut seen = BTreeMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let request = match (n + c as u64) % 4 {
                    0 => http.post(&chat).header("content-type", "application/json").body(common::CHAT),
                    // Gatehouse's own API, through Envoy's gatehouse_http cluster.
                    1 if rest => http.get(&me),
                    _ => http.get(&models),
                };
                let outcome = match request.header("x-api-key", &key).send().await {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(e) => format!("error: {e}"),
                };
                *seen.entry(outcome).or_insert(0) += 1;
            }
            seen
        });
    }
    set
}

async fn totals(mut set: JoinSet<BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    while let Some(seen) = set.join_next().await {
        for (k, v) in seen.unwrap() {
            *all.entry(k).or_insert(0) += v;
        }
    }
    all
}

/// Every replica in turn gets SIGTERM, drains with the default delay, exits 0
/// and is started again, while clients keep calling through the shipped
/// Envoy config: not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_through_the_shipped_envoy_fails_no_request() {
    skip_without_postgres!();
    let mut cluster = Cluster::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&cluster.envoy, &cluster.key, true, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..REPLICAS {
        let status = cluster.replicas[i].terminate().await;
        assert!(status.success(), "replica {i} exits cleanly: {status}");
        cluster.restart(i).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = totals(running).await;
    let ok = seen.get("200").copied().unwrap_or(0);
    assert!(ok > 100, "{seen:?}");
    assert_eq!(seen.len(), 1, "every request answered 200 during the rolling restart: {seen:?}");
}

/// A replica killed with SIGKILL under load: Checks in flight on it and
/// those sent before Envoy's health check notices are retried on another
/// replica; none fails. It is started again and takes traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_killed_under_load_fails_no_request() {
    skip_without_postgres!();
    let mut cluster = Cluster::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    // Checks only: a REST call the replica had received when it died is
    // lost with it (Envoy retries only what was never sent: a login or a
    // key creation must not happen twice).
    let running = load(&cluster.envoy, &cluster.key, false, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = 1;
    let killed =
        std::process::Command::new("kill").args(["-KILL", &cluster.replicas[victim].pid().to_string()]).status();
    assert!(killed.unwrap().success());
    cluster.envoy.wait_health("gatehouse_grpc", cluster.ports[victim].0, false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(victim).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = totals(running).await;
    assert!(seen.get("200").copied().unwrap_or(0) > 100, "{seen:?}");
    assert_eq!(seen.len(), 1, "every request answered 200 while a replica died: {seen:?}");
}
