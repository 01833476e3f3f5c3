//! The database going away and coming back: warm entries keep answering (up
//! to the stale limit), cold lookups fail closed with 503, and everything
//! recovers without a restart. Two ways: the connection is cut by a TCP proxy
//! of the test's own between gatehouse and the suite's Postgres, and a
//! Postgres server of the test's own is stopped and started again.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::postgres::OwnPostgres;
use common::{Backend, TestServer};
use gatehouse::domain::Role;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::Code;

struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(task);
            }
        });
        Proxy { port, up, connections }
    }

    /// Cuts every open connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Gatehouse on `url` loses its database (`down`) and gets it back (`up`):
/// warm keys keep working past their TTL, cold ones and writes get 503,
/// readiness says so, and everything recovers without a restart.
async fn outage_and_recovery(url: &str, down: impl FnOnce(), up: impl FnOnce()) {
    let s = TestServer::start_config({
        let mut c = common::test_config(url);
        c.cache.ttl = Duration::from_millis(500);
        c.cache.stale_limit = Duration::from_secs(60);
        c.database_timeout = Duration::from_millis(500);
        c
    })
    .await;
    let (_, warm) = s.user_with_key("warm@example.com", Role::Viewer, None).await;
    let (_, cold) = s.user_with_key("cold@example.com", Role::Viewer, None).await;
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &warm)]).await.allowed());

    down();
    tokio::time::sleep(Duration::from_millis(700)).await; // past the TTL
    for _ in 0..3 {
        let c = s.check("GET", "/v1/models", &[("x-api-key", &warm)]).await;
        assert!(c.allowed(), "a warm key keeps working past its TTL while the database is down: {c:?}");
    }
    let c = s.check("GET", "/v1/models", &[("x-api-key", &cold)]).await;
    c.assert_denied(503, Code::Unavailable, "AUTH_BACKEND_UNAVAILABLE");
    assert_eq!(reqwest::get(s.url("/readyz")).await.unwrap().status(), 503);
    // Changes are refused with a clear error while the database is down.
    let status = reqwest::Client::new()
        .post(s.url("/auth/register"))
        .json(&serde_json::json!({"email": "new@example.com", "password": "a long enough password"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 503);

    up();
    let mut recovered = false;
    for _ in 0..50 {
        if s.check("GET", "/v1/models", &[("x-api-key", &cold)]).await.allowed() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "cold keys work again once the database is back, without a restart");
    assert_eq!(reqwest::get(s.url("/readyz")).await.unwrap().status(), 200);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_serves_warm_entries_and_recovers() {
    skip_without_postgres!();
    let (direct, _dir) = common::fresh_database(Backend::Postgres).await;
    // postgres://user@host:port/db -> the same through the proxy.
    let (scheme_user, rest) = direct.split_once('@').unwrap();
    let (host_port, db) = rest.split_once('/').unwrap();
    let proxy = Proxy::start(host_port.to_owned()).await;
    let proxied = format!("{scheme_user}@127.0.0.1:{}/{db}", proxy.port);
    outage_and_recovery(&proxied, || proxy.cut(), || proxy.restore()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_again() {
    skip_without_postgres!();
    let pg = OwnPostgres::init();
    outage_and_recovery(&pg.url(), || pg.stop(), || pg.start()).await;
}

/// Through the shipped Envoy config (which gives a Check 0.5 s): with the
/// database stopped, a warm key past its TTL is still allowed and a cold one
/// gets Gatehouse's own 503 (`AUTH_BACKEND_UNAVAILABLE`), both in time,
/// with the default database timeout (2 s, which a Check must not wait out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_through_envoy_answers_in_time() {
    skip_without_postgres!();
    let pg = OwnPostgres::init();
    let s = TestServer::start_config({
        let mut c = common::test_config(&pg.url());
        c.cache.ttl = Duration::from_millis(500);
        c
    })
    .await;
    let envoy = common::Envoy::start(&s, common::spawn_echo().await).await;
    let (_, warm) = s.user_with_key("warm@example.com", Role::Viewer, None).await;
    let (_, cold) = s.user_with_key("cold@example.com", Role::Viewer, None).await;
    let http = reqwest::Client::new();
    let get = |key: &str| http.get(envoy.url("/v1/models")).header("x-api-key", key.to_owned()).send();
    assert_eq!(get(&warm).await.unwrap().status(), 200);

    pg.stop();
    tokio::time::sleep(Duration::from_millis(700)).await; // past the TTL
    for _ in 0..3 {
        let r = get(&warm).await.unwrap();
        assert_eq!(r.status(), 200, "a warm key past its TTL is served while the database is down");
        let r = get(&cold).await.unwrap();
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(body["error"]["code"], "AUTH_BACKEND_UNAVAILABLE", "Gatehouse's answer, not Envoy's timeout");
    }
    pg.start();
    drop(envoy);
    s.finish().await;
}

/// Redis going away and coming back while the database is down (a failover
/// in the middle of a database outage): the replica subscribes to the
/// invalidation channel again, and its warm callers stay warm. (It used to
/// drop every cache on subscribing again, in case it had missed messages;
/// the change feed, read from the database, has every change anyway. With
/// the database down, every caller then got 503.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reconnecting_during_a_database_outage_keeps_warm_callers() {
    skip_without_postgres!();
    let pg = OwnPostgres::init();
    let port = common::free_port();
    /// Killed when dropped, a failed assertion included.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let redis = || {
        Killed(
            std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is not installed: run scripts/test"),
        )
    };
    let redis_url = format!("redis://127.0.0.1:{port}");
    let mut server = redis();
    let s = TestServer::start_config({
        let mut c = common::test_config(&pg.url());
        c.redis_url = Some(gatehouse::secret::Secret::new(&redis_url));
        c
    })
    .await;
    let redis_state = || async {
        let body: serde_json::Value = reqwest::get(s.url("/readyz")).await.unwrap().json().await.unwrap();
        body["redis"].as_str().unwrap_or_default().to_owned()
    };
    let mut up = false;
    for _ in 0..300 {
        if redis_state().await == "ok" {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "subscribed to Redis");
    let (_, probe) = s.user_with_key("probe@example.com", Role::Viewer, None).await;
    let (_, warm) = s.user_with_key("warm@example.com", Role::Viewer, None).await;
    for key in [&probe, &warm] {
        assert!(s.check("GET", "/v1/models", &[("x-api-key", key)]).await.allowed());
    }

    drop(server);
    let mut down = false;
    for _ in 0..300 {
        if redis_state().await.starts_with("unavailable") {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(down, "the replica noticed Redis go");
    pg.stop();
    server = redis();
    // Once subscribed again, an invalidation published for the probe key
    // evicts it (cold, with the database down: 503). The warm key stays.
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut evicted = false;
    for _ in 0..300 {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            let _: Result<i64, _> = redis::cmd("PUBLISH")
                .arg("gatehouse:invalidate")
                .arg(format!("key:{}", &probe[3..19]))
                .query_async(&mut conn)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.check("GET", "/v1/models", &[("x-api-key", &probe)]).await.http_status() == 503 {
            evicted = true;
            break;
        }
    }
    assert!(evicted, "the replica subscribed to Redis again");
    let c = s.check("GET", "/v1/models", &[("x-api-key", &warm)]).await;
    assert!(c.allowed(), "a warm key is still served after resubscribing: {c:?}");
    pg.start();
    drop(server);
    s.finish().await;
}

/// A change to one user (a role, say) evicts that user's keys, not every
/// key: right before a database outage, it must not leave everyone else's
/// keys cold (refused with 503 until the database is back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_change_before_an_outage_leaves_other_keys_warm() {
    skip_without_postgres!();
    let pg = OwnPostgres::init();
    let s = TestServer::start_config(common::test_config(&pg.url())).await;
    let (changed, changed_key) = s.user_with_key("changed@example.com", Role::Viewer, None).await;
    let (_, other_key) = s.user_with_key("other@example.com", Role::Viewer, None).await;
    for key in [&changed_key, &other_key] {
        assert!(s.check("GET", "/v1/models", &[("x-api-key", key)]).await.allowed());
    }
    let update = gatehouse::domain::UserUpdate { role: Some(Role::Operator), ..Default::default() };
    s.accounts.update_user(&changed.id, &update).await.unwrap();
    pg.stop();
    let c = s.check("GET", "/v1/models", &[("x-api-key", &other_key)]).await;
    assert!(c.allowed(), "another user's key stays warm: {c:?}");
    // The changed user's key was evicted: with the database down, 503.
    let c = s.check("GET", "/v1/models", &[("x-api-key", &changed_key)]).await;
    c.assert_denied(503, Code::Unavailable, "AUTH_BACKEND_UNAVAILABLE");
    pg.start();
    s.finish().await;
}
