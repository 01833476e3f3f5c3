//! Test databases: a temporary SQLite file, or a database of its own on the
//! Postgres server named by `GATEHOUSE_TEST_POSTGRES_URL` (which
//! `scripts/test` starts), cloned from a migrated template and dropped when
//! the guard goes.

use std::hash::{DefaultHasher, Hash, Hasher};

use sqlx::{Connection, Executor, PgConnection};

use super::Backend;

const NO_POSTGRES: &str =
    "GATEHOUSE_TEST_POSTGRES_URL is not set (scripts/test starts a throwaway Postgres and sets it)";

/// Whether a Postgres test must be skipped (no test server, or no `pg_ctl`
/// for the tests that start their own); says why.
pub fn postgres_missing() -> bool {
    let missing =
        ["GATEHOUSE_TEST_POSTGRES_URL", "GATEHOUSE_TEST_PG_CTL"].iter().any(|v| std::env::var_os(v).is_none());
    if missing {
        eprintln!(
            "skipped: GATEHOUSE_TEST_POSTGRES_URL or GATEHOUSE_TEST_PG_CTL is not set (scripts/test starts a throwaway Postgres and sets both)"
        );
    }
    missing
}

/// Returns from the test, with a one-line reason, when no test Postgres is
/// configured.
#[macro_export]
macro_rules! skip_without_postgres {
    () => {
        if $crate::common::database::postgres_missing() {
            return;
        }
    };
}

fn admin_url() -> String {
    std::env::var("GATEHOUSE_TEST_POSTGRES_URL").expect(NO_POSTGRES)
}

fn url_of(admin: &str, name: &str) -> String {
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    format!("{base}/{name}")
}

/// A test's database; a Postgres one is dropped with the guard.
pub struct TestDb {
    _sqlite_dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else { return };
        // Drop runs inside the test's runtime: the statement gets a thread
        // and a runtime of its own. FORCE ends the server's connections.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A URL for a fresh database on `backend`: SQLite empty, Postgres already
/// migrated (a copy of the template).
pub async fn fresh(backend: Backend) -> (String, TestDb) {
    match backend {
        Backend::Sqlite => sqlite(),
        Backend::Postgres => {
            let admin = admin_url();
            let template = template(&admin).await;
            create(&admin, Some(&template)).await
        }
    }
}

/// A URL for an empty database on `backend` (no schema at all).
pub async fn empty(backend: Backend) -> (String, TestDb) {
    match backend {
        Backend::Sqlite => sqlite(),
        Backend::Postgres => create(&admin_url(), None).await,
    }
}

fn sqlite() -> (String, TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gatehouse.db").display());
    (url, TestDb { _sqlite_dir: Some(dir), postgres: None })
}

async fn create(admin: &str, template: Option<&str>) -> (String, TestDb) {
    let name = format!("gh_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(admin).await.unwrap();
    let sql = match template {
        Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
        None => format!("CREATE DATABASE {name}"),
    };
    conn.execute(sql.as_str()).await.unwrap();
    conn.close().await.unwrap();
    (url_of(admin, &name), TestDb { _sqlite_dir: None, postgres: Some((admin.to_owned(), name)) })
}

/// The migrated template, named after the migrations it holds; built once
/// per server (under an advisory lock, under a temporary name renamed when
/// complete, so no process clones a half-built one).
async fn template(admin: &str) -> String {
    let migrator = sqlx::migrate!("./migrations/postgres");
    let mut hash = DefaultHasher::new();
    for m in migrator.iter() {
        m.version.hash(&mut hash);
        m.checksum.hash(&mut hash);
    }
    let name = format!("gh_template_{:016x}", hash.finish());
    let mut conn = PgConnection::connect(admin).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(7411)").execute(&mut conn).await.unwrap();
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
        .is_some();
    if !exists {
        let building = format!("{name}_{}", uuid::Uuid::new_v4().simple());
        conn.execute(format!("CREATE DATABASE {building}").as_str()).await.unwrap();
        let mut target = PgConnection::connect(&url_of(admin, &building)).await.unwrap();
        migrator.run(&mut target).await.unwrap();
        target.close().await.unwrap();
        conn.execute(format!("ALTER DATABASE {building} RENAME TO {name}").as_str()).await.unwrap();
    }
    sqlx::query("SELECT pg_advisory_unlock(7411)").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    name
}
