//! The driver: at random, throughout the run, creates and revokes keys,
//! logs users in and out, disables users, changes roles, creates users and
//! sets keys to expire, through every door: REST (through Envoy, or a
//! replica's own port), the gRPC admin API, the CLI, and SQL by hand. Each
//! change is recorded with when it was sent and when (if) it was
//! acknowledged; credentials it makes join the load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gatehouse::grpc::admin::pb;
use serde_json::{Value, json};
use tokio_rustls::rustls::ClientConfig;

use crate::load::{Rng, jwt_exp, jwt_jti};
use crate::world::{Cred, CredKind, UserRec, World, WriteKind};

pub struct Driver {
    pub world: Arc<World>,
    /// Envoy's base URL.
    pub envoy: String,
    /// The replicas' HTTPS base URLs and gRPC ports.
    pub replicas: Vec<(String, u16)>,
    /// Trusts the run's CA.
    pub https: reqwest::Client,
    pub grpc_tls: Arc<ClientConfig>,
    pub admin_key: String,
    pub database_url: String,
    pub sql: sqlx::PgPool,
    /// Seconds between changes.
    pub every: f64,
    /// JWT_LEEWAY_SECONDS of the replicas.
    pub jwt_leeway: f64,
}

/// A REST answer: status (0 when none came) and body.
type Answer = (u16, Value);

