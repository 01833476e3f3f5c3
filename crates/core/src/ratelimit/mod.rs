//! Rate limits: GCRA (a token bucket in one timestamp) behind one trait, with
//! an in-process backend ([`local`], governor) and a shared one (the
//! `gatehouse` crate's Redis limiter: one atomic script per decision, so any
//! number of replicas share a budget).

pub mod local;

use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{Denial, Principal};
use crate::policy::Rule;
use crate::store::cache::GroupCache;

pub use crate::domain::limit::{Limit, Override, parse_limit};

/// One decision, with what the `X-RateLimit-*` headers report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset_after: Duration,
    /// Until the next request would be allowed (zero when allowed).
    pub retry_after: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(pub String);

#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Counts one request against `key`'s bucket under `limit`.
    async fn check(&self, key: &str, limit: Limit) -> Result<Outcome, LimiterError>;
}

/// Which limit applies to a request, and the decision.
///
/// * An authenticated caller: the key's own limit (its own bucket), else the
///   user's own limit, else their group's limit (or `default` when the group
///   has none); one bucket per user, shared by all their keys and tokens.
/// * An anonymous caller (a public route, or auth not required): `anonymous`,
///   one bucket per client address, so `/auth/login` cannot be brute-forced
///   through Envoy.
pub struct LimitPolicy {
    pub limiter: Arc<dyn Limiter>,
    pub groups: GroupCache,
    pub default: Option<Limit>,
    pub anonymous: Option<Limit>,
}

impl LimitPolicy {
    /// Counts the request against the caller's budget and, when the route
    /// rule has a limit, the caller's budget on that rule; both must allow.
    /// Returns the tighter of the two for the headers; `Ok(None)`: no limit.
    pub async fn check(
        &self,
        principal: Option<&Principal>,
        client_ip: Option<&str>,
        rule: &Rule,
    ) -> Result<Option<Outcome>, Denial> {
        let (kind, id, base) = match principal {
            // A key with its own limit has its own budget; otherwise the user's.
            Some(p) => match (p.rate_limit, &p.key_id) {
                (Some(Override { limit, per_key: true }), Some(key_id)) => ("key", &**key_id, Some(limit)),
                (Some(Override { limit, .. }), _) => ("user", &*p.user_id, Some(limit)),
                (None, _) => ("user", &*p.user_id, self.group_limit(&p.group).await),
            },
            None => ("ip", "", self.anonymous),
        };
        if base.is_none() && rule.limit.is_none() {
            return Ok(None);
        }
        let subject = match principal {
            Some(_) => format!("{kind}:{id}"),
            None => format!("ip:{}", address_bucket(client_ip)),
        };
        let buckets =
            [base.map(|l| (subject.clone(), l)), rule.limit.map(|l| (format!("{subject}|route:{}", rule.name), l))];
        let group = principal.map_or("anonymous", |p| &*p.group);
        let mut shown: Option<Outcome> = None;
        for (key, limit) in buckets.into_iter().flatten() {
            let decided = self.decide(&key, limit).await;
            if decided.is_err() {
                metrics::counter!("gatehouse_rate_limited_total", "group" => group.to_owned()).increment(1);
            }
            let Some(outcome) = decided? else { continue };
            shown = match shown {
                Some(s) if s.remaining <= outcome.remaining => Some(s),
                _ => Some(outcome),
            };
        }
        Ok(shown)
    }

    async fn decide(&self, key: &str, limit: Limit) -> Result<Option<Outcome>, Denial> {
        let outcome = match self.limiter.check(key, limit).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter failed; request not counted");
                return Ok(None);
            }
        };
        if outcome.allowed {
            return Ok(Some(outcome));
        }
        Err(Denial::RateLimited {
            limit: outcome.limit,
            period_seconds: limit.period.as_secs(),
            retry_after_seconds: ceil_secs(outcome.retry_after),
            reset_seconds: ceil_secs(outcome.reset_after),
        })
    }

    /// The group's limit, read through the cache (an admin's change applies
    /// within the cache TTL everywhere, at once where it was made). If the
    /// group cannot be read, the default limit applies.
    async fn group_limit(&self, group: &str) -> Option<Limit> {
        match self.groups.get(group).await {
            Ok(Some(g)) => Limit::from_parts(g.requests_per_period, g.period_seconds, g.burst).or(self.default),
            Ok(None) => self.default,
            Err(e) => {
                tracing::warn!(error = %e, group, "cannot read the group's limit; using the default");
                self.default
            }
        }
    }
}

/// The bucket an anonymous caller's address counts against: one spelling
/// per address (`::ffff:1.2.3.4` is `1.2.3.4`, `[::1]` is `::1`), one bucket
/// per IPv6 /64 (a single client usually holds a whole /64), and one shared
/// bucket for callers whose address is missing or unreadable, so that leaving
/// it out never means "no limit".
pub fn address_bucket(client_ip: Option<&str>) -> String {
    use std::net::IpAddr;
    let parsed = client_ip
        .map(|ip| ip.trim().trim_start_matches('[').trim_end_matches(']'))
        .map(|ip| ip.split('%').next().unwrap_or(ip))
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    match parsed {
        None => "unknown".to_owned(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Whole seconds, rounded up (a client told "0" would retry at once).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bucket_per_address_and_per_ipv6_64() {
        for (a, b) in [
            ("1.2.3.4", "::ffff:1.2.3.4"),
            ("1.2.3.4", " 1.2.3.4"),
            ("::1", "[::1]"),
            ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"),
            ("2001:DB8:1:2::1", "2001:0db8:0001:0002:0000:0000:0000:0009"),
            ("fe80::1%eth0", "fe80::2"),
        ] {
            assert_eq!(address_bucket(Some(a)), address_bucket(Some(b)), "{a} vs {b}");
        }
        assert_ne!(address_bucket(Some("2001:db8:1:2::1")), address_bucket(Some("2001:db8:1:3::1")));
        assert_ne!(address_bucket(Some("1.2.3.4")), address_bucket(Some("1.2.3.5")));
        assert_eq!(address_bucket(None), address_bucket(Some("not an address")));
        assert_eq!(address_bucket(None), "unknown");
    }
}
