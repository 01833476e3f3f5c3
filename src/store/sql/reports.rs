//! The reading queries behind the audit log and the usage reports, and the
//! batched usage upsert: the longest SQL, kept apart from the lookups.

/// Inherent methods the `Store` implementation delegates to.
macro_rules! sql_reports {
    ($store:ident, $row:ty) => {
        impl $store {
            async fn query_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
                let rows = sqlx::query(
                    "SELECT id, at, action, outcome, actor_id, target, client_ip, detail FROM audit_events \
                     WHERE ($1 IS NULL OR action = $1) AND ($2 IS NULL OR outcome = $2) \
                     AND ($3 IS NULL OR actor_id = $3) AND ($4 IS NULL OR target = $4) \
                     AND ($5 IS NULL OR at >= $5) AND ($6 IS NULL OR at <= $6) AND ($7 IS NULL OR id < $7) \
                     ORDER BY id DESC LIMIT $8",
                )
                .bind(q.action.map(AuditAction::as_str))
                .bind(q.outcome.map(AuditOutcome::as_str))
                .bind(&q.actor_id)
                .bind(&q.target)
                .bind(q.since)
                .bind(q.until)
                .bind(q.before)
                .bind(i64::from(q.limit))
                .fetch_all(&self.pool)
                .await
                .db()?;
                rows.iter()
                    .map(|r| {
                        Ok(AuditEvent {
                            id: r.try_get("id").db()?,
                            at: r.try_get("at").db()?,
                            action: r.try_get("action").db()?,
                            outcome: r.try_get("outcome").db()?,
                            actor_id: r.try_get("actor_id").db()?,
                            target: r.try_get("target").db()?,
                            client_ip: r.try_get("client_ip").db()?,
                            detail: r.try_get("detail").db()?,
                        })
                    })
                    .collect()
            }

            async fn insert_usage(&self, rows: &[UsageRow]) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.db()?;
                for r in rows {
                    let c = &r.counters;
                    sqlx::query(
                        "INSERT INTO usage_daily (day, user_id, group_name, key_id, model, requests, prompt_tokens, \
                         completion_tokens, cost_nano_usd, unmeasured) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (day, user_id, group_name, key_id, model) DO UPDATE SET \
                         requests = usage_daily.requests + excluded.requests, \
                         prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, \
                         completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, \
                         cost_nano_usd = usage_daily.cost_nano_usd + excluded.cost_nano_usd, \
                         unmeasured = usage_daily.unmeasured + excluded.unmeasured",
                    )
                    .bind(&r.day)
                    .bind(&r.user_id)
                    .bind(&r.group)
                    .bind(&r.key_id)
                    .bind(&r.model)
                    .bind(c.requests)
                    .bind(c.prompt_tokens)
                    .bind(c.completion_tokens)
                    .bind(c.cost_nano_usd)
                    .bind(c.unmeasured)
                    .execute(&mut *tx)
                    .await
                    .db()?;
                }
                tx.commit().await.db()?;
                Ok(())
            }

            async fn query_usage(&self, q: &UsageQuery) -> StoreResult<Vec<UsageSum>> {
                // The grouping columns come from the enum, never from the caller.
                let columns = match q.group_by {
                    UsageGroupBy::Day => "day",
                    UsageGroupBy::Model => "model",
                    UsageGroupBy::DayModel => "day, model",
                    UsageGroupBy::Total => "",
                };
                let (select, group) = if columns.is_empty() {
                    (String::new(), String::new())
                } else {
                    (format!("{columns}, "), format!(" GROUP BY {columns} ORDER BY {columns}"))
                };
                let limit = if q.limit == 0 { String::new() } else { format!(" LIMIT {}", q.limit) };
                // Only the filters given, so the planner sees plain
                // conditions and uses the (column, day) indexes.
                let filters = [
                    ("user_id =", &q.user_id),
                    ("group_name =", &q.group),
                    ("key_id =", &q.key_id),
                    ("model =", &q.model),
                    ("day >=", &q.from),
                    ("day <=", &q.to),
                ];
                let mut conditions = Vec::new();
                let mut values = Vec::new();
                for (condition, value) in filters {
                    if let Some(value) = value {
                        values.push(value.as_str());
                        conditions.push(format!("{condition} ${}", values.len()));
                    }
                }
                let filter =
                    if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
                let sql = format!(
                    "SELECT {select}CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS requests, \
                     CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
                     CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
                     CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) AS cost_nano_usd, \
                     CAST(COALESCE(SUM(unmeasured), 0) AS BIGINT) AS unmeasured \
                     FROM usage_daily{filter}{group}{limit}"
                );
                let mut query = sqlx::query(&sql);
                for value in values {
                    query = query.bind(value);
                }
                let rows = query.fetch_all(&self.pool).await.db()?;
                rows.iter()
                    .map(|r| {
                        Ok(UsageSum {
                            day: if q.group_by.by_day() { Some(r.try_get("day").db()?) } else { None },
                            model: if q.group_by.by_model() { Some(r.try_get("model").db()?) } else { None },
                            counters: UsageCounters {
                                requests: r.try_get("requests").db()?,
                                prompt_tokens: r.try_get("prompt_tokens").db()?,
                                completion_tokens: r.try_get("completion_tokens").db()?,
                                cost_nano_usd: r.try_get("cost_nano_usd").db()?,
                                unmeasured: r.try_get("unmeasured").db()?,
                            },
                        })
                    })
                    .collect()
            }
        }
    };
}
