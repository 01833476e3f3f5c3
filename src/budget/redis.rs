//! Budgets shared by every replica: counters and open reservations in Redis,
//! changed only by atomic scripts. Every key carries the one hash tag
//! `{gatehouse-budget}`, so a reservation that counts against a key's, a
//! user's and a group's budget touches a single Redis Cluster slot (exact,
//! at the price of one node's throughput for budget traffic).
//!
//! Redis unreachable: a budgeted request is refused (503); a settlement is
//! left for the deadline, when the reservation is charged as reserved.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;

use super::ledger::{Actual, Ledger, LedgerError, Record, Reserved};
use crate::ratelimit::redis::RedisLimiter;
use crate::redis_target::Conn;

const PREFIX: &str = "gatehouse:budget:{gatehouse-budget}";

/// KEYS: record, due set, counters. ARGV: record, deadline, record TTL, id,
/// then per counter: bucket, oldest, amount, limit, retention.
const RESERVE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
local n = #KEYS - 2
local used, firsts = {}, {}
for i = 1, n do
  local base = 4 + (i - 1) * 5
  local bucket = tonumber(ARGV[base + 1])
  local oldest = tonumber(ARGV[base + 2])
  local amount = tonumber(ARGV[base + 3])
  local limit = tonumber(ARGV[base + 4])
  local flat = redis.call('HGETALL', KEYS[i + 2])
  local total, first = 0, bucket
  for j = 1, #flat, 2 do
    local b = tonumber(flat[j])
    if b < oldest then
      redis.call('HDEL', KEYS[i + 2], flat[j])
    else
      total = total + tonumber(flat[j + 1])
      if b < first then first = b end
    end
  end
  if total + amount > limit then return {0, i - 1, total, first} end
  used[i] = total + amount
  firsts[i] = first
end
for i = 1, n do
  local base = 4 + (i - 1) * 5
  redis.call('HINCRBY', KEYS[i + 2], ARGV[base + 1], ARGV[base + 3])
  redis.call('EXPIRE', KEYS[i + 2], ARGV[base + 5])
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
local out = {1}
for i = 1, n do
  out[#out + 1] = used[i]
  out[#out + 1] = firsts[i]
end
return out
";

/// KEYS: record, due set, counters. ARGV: the record as reserved, id,
/// measured (1/0), tokens, nano-dollars, then per counter: bucket, amount,
/// spend (1/0). Returns 1 if this call settled the reservation.
const SETTLE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if ARGV[3] == '1' then
  for i = 1, #KEYS - 2 do
    local base = 5 + (i - 1) * 3
    local real = ARGV[4]
    if ARGV[base + 3] == '1' then real = ARGV[5] end
    local delta = tonumber(real) - tonumber(ARGV[base + 2])
    if redis.call('HEXISTS', KEYS[i + 2], ARGV[base + 1]) == 1 then
      redis.call('HINCRBY', KEYS[i + 2], ARGV[base + 1], string.format('%.0f', delta))
    end
  end
end
return 1
";

/// KEYS: counter. ARGV: oldest bucket.
const USED: &str = r"
local flat = redis.call('HGETALL', KEYS[1])
local total = 0
for j = 1, #flat, 2 do
  if tonumber(flat[j]) >= tonumber(ARGV[1]) then total = total + tonumber(flat[j + 1]) end
end
return total
";

static RESERVE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RESERVE));
static SETTLE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SETTLE));
static USED_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(USED));

/// Shares the rate limiter's connection.
pub struct RedisLedger {
    redis: RedisLimiter,
    timeout: Duration,
}

fn counter_key(counter: &str) -> String {
    format!("{PREFIX}:c:{counter}")
}

fn record_key(id: &str) -> String {
    format!("{PREFIX}:r:{id}")
}

fn due_key() -> String {
    format!("{PREFIX}:due")
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    metrics::counter!("gatehouse_redis_errors_total").increment(1);
    LedgerError(e.to_string())
}

impl RedisLedger {
    pub fn new(redis: RedisLimiter, timeout: Duration) -> Self {
        RedisLedger { redis, timeout }
    }

    async fn conn(&self) -> Result<Conn, LedgerError> {
        self.redis.connection().await.ok_or_else(|| LedgerError("not connected".into()))
    }

