//! Where budget counters and open reservations live: in this process
//! ([`LocalLedger`], the embedded default) or in Redis, shared by every
//! replica (the `gatehouse` crate's `RedisLedger`). Both do the same thing atomically:
//! check every charge of a reservation against its limit and, only if all
//! fit, add them all.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One budget a reservation counts against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// The counter: scope, kind and window (`key:ID|tokens|60`).
    pub counter: String,
    /// The bucket this reservation is counted in.
    pub bucket: i64,
    /// Buckets older than this no longer count (and are dropped).
    pub oldest: i64,
    pub amount: i64,
    pub limit: i64,
    /// `true`: counts money (nano-dollars); `false`: tokens.
    pub spend: bool,
    /// How long the counter must be kept, in seconds.
    pub retention: u64,
}

/// Who a reservation is for and what it holds, kept until it is settled or
/// charged in full when its deadline passes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub user_id: String,
    pub group: String,
    pub key_id: Option<String>,
    pub model: String,
    /// Reserved prompt tokens (the estimate) and completion tokens (the
    /// request's ceiling).
    pub prompt: u64,
    pub completion: u64,
    /// Prices in nano-dollars per million tokens (input, output).
    pub price: (i64, i64),
    /// Unix seconds: after this the reservation is charged as reserved.
    pub deadline: i64,
    pub charges: Vec<Charge>,
}

impl Record {
    pub fn reserved_tokens(&self) -> i64 {
        i64::try_from(self.prompt + self.completion).unwrap_or(i64::MAX)
    }
}

/// What the counters say after a reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserved {
    /// Every charge fit; `used[i]` is charge i's counter including it, and
    /// `oldest[i]` the oldest bucket still holding anything.
    Granted { used: Vec<i64>, oldest: Vec<i64> },
    /// Charge `index` did not fit: `used` is its counter without it.
    Refused { index: usize, used: i64, oldest: i64 },
}

/// The real usage that replaces a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actual {
    pub tokens: i64,
    pub nano_usd: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("budget ledger unavailable: {0}")]
pub struct LedgerError(pub String);

#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Counts `record`'s charges if every one fits its limit, and keeps the
    /// record until it is settled or its deadline passes.
    async fn reserve(&self, record: &Record, now: i64) -> Result<Reserved, LedgerError>;
    /// Replaces the reservation's amounts with `actual` (`None`: charge it
    /// as reserved) and forgets it. Returns the record if this call settled
    /// it; `None` if it was unknown or already settled (nothing changes).
    async fn settle(&self, id: &str, actual: Option<Actual>) -> Result<Option<Record>, LedgerError>;
    /// Reservations whose deadline has passed, charged as reserved and
    /// forgotten (each returned to exactly one caller).
    async fn expire(&self, now: i64, max: usize) -> Result<Vec<Record>, LedgerError>;
    /// The counter's current total (for usage pages), without changing it.
    async fn used(&self, counter: &str, oldest: i64) -> Result<i64, LedgerError>;
}

/// The most reservations the embedded ledger keeps open. Settlement closes
/// each within the upstream's answer, so this many are in flight only when
/// the proxy does not send answers to the ext_proc service: refusing then
/// (503) bounds memory.
pub const MAX_OPEN_RESERVATIONS: usize = 1_000_000;

/// The embedded ledger: exact within one process.
#[derive(Default)]
pub struct LocalLedger {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Counter -> bucket -> amount.
    counters: HashMap<String, HashMap<i64, i64>>,
    open: HashMap<String, Record>,
    deadlines: BTreeSet<(i64, String)>,
}

impl State {
    /// The counter's total over the buckets that still count, dropping the rest.
    fn total(&mut self, counter: &str, oldest: i64) -> (i64, i64) {
        let Some(buckets) = self.counters.get_mut(counter) else { return (0, oldest) };
        buckets.retain(|b, _| *b >= oldest);
        let first = buckets.keys().copied().min().unwrap_or(oldest);
        (buckets.values().sum(), first)
    }
}

#[async_trait]
impl Ledger for LocalLedger {
    async fn reserve(&self, record: &Record, _now: i64) -> Result<Reserved, LedgerError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.open.contains_key(&record.id) {
            return Err(LedgerError("reservation id reused".into()));
        }
        if state.open.len() >= MAX_OPEN_RESERVATIONS {
            return Err(LedgerError(format!(
                "{MAX_OPEN_RESERVATIONS} reservations are open: is ext_proc settling them?"
            )));
        }
        let mut used = Vec::with_capacity(record.charges.len());
        let mut oldest = Vec::with_capacity(record.charges.len());
        for (index, charge) in record.charges.iter().enumerate() {
            let (total, first) = state.total(&charge.counter, charge.oldest);
            if total.saturating_add(charge.amount) > charge.limit {
                return Ok(Reserved::Refused { index, used: total, oldest: first });
            }
            used.push(total + charge.amount);
            oldest.push(first.min(charge.bucket));
        }
        for charge in &record.charges {
            *state.counters.entry(charge.counter.clone()).or_default().entry(charge.bucket).or_default() +=
                charge.amount;
        }
        state.deadlines.insert((record.deadline, record.id.clone()));
        state.open.insert(record.id.clone(), record.clone());
        Ok(Reserved::Granted { used, oldest })
    }

    async fn settle(&self, id: &str, actual: Option<Actual>) -> Result<Option<Record>, LedgerError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(record) = state.open.remove(id) else { return Ok(None) };
        state.deadlines.remove(&(record.deadline, record.id.clone()));
        if let Some(actual) = actual {
            for charge in &record.charges {
                let real = if charge.spend { actual.nano_usd } else { actual.tokens };
                // A bucket already out of the window stays out.
                if let Some(amount) = state.counters.get_mut(&charge.counter).and_then(|b| b.get_mut(&charge.bucket)) {
                    *amount += real - charge.amount;
                }
            }
        }
        Ok(Some(record))
    }

    async fn expire(&self, now: i64, max: usize) -> Result<Vec<Record>, LedgerError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due: Vec<(i64, String)> =
            state.deadlines.iter().take_while(|(d, _)| *d <= now).take(max).cloned().collect();
        let mut out = Vec::with_capacity(due.len());
        for entry in due {
            state.deadlines.remove(&entry);
            if let Some(record) = state.open.remove(&entry.1) {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn used(&self, counter: &str, oldest: i64) -> Result<i64, LedgerError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state.total(counter, oldest).0)
    }
}
