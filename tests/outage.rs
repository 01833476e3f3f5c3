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
    let pg = OwnPostgres::init();
    outage_and_recovery(&pg.url(), || pg.stop(), || pg.start()).await;
}
