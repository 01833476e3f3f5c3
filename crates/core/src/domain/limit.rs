//! Request rate limits as stored and configured.

use std::time::Duration;

/// `requests` per `period`, of which up to `burst` may come at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    pub requests: u32,
    pub period: Duration,
    pub burst: u32,
}

impl Limit {
    /// A limit from stored numbers; `None` when absent or not positive.
    pub fn from_parts(requests: Option<i64>, period_seconds: Option<i64>, burst: Option<i64>) -> Option<Limit> {
        let requests = u32::try_from(requests?).ok().filter(|r| *r > 0)?;
        let period = Duration::from_secs(u64::try_from(period_seconds?).ok().filter(|p| *p > 0)?);
        let burst = burst.and_then(|b| u32::try_from(b).ok()).filter(|b| *b > 0).unwrap_or(requests);
        Some(Limit { requests, period, burst })
    }

    /// The time one request "costs": `period / requests`.
    pub fn emission_interval(&self) -> Duration {
        (self.period / self.requests).max(Duration::from_nanos(1))
    }
}

/// A limit that replaces the group's for one principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    pub limit: Limit,
    /// Set on the API key itself: the key gets a budget of its own.
    pub per_key: bool,
}

impl std::fmt::Display for Limit {
    /// `REQUESTS/SECONDS/BURST`, the stored form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.requests, self.period.as_secs(), self.burst)
    }
}

impl std::str::FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Limit, String> {
        parse_limit(s)
    }
}

/// Parses `REQUESTS/SECONDS[/BURST]`, e.g. `60/60` or `10/1/20`.
pub fn parse_limit(s: &str) -> Result<Limit, String> {
    let parts: Vec<&str> = s.trim().split('/').collect();
    let num = |i: usize| {
        parts.get(i).map(|p| p.trim().parse::<i64>().map_err(|_| format!("'{p}' is not a number"))).transpose()
    };
    if !(2..=3).contains(&parts.len()) {
        return Err("expected REQUESTS/SECONDS or REQUESTS/SECONDS/BURST".into());
    }
    Limit::from_parts(num(0)?, num(1)?, num(2)?).ok_or_else(|| "numbers must be positive".into())
}
