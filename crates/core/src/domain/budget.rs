//! Token and spend budgets: how much an API key, a user or a group may use.
//!
//! * `token_limit`: `TOKENS/SECONDS`, a rolling window (`100000/60`).
//! * `spend_limit`: `USD/PERIOD`, PERIOD one of `day`, `week`, `month`
//!   (calendar periods in UTC, weeks from Monday) or a number of seconds (a
//!   rolling window): `25/month`, `0.50/3600`.
//!
//! Money is counted in nano-dollars (1e-9 USD) as integers, so sums are
//! exact. A rolling window is counted in at most 60 buckets of equal width
//! (at least one second): a bucket counts while any of it lies inside the
//! window, so the count is never less than the exact window's.

use std::fmt;
use std::str::FromStr;

/// Nano-dollars per dollar.
pub const NANO_PER_USD: i64 = 1_000_000_000;

/// How usage is grouped in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    Rolling { seconds: u64 },
    Day,
    Week,
    Month,
}

impl Window {
    /// Width of one bucket, in seconds (rolling windows only).
    fn bucket_width(seconds: u64) -> i64 {
        i64::try_from(seconds.div_ceil(60).max(1)).unwrap_or(i64::MAX)
    }

    /// The bucket `now` (Unix seconds) falls in.
    pub fn bucket(self, now: i64) -> i64 {
        match self {
            Window::Rolling { seconds } => now.div_euclid(Self::bucket_width(seconds)),
            Window::Day => now.div_euclid(86_400),
            // 1970-01-01 was a Thursday: three days on, weeks start on Monday.
            Window::Week => (now.div_euclid(86_400) + 3).div_euclid(7),
            Window::Month => {
                let date = time::OffsetDateTime::from_unix_timestamp(now).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1
            }
        }
    }

    /// The oldest bucket that still counts at `now`.
    pub fn oldest_counted(self, now: i64) -> i64 {
        match self {
            Window::Rolling { seconds } => {
                let span = i64::try_from(seconds).unwrap_or(i64::MAX);
                now.saturating_sub(span).div_euclid(Self::bucket_width(seconds)) + 1
            }
            _ => self.bucket(now),
        }
    }

    /// Seconds from `now` until `bucket` no longer counts.
    pub fn seconds_until_dropped(self, bucket: i64, now: i64) -> u64 {
        let until = match self {
            Window::Rolling { seconds } => {
                let width = Self::bucket_width(seconds);
                (bucket + 1).saturating_mul(width).saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX))
            }
            Window::Day => (bucket + 1) * 86_400,
            Window::Week => ((bucket + 1) * 7 - 3) * 86_400,
            Window::Month => {
                let (year, month) = ((bucket + 1).div_euclid(12), (bucket + 1).rem_euclid(12) + 1);
                let month = time::Month::try_from(u8::try_from(month).unwrap_or(1)).unwrap_or(time::Month::January);
                time::Date::from_calendar_date(i32::try_from(year).unwrap_or(9999), month, 1)
                    .map(|d| d.midnight().assume_utc().unix_timestamp())
                    .unwrap_or(i64::MAX)
            }
        };
        u64::try_from(until.saturating_sub(now)).unwrap_or(0).max(1)
    }

    /// How long a counter must be kept: the window and a bucket more.
    pub fn retention_seconds(self) -> u64 {
        match self {
            Window::Rolling { seconds } => seconds + seconds.div_ceil(60) + 60,
            Window::Day => 2 * 86_400,
            Window::Week => 8 * 86_400,
            Window::Month => 32 * 86_400,
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Rolling { seconds } => write!(f, "{seconds}"),
            Window::Day => f.write_str("day"),
            Window::Week => f.write_str("week"),
            Window::Month => f.write_str("month"),
        }
    }
}

/// Tokens (prompt and completion together) per rolling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenLimit {
    pub tokens: i64,
    pub seconds: u64,
}

impl TokenLimit {
    pub fn window(self) -> Window {
        Window::Rolling { seconds: self.seconds }
    }
}

impl fmt::Display for TokenLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tokens, self.seconds)
    }
}

/// The longest window accepted: a year.
const MAX_WINDOW_SECONDS: u64 = 366 * 86_400;

impl FromStr for TokenLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<TokenLimit, String> {
        let (tokens, seconds) = s.trim().split_once('/').ok_or("expected TOKENS/SECONDS, e.g. 100000/60")?;
        let tokens: i64 =
            tokens.trim().parse().map_err(|_| format!("'{}' is not a whole number of tokens", tokens.trim()))?;
        let seconds: u64 =
            seconds.trim().parse().map_err(|_| format!("'{}' is not a number of seconds", seconds.trim()))?;
        if tokens <= 0 || tokens > 1_000_000_000_000 {
            return Err("tokens must be between 1 and 10^12".into());
        }
        if seconds == 0 || seconds > MAX_WINDOW_SECONDS {
            return Err(format!("seconds must be between 1 and {MAX_WINDOW_SECONDS}"));
        }
        Ok(TokenLimit { tokens, seconds })
    }
}

/// Dollars per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpendLimit {
    pub nano_usd: i64,
    pub window: Window,
}

impl fmt::Display for SpendLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", format_usd(self.nano_usd), self.window)
    }
}

