//! LLM usage (requests, tokens, spend) per UTC day, user, group, API key and
//! model, without a database write per request.
//!
//! The budgets' settlement reports each request's usage here (`Metering` is
//! their [`crate::budget::UsageSink`]). [`Metering::record`] adds an event to
//! counters in memory, keyed by day and
//! dimensions; [`Metering::run`] writes them every interval (and once at
//! shutdown) as one transaction of upserts that add to the stored counters.
//! Unlike `last_used_at` ([`super::usage`]), usage is money: a batch that
//! could not be written is kept and merged into the next one, so a short
//! database outage loses nothing. What is pending is bounded
//! ([`DEFAULT_MAX_PENDING`] rows); past it new rows are dropped and counted
//! (`gatehouse_llm_usage_dropped_total`), rows already pending still add up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{DynStore, StoreResult};

/// At most this many distinct (day, user, group, key, model) rows wait in
/// memory for the database.
pub const DEFAULT_MAX_PENDING: usize = 100_000;

/// Longest model name kept; longer ones are cut (the name is the client's).
pub const MAX_MODEL_LEN: usize = 200;

/// The longest range of days one usage query may cover.
pub const MAX_RANGE_DAYS: i64 = 366;

/// One metered LLM request, as the budgets' settlement reports it.
pub use crate::budget::UsageEvent;

/// One stored row of `usage_daily`: counters for a day and its dimensions.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UsageRow {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub user_id: String,
    pub group: String,
    /// `""` for sessions and provider tokens.
    pub key_id: String,
    pub model: String,
    pub counters: UsageCounters,
}

/// Counters that add up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UsageCounters {
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nano_usd: i64,
    pub unmeasured: i64,
}

impl UsageCounters {
    pub fn add(&mut self, other: &UsageCounters) {
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.cost_nano_usd = self.cost_nano_usd.saturating_add(other.cost_nano_usd);
        self.unmeasured = self.unmeasured.saturating_add(other.unmeasured);
    }

    pub fn total_tokens(&self) -> i64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// The spend in USD.
    pub fn cost_usd(&self) -> f64 {
        self.cost_nano_usd as f64 / 1e9
    }
}

/// How a usage query sums its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UsageGroupBy {
    /// One row per day.
    #[default]
    Day,
    /// One row per model.
    Model,
    /// One row per day and model.
    DayModel,
    /// One row: the sum of everything matched.
    Total,
}

impl UsageGroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageGroupBy::Day => "day",
            UsageGroupBy::Model => "model",
            UsageGroupBy::DayModel => "day,model",
            UsageGroupBy::Total => "total",
        }
    }

    /// Whether rows carry their day / their model.
    pub fn by_day(self) -> bool {
        matches!(self, UsageGroupBy::Day | UsageGroupBy::DayModel)
    }

    pub fn by_model(self) -> bool {
        matches!(self, UsageGroupBy::Model | UsageGroupBy::DayModel)
    }
}

impl std::str::FromStr for UsageGroupBy {
    type Err = String;

    /// `day`, `model`, `day,model` (or `model,day`); `total` is not a
    /// grouping a caller asks for (every answer carries the totals).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "day" => Ok(UsageGroupBy::Day),
            "model" => Ok(UsageGroupBy::Model),
            "day,model" | "model,day" => Ok(UsageGroupBy::DayModel),
            _ => Err("must be day, model or day,model".to_owned()),
        }
    }
}

/// Which usage to sum. Every filter is exact; days are inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    pub user_id: Option<String>,
    pub group: Option<String>,
    /// `""` selects sessions and provider tokens.
    pub key_id: Option<String>,
    pub model: Option<String>,
    /// `YYYY-MM-DD`, inclusive.
    pub from: Option<String>,
    /// `YYYY-MM-DD`, inclusive.
    pub to: Option<String>,
    pub group_by: UsageGroupBy,
    /// At most this many rows (the store adds no limit when 0).
    pub limit: u32,
}

/// A summed row: `day` and `model` are set when the query groups by them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageSum {
    pub day: Option<String>,
    pub model: Option<String>,
    pub counters: UsageCounters,
}

/// A bad day range; `field` is the parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RangeError {
    pub field: &'static str,
    pub message: String,
}

/// The UTC day of `at` (Unix seconds), `YYYY-MM-DD`.
pub fn day_of(at: i64) -> String {
    show(time::OffsetDateTime::from_unix_timestamp(at).unwrap_or(time::OffsetDateTime::UNIX_EPOCH).date())
}

fn show(date: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// `YYYY-MM-DD`, exactly (a real day of the calendar).
pub fn parse_day(value: &str) -> Option<time::Date> {
    let b = value.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
        return None;
    }
    let year: i32 = value[0..4].parse().ok()?;
    let month: u8 = value[5..7].parse().ok()?;
    let day: u8 = value[8..10].parse().ok()?;
    time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
}

