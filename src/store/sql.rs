//! The SQL store. The query text is shared (both SQLite and Postgres accept
//! `$N` placeholders, and the schema uses portable types: Unix-second
//! integers, TEXT, a boolean, a blob). [`sql_store!`] instantiates the same
//! code for each backend's concrete pool type, so every query is checked
//! against both drivers by the compiler and by the test suite.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, Row, SqlitePool};

use super::metering::{UsageCounters, UsageGroupBy, UsageQuery, UsageRow, UsageSum};
use super::{Db, DynStore, Store, StoreError, StoreResult};
use crate::domain::budget::Budget;
use crate::domain::{
    ApiKey, AuditAction, AuditEvent, AuditOutcome, AuditQuery, Group, KeyGrant, KeyTerms, KeyUpdate, ModelList,
    NewApiKey, NewAuditEvent, NewUser, PermissionSet, Role, User, UserUpdate,
};

mod connect;
#[macro_use]
mod rows;
#[macro_use]
mod reports;

pub use connect::*;
use rows::*;

pub struct SqliteStore {
    pool: SqlitePool,
    /// Always `None`: SQLite has no replicas.
    read: Option<SqlitePool>,
}

pub struct PostgresStore {
    pool: PgPool,
    /// The read replica for lookups, when configured.
    read: Option<PgPool>,
}

