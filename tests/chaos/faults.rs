//! The fault schedule. Each cycle (`CYCLE` seconds) injects every fault
//! once, several overlapping:
//!
//! | at  | fault |
//! |-----|-------|
//! | 3   | `kill -9` of one replica, restarted 2 s later |
//! | 12  | Postgres stopped for 20 s |
//! | 16  | the Redis primary killed: Sentinel promotes the replica; the old primary rejoins as a replica |
//! | 20  | the OpenID provider down; back at 28 with rotated signing keys |
//! | 40  | an invalid policy file; a valid one at 46 |
//! | 50  | the TLS certificate replaced on disk |
//! | 56  | a rolling restart of all three replicas with SIGTERM |
//!
//! A fault is undone when its action is reversed, and recovered when what it
//! touched is healthy again (every replica healthy in Envoy, ready with its
//! database and Redis, serving the new certificate or policy...).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_rustls::rustls::ClientConfig;

use crate::cluster::{REPLICAS, Replicas};
use crate::common::Envoy;
use crate::common::postgres::OwnPostgres;
use crate::services::{Certs, Provider, Redis};
use crate::world::World;

pub const CYCLE: f64 = 90.0;

/// The shipped policy plus a rule whose presence tells which version a
/// replica runs: `/v1/chaos-probe-<n>` is public.
pub fn policy(version: u32) -> String {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policy.toml")).unwrap();
    let (head, routes) = shipped.split_once("\n[[routes]]").expect("the shipped policy has routes");
    format!(
        "{head}\n[[routes]]\nname = \"chaos-probe\"\nmethods = [\"GET\"]\npaths = [\"/v1/chaos-probe-{version}\"]\naccess = \"public\"\n\n[[routes]]{routes}"
    )
}

pub struct Faults {
    pub world: Arc<World>,
    pub replicas: Arc<tokio::sync::Mutex<Replicas>>,
    /// The replicas' (gRPC, HTTP) ports, which never change.
    pub ports: Vec<(u16, u16)>,
    pub envoy: Arc<Envoy>,
    pub redis: Redis,
    pub pg: OwnPostgres,
    pub provider: Provider,
    pub certs: Arc<Certs>,
    pub policy_file: PathBuf,
    pub https: reqwest::Client,
    pub http_tls: Arc<ClientConfig>,
    pub grpc_tls: Arc<ClientConfig>,
    pub cycles: usize,
    /// Which faults to inject (`CHAOS_FAULTS`; default all): kill, postgres,
    /// redis, oidc, policy, tls, rolling.
    pub only: Option<Vec<String>>,
}

