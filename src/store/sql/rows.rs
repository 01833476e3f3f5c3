//! Rows to records, and the lookups every query shares, for each backend's
//! row type (instantiated by `sql_store!`).

use super::*;

pub(super) const USER_COLUMNS: &str = "id, email, name, role, group_name, disabled, created_at, rate_limit, email_verified, \
                            tokens_valid_after, token_limit, spend_limit";
pub(super) const USER_COLUMNS_U: &str = "u.id, u.email, u.name, u.role, u.group_name, u.disabled, u.created_at, u.rate_limit, \
                              u.email_verified, u.tokens_valid_after, u.token_limit, u.spend_limit";
pub(super) const KEY_COLUMNS: &str = "id, user_id, name, permissions, expires_at, revoked_at, created_at, last_used_at, rate_limit, \
                           allowed_models, rotated_at, previous_secret_expires_at, token_limit, spend_limit";
pub(super) const GROUP_COLUMNS: &str =
    "name, requests_per_period, period_seconds, burst, allowed_models, token_limit, spend_limit";

pub(super) fn parse_role(s: &str) -> StoreResult<Role> {
    s.parse().map_err(|e| StoreError::Internal(format!("corrupt role: {e}")))
}

pub(super) fn parse_permissions(s: Option<String>) -> StoreResult<Option<PermissionSet>> {
    s.map(|s| PermissionSet::parse_list(&s))
        .transpose()
        .map_err(|e| StoreError::Internal(format!("corrupt permissions: {e}")))
}

pub(super) fn parse_limit(s: Option<String>) -> StoreResult<Option<crate::ratelimit::Limit>> {
    s.map(|s| s.parse()).transpose().map_err(|e| StoreError::Internal(format!("corrupt rate limit: {e}")))
}

pub(super) fn parse_budget(tokens: Option<String>, spend: Option<String>) -> StoreResult<Budget> {
    Budget::from_columns(tokens.as_deref(), spend.as_deref())
        .map_err(|e| StoreError::Internal(format!("corrupt budget: {e}")))
}

/// `(change?, new value)` for a `CASE WHEN $n THEN $m ELSE column END` update.
pub(super) fn budget_binds<T: ToString>(change: Option<Option<T>>) -> (bool, Option<String>) {
    (change.is_some(), change.flatten().map(|v| v.to_string()))
}

pub(super) fn parse_models(s: Option<String>) -> StoreResult<Option<ModelList>> {
    s.map(|s| s.parse()).transpose().map_err(|e| StoreError::Internal(format!("corrupt model list: {e}")))
}

pub(super) fn parse_hash(bytes: Vec<u8>) -> StoreResult<[u8; 32]> {
    bytes.try_into().map_err(|_| StoreError::Internal("corrupt secret hash".into()))
}

pub(super) fn now() -> i64 {
    crate::clock::Clock::now(&crate::clock::SystemClock)
}

