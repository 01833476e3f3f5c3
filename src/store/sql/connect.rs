//! Pools, migrations and the schema check, per backend.

use super::*;

/// Connections per Postgres pool unless configured.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// Postgres `statement_timeout` unless configured.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite:` or `postgres:`; every write goes here.
    pub url: String,
    /// A read-only Postgres replica for the lookups behind the caches.
    pub read_url: Option<String>,
    /// How long to wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// Connections per pool (Postgres; SQLite uses 4).
    pub max_connections: u32,
    /// Postgres `statement_timeout`: no query runs longer.
    pub statement_timeout: Duration,
}

impl DatabaseSettings {
    pub fn new(url: &str, acquire_timeout: Duration) -> Self {
        DatabaseSettings {
            url: url.to_owned(),
            read_url: None,
            acquire_timeout,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

/// Connects to `url` (`sqlite:` or `postgres:`), running migrations when asked.
pub async fn connect(url: &str, migrate: bool, acquire_timeout: Duration) -> anyhow::Result<DynStore> {
    connect_with(&DatabaseSettings::new(url, acquire_timeout), migrate).await
}

fn pg_pool(url: &str, settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let timeout_ms = settings.statement_timeout.as_millis().to_string();
    let options = PgConnectOptions::from_str(url)?
        .application_name("gatehouse")
        .options([("statement_timeout", timeout_ms.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(Duration::from_secs(600))
        .max_lifetime(Duration::from_secs(1800))
        .connect_lazy_with(options))
}

/// Connects as `settings` say, running migrations (on the primary) when asked.
pub async fn connect_with(settings: &DatabaseSettings, migrate: bool) -> anyhow::Result<DynStore> {
    let url = settings.url.as_str();
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let pool = pg_pool(url, settings)?;
        let read = settings.read_url.as_deref().map(|r| pg_pool(r, settings)).transpose()?;
        let store = PostgresStore { pool, read };
        if migrate {
            sqlx::migrate!("./migrations/postgres").run(&store.pool).await?;
        }
        Ok(Arc::new(store))
    } else if url.starts_with("sqlite:") {
        anyhow::ensure!(settings.read_url.is_none(), "a read replica URL needs a postgres: DATABASE_URL");
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await?;
        let store = SqliteStore { pool, read: None };
        if migrate {
            sqlx::migrate!("./migrations/sqlite").run(&store.pool).await?;
        }
        Ok(Arc::new(store))
    } else {
        anyhow::bail!("DATABASE_URL must start with sqlite: or postgres:")
    }
}

/// The database's schema next to this build's migrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Migrations this build carries.
    pub known: usize,
    /// Migrations recorded as applied.
    pub applied: usize,
    /// This build's migrations not yet applied, as `VERSION description`.
    pub pending: Vec<String>,
    /// Applied versions this build does not know (a newer build migrated it).
    pub unknown: Vec<i64>,
    /// Applied migrations whose text differs from this build's, or that failed.
    pub broken: Vec<i64>,
    /// A SQLite file that does not exist yet (`serve` or `migrate` creates it).
    pub missing_file: bool,
}

/// Reads the schema's state at `url` without changing anything (a SQLite
/// file is opened read-only, never created).
pub async fn schema_status(url: &str, timeout: Duration) -> anyhow::Result<SchemaStatus> {
    use sqlx::Connection;
    type Applied = Vec<(i64, Vec<u8>, bool)>;
    const APPLIED: &str = "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version";
    let connect_timeout = |what: &str| anyhow::anyhow!("no answer from the {what} database in {timeout:?}");
    let (migrator, applied): (sqlx::migrate::Migrator, Option<Applied>) =
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?.application_name("gatehouse doctor");
            let mut conn = tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(&options))
                .await
                .map_err(|_| connect_timeout("Postgres"))??;
            let exists: bool =
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&mut conn).await?;
            let applied = if exists { Some(sqlx::query_as(APPLIED).fetch_all(&mut conn).await?) } else { None };
            let _ = conn.close().await;
            (sqlx::migrate!("./migrations/postgres"), applied)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?.create_if_missing(false).read_only(true);
            if !options.get_filename().exists() && !url.contains(":memory:") {
                let known =
                    sqlx::migrate!("./migrations/sqlite").iter().filter(|m| m.migration_type.is_up_migration()).count();
                return Ok(SchemaStatus { known, missing_file: true, ..SchemaStatus::default() });
            }
            let mut conn = tokio::time::timeout(timeout, sqlx::SqliteConnection::connect_with(&options))
                .await
                .map_err(|_| connect_timeout("SQLite"))??;
            let exists: bool = sqlx::query_scalar(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_one(&mut conn)
            .await?;
            let applied = if exists { Some(sqlx::query_as(APPLIED).fetch_all(&mut conn).await?) } else { None };
            let _ = conn.close().await;
            (sqlx::migrate!("./migrations/sqlite"), applied)
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite: or postgres:")
        };
    let applied = applied.unwrap_or_default();
    let known: Vec<_> = migrator.iter().filter(|m| m.migration_type.is_up_migration()).collect();
    let mut status = SchemaStatus { known: known.len(), applied: applied.len(), ..SchemaStatus::default() };
    for m in &known {
        match applied.iter().find(|(v, _, _)| *v == m.version) {
            None => status.pending.push(format!("{} {}", m.version, m.description)),
            Some((v, checksum, success)) if !success || checksum.as_slice() != &*m.checksum => status.broken.push(*v),
            Some(_) => {}
        }
    }
    status.unknown = applied.iter().map(|(v, _, _)| *v).filter(|v| !known.iter().any(|m| m.version == *v)).collect();
    Ok(status)
}
