//! In-process limits with governor. Time comes from tokio's clock, so tests
//! can pause and advance it. Idle buckets are dropped periodically, so memory
//! follows the number of recently active callers, not of all callers ever.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, Reference};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{Limit, Limiter, LimiterError, Outcome};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(tokio::time::Instant);

impl Add<Nanos> for TokioInstant {
    type Output = TokioInstant;
    fn add(self, n: Nanos) -> TokioInstant {
        TokioInstant(self.0 + Duration::from_nanos(n.as_u64()))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        TokioInstant(self.0.checked_sub(Duration::from_nanos(duration.as_u64())).unwrap_or(self.0))
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, TokioClock, StateInformationMiddleware>;

/// One governor limiter per distinct limit (groups with the same limit share one).
#[derive(Clone, Default)]
pub struct LocalLimiter {
    limiters: Arc<RwLock<HashMap<Limit, Arc<Keyed>>>>,
}

impl LocalLimiter {
    fn limiter(&self, limit: Limit) -> Arc<Keyed> {
        if let Some(l) = self.limiters.read().unwrap_or_else(|e| e.into_inner()).get(&limit) {
            return l.clone();
        }
        let mut all = self.limiters.write().unwrap_or_else(|e| e.into_inner());
        all.entry(limit)
            .or_insert_with(|| {
                let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
                #[expect(clippy::expect_used, reason = "emission_interval is at least 1ns")]
                let quota = Quota::with_period(limit.emission_interval()).expect("non-zero period").allow_burst(burst);
                let plain: RateLimiter<
                    String,
                    DefaultKeyedStateStore<String>,
                    TokioClock,
                    NoOpMiddleware<TokioInstant>,
                > = RateLimiter::new(quota, DefaultKeyedStateStore::default(), TokioClock);
                Arc::new(plain.with_middleware::<StateInformationMiddleware>())
            })
            .clone()
    }

    /// Forgets buckets that are full again (idle callers).
    pub fn purge_idle(&self) {
        for l in self.limiters.read().unwrap_or_else(|e| e.into_inner()).values() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Buckets held now, across all limits.
    pub fn len(&self) -> usize {
        self.limiters.read().unwrap_or_else(|e| e.into_inner()).values().map(|l| l.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides without awaiting anything.
    pub fn decide(&self, key: &str, limit: Limit) -> Outcome {
        let t = limit.emission_interval();
        let refill = |remaining: u32| t * limit.burst.saturating_sub(remaining);
        match self.limiter(limit).check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Outcome {
                    allowed: true,
                    limit: limit.requests,
                    remaining,
                    reset_after: refill(remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(TokioClock.now());
                Outcome {
                    allowed: false,
                    limit: limit.requests,
                    remaining: 0,
                    reset_after: retry_after + refill(1),
                    retry_after,
                }
            }
        }
    }

    /// Purges idle buckets every `interval` until `shutdown`.
    pub async fn run_purge(self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => self.purge_idle(),
                () = &mut shutdown => return,
            }
        }
    }
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn check(&self, key: &str, limit: Limit) -> Result<Outcome, LimiterError> {
        Ok(self.decide(key, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, secs: u64) -> Limit {
        Limit { requests, period: Duration::from_secs(secs), burst: requests }
    }

    #[tokio::test(start_paused = true)]
    async fn n_plus_one_rapid_requests_give_exactly_one_denial() {
        let l = LocalLimiter::default();
        let lim = limit(5, 60);
        let outcomes: Vec<Outcome> = (0..6).map(|_| l.decide("user:a", lim)).collect();
        assert_eq!(outcomes.iter().filter(|o| !o.allowed).count(), 1);
        assert!(!outcomes[5].allowed);
        assert_eq!(outcomes.iter().map(|o| o.remaining).collect::<Vec<_>>(), vec![4, 3, 2, 1, 0, 0]);
        assert_eq!(outcomes[5].retry_after, Duration::from_secs(12));
        // Another caller has its own bucket.
        assert!(l.decide("user:b", lim).allowed);
        // One emission interval later, exactly one more is allowed.
        tokio::time::advance(Duration::from_secs(12)).await;
        assert!(l.decide("user:a", lim).allowed);
        assert!(!l.decide("user:a", lim).allowed);
        // After a full period the whole burst is back.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!((0..6).filter(|_| l.decide("user:a", lim).allowed).count(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_smaller_than_the_rate() {
        let l = LocalLimiter::default();
        let lim = Limit { requests: 60, period: Duration::from_secs(60), burst: 2 };
        assert_eq!((0..5).filter(|_| l.decide("k", lim).allowed).count(), 2);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!((0..5).filter(|_| l.decide("k", lim).allowed).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_buckets_are_purged() {
        let l = LocalLimiter::default();
        let lim = limit(10, 1);
        for i in 0..1000 {
            l.decide(&format!("ip:{i}"), lim);
        }
        assert_eq!(l.len(), 1000);
        tokio::time::advance(Duration::from_secs(2)).await;
        l.purge_idle();
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn limits_from_stored_numbers() {
        assert_eq!(Limit::from_parts(Some(60), Some(60), None), Some(limit(60, 60)));
        assert_eq!(Limit::from_parts(Some(60), Some(60), Some(5)).map(|l| l.burst), Some(5));
        assert_eq!(Limit::from_parts(None, Some(60), None), None);
        assert_eq!(Limit::from_parts(Some(0), Some(60), None), None);
    }
}