macro_rules! sql_rows {
    ($store:ident, $row:ty) => {
        impl $store {
            fn user(r: &$row) -> StoreResult<User> {
                Ok(User {
                    id: r.try_get("id").db()?,
                    email: r.try_get("email").db()?,
                    name: r.try_get("name").db()?,
                    role: parse_role(r.try_get("role").db()?)?,
                    group: r.try_get("group_name").db()?,
                    disabled: r.try_get("disabled").db()?,
                    created_at: r.try_get("created_at").db()?,
                    rate_limit: parse_limit(r.try_get("rate_limit").db()?)?,
                    email_verified: r.try_get("email_verified").db()?,
                    tokens_valid_after: r.try_get("tokens_valid_after").db()?,
                    budget: parse_budget(r.try_get("token_limit").db()?, r.try_get("spend_limit").db()?)?,
                })
            }

            fn group(r: &$row) -> StoreResult<Group> {
                Ok(Group {
                    name: r.try_get("name").db()?,
                    requests_per_period: r.try_get("requests_per_period").db()?,
                    period_seconds: r.try_get("period_seconds").db()?,
                    burst: r.try_get("burst").db()?,
                    models: parse_models(r.try_get("allowed_models").db()?)?,
                    budget: parse_budget(r.try_get("token_limit").db()?, r.try_get("spend_limit").db()?)?,
                })
            }

            fn key(r: &$row) -> StoreResult<ApiKey> {
                Ok(ApiKey {
                    id: r.try_get("id").db()?,
                    user_id: r.try_get("user_id").db()?,
                    name: r.try_get("name").db()?,
                    permissions: parse_permissions(r.try_get("permissions").db()?)?,
                    expires_at: r.try_get("expires_at").db()?,
                    revoked_at: r.try_get("revoked_at").db()?,
                    created_at: r.try_get("created_at").db()?,
                    last_used_at: r.try_get("last_used_at").db()?,
                    rate_limit: parse_limit(r.try_get("rate_limit").db()?)?,
                    models: parse_models(r.try_get("allowed_models").db()?)?,
                    rotated_at: r.try_get("rotated_at").db()?,
                    previous_secret_expires_at: r.try_get("previous_secret_expires_at").db()?,
                    budget: parse_budget(r.try_get("token_limit").db()?, r.try_get("spend_limit").db()?)?,
                })
            }

            fn grant(r: &$row) -> StoreResult<KeyGrant> {
                Ok(KeyGrant {
                    key_id: Arc::from(r.try_get::<&str, _>("id").db()?),
                    secret_hash: parse_hash(r.try_get("secret_hash").db()?)?,
                    permissions: parse_permissions(r.try_get("permissions").db()?)?,
                    expires_at: r.try_get("expires_at").db()?,
                    revoked_at: r.try_get("revoked_at").db()?,
                    user_id: Arc::from(r.try_get::<&str, _>("user_id").db()?),
                    email: Arc::from(r.try_get::<&str, _>("email").db()?),
                    role: parse_role(r.try_get("role").db()?)?,
                    group: Arc::from(r.try_get::<&str, _>("group_name").db()?),
                    user_disabled: r.try_get("disabled").db()?,
                    terms: KeyTerms {
                        key_rate_limit: parse_limit(r.try_get("rate_limit").db()?)?,
                        user_rate_limit: parse_limit(r.try_get("user_rate_limit").db()?)?,
                        key_models: parse_models(r.try_get("allowed_models").db()?)?,
                        key_budget: parse_budget(r.try_get("token_limit").db()?, r.try_get("spend_limit").db()?)?,
                        user_budget: parse_budget(
                            r.try_get("user_token_limit").db()?,
                            r.try_get("user_spend_limit").db()?,
                        )?,
                        previous_secret: match (
                            r.try_get::<Option<Vec<u8>>, _>("previous_secret_hash").db()?,
                            r.try_get::<Option<i64>, _>("previous_secret_expires_at").db()?,
                        ) {
                            (Some(hash), Some(until)) => Some((parse_hash(hash)?, until)),
                            _ => None,
                        },
                    }
                    .boxed(),
                })
            }

            async fn insert_user<'e>(
                on: impl sqlx::Executor<'e, Database = <$row as Row>::Database>,
                user: &NewUser,
            ) -> StoreResult<User> {
                let id = uuid::Uuid::new_v4().to_string();
                let now = now();
                let sql = format!(
                    "INSERT INTO users (id, email, name, role, group_name, password_hash, disabled, created_at, \
                     updated_at, email_verified) \
                     VALUES ($1, $2, $3, $4, $5, $7, FALSE, $6, $6, $8) RETURNING {USER_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(&id)
                    .bind(user.email.to_lowercase())
                    .bind(&user.name)
                    .bind(user.role.as_str())
                    .bind(&user.group)
                    .bind(now)
                    .bind(&user.password_hash)
                    .bind(user.email_verified)
                    .fetch_one(on)
                    .await.db()?;
                Self::user(&row)
            }

            async fn user_where(&self, column: &str, value: &str) -> StoreResult<Option<User>> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1");
                let row = self.lookup(&sql, value).await.db()?;
                row.as_ref().map(Self::user).transpose()
            }

            /// A lookup by one value, on the read replica when there is one.
            /// A miss or an error there is asked again of the primary, so
            /// replication lag never hides a key just created and a replica
            /// outage never fails a Check.
            async fn lookup(&self, sql: &str, value: &str) -> StoreResult<Option<$row>> {
                if let Some(read) = &self.read {
                    match sqlx::query(sql).bind(value).fetch_optional(read).await {
                        Ok(Some(row)) => return Ok(Some(row)),
                        Ok(None) => {}
                        Err(e) => tracing::debug!(error = %e, "read replica unavailable; asking the primary"),
                    }
                }
                sqlx::query(sql).bind(value).fetch_optional(&self.pool).await.db()
            }
        }
    };
}
