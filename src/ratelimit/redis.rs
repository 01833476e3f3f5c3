//! Limits shared by every replica: one Redis key per bucket holding its GCRA
//! "theoretical arrival time", updated by one atomic script that reads Redis's
//! own clock (so replicas with skewed clocks still agree). The bucket's key
//! carries its subject in a hash tag, so it lives on one Redis Cluster slot.
//!
//! Decisions are batched. A Check that finds no batch out sends its
//! decision at once; Checks that arrive meanwhile queue, and when the batch
//! comes back the first of them sends the next: its own decision and the
//! rest queued, in arrival order, as one script call (one per hash tag on a
//! cluster, whose scripts touch one slot). The script decides them one after
//! the other inside Redis, atomically, exactly as separate calls would:
//! batching changes the cost, not the count. Each batch's call runs as a
//! task of its own, so a Check cancelled while its batch is out leaves the
//! others' decisions answered, counted once.
//!
//! Redis down: decisions fall back to the in-process limiter instead of
//! failing every request. Each replica then enforces the limit on its own, so
//! N replicas may together allow up to N times the budget until Redis returns;
//! refusing all traffic because a counter store is unreachable would be worse
//! for an inference gateway. The switch is logged once each way.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{RwLock, oneshot};

use super::local::LocalLimiter;
use super::{Limit, Limiter, LimiterError, Outcome};
use crate::redis_target::{Conn, RedisTarget};

/// KEYS: the buckets; ARGV: emission interval (µs) and burst for each, in
/// turn. Returns four numbers per bucket: allowed, remaining, retry_after
/// (µs), reset_after (µs). Buckets are decided in order, so a bucket named
/// twice counts twice; each bucket is read once and written once per call.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats, spent, out = {}, {}, {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local emission = tonumber(ARGV[2 * i - 1])
  local tau = emission * tonumber(ARGV[2 * i])
  local tat = tats[key]
  if tat == nil then tat = tonumber(redis.call('GET', key)) or now end
  if tat < now then tat = now end
  local new_tat = tat + emission
  local n = #out
  if new_tat - tau > now then
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 0, 0, new_tat - tau - now, tat - now
    tats[key] = tat
  else
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 1, math.floor((now + tau - new_tat) / emission), 0, new_tat - now
    tats[key] = new_tat
    spent[key] = true
  end
end
for key in pairs(spent) do
  local tat = tats[key]
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return out
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

/// Most decisions in one script call.
const MAX_BATCH: usize = 128;

/// Decisions waiting for the batch out at the moment to come back.
#[derive(Default)]
struct Queue {
    /// Whether a batch is out (its lead passes to the first waiting).
    sending: bool,
    waiting: VecDeque<Waiting>,
    /// The next waiting decision's number.
    tickets: u64,
}

/// One Check's decision, queued behind the batch out.
struct Waiting {
    ticket: u64,
    key: String,
    limit: Limit,
    turn: oneshot::Sender<Turn>,
}

/// What a waiting Check is told.
enum Turn {
    /// Its decision, from the batch it went in.
    Decided(Result<Outcome, Failed>),
    /// It sends the next batch: its own decision and these.
    Lead(Leadership),
}

/// Why a decision was not made in Redis.
#[derive(Debug)]
enum Failed {
    /// Redis did not answer, or answered an error.
    Redis(String),
    /// The decision waited longer than the timeout for a batch to go in (the
    /// queue is longer than Redis keeps up with); Redis is not at fault.
    Queued,
}

