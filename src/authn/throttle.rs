//! Throttling of failed logins, per account and per client address: after
//! `max` failures within `window`, further attempts are refused (429) until
//! the window that began with the first failure has passed.
//!
//! An attempt takes its place in both budgets *before* the password is
//! checked ([`LoginThrottle::reserve`]), and keeps it unless it succeeds or
//! fails for a reason other than the password. So however many attempts
//! arrive at once, at most the remaining allowance is ever checked; once it is
//! spent, even the right password is refused until the window passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::accounts::LoginName;
use crate::ratelimit::address_bucket;

#[derive(Clone, Debug)]
pub struct ThrottleSettings {
    pub max_per_account: u32,
    pub max_per_ip: u32,
    pub window: Duration,
}

struct Window {
    started: Instant,
    /// Failures, and attempts still being checked.
    used: AtomicU32,
}

#[derive(Clone)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
    windows: Cache<String, Arc<Window>>,
}

/// A login attempt's place in its account's and its address's budgets.
/// Dropped without [`Attempt::succeeded`] or [`Attempt::release`], it counts
/// as a failure (also when the client went away mid-check).
#[must_use]
pub struct Attempt {
    account_key: String,
    account: Arc<Window>,
    ip: Arc<Window>,
    windows: Cache<String, Arc<Window>>,
}

impl Attempt {
    /// The right password: the account's failures are cleared, and the
    /// attempt does not count against the address.
    pub fn succeeded(self) {
        self.windows.invalidate(&self.account_key);
        release(&self.ip);
    }

    /// Not a verdict on the password (the database or the hashing pool was
    /// unavailable): counted nowhere.
    pub fn release(self) {
        release(&self.account);
        release(&self.ip);
    }
}

fn release(w: &Window) {
    let _ = w.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

/// Login attempts refused because an account's or an address's failures
/// are spent, by `scope` (`account`, `ip`).
const LOCKOUTS: &str = "gatehouse_login_lockouts_total";

impl LoginThrottle {
    pub fn new(settings: ThrottleSettings) -> Self {
        // Present from the start, so the first lockout shows in rate().
        for scope in ["account", "ip"] {
            metrics::counter!(LOCKOUTS, "scope" => scope).increment(0);
        }
        // Bounded: an attacker cycling through addresses cannot grow it without limit.
        let windows = Cache::builder().max_capacity(100_000).time_to_live(settings.window).build();
        LoginThrottle { settings, windows }
    }

    fn window(&self, key: &str) -> Arc<Window> {
        self.windows.get_with_by_ref(key, || Arc::new(Window { started: Instant::now(), used: 0.into() }))
    }

    /// Takes a place for one attempt in `account`'s and `ip`'s budgets, or
    /// `Err(retry_after)` when either is spent.
    pub fn reserve(&self, account: &LoginName, ip: Option<&str>) -> Result<Attempt, Duration> {
        let account_key = format!("account:{}", account.as_str());
        let account_window = self.window(&account_key);
        self.take(&account_window, self.settings.max_per_account, "account")?;
        let ip_window = self.window(&format!("ip:{}", address_bucket(ip)));
        if let Err(retry) = self.take(&ip_window, self.settings.max_per_ip, "ip") {
            release(&account_window);
            return Err(retry);
        }
        Ok(Attempt { account_key, account: account_window, ip: ip_window, windows: self.windows.clone() })
    }

    fn take(&self, w: &Window, max: u32, scope: &'static str) -> Result<(), Duration> {
        match w.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)) {
            Ok(_) => Ok(()),
            Err(_) => {
                metrics::counter!(LOCKOUTS, "scope" => scope).increment(1);
                Err(self.settings.window.saturating_sub(w.started.elapsed()).max(Duration::from_secs(1)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> LoginName {
        LoginName::new(s)
    }

    #[test]
    fn locks_out_after_max_failures_per_account_and_per_ip() {
        let t =
            LoginThrottle::new(ThrottleSettings { max_per_account: 3, max_per_ip: 5, window: Duration::from_secs(60) });
        for _ in 0..3 {
            drop(t.reserve(&name("A@x.io"), Some("1.2.3.4")).unwrap());
        }
        let retry = t.reserve(&name("a@x.io"), Some("9.9.9.9")).err().unwrap();
        assert!(retry <= Duration::from_secs(60) && retry >= Duration::from_secs(1));
        drop(t.reserve(&name("b@x.io"), Some("1.2.3.4")).unwrap());
        drop(t.reserve(&name("c@x.io"), Some("::ffff:1.2.3.4")).unwrap());
        assert!(t.reserve(&name("d@x.io"), Some("1.2.3.4")).is_err(), "five failures from one address");
        assert!(t.reserve(&name("d@x.io"), Some("5.6.7.8")).is_ok());
    }

    #[test]
    fn a_success_clears_the_account_and_a_release_counts_nowhere() {
        let t =
            LoginThrottle::new(ThrottleSettings { max_per_account: 2, max_per_ip: 3, window: Duration::from_secs(60) });
        drop(t.reserve(&name("a@x.io"), Some("1.2.3.4")).unwrap());
        t.reserve(&name("a@x.io"), Some("1.2.3.4")).unwrap().succeeded();
        for _ in 0..10 {
            t.reserve(&name("a@x.io"), Some("1.2.3.4")).unwrap().release();
        }
        drop(t.reserve(&name("a@x.io"), Some("1.2.3.4")).unwrap());
        t.reserve(&name("a@x.io"), Some("1.2.3.4")).unwrap().succeeded();
        // The address holds two failures (a success is not one): one more.
        drop(t.reserve(&name("b@x.io"), Some("1.2.3.4")).unwrap());
        assert!(t.reserve(&name("c@x.io"), Some("1.2.3.4")).is_err());
    }

    #[test]
    fn attempts_in_flight_hold_their_place() {
        let t = LoginThrottle::new(ThrottleSettings {
            max_per_account: 2,
            max_per_ip: 50,
            window: Duration::from_secs(60),
        });
        let first = t.reserve(&name("a@x.io"), None).unwrap();
        let second = t.reserve(&name(" A@X.IO\u{3000}"), Some("1.2.3.4")).unwrap();
        assert!(t.reserve(&name("a@x.io"), Some("5.6.7.8")).is_err(), "two attempts are being checked");
        first.release();
        let third = t.reserve(&name("a@x.io"), Some("5.6.7.8")).unwrap();
        drop((second, third));
        assert!(t.reserve(&name("a@x.io"), Some("5.6.7.8")).is_err());
    }
}