impl FromStr for SpendLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<SpendLimit, String> {
        let (usd, period) = s.trim().split_once('/').ok_or("expected USD/PERIOD, e.g. 25/month")?;
        let nano_usd = parse_usd(usd.trim())?;
        if nano_usd <= 0 {
            return Err("the amount must be positive".into());
        }
        let window = match period.trim() {
            "day" => Window::Day,
            "week" => Window::Week,
            "month" => Window::Month,
            n => match n.parse::<u64>() {
                Ok(seconds) if (1..=MAX_WINDOW_SECONDS).contains(&seconds) => Window::Rolling { seconds },
                _ => return Err(format!("'{n}' is not a period: day, week, month or 1..{MAX_WINDOW_SECONDS} seconds")),
            },
        };
        Ok(SpendLimit { nano_usd, window })
    }
}

/// A decimal dollar amount (at most 9 decimals, at most a billion dollars)
/// in nano-dollars.
pub fn parse_usd(s: &str) -> Result<i64, String> {
    let bad = || format!("'{s}' is not a dollar amount (e.g. 25 or 0.50)");
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
        || whole.len() > 10
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let frac_nano: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| bad())? };
    if whole > 1_000_000_000 {
        return Err(bad());
    }
    Ok(whole * NANO_PER_USD + frac_nano)
}

/// Nano-dollars as a decimal dollar amount without trailing zeros.
pub fn format_usd(nano: i64) -> String {
    let sign = if nano < 0 { "-" } else { "" };
    let nano = nano.unsigned_abs();
    let (whole, frac) = (nano / 1_000_000_000, nano % 1_000_000_000);
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// The budgets set on one key, user or group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Budget {
    pub tokens: Option<TokenLimit>,
    pub spend: Option<SpendLimit>,
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_none() && self.spend.is_none()
    }

    /// From the stored columns; an unreadable value is an error (refusing
    /// is better than spending without a limit).
    pub fn from_columns(tokens: Option<&str>, spend: Option<&str>) -> Result<Budget, String> {
        Ok(Budget { tokens: tokens.map(str::parse).transpose()?, spend: spend.map(str::parse).transpose()? })
    }
}

/// Changes to a budget: `None` leaves a limit as it is, `Some(None)` removes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetUpdate {
    pub tokens: Option<Option<TokenLimit>>,
    pub spend: Option<Option<SpendLimit>>,
}

impl BudgetUpdate {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_none() && self.spend.is_none()
    }

    pub fn apply(&self, budget: &mut Budget) {
        if let Some(t) = self.tokens {
            budget.tokens = t;
        }
        if let Some(s) = self.spend {
            budget.spend = s;
        }
    }
}

/// The budgets a credential carries (the group's are looked up at Check).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerBudgets {
    /// The API key's own, when the caller used one.
    pub key: Budget,
    pub user: Budget,
}

/// The token budget the `x-ratelimit-*-tokens` headers describe: the one
/// with the least left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenHeaders {
    pub limit: i64,
    pub remaining: i64,
    pub reset_seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_print_back() {
        for s in ["100000/60", "1/1"] {
            assert_eq!(s.parse::<TokenLimit>().unwrap().to_string(), s);
        }
        for s in ["25/month", "0.5/day", "0.000000001/week", "3/3600"] {
            assert_eq!(s.parse::<SpendLimit>().unwrap().to_string(), s);
        }
        assert_eq!("1.25/day".parse::<SpendLimit>().unwrap().nano_usd, 1_250_000_000);
        for bad in ["", "10", "0/60", "-1/60", "10/0", "10/x", "1.5/60", "10/99999999999"] {
            assert!(bad.parse::<TokenLimit>().is_err(), "{bad}");
        }
        for bad in ["", "1", "0/day", "-1/day", "1/year", "1e3/day", "1.0000000001/day", "abc/day", "./day"] {
            assert!(bad.parse::<SpendLimit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn calendar_periods_are_utc() {
        // 2026-12-01T00:00:00Z, a Tuesday.
        let dec1 = 1_796_083_200;
        let month = Window::Month;
        assert_eq!(month.bucket(dec1), month.bucket(dec1 + 30 * 86_400 + 86_399));
        assert_ne!(month.bucket(dec1 - 1), month.bucket(dec1));
        assert_eq!(month.seconds_until_dropped(month.bucket(dec1), dec1), 31 * 86_400);
        let week = Window::Week;
        // Monday 2026-11-30 starts the week.
        assert_eq!(week.bucket(dec1), week.bucket(dec1 - 86_400));
        assert_ne!(week.bucket(dec1), week.bucket(dec1 - 86_400 - 1));
        assert_eq!(week.seconds_until_dropped(week.bucket(dec1), dec1), 6 * 86_400);
        assert_eq!(Window::Day.seconds_until_dropped(Window::Day.bucket(dec1 + 10), dec1 + 10), 86_390);
    }

    #[test]
    fn rolling_windows_never_count_less_than_the_window() {
        let w = Window::Rolling { seconds: 60 };
        for now in 1000..1130 {
            let oldest = w.oldest_counted(now);
            // A bucket holding anything from inside (now - 60, now] counts.
            for t in (now - 59)..=now {
                assert!(w.bucket(t) >= oldest, "now {now} t {t}");
            }
            assert!(w.seconds_until_dropped(oldest, now) >= 1);
        }
        let w = Window::Rolling { seconds: 3600 };
        assert_eq!(w.bucket(3600), 60);
    }
}
