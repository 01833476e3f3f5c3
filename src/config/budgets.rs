//! `[budgets]`: token and spend budgets (see [`crate::budget`]). One
//! settings struct, read from the file's table and then from the
//! environment, validated here.

use std::time::Duration;

use serde::Deserialize;

use super::overlay::Overlay;
use super::{ConfigError, invalid, set};
use crate::budget::{Prices, Settings, UnmeasuredStreams};

/// The `[budgets]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileBudgets {
    /// `PATTERN=INPUT:OUTPUT,...` in dollars per million tokens.
    prices: Option<String>,
    default_max_tokens: Option<u64>,
    chars_per_token: Option<u64>,
    settle_timeout_seconds: Option<u64>,
    unmeasured_streams: Option<UnmeasuredStreams>,
}

impl FileBudgets {
    pub(super) fn apply(self, s: &mut Settings, names: &Overlay) -> Result<(), ConfigError> {
        if let Some(prices) = self.prices {
            s.prices = prices.parse::<Prices>().map_err(|e| invalid(&names.of("budgets.prices"), &prices, e))?;
        }
        set(&mut s.default_max_tokens, self.default_max_tokens);
        set(&mut s.chars_per_token, self.chars_per_token);
        set(&mut s.settle_timeout, self.settle_timeout_seconds.map(Duration::from_secs));
        set(&mut s.unmeasured_streams, self.unmeasured_streams);
        Ok(())
    }
}

pub(super) fn validate(s: &Settings) -> Result<(), ConfigError> {
    if !(1..=10_000_000).contains(&s.default_max_tokens) {
        let v = s.default_max_tokens.to_string();
        return Err(invalid("GATEHOUSE_BUDGET_DEFAULT_MAX_TOKENS", &v, "must be between 1 and 10000000"));
    }
    if !(1..=16).contains(&s.chars_per_token) {
        let v = s.chars_per_token.to_string();
        return Err(invalid("GATEHOUSE_BUDGET_CHARS_PER_TOKEN", &v, "must be between 1 and 16"));
    }
    if !(5..=86_400).contains(&s.settle_timeout.as_secs()) {
        let v = s.settle_timeout.as_secs().to_string();
        return Err(invalid("GATEHOUSE_BUDGET_SETTLE_TIMEOUT_SECONDS", &v, "must be between 5 and 86400"));
    }
    Ok(())
}
