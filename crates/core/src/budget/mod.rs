//! Token and spend budgets, exact under concurrency and streaming.
//!
//! Before the call, Check estimates what the request can cost at most (the
//! prompt's length plus its `max_tokens`, or a default ceiling) and
//! **reserves** it against every budget that applies to the caller (the
//! key's, the user's and the group's): all fit, or the request is refused
//! with 429 `QUOTA_EXCEEDED`. After the call, the real usage reported by the
//! upstream (read from the response by the ext_proc service) replaces the
//! reservation; a reservation never settled is charged in full at its
//! deadline. So, when every request carries `max_tokens`, usage never
//! exceeds a budget, whatever the concurrency.

pub mod ledger;
pub mod prices;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::budget::{Budget, NANO_PER_USD, TokenHeaders, Window, format_usd};
use crate::domain::{Denial, Principal};
use crate::meter::{Metered, Usage};
use ledger::{Actual, Charge, Ledger, Record, Reserved};
pub use prices::{Price, Prices};

/// What Check reads from a request body for budgets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Prompt tokens, estimated from the body (see [`Settings::chars_per_token`]).
    pub prompt_chars: usize,
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens`.
    pub max_tokens: Option<u64>,
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// The route's ceiling for requests without `max_tokens`, if it has one.
    pub route_max_tokens: Option<u64>,
    /// Chat messages: each adds template tokens of its own.
    pub messages: usize,
    /// Choices asked for (`n`, `best_of`): each may produce the ceiling.
    pub choices: u64,
}

/// Template tokens a chat message adds around its text, and a chat prompt
/// around all of them (OpenAI's accounting; other templates are close).
const TOKENS_PER_MESSAGE: u64 = 4;
const TOKENS_PER_CHAT: u64 = 3;

/// What to do with a budgeted stream that will not report its usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnmeasuredStreams {
    /// 400, saying to add `stream_options.include_usage`.
    #[default]
    Refuse,
    /// Let it through and charge the whole reservation.
    Charge,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub prices: Prices,
    /// Completion tokens reserved for a request that sets no `max_tokens`.
    pub default_max_tokens: u64,
    /// Prompt characters per reserved token: 1 (the default) reserves one
    /// token per character, more than any tokenizer produces for text.
    pub chars_per_token: u64,
    /// A reservation not settled within this time is charged as reserved.
    pub settle_timeout: Duration,
    pub unmeasured_streams: UnmeasuredStreams,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            prices: Prices::default(),
            default_max_tokens: 4096,
            chars_per_token: 1,
            settle_timeout: Duration::from_secs(600),
            unmeasured_streams: UnmeasuredStreams::Refuse,
        }
    }
}

/// A granted reservation, for the response and the dynamic metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    /// The budgets it counts against (`key:ID`, `user:ID`, `group:NAME`).
    pub budgets: Vec<String>,
    pub prompt: u64,
    pub completion: u64,
    pub nano_usd: i64,
    pub tokens: Option<TokenHeaders>,
}

/// One request's usage, for the usage tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEvent {
    pub at: i64,
    pub user_id: String,
    pub group: String,
    pub key_id: Option<String>,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_nano_usd: i64,
    /// `false`: no usage was reported; the reservation was charged.
    pub measured: bool,
}

/// Where settled usage goes (the batched usage tables).
pub trait UsageSink: Send + Sync + 'static {
    fn record(&self, event: UsageEvent);
}

/// Budgets on the Check path and at settlement.
pub struct Budgets {
    ledger: Arc<dyn Ledger>,
    settings: Settings,
    sink: Arc<dyn UsageSink>,
}

/// What the ext_authz metadata tells the settlement about a request.
pub type Attribution = HashMap<String, String>;

impl Budgets {
    pub fn new(ledger: Arc<dyn Ledger>, settings: Settings, sink: Arc<dyn UsageSink>) -> Self {
        Budgets { ledger, settings, sink }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Reserves the request's largest cost against every budget of the
    /// caller: the key's and the user's (on the principal) and `group`'s
    /// (the caller's group, as Check read it for its model list).
    pub async fn reserve(
        &self,
        principal: &Principal,
        group: Budget,
        model: Option<&str>,
        estimate: Estimate,
        now: i64,
    ) -> Result<Reservation, Denial> {
        let key = principal.key_id.as_ref().filter(|_| !principal.budgets.key.is_empty());
        let user = Some(principal.budgets.user).filter(|b| !b.is_empty());
        let group = Some(group).filter(|b| !b.is_empty());
        let scopes: Vec<(String, Budget)> = [
            key.map(|k| (format!("key:{k}"), principal.budgets.key)),
            user.map(|b| (format!("user:{}", principal.user_id), b)),
            group.map(|b| (format!("group:{}", principal.group), b)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let budgeted = !scopes.is_empty();
        if budgeted && estimate.stream && !estimate.include_usage {
            match self.settings.unmeasured_streams {
                UnmeasuredStreams::Refuse => {
                    return Err(Denial::InvalidBody(
                        "this caller has a token or spend budget: a streamed request must ask for its usage \
                         with \"stream_options\": {\"include_usage\": true}"
                            .into(),
                    ));
                }
                UnmeasuredStreams::Charge => {}
            }
        }
        let model = model.unwrap_or("");
        let spends = scopes.iter().any(|(_, b)| b.spend.is_some());
        let price = match self.settings.prices.price(model) {
            Some(p) => p,
            None if spends => return Err(Denial::ModelNotPriced { model: model.chars().take(100).collect() }),
            None => Price::FREE,
        };
        let messages = estimate.messages as u64;
        let template =
            if messages > 0 { TOKENS_PER_CHAT.saturating_add(messages.saturating_mul(TOKENS_PER_MESSAGE)) } else { 0 };
        let text = (estimate.prompt_chars as u64).div_ceil(self.settings.chars_per_token.max(1));
        let prompt = text.saturating_add(template);
        // `max_tokens` already counts every choice; a default ceiling is per choice.
        let completion = estimate.max_tokens.unwrap_or_else(|| {
            let per_choice = estimate.route_max_tokens.unwrap_or(self.settings.default_max_tokens);
            per_choice.saturating_mul(estimate.choices.max(1))
        });
        // Every request costs something, so a budget bounds how many can be
        // open at once.
        let completion = if prompt.saturating_add(completion) == 0 { 1 } else { completion };
        let tokens = i64::try_from(prompt.saturating_add(completion)).unwrap_or(i64::MAX);
        let nano_usd = price.cost(prompt, completion);
        let mut charges = Vec::new();
        let mut windows = Vec::new();
        for (scope, budget) in &scopes {
            for c in counters(scope, budget) {
                charges.push(Charge {
                    counter: c.counter,
                    bucket: c.window.bucket(now),
                    oldest: c.window.oldest_counted(now),
                    amount: if c.spend { nano_usd } else { tokens },
                    limit: c.limit,
                    spend: c.spend,
                    retention: c.window.retention_seconds(),
                });
                windows.push(c.window);
            }
        }
        let id = reservation_id();
        let budgets: Vec<String> = scopes.iter().map(|(s, _)| s.clone()).collect();
        let mut reservation = Reservation { id: id.clone(), budgets, prompt, completion, nano_usd, tokens: None };
        if charges.is_empty() {
            return Ok(reservation);
        }
        let record = Record {
            id,
            user_id: principal.user_id.to_string(),
            group: principal.group.to_string(),
            key_id: principal.key_id.as_deref().map(str::to_owned),
            model: model.to_owned(),
            prompt,
            completion,
            price: (price.input_nano_per_million, price.output_nano_per_million),
            deadline: now + i64::try_from(self.settings.settle_timeout.as_secs()).unwrap_or(i64::MAX / 4),
            charges,
        };
        let outcome = self.ledger.reserve(&record, now).await.map_err(|e| {
            tracing::warn!(error = %e, "budget ledger unavailable: refusing a budgeted request");
            Denial::BackendUnavailable
        })?;
        match outcome {
            Reserved::Granted { used, oldest } => {
                for (i, charge) in record.charges.iter().enumerate().filter(|(_, c)| !c.spend) {
                    let shown = TokenHeaders {
                        limit: charge.limit,
                        remaining: (charge.limit - used[i]).max(0),
                        reset_seconds: windows[i].seconds_until_dropped(oldest[i], now),
                    };
                    if reservation.tokens.is_none_or(|t| shown.remaining < t.remaining) {
                        reservation.tokens = Some(shown);
                    }
                }
                metrics::counter!("gatehouse_budget_reservations_total", "outcome" => "granted").increment(1);
                Ok(reservation)
            }
            Reserved::Refused { index, used, oldest } => {
                metrics::counter!("gatehouse_budget_reservations_total", "outcome" => "refused").increment(1);
                let charge = &record.charges[index];
                let window = windows[index];
                // A request larger than the whole budget will never fit.
                let retry_after_seconds =
                    (charge.amount <= charge.limit).then(|| window.seconds_until_dropped(oldest, now));
                let (scope, _) = charge.counter.split_once('|').unwrap_or((&charge.counter, ""));
                let message = if charge.spend {
                    format!(
                        "{scope} spend budget exhausted: ${} of ${} used; this request may cost up to ${}",
                        format_usd(used),
                        format_usd(charge.limit),
                        format_usd(charge.amount)
                    )
                } else {
                    format!(
                        "{scope} token budget exhausted: {used} of {} tokens used; this request may use up to {}",
                        charge.limit, charge.amount
                    )
                };
                let tokens = (!charge.spend).then(|| TokenHeaders {
                    limit: charge.limit,
                    remaining: (charge.limit - used).max(0),
                    reset_seconds: window.seconds_until_dropped(oldest, now),
                });
                Err(Denial::QuotaExceeded { message, retry_after_seconds, tokens })
            }
        }
    }

    /// Replaces a reservation with what the upstream reported, records the
    /// usage and returns whether this call settled it. `attribution` is the
    /// request's ext_authz metadata (`reservation`, `budgets`, `user_id`, ...).
    pub async fn settle(&self, attribution: &Attribution, metered: &Metered, now: i64) -> bool {
        let Some(id) = attribution.get("reservation") else { return false };
        let usage = match metered {
            Metered::Usage(u) => Some(*u),
            Metered::Unmeasured(_) => None,
        };
        let budgeted = attribution.get("budgets").is_some_and(|b| !b.is_empty());
        let record = if budgeted {
            let actual = usage.map(|u| {
                let record_price = self.price_of(attribution);
                Actual {
                    tokens: i64::try_from(u.total_tokens).unwrap_or(i64::MAX),
                    nano_usd: record_price.cost(u.prompt_tokens, u.completion_tokens),
                }
            });
            match self.ledger.settle(id, actual).await {
                Ok(Some(record)) => record,
                Ok(None) => {
                    metrics::counter!("gatehouse_budget_settlements_total", "outcome" => "unknown").increment(1);
                    return false;
                }
                Err(e) => {
                    // Left open: charged as reserved at its deadline.
                    tracing::warn!(error = %e, "could not settle a reservation; it will be charged as reserved");
                    metrics::counter!("gatehouse_budget_settlements_total", "outcome" => "error").increment(1);
                    return false;
                }
            }
        } else {
            Record {
                id: id.clone(),
                user_id: attribution.get("user_id").cloned().unwrap_or_default(),
                group: attribution.get("group").cloned().unwrap_or_default(),
                key_id: attribution.get("key_id").cloned(),
                model: attribution.get("model").cloned().unwrap_or_default(),
                prompt: number(attribution, "reserved_prompt"),
                completion: number(attribution, "reserved_completion"),
                price: {
                    let p = self.settings.prices.price(attribution.get("model").map_or("", String::as_str));
                    p.map_or((0, 0), |p| (p.input_nano_per_million, p.output_nano_per_million))
                },
                deadline: now,
                charges: Vec::new(),
            }
        };
        let outcome = if usage.is_some() { "measured" } else { "charged_reservation" };
        metrics::counter!("gatehouse_budget_settlements_total", "outcome" => outcome).increment(1);
        self.record_usage(&record, usage, now);
        true
    }

    fn price_of(&self, attribution: &Attribution) -> Price {
        self.settings.prices.price(attribution.get("model").map_or("", String::as_str)).unwrap_or(Price::FREE)
    }

    fn record_usage(&self, record: &Record, usage: Option<Usage>, now: i64) {
        let (prompt, completion) =
            usage.map_or((record.prompt, record.completion), |u| (u.prompt_tokens, u.completion_tokens));
        let price = Price { input_nano_per_million: record.price.0, output_nano_per_million: record.price.1 };
        if record.user_id.is_empty() {
            return;
        }
        self.sink.record(UsageEvent {
            at: now,
            user_id: record.user_id.clone(),
            group: record.group.clone(),
            key_id: record.key_id.clone(),
            model: record.model.clone(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost_nano_usd: price.cost(prompt, completion),
            measured: usage.is_some(),
        });
    }

    /// Charges reservations past their deadline as reserved.
    pub async fn expire_due(&self, now: i64) -> usize {
        match self.ledger.expire(now, 500).await {
            Ok(records) => {
                for record in &records {
                    metrics::counter!("gatehouse_budget_settlements_total", "outcome" => "expired").increment(1);
                    self.record_usage(record, None, now);
                }
                records.len()
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not expire reservations");
                0
            }
        }
    }

    /// Every second until cancelled: reservations past their deadline are
    /// charged as reserved (and recorded as unmeasured usage).
    pub async fn run_expiry(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    while self.expire_due(now).await == 500 {}
                }
                () = cancel.cancelled() => return,
            }
        }
    }
}

/// One limit of a budget and the ledger counter it is kept in.
struct Counter {
    counter: String,
    window: Window,
    limit: i64,
    spend: bool,
}

/// The counters of `scope`'s budget (`key:ID`, `user:ID`, `group:NAME`).
/// The window is part of the name: changing it starts a fresh count.
fn counters(scope: &str, budget: &Budget) -> Vec<Counter> {
    let tokens = budget.tokens.map(|t| Counter {
        counter: format!("{scope}|tokens|{}", t.seconds),
        window: t.window(),
        limit: t.tokens,
        spend: false,
    });
    let spend = budget.spend.map(|s| Counter {
        counter: format!("{scope}|usd|{}", s.window),
        window: s.window,
        limit: s.nano_usd,
        spend: true,
    });
    tokens.into_iter().chain(spend).collect()
}

/// Where one budget stands, for the usage pages.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct BudgetStatus {
    /// `key:ID`, `user:ID` or `group:NAME`.
    pub scope: String,
    /// `tokens` or `spend`.
    pub kind: &'static str,
    /// As set: `TOKENS/SECONDS` or `USD/PERIOD`.
    pub limit: String,
    /// Tokens, or dollars for spend.
    pub used: f64,
    pub remaining: f64,
    /// Seconds until the oldest usage counted leaves the window (rolling),
    /// or until the period ends (calendar).
    pub resets_in_seconds: u64,
}

impl Budgets {
    /// Where each of these budgets stands now. A ledger that cannot be read
    /// shows nothing rather than a wrong number.
    pub async fn status(&self, scopes: &[(String, Budget)], now: i64) -> Result<Vec<BudgetStatus>, String> {
        let mut out = Vec::new();
        for (scope, budget) in scopes {
            for c in counters(scope, budget) {
                let oldest = c.window.oldest_counted(now);
                let used = self.ledger.used(&c.counter, oldest).await.map_err(|e| e.to_string())?;
                let as_number = |v: i64| if c.spend { v as f64 / NANO_PER_USD as f64 } else { v as f64 };
                let limit =
                    if c.spend { budget.spend.map(|s| s.to_string()) } else { budget.tokens.map(|t| t.to_string()) };
                out.push(BudgetStatus {
                    scope: scope.clone(),
                    kind: if c.spend { "spend" } else { "tokens" },
                    limit: limit.unwrap_or_default(),
                    used: as_number(used),
                    remaining: as_number((c.limit - used).max(0)),
                    resets_in_seconds: c.window.seconds_until_dropped(oldest, now),
                });
            }
        }
        Ok(out)
    }
}

/// A reservation id: 128 random bits (32 hex digits). Unguessable, so a
/// settlement can only be made for a reservation whose id was seen in
/// Envoy's metadata, never for another caller's by predicting it.
fn reservation_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS has no randomness to give: uuid's generator as a fallback.
        bytes = *uuid::Uuid::new_v4().as_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn number(attribution: &Attribution, name: &str) -> u64 {
    attribution.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}
