//! A read-only Postgres replica (`GATEHOUSE_DATABASE_READ_URL`, a real
//! streaming replica made with pg_basebackup): lookups are served by it,
//! writes go to the primary, a key just created works before it has
//! replicated, and with the primary stopped the replica still answers
//! cold lookups while writes fail closed.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::time::Duration;

use common::TestServer;
use common::postgres::OwnPostgres;
use gatehouse::domain::Role;
use gatehouse::secret::Secret;

/// Waits until the key's row is on the replica. Until the schema itself has
/// replicated, the query fails ("relation api_keys does not exist"): that is
/// "not yet" too.
async fn replicated(replica: &str, key_id: &str) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(replica).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let found: Result<Option<(String,)>, _> =
            sqlx::query_as("SELECT id FROM api_keys WHERE id = $1").bind(key_id).fetch_optional(&mut conn).await;
        match found {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("key {key_id} never reached the replica (last error: {last:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_on_the_replica_writes_on_the_primary() {
    skip_without_postgres!();
    let primary = OwnPostgres::init();
    let replica = primary.replica();
    let s = TestServer::start_config({
        let mut c = common::test_config(&primary.url());
        c.database_read_url = Some(Secret::new(replica.url()));
        c.cache.ttl = Duration::from_millis(300);
        c.database_timeout = Duration::from_millis(500);
        c
    })
    .await;

    // Written on the primary, usable at once (a miss on the replica is asked of the primary).
    let (_, key) = s.user_with_key("dev@example.com", Role::Viewer, None).await;
    assert!(s.check("GET", "/v1/models", &[("x-api-key", &key)]).await.allowed());
    let (_, cold) = s.user_with_key("cold@example.com", Role::Viewer, None).await;
    replicated(&replica.url(), &cold[3..19]).await;

    // The replica cannot be written: the schema and the rows came from the primary.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&replica.url()).await.unwrap();
    let write = sqlx::query("DELETE FROM api_keys").execute(&mut conn).await;
    assert!(write.unwrap_err().to_string().contains("read-only"));

    // Primary stopped: a key never looked up before is found on the replica...
    primary.stop();
    let c = s.check("GET", "/v1/models", &[("x-api-key", &cold)]).await;
    assert!(c.allowed(), "served by the replica: {c:?}");
    // ...and writes fail closed.
    let r = reqwest::Client::new()
        .post(s.url("/auth/register"))
        .json(&serde_json::json!({"email": "new@example.com", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    primary.start();
    s.finish().await;
}