/// The right to send the next batch, with the decisions queued behind it.
/// Dropped, for whatever reason (its batch answered, or its Check cancelled
/// before sending), it passes to the first decision still waiting, so the
/// queue never stalls; decisions it held unsent are asked again by their
/// Checks.
struct Leadership {
    /// `None` once passed on.
    queue: Option<Arc<Mutex<Queue>>>,
    batch: Vec<Waiting>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.batch.clear();
        let Some(shared) = self.queue.take() else { return };
        loop {
            // Taken under the lock, handed on outside it.
            let (first, batch) = {
                let mut queue = shared.lock().unwrap_or_else(PoisonError::into_inner);
                while queue.waiting.front().is_some_and(|w| w.turn.is_closed()) {
                    queue.waiting.pop_front();
                }
                let Some(first) = queue.waiting.pop_front() else {
                    queue.sending = false;
                    return;
                };
                let take = queue.waiting.len().min(MAX_BATCH - 1);
                (first, queue.waiting.drain(..take).collect::<Vec<_>>())
            };
            let next = Leadership { queue: Some(Arc::clone(&shared)), batch };
            match first.turn.send(Turn::Lead(next)) {
                Ok(()) => return,
                // Its Check gave up meanwhile: the rest go back in front.
                Err(Turn::Lead(mut next)) => {
                    next.queue = None;
                    let mut queue = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    for waiting in std::mem::take(&mut next.batch).into_iter().rev() {
                        queue.waiting.push_front(waiting);
                    }
                }
                Err(Turn::Decided(_)) => unreachable!("only a lead is sent here"),
            }
        }
    }
}

#[derive(Clone)]
pub struct RedisLimiter {
    target: Arc<RedisTarget>,
    conn: Arc<RwLock<Option<Conn>>>,
    fallback: LocalLimiter,
    degraded: Arc<AtomicBool>,
    timeout: Duration,
    queue: Arc<Mutex<Queue>>,
}

impl RedisLimiter {
    /// Never fails on an unreachable Redis: it connects in the background.
    pub fn new(target: Arc<RedisTarget>, fallback: LocalLimiter, timeout: Duration) -> Self {
        RedisLimiter {
            target,
            conn: Arc::default(),
            fallback,
            degraded: Arc::default(),
            timeout,
            queue: Arc::default(),
        }
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

    /// This Check's decision, from Redis. With no batch out, it is sent at
    /// once; otherwise it waits for the batch out to come back and goes in
    /// the next one, which the first of those waiting sends. It waits at most
    /// the timeout for its batch to go, then the timeout for Redis to answer.
    async fn shared(&self, key: &str, limit: Limit) -> Result<Outcome, Failed> {
        let queued_until = tokio::time::Instant::now() + self.timeout;
        loop {
            let waiting = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.sending {
                    let (turn, told) = oneshot::channel();
                    let ticket = queue.tickets;
                    queue.tickets += 1;
                    queue.waiting.push_back(Waiting { ticket, key: key.to_owned(), limit, turn });
                    Some((ticket, told))
                } else {
                    queue.sending = true;
                    None
                }
            };
            let leadership = match waiting {
                None => Leadership { queue: Some(Arc::clone(&self.queue)), batch: Vec::new() },
                Some((ticket, mut told)) => {
                    let turn = match tokio::time::timeout_at(queued_until, &mut told).await {
                        Ok(turn) => turn,
                        // Still queued, it leaves the queue and is decided in
                        // process alone. Already taken into a batch, it waits
                        // for that batch, whose call has its own timeout:
                        // falling back then would count it twice.
                        Err(_) => {
                            if self.leave_queue(ticket) {
                                return Err(Failed::Queued);
                            }
                            told.await
                        }
                    };
                    match turn {
                        Ok(Turn::Decided(outcome)) => return outcome,
                        Ok(Turn::Lead(leadership)) => leadership,
                        // Never sent: it was in a lead whose Check was
                        // cancelled before sending. Asked again, in time.
                        Err(_) if tokio::time::Instant::now() < queued_until => continue,
                        Err(_) => return Err(Failed::Queued),
                    }
                }
            };
            return self.lead(key, limit, leadership).await;
        }
    }