    async fn run<T: redis::FromRedisValue>(&self, invocation: redis::ScriptInvocation<'_>) -> Result<T, LedgerError> {
        let mut conn = self.conn().await?;
        tokio::time::timeout(self.timeout, invocation.invoke_async::<T>(&mut conn))
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(unavailable)
    }

    async fn settle_record(&self, stored: &str, record: &Record, actual: Option<Actual>) -> Result<bool, LedgerError> {
        let mut invocation = SETTLE_SCRIPT.key(record_key(&record.id));
        invocation.key(due_key());
        invocation.arg(stored).arg(&record.id).arg(u8::from(actual.is_some()));
        let actual = actual.unwrap_or(Actual { tokens: 0, nano_usd: 0 });
        invocation.arg(actual.tokens).arg(actual.nano_usd);
        for charge in &record.charges {
            invocation.key(counter_key(&charge.counter));
            invocation.arg(charge.bucket).arg(charge.amount).arg(u8::from(charge.spend));
        }
        Ok(self.run::<i64>(invocation).await? == 1)
    }

    async fn stored(&self, id: &str) -> Result<Option<(String, Record)>, LedgerError> {
        let mut conn = self.conn().await?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(record_key(id));
        let get = cmd.query_async::<Option<String>>(&mut conn);
        let stored = tokio::time::timeout(self.timeout, get)
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(unavailable)?;
        let Some(stored) = stored else { return Ok(None) };
        match serde_json::from_str::<Record>(&stored) {
            Ok(record) => Ok(Some((stored, record))),
            Err(e) => Err(LedgerError(format!("unreadable reservation {id}: {e}"))),
        }
    }
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn reserve(&self, record: &Record, now: i64) -> Result<Reserved, LedgerError> {
        let stored = serde_json::to_string(record).map_err(|e| LedgerError(e.to_string()))?;
        let ttl = record.deadline.saturating_sub(now).clamp(1, 7 * 86_400) + 3600;
        let mut invocation = RESERVE_SCRIPT.key(record_key(&record.id));
        invocation.key(due_key());
        invocation.arg(stored).arg(record.deadline).arg(ttl).arg(&record.id);
        for charge in &record.charges {
            invocation.key(counter_key(&charge.counter));
            invocation.arg(charge.bucket).arg(charge.oldest).arg(charge.amount).arg(charge.limit).arg(charge.retention);
        }
        let out: Vec<i64> = self.run(invocation).await?;
        match out.as_slice() {
            [1, rest @ ..] if rest.len() == 2 * record.charges.len() => Ok(Reserved::Granted {
                used: rest.iter().step_by(2).copied().collect(),
                oldest: rest.iter().skip(1).step_by(2).copied().collect(),
            }),
            [0, index, used, oldest] => {
                Ok(Reserved::Refused { index: usize::try_from(*index).unwrap_or(0), used: *used, oldest: *oldest })
            }
            [-1] => Err(LedgerError("reservation id reused".into())),
            other => Err(LedgerError(format!("unexpected reply {other:?}"))),
        }
    }

    async fn settle(&self, id: &str, actual: Option<Actual>) -> Result<Option<Record>, LedgerError> {
        let Some((stored, record)) = self.stored(id).await? else { return Ok(None) };
        Ok(self.settle_record(&stored, &record, actual).await?.then_some(record))
    }

    async fn expire(&self, now: i64, max: usize) -> Result<Vec<Record>, LedgerError> {
        let mut conn = self.conn().await?;
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(due_key()).arg("-inf").arg(now).arg("LIMIT").arg(0).arg(max);
        let query = cmd.query_async::<Vec<String>>(&mut conn);
        let due = tokio::time::timeout(self.timeout, query)
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for id in due {
            match self.stored(&id).await {
                Ok(Some((stored, record))) => {
                    if self.settle_record(&stored, &record, None).await? {
                        out.push(record);
                    }
                }
                found => {
                    if let Err(e) = found {
                        tracing::warn!(error = %e, "dropping an unreadable reservation");
                    }
                    let mut cmd = redis::cmd("ZREM");
                    cmd.arg(due_key()).arg(&id);
                    let _ = tokio::time::timeout(self.timeout, cmd.query_async::<i64>(&mut conn)).await;
                }
            }
        }
        Ok(out)
    }

    async fn used(&self, counter: &str, oldest: i64) -> Result<i64, LedgerError> {
        let mut invocation = USED_SCRIPT.key(counter_key(counter));
        invocation.arg(oldest);
        self.run(invocation).await
    }
}