async fn answer(r: Result<reqwest::Response, reqwest::Error>) -> Answer {
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn ok(status: u16) -> bool {
    (200..300).contains(&status)
}

impl Driver {
    pub async fn run(self, stop: Arc<AtomicBool>) {
        let mut rng = Rng::new();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs_f64(self.every)).await;
            n += 1;
            let in_play = {
                let w = self.world.lock();
                let now = self.world.now();
                w.creds
                    .iter()
                    .filter(|c| c.kind == CredKind::ApiKey && c.invalid.is_none() && c.in_play(&w.users, now))
                    .count()
            };
            // Keep enough live keys in play.
            let changeable = {
                let w = self.world.lock();
                w.users.iter().filter(|u| !u.fixed && !u.metered && u.disabled.is_none() && u.settled()).count()
            };
            let pick = if changeable < 6 {
                13
            } else if in_play < 12 {
                rng.below(3)
            } else {
                rng.below(15)
            };
            self.settle().await;
            let started = std::time::Instant::now();
            let op = match pick {
                0..=2 => {
                    self.create_key(&mut rng).await;
                    "create key"
                }
                3..=5 => {
                    self.revoke_key(&mut rng).await;
                    "revoke key"
                }
                6 | 7 => {
                    self.login(&http, &mut rng).await;
                    "log in"
                }
                8 | 9 => {
                    self.logout(&http, &mut rng).await;
                    "log out"
                }
                10 => {
                    self.disable(&mut rng).await;
                    "disable"
                }
                11 | 12 => {
                    self.change_role(&mut rng).await;
                    "change role"
                }
                13 => {
                    self.create_user(&mut rng, n).await;
                    "create user"
                }
                _ => {
                    self.expire_key(&mut rng).await;
                    "expire key"
                }
            };
            if started.elapsed() > Duration::from_secs(3) {
                self.world.note(format!("driver: {op} took {:.1} s", started.elapsed().as_secs_f64()));
            }
        }
    }

    /// Reads back the state of users whose last change failed (it may or
    /// may not have happened), once the database answers.
    async fn settle(&self) {
        use sqlx::Row;
        let open: Vec<(usize, String)> = {
            let w = self.world.lock();
            w.users.iter().enumerate().filter(|(_, u)| !u.settled()).map(|(i, u)| (i, u.id.clone())).collect()
        };
        for (u, id) in open {
            let Ok(row) =
                sqlx::query("SELECT role, disabled FROM users WHERE id = $1").bind(&id).fetch_one(&self.sql).await
            else {
                return;
            };
            let operator = row.get::<String, _>("role") == "operator";
            let disabled: bool = row.get("disabled");
            let now = self.world.now();
            let mut w = self.world.lock();
            let user = &mut w.users[u];
            let Some(from) = user.unsure.iter().find(|(_, to)| to.is_none()).map(|(from, _)| *from) else { continue };
            for window in user.unsure.iter_mut().filter(|(_, to)| to.is_none()) {
                window.1 = Some(now);
            }
            user.roles.push((from, now, operator));
            if disabled && user.disabled.is_none() {
                user.disabled = Some(now);
            }
        }
    }

    /// A user the driver may change: not fixed, not rate-limited, not disabled.
    fn pick_user(&self, rng: &mut Rng, with_password: bool) -> Option<(usize, UserRec)> {
        let w = self.world.lock();
        let candidates: Vec<usize> = (0..w.users.len())
            .filter(|&i| {
                let u = &w.users[i];
                !u.fixed
                    && !u.metered
                    && u.disabled.is_none()
                    && u.settled()
                    && !u.email.is_empty()
                    && (!with_password || u.password.is_some())
            })
            .collect();
        (!candidates.is_empty()).then(|| {
            let i = candidates[rng.below(candidates.len())];
            (i, w.users[i].clone())
        })
    }

    /// An in-play credential of `kind` the driver may invalidate.
    fn pick_cred(&self, rng: &mut Rng, kind: CredKind) -> Option<(usize, Cred)> {
        let w = self.world.lock();
        let now = self.world.now();
        let candidates: Vec<usize> = (0..w.creds.len())
            .filter(|&i| {
                let c = &w.creds[i];
                c.kind == kind
                    && c.invalid.is_none()
                    && c.uncertain.is_none()
                    && c.ended(&w.users).is_none_or(|end| end > now + 5.0)
                    && c.in_play(&w.users, now)
                    && c.user.is_some_and(|u| !w.users[u].fixed && !w.users[u].metered)
            })
            .collect();
        (!candidates.is_empty()).then(|| {
            let i = candidates[rng.below(candidates.len())];
            (i, w.creds[i].clone())
        })
    }

    /// Calls a replica's own REST API, trying each replica until one answers.
    async fn direct(&self, rng: &mut Rng, method: reqwest::Method, path: &str, body: &Value) -> Answer {
        let first = rng.below(self.replicas.len());
        let mut last = (0, Value::Null);
        for k in 0..self.replicas.len() {
            let (base, _) = &self.replicas[(first + k) % self.replicas.len()];
            let r = self.https.request(method.clone(), format!("{base}{path}")).header("x-api-key", &self.admin_key);
            last = answer(r.json(body).send().await).await;
            if last.0 != 0 {
                return last;
            }
        }
        last
    }

    async fn admin(&self, rng: &mut Rng) -> Option<pb::key_admin_client::KeyAdminClient<tonic::transport::Channel>> {
        let first = rng.below(self.replicas.len());
        for k in 0..self.replicas.len() {
            let (_, port) = self.replicas[(first + k) % self.replicas.len()];
            if let Some(c) = crate::cluster::admin_client(port, self.grpc_tls.clone()).await {
                return Some(c);
            }
        }
        None
    }

    fn authorized<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {}", self.admin_key).parse().unwrap());
        request
    }

    /// Runs the CLI on the database; its standard output when it succeeded.
    async fn cli(&self, args: Vec<String>, stdin: Option<String>) -> Option<String> {
        let url = self.database_url.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
                .arg("--json")
                .args(&args)
                .env("DATABASE_URL", url)
                .env("GATEHOUSE_DATABASE_TIMEOUT_MS", "2000")
                .env("RUST_LOG", "error")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            if let Some(input) = stdin {
                child.stdin.take()?.write_all(input.as_bytes()).ok()?;
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .await
        .ok()
        .flatten()
    }

    fn new_key(&self, user: usize, key_id: &str, secret: &str, bearer: bool) {
        self.world.add_cred(Cred {
            kind: CredKind::ApiKey,
            header: if bearer {
                ("authorization", format!("Bearer {secret}"))
            } else {
                ("x-api-key", secret.to_owned())
            },
            user: Some(user),
            key_id: Some(key_id.to_owned()),
            created: self.world.now(),
            invalid: None,
            uncertain: None,
            expires: None,
            retired: false,
        });
    }

    async fn create_key(&self, rng: &mut Rng) {
        let Some((u, user)) = self.pick_user(rng, false) else { return };
        let sent = self.world.now();
        let name = format!("chaos-{}", rng.next() % 1_000_000);
        let (door, created): (&'static str, Option<(String, String)>) = match rng.below(3) {
            0 => {
                let body = json!({"name": name, "user": user.email});
                let r = reqwest::Client::new()
                    .post(format!("{}/auth/keys", self.envoy))
                    .header("x-api-key", &self.admin_key)
                    .json(&body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let (status, body) = answer(r).await;
                ("REST", ok(status).then(|| (s(&body["id"]), s(&body["key"]))))
            }
            1 => {
                let request = pb::CreateKeyRequest { user: user.email.clone(), name, ..Default::default() };
                let created = match self.admin(rng).await {
                    Some(mut c) => c.create_key(self.authorized(request)).await.ok().map(|r| r.into_inner()),
                    None => None,
                };
                ("gRPC", created.and_then(|r| Some((r.key?.id, r.secret))))
            }
            _ => {
                let out = self
                    .cli(
                        vec![
                            "keys".into(),
                            "create".into(),
                            "--user".into(),
                            user.email.clone(),
                            "--name".into(),
                            name,
                        ],
                        None,
                    )
                    .await;
                let body: Value = out.and_then(|o| serde_json::from_str(&o).ok()).unwrap_or_default();
                ("CLI", body["key"].is_string().then(|| (s(&body["id"]), s(&body["key"]))))
            }
        };
        match created {
            Some((id, secret)) => {
                self.world.write(WriteKind::CreateKey { key_id: id.clone() }, door, sent, true);
                self.new_key(u, &id, &secret, rng.chance(0.5));
            }
            None => self.world.write(WriteKind::CreateKey { key_id: String::new() }, door, sent, false),
        }
    }

    async fn revoke_key(&self, rng: &mut Rng) {
        let Some((i, cred)) = self.pick_cred(rng, CredKind::ApiKey) else { return };
        let id = cred.key_id.clone().unwrap();
        let sent = self.world.now();
        let (door, done) = match rng.below(3) {
            0 => {
                let r = reqwest::Client::new()
                    .delete(format!("{}/auth/keys/{id}", self.envoy))
                    .header("x-api-key", &self.admin_key)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                ("REST", ok(answer(r).await.0))
            }
            1 => {
                let done = match self.admin(rng).await {
                    Some(mut c) => c.revoke_key(self.authorized(pb::RevokeKeyRequest { id: id.clone() })).await.is_ok(),
                    None => false,
                };
                ("gRPC", done)
            }
            _ => ("CLI", self.cli(vec!["keys".into(), "revoke".into(), id.clone()], None).await.is_some()),
        };
        self.world.write(WriteKind::RevokeKey { key_id: id }, door, sent, done);
        let now = self.world.now();
        let mut w = self.world.lock();
        w.creds[i].uncertain = Some(sent);
        if done {
            w.creds[i].invalid = Some(now);
        }
    }

    async fn login(&self, http: &reqwest::Client, rng: &mut Rng) {
        let Some((u, user)) = self.pick_user(rng, true) else { return };
        let sent = self.world.now();
        let body = json!({"email": user.email, "password": user.password});
        let (status, body) = answer(http.post(format!("{}/auth/login", self.envoy)).json(&body).send().await).await;
        let token = body["access_token"].as_str().filter(|_| ok(status)).map(ToOwned::to_owned);
        self.world.write(WriteKind::Login, "REST", sent, token.is_some());
        if let Some(token) = token {
            let expires = jwt_exp(&token).map(|exp| self.world.run_time(exp) + self.jwt_leeway);
            self.world.add_cred(Cred {
                kind: CredKind::Session,
                header: ("authorization", format!("Bearer {token}")),
                user: Some(u),
                key_id: None,
                created: self.world.now(),
                invalid: None,
                uncertain: None,
                expires,
                retired: false,
            });
        }
    }

    async fn logout(&self, http: &reqwest::Client, rng: &mut Rng) {
        let Some((i, cred)) = self.pick_cred(rng, CredKind::Session) else { return };
        let token = cred.header.1.trim_start_matches("Bearer ").to_owned();
        let sent = self.world.now();
        let r = http.post(format!("{}/auth/logout", self.envoy)).bearer_auth(&token).send().await;
        let done = ok(answer(r).await.0);
        self.world.write(WriteKind::Logout { jti: jwt_jti(&token).unwrap_or_default() }, "REST", sent, done);
        let now = self.world.now();
        let mut w = self.world.lock();
        w.creds[i].uncertain = Some(sent);
        if done {
            w.creds[i].invalid = Some(now);
        }
    }

    async fn disable(&self, rng: &mut Rng) {
        let Some((u, user)) = self.pick_user(rng, false) else { return };
        let sent = self.world.now();
        let (status, _) = self
            .direct(rng, reqwest::Method::PATCH, &format!("/admin/users/{}", user.id), &json!({"disabled": true}))
            .await;
        self.world.write(WriteKind::Disable { user: user.id }, "REST", sent, ok(status));
        let now = self.world.now();
        let mut w = self.world.lock();
        if ok(status) {
            w.users[u].unsure.push((sent, Some(now)));
            w.users[u].disabled = Some(now);
        } else {
            w.users[u].unsure.push((sent, None));
        }
    }

    async fn change_role(&self, rng: &mut Rng) {
        let Some((u, user)) = self.pick_user(rng, false) else { return };
        let operator = !user.roles.last().unwrap().2;
        let role = if operator { "operator" } else { "viewer" };
        let sent = self.world.now();
        let (status, _) = self
            .direct(rng, reqwest::Method::PATCH, &format!("/admin/users/{}", user.id), &json!({"role": role}))
            .await;
        self.world.write(WriteKind::Role { user: user.id, operator }, "REST", sent, ok(status));
        let now = self.world.now();
        let mut w = self.world.lock();
        if ok(status) {
            w.users[u].roles.push((sent, now, operator));
        } else {
            w.users[u].unsure.push((sent, None));
        }
    }

    async fn create_user(&self, rng: &mut Rng, n: u64) {
        let email = format!("chaos-{n}-{}@example.com", rng.next() % 10_000);
        let password = format!("chaos password {}", rng.next());
        let operator = rng.chance(0.5);
        let role = if operator { "operator" } else { "viewer" };
        let sent = self.world.now();
        let (door, id) = if rng.chance(0.5) {
            let body = json!({"email": email, "password": password, "role": role});
            let (status, body) = self.direct(rng, reqwest::Method::POST, "/admin/users", &body).await;
            ("REST", ok(status).then(|| s(&body["id"])))
        } else {
            let args = ["users", "create", "--email", &email, "--role", role, "--password-stdin"];
            let out = self.cli(args.iter().map(|a| (*a).to_owned()).collect(), Some(format!("{password}\n"))).await;
            let body: Value = out.and_then(|o| serde_json::from_str(&o).ok()).unwrap_or_default();
            ("CLI", body["id"].is_string().then(|| s(&body["id"])))
        };
        self.world.write(WriteKind::CreateUser { email: email.clone() }, door, sent, id.is_some());
        if let Some(id) = id {
            self.world.add_user(UserRec {
                id,
                email,
                password: Some(password),
                roles: vec![(0.0, 0.0, operator)],
                disabled: None,
                unsure: Vec::new(),
                metered: false,
                fixed: false,
            });
        }
    }

    /// SQL by hand: a key set to expire in a few seconds.
    async fn expire_key(&self, rng: &mut Rng) {
        let Some((i, cred)) = self.pick_cred(rng, CredKind::ApiKey) else { return };
        let id = cred.key_id.clone().unwrap();
        let at = (self.world.unix0 + self.world.now()).ceil() as i64 + 3;
        let sent = self.world.now();
        let done = sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
            .bind(at)
            .bind(&id)
            .execute(&self.sql)
            .await
            .is_ok_and(|r| r.rows_affected() == 1);
        self.world.write(WriteKind::Expire { key_id: id, at_unix: at }, "SQL", sent, done);
        let mut w = self.world.lock();
        w.creds[i].uncertain = Some(sent);
        if done {
            w.creds[i].expires = Some(self.world.run_time(at as f64));
        }
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}