impl Faults {
    fn wanted(&self, fault: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|o| o == fault))
    }

    async fn at(&self, cycle: usize, offset: f64) {
        let when = cycle as f64 * CYCLE + offset;
        let now = self.world.now();
        if when > now {
            tokio::time::sleep(Duration::from_secs_f64(when - now)).await;
        }
    }

    async fn ports(&self) -> Vec<(u16, u16)> {
        self.ports.clone()
    }

    /// Every replica's `/readyz` body (None: no answer, or not ready).
    async fn readiness(&self) -> Vec<Option<serde_json::Value>> {
        let mut out = Vec::new();
        for (_, http) in self.ports().await {
            let r =
                self.https.get(format!("https://127.0.0.1:{http}/readyz")).timeout(Duration::from_secs(3)).send().await;
            out.push(match r {
                Ok(r) if r.status() == 200 => r.json().await.ok(),
                _ => None,
            });
        }
        out
    }

    /// Waits (up to `limit`) until `done`; whether it came.
    async fn until<F: std::future::Future<Output = bool>>(&self, limit: f64, mut done: impl FnMut() -> F) -> bool {
        let deadline = self.world.now() + limit;
        while self.world.now() < deadline {
            if done().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    async fn all_healthy_in_envoy(&self) -> bool {
        let ports = self.ports().await;
        let grpc = self.envoy.health_flags("gatehouse_grpc").await;
        let http = self.envoy.health_flags("gatehouse_http").await;
        ports
            .iter()
            .all(|(g, h)| grpc.get(g).is_some_and(|f| f == "healthy") && http.get(h).is_some_and(|f| f == "healthy"))
    }

    async fn recovered(&self, id: usize, limit: f64, what: &str, done: impl AsyncFnMut() -> bool) {
        let mut done = done;
        let deadline = self.world.now() + limit;
        while self.world.now() < deadline {
            if done().await {
                self.world.fault_recovered(id);
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.world.note(format!("{what}: not recovered within {limit} s"));
    }

    pub async fn run(&mut self, stop: Arc<AtomicBool>) {
        for cycle in 0..self.cycles {
            // kill -9 of one replica, and its restart.
            self.at(cycle, 3.0).await;
            if self.wanted("kill") {
                let victim = cycle % REPLICAS;
                let id = self.world.fault_begins(format!("kill -9 replica {victim}"));
                self.replicas.lock().await.kill(victim, &self.world);
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.replicas.lock().await.start(victim, &self.world, Duration::from_secs(60)).await;
                self.world.fault_undone(id);
                self.recovered(id, 30.0, "kill -9", async || self.all_healthy_in_envoy().await).await;
            }

            // Postgres stopped for 20 s, with Redis and the provider failing meanwhile.
            self.at(cycle, 12.0).await;
            let pg_fault = self.wanted("postgres").then(|| {
                let id = self.world.fault_begins("Postgres stopped (20 s)");
                self.pg.stop();
                id
            });
            let pg_back = cycle as f64 * CYCLE + 12.0 + 20.0;

            self.at(cycle, 16.0).await;
            let redis_fault = if self.wanted("redis") {
                let id = self.world.fault_begins("Redis primary killed");
                let old = self.redis.kill_primary();
                self.redis.wait_promoted(old).await;
                self.world.note(format!("Sentinel promoted {:?} after {old} died", self.redis.primary()));
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.redis.restart_as_replica(old).await;
                self.world.fault_undone(id);
                Some(id)
            } else {
                None
            };

            self.at(cycle, 20.0).await;
            if self.wanted("oidc") {
                let id = self.world.fault_begins("OpenID provider down, back with new keys");
                self.provider.stop();
                self.at(cycle, 28.0).await;
                self.provider.rotate_keys();
                self.provider.spawn().await;
                self.world.fault_undone(id);
                self.world.fault_recovered(id);
            }

            if let Some(id) = pg_fault {
                let now = self.world.now();
                if pg_back > now {
                    tokio::time::sleep(Duration::from_secs_f64(pg_back - now)).await;
                }
                self.pg.start();
                self.world.fault_undone(id);
                // Readiness needs the database; with it, Redis's state shows too.
                self.recovered(id, 30.0, "Postgres", async || self.readiness().await.iter().all(Option::is_some)).await;
            }
            if let Some(id) = redis_fault {
                self.recovered(id, 30.0, "Redis", async || {
                    self.readiness().await.iter().all(|r| r.as_ref().is_some_and(|b| b["redis"] == "ok"))
                })
                .await;
            }

            // An invalid policy file, then a valid one.
            self.at(cycle, 40.0).await;
            if self.wanted("policy") {
                let id = self.world.fault_begins("invalid policy file, then a valid one");
                std::fs::write(&self.policy_file, "[[routes]]\nname = 1\npaths = \"not a list\"\n").unwrap();
                self.at(cycle, 46.0).await;
                let version = cycle as u32 + 1;
                std::fs::write(&self.policy_file, policy(version)).unwrap();
                self.world.fault_undone(id);
                self.recovered(id, 30.0, "policy", async || self.probe_policy(version).await).await;
            }

            // A new TLS certificate on disk.
            self.at(cycle, 50.0).await;
            if self.wanted("tls") {
                let id = self.world.fault_begins("TLS certificate replaced");
                let next = if cycle % 2 == 0 { "b" } else { "a" };
                self.certs.install(next);
                self.world.fault_undone(id);
                let expected = self.certs.der(next);
                self.recovered(id, 30.0, "TLS", async || {
                    let mut all = true;
                    for (grpc, http) in self.ports().await {
                        let served_http = crate::cluster::served_certificate(http, self.http_tls.clone()).await;
                        let served_grpc = crate::cluster::served_certificate(grpc, self.grpc_tls.clone()).await;
                        all &= served_http.as_ref() == Some(&expected) && served_grpc.as_ref() == Some(&expected);
                    }
                    all
                })
                .await;
            }

            // A rolling restart with SIGTERM: each replica drains, exits, starts
            // again and is healthy in Envoy before the next.
            self.at(cycle, 56.0).await;
            if self.wanted("rolling") {
                let id = self.world.fault_begins("rolling restart (SIGTERM)");
                for i in 0..REPLICAS {
                    let clean = self.replicas.lock().await.terminate(i, &self.world).await;
                    if !clean {
                        self.world.note(format!("replica {i} did not exit cleanly on SIGTERM"));
                    }
                    self.replicas.lock().await.start(i, &self.world, Duration::from_secs(60)).await;
                    let grpc = self.ports[i].0;
                    self.until(30.0, async || {
                        self.envoy.health_flags("gatehouse_grpc").await.get(&grpc).is_some_and(|f| f == "healthy")
                    })
                    .await;
                }
                self.world.fault_undone(id);
                self.recovered(id, 30.0, "rolling restart", async || self.all_healthy_in_envoy().await).await;
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        self.at(self.cycles, 0.0).await;
    }

    /// Every replica runs policy `version` (its probe path is public).
    async fn probe_policy(&self, version: u32) -> bool {
        for (grpc, _) in self.ports().await {
            let Some(mut client) = crate::cluster::check_client(grpc, self.grpc_tls.clone()).await else {
                return false;
            };
            let request = crate::common::check_request("GET", &format!("/v1/chaos-probe-{version}"), &[]);
            let allowed = client.check(request).await.is_ok_and(|r| crate::common::Check(r.into_inner()).allowed());
            if !allowed {
                return false;
            }
        }
        true
    }
}

/// Polls every replica's readiness twice a second, noting when any reports
/// Redis unavailable (its limits are then per replica).
pub async fn watch_redis(world: Arc<World>, https: reqwest::Client, ports: Vec<(u16, u16)>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        for &(_, http) in &ports {
            let r = https.get(format!("https://127.0.0.1:{http}/readyz")).timeout(Duration::from_secs(2)).send().await;
            if let Ok(r) = r
                && let Ok(body) = r.json::<serde_json::Value>().await
                && body["redis"].is_string()
                && body["redis"] != "ok"
            {
                let t = world.now();
                world.lock().redis_degraded.push(t);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
