//! Steady mixed load through Envoy: API keys, session tokens and provider
//! tokens on plain, JSON-body and role-restricted routes, at a fixed rate;
//! rate-limited callers well over their budget; one-second provider tokens
//! used past their expiry. Every answer is recorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::world::{Cred, CredKind, Outcome, Record, Route, UserRec, World};

/// A small PRNG (xorshift), seeded from the OS.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).unwrap();
        Rng(u64::from_le_bytes(seed) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() % 10_000) as f64 / 10_000.0 < p
    }
}

/// An upstream that answers 200 with the user Gatehouse identified.
pub async fn spawn_upstream() -> SocketAddr {
    async fn echo(headers: axum::http::HeaderMap) -> axum::Json<serde_json::Value> {
        let user = headers.get("x-auth-user-id").and_then(|v| v.to_str().ok()).unwrap_or("");
        axum::Json(serde_json::json!({ "user": user }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(echo)).await });
    addr
}

const CHAT: &str = r#"{"model":"llama-3","messages":[{"role":"user","content":"Hello!"}]}"#;

/// Sends one request with credential `index` on `route`; records the answer.
async fn send(world: &World, http: &reqwest::Client, base: &str, index: usize, cred: &Cred, route: Route) {
    let request = match route {
        Route::Models => http.get(format!("{base}/v1/models")),
        Route::Chat => {
            http.post(format!("{base}/v1/chat/completions")).header("content-type", "application/json").body(CHAT)
        }
        Route::Metrics => http.get(format!("{base}/metrics")),
    };
    let t = world.now();
    let started = Instant::now();
    let response = request.header(cred.header.0, &cred.header.1).send().await;
    let (status, body) = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    };
    let latency_ms = started.elapsed().as_secs_f32() * 1000.0;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let outcome = match status {
        200 => Outcome::Allowed,
        401 | 403 => Outcome::Denied,
        429 => Outcome::RateLimited,
        503 if json["error"]["code"] == "AUTH_BACKEND_UNAVAILABLE" => Outcome::BackendUnavailable,
        0 | 500..=599 => Outcome::Failed,
        _ => Outcome::Other,
    };
    let mut identity_ok = None;
    let mut w = world.lock();
    if outcome == Outcome::Allowed {
        let seen = json["user"].as_str().unwrap_or("");
        match w.creds[index].user {
            Some(u) => identity_ok = Some(w.users[u].id == seen),
            None => {
                // A provider token: its user was made on first use.
                let u = match w.users.iter().position(|u| u.id == seen) {
                    Some(u) => u,
                    None => {
                        w.users.push(UserRec {
                            id: seen.to_owned(),
                            email: String::new(),
                            password: None,
                            roles: vec![],
                            disabled: None,
                            unsure: Vec::new(),
                            metered: false,
                            fixed: true,
                        });
                        w.users.len() - 1
                    }
                };
                w.creds[index].user = Some(u);
            }
        }
    }
    if matches!(outcome, Outcome::Failed | Outcome::Other) {
        let n = w.records.len();
        w.failure_bodies.insert(n, body.chars().take(160).collect());
    }
    w.records.push(Record { t: t as f32, latency_ms, cred: index as u32, route, outcome, status, identity_ok });
}

pub struct Load {
    pub base: String,
    /// Requests per second from the general workers.
    pub rate: f64,
    pub workers: usize,
    /// Requests per second from each rate-limited caller.
    pub metered_rate: f64,
}

impl Load {
    /// Runs until `stop`; `issuer` is the OpenID provider's URL.
    pub fn spawn(self, world: Arc<World>, issuer: String, stop: Arc<AtomicBool>) -> JoinSet<()> {
        let mut set = JoinSet::new();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        for _ in 0..self.workers {
            let (world, http, base, stop) = (world.clone(), http.clone(), self.base.clone(), stop.clone());
            let every = Duration::from_secs_f64(self.workers as f64 / self.rate);
            set.spawn(async move {
                let mut rng = Rng::new();
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let picked = {
                        let w = world.lock();
                        let now = world.now();
                        let candidates: Vec<usize> = (0..w.creds.len())
                            .filter(|&i| {
                                let c = &w.creds[i];
                                c.kind != CredKind::OidcShort
                                    && !c.user.is_some_and(|u| w.users[u].metered)
                                    && c.in_play(&w.users, now)
                            })
                            .collect();
                        (!candidates.is_empty()).then(|| {
                            let i = candidates[rng.below(candidates.len())];
                            (i, w.creds[i].clone())
                        })
                    };
                    let Some((i, cred)) = picked else { continue };
                    let route = match rng.below(10) {
                        0..=4 => Route::Models,
                        5..=7 => Route::Chat,
                        _ => Route::Metrics,
                    };
                    send(&world, &http, &base, i, &cred, route).await;
                }
            });
        }
        // Each rate-limited caller, far over its budget.
        let metered: Vec<usize> = {
            let w = world.lock();
            (0..w.creds.len()).filter(|&i| w.creds[i].user.is_some_and(|u| w.users[u].metered)).collect()
        };
        for i in metered {
            let (world, http, base, stop) = (world.clone(), http.clone(), self.base.clone(), stop.clone());
            let every = Duration::from_secs_f64(1.0 / self.metered_rate);
            set.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let cred = world.lock().creds[i].clone();
                    send(&world, &http, &base, i, &cred, Route::Models).await;
                }
            });
        }
        // One-second provider tokens, presented for 3 s past their expiry.
        {
            let (world, http, base, stop) = (world.clone(), http.clone(), self.base.clone(), stop.clone());
            set.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let token = crate::services::token(&http, &issuer, "short-lived").await;
                    let Some(token) = token else {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    };
                    let Some(exp) = jwt_exp(&token) else { continue };
                    let cred = Cred {
                        kind: CredKind::OidcShort,
                        header: ("authorization", format!("Bearer {token}")),
                        user: None,
                        key_id: None,
                        created: world.now(),
                        invalid: None,
                        uncertain: None,
                        // OIDC_LEEWAY_SECONDS=0
                        expires: Some(world.run_time(exp)),
                        retired: false,
                    };
                    let expires = cred.expires.unwrap();
                    let i = world.add_cred(cred.clone());
                    while !stop.load(Ordering::Relaxed) && world.now() < expires + 3.0 {
                        send(&world, &http, &base, i, &cred, Route::Models).await;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    world.lock().creds[i].retired = true;
                }
            });
        }
        set
    }
}

/// A JWT's `exp` claim (not verified: the run's own tokens).
pub fn jwt_exp(token: &str) -> Option<f64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["exp"].as_f64()
}

/// A JWT's `jti` claim.
pub fn jwt_jti(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["jti"].as_str().map(ToOwned::to_owned)
}