fn day_field(field: &'static str, value: &str) -> Result<time::Date, RangeError> {
    parse_day(value).ok_or_else(|| RangeError { field, message: "expected a day as YYYY-MM-DD".into() })
}

/// The inclusive range of days a query covers: `to` defaults to today (UTC,
/// from `now`), `from` to 29 days before `to` (30 days). Refused: a day that
/// is not `YYYY-MM-DD`, `from` after `to`, more than [`MAX_RANGE_DAYS`] days.
pub fn day_range(from: Option<&str>, to: Option<&str>, now: i64) -> Result<(String, String), RangeError> {
    let to = match to {
        Some(t) => day_field("to", t)?,
        None => time::OffsetDateTime::from_unix_timestamp(now).unwrap_or(time::OffsetDateTime::UNIX_EPOCH).date(),
    };
    let from = match from {
        Some(f) => day_field("from", f)?,
        None => to.checked_sub(time::Duration::days(29)).unwrap_or(to),
    };
    if from > to {
        return Err(RangeError { field: "from", message: "must not be after to (default: today, UTC)".into() });
    }
    let days = (to - from).whole_days() + 1;
    if days > MAX_RANGE_DAYS {
        return Err(RangeError {
            field: "from",
            message: format!("the range covers {days} days; at most {MAX_RANGE_DAYS}"),
        });
    }
    Ok((show(from), show(to)))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Dimensions {
    day: String,
    user_id: String,
    group: String,
    key_id: String,
    model: String,
}

struct Inner {
    pending: Mutex<HashMap<Dimensions, UsageCounters>>,
    max_pending: usize,
}

/// Usage counters in memory, written to the store in batches. Cheap to clone
/// (shared); [`Metering::record`] never touches the database.
#[derive(Clone)]
pub struct Metering {
    inner: Arc<Inner>,
}

impl Default for Metering {
    fn default() -> Self {
        Metering::new(DEFAULT_MAX_PENDING)
    }
}

impl std::fmt::Debug for Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering").field("pending_rows", &self.pending_rows()).finish()
    }
}

fn cut(model: &str) -> String {
    if model.len() <= MAX_MODEL_LEN {
        return model.to_owned();
    }
    let mut end = MAX_MODEL_LEN;
    while !model.is_char_boundary(end) {
        end -= 1;
    }
    model[..end].to_owned()
}

impl Metering {
    /// Holding at most `max_pending` rows waiting for the database.
    pub fn new(max_pending: usize) -> Self {
        Metering { inner: Arc::new(Inner { pending: Mutex::new(HashMap::new()), max_pending }) }
    }

    /// Counts one request: in memory, added to its day's row (written by the
    /// next flush), and to the Prometheus counters (labelled by group only:
    /// models and users are the clients' and would make the series unbounded).
    pub fn record(&self, e: UsageEvent) {
        let prompt = i64::try_from(e.prompt_tokens).unwrap_or(i64::MAX);
        let completion = i64::try_from(e.completion_tokens).unwrap_or(i64::MAX);
        metrics::counter!("gatehouse_llm_tokens_total", "kind" => "prompt", "group" => e.group.clone())
            .increment(e.prompt_tokens);
        metrics::counter!("gatehouse_llm_tokens_total", "kind" => "completion", "group" => e.group.clone())
            .increment(e.completion_tokens);
        metrics::counter!("gatehouse_llm_spend_nano_usd_total", "group" => e.group.clone())
            .increment(u64::try_from(e.cost_nano_usd).unwrap_or(0));
        if !e.measured {
            metrics::counter!("gatehouse_llm_unmeasured_total", "group" => e.group.clone()).increment(1);
        }
        let counters = UsageCounters {
            requests: 1,
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost_nano_usd: e.cost_nano_usd,
            unmeasured: i64::from(!e.measured),
        };
        let dims = Dimensions {
            day: day_of(e.at),
            user_id: e.user_id,
            group: e.group,
            key_id: e.key_id.unwrap_or_default(),
            model: cut(&e.model),
        };
        let mut pending = self.lock();
        self.add(&mut pending, dims, &counters);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Dimensions, UsageCounters>> {
        // A poisoned lock means another thread panicked between two plain
        // field updates; the counters are still consistent enough to keep.
        self.inner.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds to a pending row, or starts one while under the bound.
    fn add(&self, pending: &mut HashMap<Dimensions, UsageCounters>, dims: Dimensions, counters: &UsageCounters) {
        if let Some(row) = pending.get_mut(&dims) {
            row.add(counters);
        } else if pending.len() < self.inner.max_pending {
            pending.insert(dims, *counters);
        } else {
            metrics::counter!("gatehouse_llm_usage_dropped_total").increment(counters.requests.max(0) as u64);
        }
    }

    /// Rows waiting for the database.
    pub fn pending_rows(&self) -> usize {
        self.lock().len()
    }

    fn take(&self) -> Vec<UsageRow> {
        let mut pending = self.lock();
        pending
            .drain()
            .map(|(d, counters)| UsageRow {
                day: d.day,
                user_id: d.user_id,
                group: d.group,
                key_id: d.key_id,
                model: d.model,
                counters,
            })
            .collect()
    }

    fn put_back(&self, rows: Vec<UsageRow>) {
        let mut pending = self.lock();
        for r in rows {
            let dims = Dimensions { day: r.day, user_id: r.user_id, group: r.group, key_id: r.key_id, model: r.model };
            self.add(&mut pending, dims, &r.counters);
        }
    }

    /// Writes what was recorded, in one transaction. On failure the batch is
    /// kept (merged with what was recorded meanwhile) for the next flush,
    /// and the error returned.
    pub async fn flush(&self, store: &DynStore) -> StoreResult<()> {
        let batch = self.take();
        if batch.is_empty() {
            return Ok(());
        }
        match store.add_usage(&batch).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, rows = batch.len(), "could not write LLM usage; kept for the next flush");
                self.put_back(batch);
                Err(e)
            }
        }
    }

    /// Flushes every `interval` until `shutdown` resolves, then once more
    /// (trying a few times: what is not written then is lost).
    pub async fn run(self, store: DynStore, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tick.tick() => { let _ = self.flush(&store).await; }
                () = &mut shutdown => break,
            }
        }
        for attempt in 1..=3 {
            if self.flush(&store).await.is_ok() {
                return;
            }
            if attempt < 3 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        tracing::error!(rows = self.pending_rows(), "LLM usage not written at shutdown: lost");
    }
}

