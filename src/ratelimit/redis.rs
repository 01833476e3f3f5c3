//! Limits shared by every replica: one Redis key per bucket holding its GCRA
//! "theoretical arrival time", updated by one atomic script that reads Redis's
//! own clock (so replicas with skewed clocks still agree). The bucket's key
//! carries its subject in a hash tag, so it lives on one Redis Cluster slot.
//!
//! Decisions are batched: Checks waiting at the same moment hand theirs to
//! one task, which sends them together, in arrival order, to one script call
//! (per hash tag on a cluster, whose scripts may only touch one slot). The
//! script decides them one after the other inside Redis, atomically, exactly
//! as separate calls would: batching changes the cost, not the count. The
//! first Check of a quiet moment is sent at once; the ones that arrive while
//! a batch is out go in the next.
//!
//! Redis down: decisions fall back to the in-process limiter instead of
//! failing every request. Each replica then enforces the limit on its own, so
//! N replicas may together allow up to N times the budget until Redis returns;
//! refusing all traffic because a counter store is unreachable would be worse
//! for an inference gateway. The switch is logged once each way.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{RwLock, Semaphore, mpsc, oneshot};

use super::local::LocalLimiter;
use super::{Limit, Limiter, LimiterError, Outcome};
use crate::redis_target::{Conn, RedisTarget};

/// KEYS: the buckets; ARGV: emission interval (µs) and burst for each, in
/// turn. Returns four numbers per bucket: allowed, remaining, retry_after
/// (µs), reset_after (µs). Buckets are decided in order, so a bucket named
/// twice counts twice.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local emission = tonumber(ARGV[2 * i - 1])
  local tau = emission * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + emission
  local n = #out
  if new_tat - tau > now then
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 0, 0, new_tat - tau - now, tat - now
  else
    redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 1, math.floor((now + tau - new_tat) / emission), 0, new_tat - now
  end
end
return out
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

/// Most decisions in one script call.
const MAX_BATCH: usize = 256;
/// Batches out at once: a second keeps one slow answer from holding up
/// every Check; more would make the batches smaller.
const IN_FLIGHT: usize = 2;

/// One Check's decision, waiting for its batch.
struct Pending {
    key: String,
    limit: Limit,
    reply: oneshot::Sender<Result<Outcome, String>>,
}

#[derive(Clone)]
pub struct RedisLimiter {
    target: Arc<RedisTarget>,
    conn: Arc<RwLock<Option<Conn>>>,
    fallback: LocalLimiter,
    degraded: Arc<AtomicBool>,
    timeout: Duration,
    queue: mpsc::Sender<Pending>,
}

impl RedisLimiter {
    /// Never fails on an unreachable Redis: it connects in the background.
    /// Starts the task that sends the batches (it ends with the last clone
    /// of this limiter), so it must be called within a Tokio runtime.
    pub fn new(target: Arc<RedisTarget>, fallback: LocalLimiter, timeout: Duration) -> Self {
        let conn: Arc<RwLock<Option<Conn>>> = Arc::default();
        let (queue, pending) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(send_batches(pending, conn.clone(), target.kind() == "cluster", timeout));
        RedisLimiter { target, conn, fallback, degraded: Arc::default(), timeout, queue }
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

    /// Queues the decision for the next batch and waits for it, within the
    /// timeout. A decision still queued when its caller gave up is dropped
    /// unsent, so the fallback's count is the only one.
    async fn shared(&self, key: &str, limit: Limit) -> Result<Outcome, String> {
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.queue.send(Pending { key: key.to_owned(), limit, reply }).await.map_err(|_| "limiter stopped")?;
            answer.await.map_err(|_| "limiter stopped".to_owned())?
        };
        tokio::time::timeout(self.timeout, asked).await.map_err(|_| "timed out".to_owned())?
    }
}

/// Takes what is queued (at least one decision, at most [`MAX_BATCH`]) and
/// sends it as one script call per group, up to [`IN_FLIGHT`] batches out at
/// once; ends when every limiter handle is gone.
async fn send_batches(
    mut pending: mpsc::Receiver<Pending>,
    conn: Arc<RwLock<Option<Conn>>>,
    cluster: bool,
    timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if pending.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        batch.retain(|p| !p.reply.is_closed());
        let conn = conn.read().await.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            match conn {
                None => answer_all(batch, &Err("not connected".into())),
                Some(conn) if cluster => {
                    let groups = by_key(batch);
                    let calls = groups.into_iter().map(|group| decide(conn.clone(), group, timeout));
                    futures_util::future::join_all(calls).await;
                }
                Some(conn) => decide(conn, batch, timeout).await,
            }
            metrics::histogram!("gatehouse_redis_duration_seconds").record(started.elapsed().as_secs_f64());
            drop(slot);
        });
    }
}

/// The batch split so that each group's buckets share a hash tag (one
/// cluster slot); arrival order is kept within each group.
fn by_key(batch: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut groups: Vec<Vec<Pending>> = Vec::new();
    for p in batch {
        match groups.iter_mut().find(|g| g[0].key == p.key) {
            Some(group) => group.push(p),
            None => groups.push(vec![p]),
        }
    }
    groups
}

/// One script call for the group, each caller answered with its bucket's
/// outcome (or everyone with the error).
async fn decide(mut conn: Conn, group: Vec<Pending>, timeout: Duration) {
    if group.is_empty() {
        return;
    }
    let mut invocation = SCRIPT.prepare_invoke();
    for p in &group {
        let limit = p.limit;
        let emission = u64::try_from(limit.emission_interval().as_micros()).unwrap_or(u64::MAX).max(1);
        invocation
            .key(format!("gatehouse:rl:{{{}}}:{}:{}:{}", p.key, limit.requests, limit.period.as_millis(), limit.burst))
            .arg(emission)
            .arg(limit.burst);
    }
    let call = invocation.invoke_async::<Vec<i64>>(&mut conn);
    let answered = match tokio::time::timeout(timeout, call).await {
        Err(_) => Err("timed out".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(numbers)) if numbers.len() != 4 * group.len() => Err("unexpected script answer".to_owned()),
        Ok(Ok(numbers)) => Ok(numbers),
    };
    let numbers = match answered {
        Ok(numbers) => numbers,
        Err(e) => return answer_all(group, &Err(e)),
    };
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    for (p, n) in group.into_iter().zip(numbers.chunks_exact(4)) {
        let outcome = Outcome {
            allowed: n[0] == 1,
            limit: p.limit.requests,
            remaining: u32::try_from(n[1]).unwrap_or(0),
            reset_after: micros(n[3]),
            retry_after: micros(n[2]),
        };
        let _ = p.reply.send(Ok(outcome));
    }
}

fn answer_all(group: Vec<Pending>, answer: &Result<Outcome, String>) {
    for p in group {
        let _ = p.reply.send(answer.clone());
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, key: &str, limit: Limit) -> Result<Outcome, LimiterError> {
        match self.shared(key, limit).await {
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
