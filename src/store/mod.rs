//! Persistence: the core's [`Store`] trait with one SQL implementation per
//! backend (SQLite, the embedded default, and Postgres), the moka caches the
//! Check path reads through ([`cache`]), and cross-replica invalidation over
//! Redis ([`bus`]).

pub mod bus;
pub mod cache;
mod sql;

pub use gatehouse_core::store::*;

pub use sql::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_STATEMENT_TIMEOUT, DatabaseSettings, PostgresStore, SqliteStore, connect,
    connect_with,
};
pub use sql::{SchemaStatus, schema_status};

/// A driver error, classified.
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    match &e {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => StoreError::Conflict,
            ErrorKind::ForeignKeyViolation => StoreError::MissingReference,
            _ => StoreError::Internal(db.message().to_owned()),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Internal(e.to_string()),
    }
}

/// `?` for driver results in the SQL implementations.
pub(crate) trait Db<T> {
    fn db(self) -> StoreResult<T>;
}

impl<T> Db<T> for Result<T, sqlx::Error> {
    fn db(self) -> StoreResult<T> {
        self.map_err(db_error)
    }
}

impl<T> Db<T> for StoreResult<T> {
    fn db(self) -> StoreResult<T> {
        self
    }
}
