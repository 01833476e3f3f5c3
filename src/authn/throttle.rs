//! Throttling of failed logins, per account and per client IP: after `max`
//! failures within `window`, further attempts are refused (429) until the
//! window that began with the first failure has passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use moka::sync::Cache;

#[derive(Clone, Debug)]
pub struct ThrottleSettings {
    pub max_per_account: u32,
    pub max_per_ip: u32,
    pub window: Duration,
}

struct Window {
    started: Instant,
    failures: AtomicU32,
}

#[derive(Clone)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
    windows: Cache<String, Arc<Window>>,
}

impl LoginThrottle {
    pub fn new(settings: ThrottleSettings) -> Self {
        // Bounded: an attacker cycling through addresses cannot grow it without limit.
        let windows = Cache::builder().max_capacity(100_000).time_to_live(settings.window).build();
        LoginThrottle { settings, windows }
    }

    fn keys(account: &str, ip: Option<&str>) -> [(String, bool); 2] {
        [(format!("account:{}", account.to_lowercase()), true), (format!("ip:{}", ip.unwrap_or("-")), false)]
    }

    /// `Err(retry_after)` when this account or address is locked out.
    pub fn check(&self, account: &str, ip: Option<&str>) -> Result<(), Duration> {
        for (key, is_account) in Self::keys(account, ip) {
            let max = if is_account { self.settings.max_per_account } else { self.settings.max_per_ip };
            if let Some(w) = self.windows.get(&key)
                && w.failures.load(Ordering::Relaxed) >= max
            {
                let left = self.settings.window.saturating_sub(w.started.elapsed());
                return Err(left.max(Duration::from_secs(1)));
            }
        }
        Ok(())
    }

    pub fn record_failure(&self, account: &str, ip: Option<&str>) {
        for (key, _) in Self::keys(account, ip) {
            let w = self.windows.get_with(key, || Arc::new(Window { started: Instant::now(), failures: 0.into() }));
            w.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A successful login clears the account's failures (not the address's).
    pub fn record_success(&self, account: &str) {
        self.windows.invalidate(&format!("account:{}", account.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_max_failures_per_account_and_per_ip() {
        let t =
            LoginThrottle::new(ThrottleSettings { max_per_account: 3, max_per_ip: 5, window: Duration::from_secs(60) });
        for _ in 0..3 {
            assert!(t.check("a@x.io", Some("1.2.3.4")).is_ok());
            t.record_failure("A@x.io", Some("1.2.3.4"));
        }
        let retry = t.check("a@x.io", Some("9.9.9.9")).unwrap_err();
        assert!(retry <= Duration::from_secs(60) && retry >= Duration::from_secs(1));
        assert!(t.check("b@x.io", Some("1.2.3.4")).is_ok());
        t.record_failure("b@x.io", Some("1.2.3.4"));
        t.record_failure("c@x.io", Some("1.2.3.4"));
        assert!(t.check("d@x.io", Some("1.2.3.4")).is_err(), "five failures from one address");
        t.record_success("a@x.io");
        assert!(t.check("a@x.io", Some("9.9.9.9")).is_ok());
    }
}
