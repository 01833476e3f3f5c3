//! Health, readiness, graceful shutdown and failing closed.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::time::Duration;

use common::{Backend, TestServer, fresh_database, test_config};
use gatehouse::domain::Role;
use sqlx::Connection;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

backend_tests! {
    grpc_health_reports_serving_for_both_names,
    http_probes_answer,
    shutdown_reports_not_serving_before_closing,
}

async fn health(s: &TestServer, service: &str) -> Result<i32, tonic::Status> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc)).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(channel);
    client.check(HealthCheckRequest { service: service.into() }).await.map(|r| r.into_inner().status)
}

async fn grpc_health_reports_serving_for_both_names(b: Backend) {
    let s = TestServer::start(b).await;
    assert_eq!(health(&s, "").await.unwrap(), ServingStatus::Serving as i32);
    assert_eq!(health(&s, "envoy.service.auth.v3.Authorization").await.unwrap(), ServingStatus::Serving as i32);
    assert_eq!(health(&s, "no.such.Service").await.unwrap_err().code(), Code::NotFound);
    s.finish().await;
}

async fn http_probes_answer(b: Backend) {
    let s = TestServer::start(b).await;
    let r = reqwest::get(s.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    let r = reqwest::get(s.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["database"], "ok");
    let r = reqwest::get(s.url("/no/such/thing")).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["code"], "NOT_FOUND");
    s.finish().await;
}

async fn shutdown_reports_not_serving_before_closing(b: Backend) {
    let mut s = TestServer::start_with(b, |c| c.shutdown_delay = Duration::from_secs(2)).await;
    let (_, key) = s.user_with_key("a@example.com", Role::Viewer, None).await;
    s.begin_shutdown();
    let mut status = ServingStatus::Serving as i32;
    for _ in 0..150 {
        status = health(&s, "envoy.service.auth.v3.Authorization").await.unwrap();
        if status != ServingStatus::Serving as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, ServingStatus::NotServing as i32);
    assert_eq!(health(&s, "").await.unwrap(), ServingStatus::NotServing as i32);
    let r = reqwest::get(s.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    // Still answering Checks while load balancers notice.
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &key)]).await.allowed());
    s.finish().await;
}

/// A Check blocked in the database when shutdown begins still gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_checks_finish() {
    skip_without_postgres!();
    // The Check waits on the lock for longer than a lookup may take by
    // default (it would answer 503 in time, as during an outage).
    let mut s = TestServer::start_with(Backend::Postgres, |c| c.cache.lookup_timeout = Duration::from_secs(30)).await;
    let (_, key) = s.user_with_key("b@example.com", Role::Viewer, None).await;
    let mut locker = sqlx::PgConnection::connect(&s.database_url).await.unwrap();
    let mut tx = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await.unwrap();

    let mut client = s.client().await;
    let request = common::check_request("GET", "/v1/models", &[("x-api-key", &key)]);
    let in_flight = tokio::spawn(async move { client.check(request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!in_flight.is_finished(), "the Check should be waiting on the table lock");
    s.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!in_flight.is_finished());

    tx.rollback().await.unwrap();
    let response = in_flight.await.unwrap().expect("the in-flight Check must complete");
    assert!(common::Check(response.into_inner()).allowed());
    s.finish().await;
}

/// No database and nothing cached: deny with 503, never allow, never panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_store_fails_closed_with_503() {
    let mut config = test_config("postgres://gatehouse@127.0.0.1:1/gatehouse");
    config.auto_migrate = false;
    config.database_timeout = Duration::from_millis(300);
    let s = TestServer::start_config(config).await;
    let key = gatehouse::authn::api_key::generate();
    let c = s.check("GET", "/v1/models", &[("x-api-key", key.key.expose())]).await;
    c.assert_denied(503, Code::Unavailable, "AUTH_BACKEND_UNAVAILABLE");
    assert_eq!(c.body()["error"]["type"], "api_error");
    assert_eq!(c.metadata("reason").as_deref(), Some("backend_unavailable"));
    // Malformed credentials are still refused without the database.
    let c = s.check("GET", "/v1/models", &[("x-api-key", "nonsense")]).await;
    c.assert_denied(401, Code::Unauthenticated, "AUTHENTICATION_FAILED");
    let r = reqwest::get(s.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    // The gRPC server itself stays up and healthy: it can answer Checks.
    assert_eq!(health(&s, "").await.unwrap(), ServingStatus::Serving as i32);
    s.finish().await;
}

#[tokio::test]
async fn sqlite_database_file_is_created_and_migrated() {
    let (url, _dir) = fresh_database(Backend::Sqlite).await;
    let path = url.trim_start_matches("sqlite://").to_owned();
    assert!(!std::path::Path::new(&path).exists());
    let s = TestServer::start_config(test_config(&url)).await;
    assert!(std::path::Path::new(&path).exists());
    assert_eq!(s.store.list_groups().await.unwrap()[0].name, "default");
    s.finish().await;
}