/// Settled usage from the budgets goes to the usage table.
impl crate::budget::UsageSink for Metering {
    fn record(&self, event: UsageEvent) {
        Metering::record(self, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_796_083_199), "2026-11-30");
        assert_eq!(day_of(1_796_083_200), "2026-12-01");
    }

    #[test]
    fn ranges_are_checked() {
        let now = 1_796_083_200; // 2026-12-01
        assert_eq!(day_range(None, None, now).unwrap(), ("2026-11-02".into(), "2026-12-01".into()));
        assert_eq!(
            day_range(Some("2026-01-01"), Some("2026-12-31"), now).unwrap(),
            ("2026-01-01".into(), "2026-12-31".into())
        );
        assert_eq!(day_range(Some("2024-01-01"), Some("2024-12-31"), now).unwrap().0, "2024-01-01"); // 366 days
        assert_eq!(day_range(Some("2025-01-01"), Some("2026-01-02"), now).unwrap_err().field, "from");
        assert_eq!(day_range(Some("2026-12-02"), Some("2026-12-01"), now).unwrap_err().field, "from");
        assert_eq!(day_range(Some("2026-13-01"), None, now).unwrap_err().field, "from");
        assert_eq!(day_range(None, Some("yesterday"), now).unwrap_err().field, "to");
        assert_eq!(day_range(None, Some("2026-2-1"), now).unwrap_err().field, "to");
    }

    #[test]
    fn group_by_names() {
        assert_eq!("day".parse::<UsageGroupBy>(), Ok(UsageGroupBy::Day));
        assert_eq!("model,day".parse::<UsageGroupBy>(), Ok(UsageGroupBy::DayModel));
        assert!("user".parse::<UsageGroupBy>().is_err());
        assert!("total".parse::<UsageGroupBy>().is_err());
    }

    fn event(model: &str, at: i64) -> UsageEvent {
        UsageEvent {
            at,
            user_id: "u".into(),
            group: "default".into(),
            key_id: None,
            model: model.into(),
            prompt_tokens: 10,
            completion_tokens: 5,
            cost_nano_usd: 7,
            measured: false,
        }
    }

    #[test]
    fn records_aggregate_and_are_bounded() {
        let m = Metering::new(2);
        m.record(event("a", 0));
        m.record(event("a", 100));
        m.record(event("b", 0));
        m.record(event("c", 0)); // a third row: dropped
        m.record(event("a", 86_400)); // another day: dropped
        m.record(event("b", 5)); // an existing row still adds up
        let mut rows = m.take();
        rows.sort_by(|a, b| a.model.cmp(&b.model));
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].counters,
            UsageCounters { requests: 2, prompt_tokens: 20, completion_tokens: 10, cost_nano_usd: 14, unmeasured: 2 }
        );
        assert_eq!(rows[1].counters.requests, 2);
        assert_eq!(m.pending_rows(), 0);
        m.put_back(rows);
        assert_eq!(m.pending_rows(), 2);
    }

    #[test]
    fn long_model_names_are_cut() {
        let name = "é".repeat(150); // 300 bytes
        let cut = cut(&name);
        assert!(cut.len() <= MAX_MODEL_LEN && name.starts_with(&cut));
    }
}
