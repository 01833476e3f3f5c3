//! The chaos run (`scripts/chaos`): three replicas on Postgres and a
//! Sentinel-managed Redis (a primary and a replica), behind the shipped Envoy
//! config (its health checks and retries) speaking mTLS to them, under steady
//! mixed load while faults are injected, several at once (see `faults`); a
//! driver revokes keys, logs users in and out, disables users and changes
//! roles throughout, through REST, gRPC admin, the CLI and SQL. Every
//! decision is recorded and checked against the truth at its time; every
//! acknowledged change is looked up in the database afterwards. The report,
//! a table and a timeline, goes to `CHAOS_OUT` (default `target/chaos`).
//!
//! `CHAOS_SECONDS` (default 90: one cycle of every fault) sets the length;
//! `CHAOS_RPS` the general load (default 60 requests/s, plus the
//! rate-limited callers). Ignored in the normal suite: scripts/chaos runs it.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod driver;
mod faults;
mod load;
mod report;
mod services;
mod world;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::postgres::OwnPostgres;
use gatehouse::domain::{DEFAULT_GROUP, Group, Role};
use gatehouse::secret::Secret;
use world::{Cred, CredKind, UserRec, World};

/// The rate-limited group: 5 requests a second, bursts of 5.
const METERED: report::Limit = report::Limit { per_second: 5.0, burst: 5.0 };

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: run by scripts/chaos"]
async fn chaos() {
    let cycles = ((env_f64("CHAOS_SECONDS", 90.0) / faults::CYCLE).round() as usize).max(1);
    let seconds = cycles as f64 * faults::CYCLE;
    let rate = env_f64("CHAOS_RPS", 60.0);
    let out_dir = std::path::PathBuf::from(
        std::env::var("CHAOS_OUT").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/chaos").to_owned()),
    );
    std::fs::create_dir_all(&out_dir).unwrap();
    let dir = tempfile::Builder::new().prefix("gatehouse-chaos").tempdir().unwrap();

    // --- what the replicas depend on ------------------------------------
    let certs = Arc::new(services::Certs::make(dir.path()));
    certs.install("a");
    let pg = OwnPostgres::init();
    let database_url = pg.url();
    let redis = services::Redis::start(dir.path()).await;
    let provider = services::Provider::start(dir.path()).await;
    let issuer = provider.issuer();
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, faults::policy(0)).unwrap();

    // --- users, groups and keys, straight in the database ----------------
    let world = Arc::new(World::new());
    let setup = common::TestServer::start_config(common::test_config(&database_url)).await;
    for (name, limit) in [("metered", Some((METERED.per_second as i64, 1, METERED.burst as i64))), ("research", None)] {
        let group = Group {
            name: name.into(),
            requests_per_period: limit.map(|l| l.0),
            period_seconds: limit.map(|l| l.1),
            burst: limit.map(|l| l.2),
            models: None,
            budget: Default::default(),
        };
        setup.accounts.create_group(group).await.unwrap();
    }
    let (_, admin_key) = setup.user_with_key("admin@example.com", Role::Admin, None).await;
    let mut metered_users = Vec::new();
    for i in 0..10 {
        let metered = i >= 8;
        let operator = i % 2 == 0 && !metered;
        let email = format!("user-{i}@example.com");
        let role = if operator { Role::Operator } else { Role::Viewer };
        let group = if metered { "metered" } else { DEFAULT_GROUP };
        let user = setup.accounts.create_user(&email, None, role, group).await.unwrap();
        let password = format!("password of user {i}");
        setup.accounts.set_password(&user.id, Secret::new(&password)).await.unwrap();
        let u = world.add_user(UserRec {
            id: user.id.clone(),
            email,
            password: Some(password),
            roles: vec![(0.0, 0.0, operator)],
            disabled: None,
            unsure: Vec::new(),
            metered,
            fixed: false,
        });
        if metered {
            metered_users.push(u);
        }
        for k in 0..if metered { 1 } else { 3 } {
            let secret = setup.key_for(&user, None).await;
            world.add_cred(Cred {
                kind: CredKind::ApiKey,
                header: if k % 2 == 0 {
                    ("x-api-key", secret.clone())
                } else {
                    ("authorization", format!("Bearer {secret}"))
                },
                user: Some(u),
                key_id: Some(secret[3..19].to_owned()),
                created: 0.0,
                invalid: None,
                uncertain: None,
                expires: None,
                retired: false,
            });
        }
    }
    setup.finish().await;

    // --- the replicas and Envoy -----------------------------------------
    let jwt_expiry = (seconds + 600.0) as u64;
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", database_url.clone()),
        ("REDIS_URL", redis.url()),
        ("OIDC_ISSUER_URL", issuer.clone()),
        ("OIDC_ALLOW_INSECURE_HTTP", "true".into()),
        ("OIDC_AUDIENCE", "https://gateway.example".into()),
        ("OIDC_LEEWAY_SECONDS", "0".into()),
        ("GATEHOUSE_POLICY_FILE", policy_file.display().to_string()),
        ("GATEHOUSE_TLS_CERT_FILE", certs.path("tls.crt")),
        ("GATEHOUSE_TLS_KEY_FILE", certs.path("tls.key")),
        ("GATEHOUSE_TLS_CLIENT_CA_FILE", certs.path("ca.pem")),
        ("GATEHOUSE_TRUSTED_PROXY_HOPS", "1".into()),
        ("GATEHOUSE_LOGIN_RATE_LIMIT", "off".into()),
        ("JWT_EXPIRY_SECONDS", jwt_expiry.to_string()),
        ("RUST_LOG", std::env::var("CHAOS_REPLICA_LOG").unwrap_or_else(|_| "warn".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut replicas = cluster::Replicas::new(env);
    for i in 0..cluster::REPLICAS {
        replicas.start(i, &world, Duration::from_secs(30)).await;
    }
    let ports = replicas.ports.clone();
    let upstream = load::spawn_upstream().await;
    let envoy = Arc::new(cluster::envoy(&replicas, upstream, &certs).await);
    for &(grpc, http) in &ports {
        envoy.wait_health("gatehouse_grpc", grpc, true).await;
        envoy.wait_health("gatehouse_http", http, true).await;
    }
    let base = envoy.url("");
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(certs.path("ca.pem")).unwrap()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let http_tls = cluster::client_tls(&certs, b"http/1.1");
    let grpc_tls = cluster::client_tls(&certs, b"h2");

    // Session tokens for half the users, provider tokens for five clients.
    let plain = reqwest::Client::new();
    let users: Vec<(usize, UserRec)> = world.lock().users.iter().cloned().enumerate().collect();
    for (u, user) in users.iter().filter(|(_, u)| !u.metered).step_by(2) {
        let token = common::login(&format!("{base}/auth/login"), &user.email, user.password.as_deref().unwrap()).await;
        world.add_cred(Cred {
            kind: CredKind::Session,
            header: ("authorization", format!("Bearer {token}")),
            user: Some(*u),
            key_id: None,
            created: world.now(),
            invalid: None,
            uncertain: None,
            expires: load::jwt_exp(&token).map(|e| world.run_time(e) + 30.0),
            retired: false,
        });
    }
    let clients: Vec<&str> = ["gatehouse", "plain"].into_iter().chain(services::EXTRA_CLIENTS).collect();
    let mut provider_creds = Vec::new();
    for client in &clients {
        let token = services::token(&plain, &issuer, client).await.expect("a provider token");
        provider_creds.push(world.add_cred(provider_cred(&world, &token, None)));
    }

    // --- the run ----------------------------------------------------------
    let stop = Arc::new(AtomicBool::new(false));
    let replicas = Arc::new(tokio::sync::Mutex::new(replicas));
    let sql = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&database_url)
        .unwrap();
    let mut load = load::Load { base: base.clone(), rate, workers: 12, metered_rate: 12.0 }.spawn(
        world.clone(),
        issuer.clone(),
        stop.clone(),
    );
    let driver = tokio::spawn(
        driver::Driver {
            world: world.clone(),
            envoy: base.clone(),
            replicas: ports.iter().map(|&(g, h)| (format!("https://127.0.0.1:{h}"), g)).collect(),
            https: https.clone(),
            grpc_tls: grpc_tls.clone(),
            admin_key,
            database_url: database_url.clone(),
            sql: sql.clone(),
            every: 0.8,
            jwt_leeway: 30.0,
        }
        .run(stop.clone()),
    );
    let watcher = tokio::spawn(faults::watch_redis(world.clone(), https.clone(), ports.clone(), stop.clone()));
    let refresher = tokio::spawn(refresh_provider_tokens(
        world.clone(),
        issuer.clone(),
        clients.clone().into_iter().map(ToOwned::to_owned).zip(provider_creds).collect(),
        stop.clone(),
    ));
    let mut faults = faults::Faults {
        world: world.clone(),
        replicas: replicas.clone(),
        ports: ports.clone(),
        envoy: envoy.clone(),
        redis,
        pg,
        provider,
        certs: certs.clone(),
        policy_file,
        https: https.clone(),
        http_tls,
        grpc_tls,
        cycles,
        only: std::env::var("CHAOS_FAULTS").ok().map(|f| f.split(',').map(|s| s.trim().to_owned()).collect()),
    };
    faults.run(stop.clone()).await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    driver.await.unwrap();
    watcher.await.unwrap();
    refresher.await.unwrap();
    let elapsed = world.now();

    // --- the verdict (Postgres and the rest still up: `faults` owns them) ----
    let inner = std::mem::take(&mut *world.lock());
    let mut findings = report::analyse(&inner, &METERED, &metered_users);
    let sql = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(20))
        .connect(&database_url)
        .await
        .unwrap();
    findings.lost_writes =
        report::lost_writes(&inner, &sql).await.unwrap_or_else(|e| vec![format!("could not look: {e}")]);
    let info =
        report::RunInfo { seconds: elapsed, cycles, rate, when: time::OffsetDateTime::now_utc().date().to_string() };
    let markdown = report::markdown(&inner, &findings, &info);
    std::fs::write(out_dir.join("report.md"), &markdown).unwrap();
    std::fs::write(out_dir.join("timeline.svg"), report::svg(&inner, elapsed)).unwrap();
    println!("{markdown}");
    println!("report: {}", out_dir.join("report.md").display());
    if !findings.passed() || std::env::var_os("CHAOS_DECISIONS").is_some() {
        std::fs::write(out_dir.join("decisions.csv"), report::decisions_csv(&inner)).unwrap();
    }
    if !findings.passed() {
        std::fs::write(out_dir.join("replicas.log"), replicas.lock().await.logs()).unwrap();
        std::fs::write(out_dir.join("envoy.log"), envoy.access_log()).unwrap();
        let stats =
            reqwest::get(format!("http://127.0.0.1:{}/stats", envoy.admin_port)).await.unwrap().text().await.unwrap();
        std::fs::write(out_dir.join("envoy-stats.txt"), stats).unwrap();
        panic!("the chaos run missed its targets: see {}", out_dir.join("report.md").display());
    }
}

fn provider_cred(world: &World, token: &str, user: Option<usize>) -> Cred {
    Cred {
        kind: CredKind::Oidc,
        header: ("authorization", format!("Bearer {token}")),
        user,
        key_id: None,
        created: world.now(),
        invalid: None,
        uncertain: None,
        // OIDC_LEEWAY_SECONDS=0
        expires: load::jwt_exp(token).map(|e| world.run_time(e)),
        retired: false,
    }
}

/// Provider tokens live 10 minutes: new ones every 4, while the provider is up.
async fn refresh_provider_tokens(
    world: Arc<World>,
    issuer: String,
    mut creds: Vec<(String, usize)>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::new();
    let mut last = world.now();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if world.now() - last < 240.0 {
            continue;
        }
        for (client, index) in &mut creds {
            if let Some(token) = services::token(&http, &issuer, client).await {
                let user = world.lock().creds[*index].user;
                let fresh = world.add_cred(provider_cred(&world, &token, user));
                world.lock().creds[*index].retired = true;
                *index = fresh;
                last = world.now();
            }
        }
    }
}