    /// Takes the decision out of the queue if it is still there.
    fn leave_queue(&self, ticket: u64) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(at) = queue.waiting.iter().position(|w| w.ticket == ticket) else { return false };
        queue.waiting.remove(at);
        true
    }

    /// Sends this Check's decision and the batch queued behind it. The call
    /// runs as a task of its own, so a Check cancelled now (Envoy's timeout,
    /// a client gone) still has the batch answered and the lead passed on:
    /// nobody's decision is counted twice for it.
    async fn lead(&self, key: &str, limit: Limit, mut leadership: Leadership) -> Result<Outcome, Failed> {
        let mut batch = std::mem::take(&mut leadership.batch);
        batch.retain(|w| !w.turn.is_closed());
        let (turn, told) = oneshot::channel();
        batch.insert(0, Waiting { ticket: u64::MAX, key: key.to_owned(), limit, turn });
        let conn = self.conn.read().await.clone();
        let cluster = self.target.kind() == "cluster";
        tokio::spawn(send_batch(conn, cluster, batch, leadership, self.timeout));
        match told.await {
            Ok(Turn::Decided(outcome)) => outcome,
            _ => Err(Failed::Redis("the batch was not answered".into())),
        }
    }
}

/// One script call for the batch, or on a cluster one per hash tag (a script
/// touches one slot), each with its own timeout and answered as it comes
/// back; then the lead passes on.
async fn send_batch(conn: Option<Conn>, cluster: bool, batch: Vec<Waiting>, leadership: Leadership, timeout: Duration) {
    use futures_util::StreamExt;
    let mut answers = Answers(Vec::with_capacity(batch.len()));
    let buckets: Vec<(String, Limit)> = batch
        .into_iter()
        .map(|w| {
            answers.0.push(Some(w.turn));
            (w.key, w.limit)
        })
        .collect();
    let started = Instant::now();
    match conn {
        None => (0..buckets.len()).for_each(|i| answers.send(i, Err(Failed::Redis("not connected".into())))),
        Some(conn) => {
            let groups = if cluster { by_hash_tag(&buckets) } else { vec![(0..buckets.len()).collect()] };
            let mut calls: futures_util::stream::FuturesUnordered<_> = groups
                .into_iter()
                .map(|group| {
                    let grouped: Vec<(&str, Limit)> =
                        group.iter().map(|&i| (buckets[i].0.as_str(), buckets[i].1)).collect();
                    let call = decide(conn.clone(), grouped);
                    async move { (tokio::time::timeout(timeout, call).await, group) }
                })
                .collect();
            while let Some((decided, group)) = calls.next().await {
                match decided {
                    Ok(Ok(outcomes)) => group.into_iter().zip(outcomes).for_each(|(i, o)| answers.send(i, Ok(o))),
                    Ok(Err(e)) => group.into_iter().for_each(|i| answers.send(i, Err(Failed::Redis(e.clone())))),
                    Err(_) => group.into_iter().for_each(|i| answers.send(i, Err(Failed::Redis("timed out".into())))),
                }
            }
        }
    }
    // Recorded when Redis is not connected too, so the series exists then.
    metrics::histogram!("gatehouse_redis_duration_seconds").record(started.elapsed().as_secs_f64());
    drop(leadership);
}

/// A batch's callers, each answered once. Any still unanswered when this is
/// dropped (a panic, the runtime stopping) are told Redis failed: a Check
/// never asks again for a decision Redis may have counted.
struct Answers(Vec<Option<oneshot::Sender<Turn>>>);

impl Answers {
    fn send(&mut self, i: usize, outcome: Result<Outcome, Failed>) {
        if let Some(turn) = self.0[i].take() {
            let _ = turn.send(Turn::Decided(outcome));
        }
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        for turn in self.0.iter_mut().filter_map(Option::take) {
            let _ = turn.send(Turn::Decided(Err(Failed::Redis("the batch was not answered".into()))));
        }
    }
}