macro_rules! sql_store {
    ($store:ident, $row:ty, $backend:literal) => {
        sql_rows!($store, $row);
        sql_reports!($store, $row);

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await.db()?;
                Ok(())
            }

            async fn key_grant(&self, key_id: &str) -> StoreResult<Option<KeyGrant>> {
                metrics::counter!("gatehouse_store_queries_total", "query" => "key_grant").increment(1);
                let row = self
                    .lookup(
                        "SELECT k.id, k.secret_hash, k.permissions, k.expires_at, k.revoked_at, k.rate_limit, \
                         k.allowed_models, k.previous_secret_hash, k.previous_secret_expires_at, k.user_id, u.email, \
                         u.role, u.group_name, u.disabled, u.rate_limit AS user_rate_limit, k.token_limit, \
                         k.spend_limit, u.token_limit AS user_token_limit, u.spend_limit AS user_spend_limit \
                         FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = $1",
                        key_id,
                    )
                    .await.db()?;
                row.as_ref().map(Self::grant).transpose()
            }

            async fn create_user(&self, user: &NewUser) -> StoreResult<User> {
                Self::insert_user(&self.pool, user).await
            }

            async fn create_linked_user(&self, user: &NewUser, provider: &str, subject: &str) -> StoreResult<User> {
                let mut tx = self.pool.begin().await.db()?;
                let created = Self::insert_user(&mut *tx, user).await.db()?;
                sqlx::query(
                    "INSERT INTO user_identities (provider, subject, user_id, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(provider)
                .bind(subject)
                .bind(&created.id)
                .bind(created.created_at)
                .execute(&mut *tx)
                .await.db()?;
                tx.commit().await.db()?;
                Ok(created)
            }

            async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
                metrics::counter!("gatehouse_store_queries_total", "query" => "user_by_id").increment(1);
                self.user_where("id", id).await
            }

            async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
                self.user_where("email", &email.to_lowercase()).await
            }

            async fn user_by_identity(&self, provider: &str, subject: &str) -> StoreResult<Option<User>> {
                let sql = format!(
                    "SELECT {} FROM users u JOIN user_identities i ON i.user_id = u.id \
                     WHERE i.provider = $1 AND i.subject = $2",
                    USER_COLUMNS_U
                );
                let row = sqlx::query(&sql).bind(provider).bind(subject).fetch_optional(&self.pool).await.db()?;
                row.as_ref().map(Self::user).transpose()
            }

            async fn link_identity(&self, provider: &str, subject: &str, user_id: &str) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO user_identities (provider, subject, user_id, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(provider)
                .bind(subject)
                .bind(user_id)
                .bind(now())
                .execute(&self.pool)
                .await.db()?;
                Ok(())
            }

            async fn list_users(&self) -> StoreResult<Vec<User>> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, email");
                let rows = sqlx::query(&sql).fetch_all(&self.pool).await.db()?;
                rows.iter().map(Self::user).collect()
            }

            async fn update_user(&self, id: &str, update: &UserUpdate) -> StoreResult<Option<User>> {
                // Disabling ends the user's sessions for good: enabling them
                // again does not bring the old tokens back.
                let sql = format!(
                    "UPDATE users SET role = COALESCE($2, role), group_name = COALESCE($3, group_name), \
                     disabled = COALESCE($4, disabled), updated_at = $5, \
                     rate_limit = CASE WHEN $6 THEN $7 ELSE rate_limit END, \
                     email_verified = COALESCE($8, email_verified), \
                     token_limit = CASE WHEN $9 THEN $10 ELSE token_limit END, \
                     spend_limit = CASE WHEN $11 THEN $12 ELSE spend_limit END, \
                     tokens_valid_after = CASE WHEN $4 THEN \
                     (CASE WHEN tokens_valid_after >= $5 THEN tokens_valid_after + 1 ELSE $5 END) \
                     ELSE tokens_valid_after END \
                     WHERE id = $1 RETURNING {USER_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(id)
                    .bind(update.role.map(Role::as_str))
                    .bind(update.group.as_deref())
                    .bind(update.disabled)
                    .bind(now())
                    .bind(update.rate_limit.is_some())
                    .bind(update.rate_limit.flatten().map(|l| l.to_string()))
                    .bind(update.email_verified)
                    .bind(budget_binds(update.budget.tokens).0)
                    .bind(budget_binds(update.budget.tokens).1)
                    .bind(budget_binds(update.budget.spend).0)
                    .bind(budget_binds(update.budget.spend).1)
                    .fetch_optional(&self.pool)
                    .await.db()?;
                row.as_ref().map(Self::user).transpose()
            }

            async fn create_group(&self, group: &Group) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO groups (name, requests_per_period, period_seconds, burst, allowed_models, created_at, \
                     token_limit, spend_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&group.name)
                .bind(group.requests_per_period)
                .bind(group.period_seconds)
                .bind(group.burst)
                .bind(group.models.as_ref().map(ToString::to_string))
                .bind(now())
                .bind(group.budget.tokens.map(|t| t.to_string()))
                .bind(group.budget.spend.map(|s| s.to_string()))
                .execute(&self.pool)
                .await.db()?;
                Ok(())
            }

            async fn update_group(&self, group: &Group) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE groups SET requests_per_period = $2, period_seconds = $3, burst = $4, allowed_models = $5, \
                     token_limit = $6, spend_limit = $7 WHERE name = $1",
                )
                .bind(&group.name)
                .bind(group.requests_per_period)
                .bind(group.period_seconds)
                .bind(group.burst)
                .bind(group.models.as_ref().map(ToString::to_string))
                .bind(group.budget.tokens.map(|t| t.to_string()))
                .bind(group.budget.spend.map(|s| s.to_string()))
                .execute(&self.pool)
                .await.db()?;
                Ok(done.rows_affected() > 0)
            }

            async fn password_hash(&self, user_id: &str) -> StoreResult<Option<String>> {
                let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await.db()?;
                Ok(match row {
                    Some(r) => r.try_get("password_hash").db()?,
                    None => None,
                })
            }

            async fn set_password(&self, user_id: &str, hash: &str) -> StoreResult<bool> {
                let sql = "UPDATE users SET password_hash = $2, updated_at = $3, tokens_valid_after = \
                           CASE WHEN tokens_valid_after >= $3 THEN tokens_valid_after + 1 ELSE $3 END WHERE id = $1";
                let done = sqlx::query(sql).bind(user_id).bind(hash).bind(now()).execute(&self.pool).await.db()?;
                Ok(done.rows_affected() > 0)
            }

            async fn end_sessions(&self, user_id: &str, at: i64) -> StoreResult<bool> {
                // Past every token issued so far: to now, or one second past
                // the last move when that was this very second (tokens issued
                // since then carry the second after it; see `Jwt::issue`).
                let sql = "UPDATE users SET updated_at = $2, tokens_valid_after = \
                           CASE WHEN tokens_valid_after >= $2 THEN tokens_valid_after + 1 ELSE $2 END WHERE id = $1";
                let done = sqlx::query(sql).bind(user_id).bind(at).execute(&self.pool).await.db()?;
                Ok(done.rows_affected() > 0)
            }

            async fn revoke_token(&self, jti: &str, user_id: &str, expires_at: i64, at: i64) -> StoreResult<bool> {
                // The affected-row count decides: of concurrent revocations of
                // one token (on any replica), exactly one inserts the row.
                let done = sqlx::query(
                    "INSERT INTO revoked_tokens (jti, user_id, expires_at, revoked_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (jti) DO NOTHING",
                )
                .bind(jti)
                .bind(user_id)
                .bind(expires_at)
                .bind(at)
                .execute(&self.pool)
                .await.db()?;
                Ok(done.rows_affected() == 1)
            }

            async fn revoked_tokens_since(&self, since: i64, expired_after: i64) -> StoreResult<Vec<(String, i64)>> {
                let rows = sqlx::query(
                    "SELECT jti, expires_at FROM revoked_tokens WHERE revoked_at >= $1 AND expires_at > $2",
                )
                .bind(since)
                .bind(expired_after)
                .fetch_all(&self.pool)
                .await.db()?;
                rows.iter().map(|r| Ok((r.try_get("jti").db()?, r.try_get("expires_at").db()?))).collect()
            }

            async fn group(&self, name: &str) -> StoreResult<Option<Group>> {
                let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE name = $1");
                let row = self.lookup(&sql, name).await.db()?;
                row.as_ref().map(Self::group).transpose()
            }

            async fn list_groups(&self) -> StoreResult<Vec<Group>> {
                let sql = format!("SELECT {GROUP_COLUMNS} FROM groups ORDER BY name");
                let rows = sqlx::query(&sql).fetch_all(&self.pool).await.db()?;
                rows.iter().map(Self::group).collect()
            }

            async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKey> {
                let sql = format!(
                    "INSERT INTO api_keys (id, user_id, name, secret_hash, permissions, expires_at, created_at, \
                     allowed_models, token_limit, spend_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     RETURNING {KEY_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(&key.id)
                    .bind(&key.user_id)
                    .bind(&key.name)
                    .bind(&key.secret_hash[..])
                    .bind(key.permissions.map(|p| p.to_string()))
                    .bind(key.expires_at)
                    .bind(now())
                    .bind(key.models.as_ref().map(ToString::to_string))
                    .bind(key.budget.tokens.map(|t| t.to_string()))
                    .bind(key.budget.spend.map(|s| s.to_string()))
                    .fetch_one(&self.pool)
                    .await.db()?;
                Self::key(&row)
            }

            async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
                let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.db()?;
                row.as_ref().map(Self::key).transpose()
            }

            async fn list_api_keys(&self, user_id: Option<&str>) -> StoreResult<Vec<ApiKey>> {
                let sql = format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE ($1 IS NULL OR user_id = $1) \
                     ORDER BY created_at DESC, id"
                );
                let rows = sqlx::query(&sql).bind(user_id).fetch_all(&self.pool).await.db()?;
                rows.iter().map(Self::key).collect()
            }

            async fn update_api_key(&self, id: &str, update: &KeyUpdate) -> StoreResult<Option<ApiKey>> {
                let sql = format!(
                    "UPDATE api_keys SET rate_limit = CASE WHEN $2 THEN $3 ELSE rate_limit END, \
                     allowed_models = CASE WHEN $4 THEN $5 ELSE allowed_models END, \
                     token_limit = CASE WHEN $6 THEN $7 ELSE token_limit END, \
                     spend_limit = CASE WHEN $8 THEN $9 ELSE spend_limit END \
                     WHERE id = $1 RETURNING {KEY_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(id)
                    .bind(update.rate_limit.is_some())
                    .bind(update.rate_limit.flatten().map(|l| l.to_string()))
                    .bind(update.models.is_some())
                    .bind(update.models.clone().flatten().map(|m| m.to_string()))
                    .bind(budget_binds(update.budget.tokens).0)
                    .bind(budget_binds(update.budget.tokens).1)
                    .bind(budget_binds(update.budget.spend).0)
                    .bind(budget_binds(update.budget.spend).1)
                    .fetch_optional(&self.pool)
                    .await.db()?;
                row.as_ref().map(Self::key).transpose()
            }

            async fn revoke_api_key(&self, id: &str, at: i64) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .bind(at)
                    .execute(&self.pool)
                    .await.db()?;
                Ok(done.rows_affected() > 0)
            }

            async fn rotate_api_key(
                &self,
                id: &str,
                secret_hash: &[u8; 32],
                previous_until: Option<i64>,
                at: i64,
            ) -> StoreResult<Option<ApiKey>> {
                let sql = format!(
                    "UPDATE api_keys SET \
                     previous_secret_hash = CASE WHEN $3 IS NULL THEN NULL ELSE secret_hash END, \
                     previous_secret_expires_at = $3, secret_hash = $2, rotated_at = $4 \
                     WHERE id = $1 AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(id)
                    .bind(&secret_hash[..])
                    .bind(previous_until)
                    .bind(at)
                    .fetch_optional(&self.pool)
                    .await.db()?;
                row.as_ref().map(Self::key).transpose()
            }

            async fn touch_api_keys(&self, used: &[(String, i64)]) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.db()?;
                for (id, at) in used {
                    sqlx::query(
                        "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 \
                         AND (last_used_at IS NULL OR last_used_at < $2)",
                    )
                    .bind(id)
                    .bind(*at)
                    .execute(&mut *tx)
                    .await.db()?;
                }
                tx.commit().await.db()?;
                Ok(())
            }

            async fn record_audit(&self, e: &NewAuditEvent) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO audit_events (at, action, outcome, actor_id, target, client_ip, detail) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(e.at)
                .bind(e.action.as_str())
                .bind(e.action.outcome().as_str())
                .bind(&e.actor_id)
                .bind(&e.target)
                .bind(&e.client_ip)
                .bind(&e.detail)
                .execute(&self.pool)
                .await.db()?;
                Ok(())
            }

            async fn latest_change(&self) -> StoreResult<i64> {
                let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS id FROM changes").fetch_one(&self.pool).await.db()?;
                Ok(row.try_get("id").db()?)
            }

            async fn changes_after(&self, after: i64, limit: i64) -> StoreResult<Vec<(i64, String, String)>> {
                // Always the primary: a replica's lag would delay revocations.
                let rows = sqlx::query("SELECT id, kind, ref FROM changes WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await.db()?;
                rows.iter().map(|r| Ok((r.try_get("id").db()?, r.try_get("kind").db()?, r.try_get("ref").db()?))).collect()
            }

            async fn prune_changes(&self, before: i64) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM changes WHERE at < $1").bind(before).execute(&self.pool).await.db()?;
                Ok(done.rows_affected())
            }

            async fn audit_events(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
                self.query_audit(q).await
            }

            async fn add_usage(&self, rows: &[UsageRow]) -> StoreResult<()> {
                self.insert_usage(rows).await
            }

            async fn usage(&self, q: &UsageQuery) -> StoreResult<Vec<UsageSum>> {
                self.query_usage(q).await
            }
        }
    };
}

sql_store!(SqliteStore, sqlx::sqlite::SqliteRow, "sqlite");
sql_store!(PostgresStore, sqlx::postgres::PgRow, "postgres");
