//! Limits shared by every replica: one Redis key per bucket holding its GCRA
//! "theoretical arrival time", updated by one atomic script that reads Redis's
//! own clock (so replicas with skewed clocks still agree). The bucket's key
//! carries its subject in a hash tag, so it lives on one Redis Cluster slot.
//!
//! Redis down: decisions fall back to the in-process limiter instead of
//! failing every request. Each replica then enforces the limit on its own, so
//! N replicas may together allow up to N times the budget until Redis returns;
//! refusing all traffic because a counter store is unreachable would be worse
//! for an inference gateway. The switch is logged once each way.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::RwLock;

use super::local::LocalLimiter;
use super::{Limit, Limiter, LimiterError, Outcome};
use crate::redis_target::{Conn, RedisTarget};

/// ARGV: emission interval (µs), burst. Returns allowed, remaining,
/// retry_after (µs), reset_after (µs).
const GCRA: &str = r"
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tau = emission * burst
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + emission
if new_tat - tau > now then
  return {0, 0, new_tat - tau - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.floor((now + tau - new_tat) / emission), 0, new_tat - now}
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

#[derive(Clone)]
pub struct RedisLimiter {
    target: Arc<RedisTarget>,
    conn: Arc<RwLock<Option<Conn>>>,
    fallback: LocalLimiter,
    degraded: Arc<AtomicBool>,
    timeout: Duration,
}

impl RedisLimiter {
    /// Never fails on an unreachable Redis: it connects in the background.
    pub fn new(target: Arc<RedisTarget>, fallback: LocalLimiter, timeout: Duration) -> Self {
        RedisLimiter { target, conn: Arc::default(), fallback, degraded: Arc::default(), timeout }
    }

    /// Whether decisions are currently made without Redis.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed) || self.conn.try_read().map(|c| c.is_none()).unwrap_or(false)
    }

    /// Connects, retrying every second until it works or `shutdown`. Once
    /// connected, a single server's or a cluster's connection reconnects by
    /// itself; a Sentinel one is dropped on error and made again here, which
    /// asks the sentinels for the primary anew.
    pub async fn connect(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if self.conn.read().await.is_none() {
                match self.target.connect().await {
                    Ok(conn) => {
                        *self.conn.write().await = Some(conn);
                        self.degraded.store(false, Ordering::Relaxed);
                        metrics::gauge!("gatehouse_ratelimit_redis_available").set(1.0);
                        tracing::info!(redis = self.target.kind(), "connected to Redis for rate limits");
                        if self.target.reconnects_itself() {
                            return;
                        }
                    }
                    Err(e) => self.mark_degraded(&e.to_string()),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = &mut shutdown => return,
            }
        }
    }

    /// The shared connection, when there is one (budgets use it too).
    pub async fn connection(&self) -> Option<Conn> {
        self.conn.read().await.clone()
    }

    fn mark_degraded(&self, error: &str) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            metrics::gauge!("gatehouse_ratelimit_redis_available").set(0.0);
            tracing::warn!(error, "Redis unavailable: rate limits fall back to this process alone");
        }
    }

    async fn shared(&self, key: &str, limit: Limit) -> Result<Outcome, String> {
        let Some(mut conn) = self.conn.read().await.clone() else { return Err("not connected".into()) };
        let redis_key =
            format!("gatehouse:rl:{{{key}}}:{}:{}:{}", limit.requests, limit.period.as_millis(), limit.burst);
        let emission = u64::try_from(limit.emission_interval().as_micros()).unwrap_or(u64::MAX).max(1);
        let mut invocation = SCRIPT.key(redis_key);
        invocation.arg(emission).arg(limit.burst);
        let call = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn);
        let (allowed, remaining, retry_us, reset_us) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(Outcome {
            allowed: allowed == 1,
            limit: limit.requests,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset_after: micros(reset_us),
            retry_after: micros(retry_us),
        })
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, key: &str, limit: Limit) -> Result<Outcome, LimiterError> {
        let started = std::time::Instant::now();
        let shared = self.shared(key, limit).await;
        metrics::histogram!("gatehouse_redis_duration_seconds").record(started.elapsed().as_secs_f64());
        match shared {
            Ok(outcome) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    metrics::gauge!("gatehouse_ratelimit_redis_available").set(1.0);
                    tracing::info!("Redis is back: rate limits are shared again");
                }
                Ok(outcome)
            }
            Err(e) => {
                self.mark_degraded(&e);
                if !self.target.reconnects_itself()
                    && let Ok(mut conn) = self.conn.try_write()
                {
                    *conn = None; // the connect loop asks the sentinels again
                }
                metrics::counter!("gatehouse_redis_errors_total").increment(1);
                metrics::counter!("gatehouse_ratelimit_fallback_total").increment(1);
                Ok(self.fallback.decide(key, limit))
            }
        }
    }
}