/// The buckets' indexes grouped by subject (the hash tag), in order.
fn by_hash_tag(buckets: &[(String, Limit)]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, (key, _)) in buckets.iter().enumerate() {
        match groups.iter_mut().find(|g| buckets[g[0]].0 == *key) {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

/// One script call deciding these buckets in order.
async fn decide(mut conn: Conn, buckets: Vec<(&str, Limit)>) -> Result<Vec<Outcome>, String> {
    let count = buckets.len();
    let mut invocation = SCRIPT.prepare_invoke();
    let mut limits = Vec::with_capacity(count);
    for (key, limit) in buckets {
        let emission = u64::try_from(limit.emission_interval().as_micros()).unwrap_or(u64::MAX).max(1);
        invocation
            .key(format!("gatehouse:rl:{{{key}}}:{}:{}:{}", limit.requests, limit.period.as_millis(), limit.burst))
            .arg(emission)
            .arg(limit.burst);
        limits.push(limit);
    }
    let numbers = invocation.invoke_async::<Vec<i64>>(&mut conn).await.map_err(|e| e.to_string())?;
    if numbers.len() != 4 * count {
        return Err("unexpected script answer".to_owned());
    }
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    Ok(limits
        .into_iter()
        .zip(numbers.chunks_exact(4))
        .map(|(limit, n)| Outcome {
            allowed: n[0] == 1,
            limit: limit.requests,
            remaining: u32::try_from(n[1]).unwrap_or(0),
            reset_after: micros(n[3]),
            retry_after: micros(n[2]),
        })
        .collect())
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
            Err(Failed::Queued) => {
                metrics::counter!("gatehouse_ratelimit_fallback_total").increment(1);
                Ok(self.fallback.decide(key, limit))
            }
            Err(Failed::Redis(e)) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::local::LocalLimiter;

    /// A redis-server of the test's own: pausing it holds up no other test.
    struct OwnRedis(std::process::Child, String);

    impl OwnRedis {
        fn start() -> OwnRedis {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is not installed: run scripts/test");
            OwnRedis(child, format!("redis://127.0.0.1:{port}"))
        }
    }

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
        for _ in 0..500 {
            if done().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: not within 5 s");
    }

    /// Until no batch is out (the last one's task has passed the lead on).
    async fn idle(limiter: &RedisLimiter) {
        wait_for("no batch out", async || !limiter.queue.lock().unwrap().sending).await;
    }

    /// Until `n` decisions wait in the queue.
    async fn queued(limiter: &RedisLimiter, n: usize, what: &str) {
        wait_for(what, async || limiter.queue.lock().unwrap().waiting.len() == n).await;
    }

    /// A limiter on the Redis at `url`, connected.
    async fn connected(url: &str, timeout: Duration) -> RedisLimiter {
        let limiter = RedisLimiter::new(Arc::new(RedisTarget::parse(url).unwrap()), LocalLimiter::default(), timeout);
        tokio::spawn(limiter.clone().connect(std::future::pending()));
        wait_for("connected", async || limiter.connection().await.is_some()).await;
        limiter
    }

    /// A decision that waits longer than the timeout for its batch to go (a
    /// queue longer than Redis keeps up with) is made in process, and Redis,
    /// which never failed, is not taken for down. The queue then moves on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_queue_falls_back_without_calling_redis_down() {
        let url =
            std::env::var("GATEHOUSE_TEST_REDIS_URL").expect("GATEHOUSE_TEST_REDIS_URL is not set: run scripts/test");
        let limiter = connected(&url, Duration::from_secs(1)).await;
        let key = format!("user:queued-{}", uuid::Uuid::new_v4().simple());
        let two = Limit { requests: 2, period: Duration::from_secs(3600), burst: 2 };

        limiter.queue.lock().unwrap().sending = true; // a batch out that does not come back
        let outcome = limiter.check(&key, two).await.unwrap();
        assert!(outcome.allowed && outcome.remaining == 1, "decided in process: {outcome:?}");
        assert!(!limiter.is_degraded(), "Redis did not fail");
        assert!(limiter.queue.lock().unwrap().waiting.is_empty(), "it left the queue: never sent");

        drop(Leadership { queue: Some(Arc::clone(&limiter.queue)), batch: Vec::new() });
        let outcome = limiter.check(&key, two).await.unwrap();
        assert!(outcome.allowed && outcome.remaining == 1, "the first decision in Redis: {outcome:?}");
        assert!(!limiter.is_degraded());
    }

    /// A decision already taken into a batch when its wait runs out waits
    /// for that batch (its call has its own timeout) instead of falling back:
    /// decided in process too, it would be counted twice, and a refusal from
    /// Redis would be overridden by the process's own fresh count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_decision_in_a_batch_out_waits_for_it_past_its_own_wait() {
        let redis = OwnRedis::start();
        let timeout = Duration::from_secs(2);
        let limiter = connected(&redis.1, timeout).await;
        let mut admin =
            redis::Client::open(redis.1.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let one = Limit { requests: 1, period: Duration::from_secs(3600), burst: 1 };
        // The bucket's one request is spent (and the script loaded).
        assert!(limiter.check("user:spent", one).await.unwrap().allowed);
        idle(&limiter).await;

        limiter.queue.lock().unwrap().sending = true;
        let leader = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.check("user:other", one).await.unwrap() }
        });
        queued(&limiter, 1, "the leader queued").await;
        let entered = tokio::time::Instant::now();
        let late = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.check("user:spent", one).await.unwrap() }
        });
        queued(&limiter, 2, "the late one queued").await;

        // Its batch goes out half its wait later, and Redis holds it until
        // that wait is over (the batch's own timeout is not).
        tokio::time::sleep_until(entered + timeout / 2).await;
        let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(60_000).arg("WRITE").query_async(&mut admin).await.unwrap();
        drop(Leadership { queue: Some(Arc::clone(&limiter.queue)), batch: Vec::new() });
        queued(&limiter, 0, "both taken into the batch").await;
        tokio::time::sleep_until(entered + timeout + timeout / 5).await;
        let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query_async(&mut admin).await.unwrap();

        let outcome = late.await.unwrap();
        assert!(!outcome.allowed, "Redis's answer, not a fresh count in process: {outcome:?}");
        assert!(leader.await.unwrap().allowed);
        assert!(!limiter.is_degraded());
    }

    /// A Check that leads a batch and is cancelled while the batch's script
    /// is in Redis leaves the others in that batch answered by it. Asked
    /// again instead, a decision would be counted twice: a caller with one
    /// request left would be refused because someone else hung up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_leader_leaves_its_batch_answered_and_counted_once() {
        let redis = OwnRedis::start();
        let url = redis.1.clone();
        let limiter = connected(&url, Duration::from_secs(10)).await;
        let mut admin = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let run = uuid::Uuid::new_v4().simple().to_string();
        let one = Limit { requests: 1, period: Duration::from_secs(3600), burst: 1 };
        // The script loaded, so what Redis holds back below is the decision
        // itself, not a NOSCRIPT answer to be followed by a load.
        assert!(limiter.check(&format!("user:warm-{run}"), one).await.unwrap().allowed);
        idle(&limiter).await;

        // A batch is out (as far as the queue knows): the leader's Check and
        // the victim's queue behind it, in that order.
        limiter.queue.lock().unwrap().sending = true;
        let leader = tokio::spawn({
            let (limiter, key) = (limiter.clone(), format!("user:leader-{run}"));
            async move { limiter.check(&key, one).await }
        });
        queued(&limiter, 1, "the leader queued").await;
        let victim = tokio::spawn({
            let (limiter, key) = (limiter.clone(), format!("user:victim-{run}"));
            async move { limiter.check(&key, one).await.unwrap() }
        });
        queued(&limiter, 2, "the victim queued").await;

        // Redis holds scripts back; the batch out comes back: the leader
        // sends both decisions, and is cancelled once they are in Redis.
        let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(60_000).arg("WRITE").query_async(&mut admin).await.unwrap();
        drop(Leadership { queue: Some(Arc::clone(&limiter.queue)), batch: Vec::new() });
        let mut info = admin.clone();
        wait_for("the batch's script blocked in Redis", async || {
            let clients: String = redis::cmd("INFO").arg("clients").query_async(&mut info).await.unwrap();
            clients.lines().any(|l| l.strip_prefix("blocked_clients:").is_some_and(|n| n.trim() != "0"))
        })
        .await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query_async(&mut admin).await.unwrap();

        let outcome = victim.await.unwrap();
        assert!(outcome.allowed, "the victim's one request, counted once: {outcome:?}");
        assert!(!limiter.is_degraded());
        wait_for("the lead passed on and nothing left waiting", async || {
            let queue = limiter.queue.lock().unwrap();
            !queue.sending && queue.waiting.is_empty()
        })
        .await;
    }
}
