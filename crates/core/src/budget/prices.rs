//! The model price table: dollars per million input and output tokens, by
//! model name or `*` pattern, first match wins. Spelled
//! `PATTERN=INPUT:OUTPUT` entries separated by commas, e.g.
//! `gpt-4o-mini*=0.15:0.60,gpt-4o*=2.50:10,*=1:4`. Without a `*` entry, a
//! model no entry matches cannot be used under a spend budget.

use std::fmt;
use std::str::FromStr;

use crate::domain::ModelList;
use crate::domain::budget::{format_usd, parse_usd};

/// Nano-dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    pub input_nano_per_million: i64,
    pub output_nano_per_million: i64,
}

impl Price {
    pub const FREE: Price = Price { input_nano_per_million: 0, output_nano_per_million: 0 };

    /// Nano-dollars for these tokens, rounded up.
    pub fn cost(&self, prompt: u64, completion: u64) -> i64 {
        let nano = i128::from(prompt) * i128::from(self.input_nano_per_million)
            + i128::from(completion) * i128::from(self.output_nano_per_million);
        i64::try_from((nano + 999_999) / 1_000_000).unwrap_or(i64::MAX)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prices(Vec<(ModelList, Price)>);

impl Prices {
    pub fn price(&self, model: &str) -> Option<Price> {
        self.0.iter().find(|(pattern, _)| pattern.allows(model)).map(|(_, p)| *p)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for Prices {
    type Err = String;
    fn from_str(s: &str) -> Result<Prices, String> {
        let mut out = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || format!("'{entry}': expected MODEL=INPUT:OUTPUT (dollars per million tokens)");
            let (model, prices) = entry.split_once('=').ok_or_else(bad)?;
            let (input, output) = prices.split_once(':').ok_or_else(bad)?;
            let pattern = ModelList::new([model.trim()]).map_err(|e| format!("'{entry}': {e}"))?;
            let per_million = |v: &str| parse_usd(v.trim()).map_err(|e| format!("'{entry}': {e}"));
            out.push((
                pattern,
                Price { input_nano_per_million: per_million(input)?, output_nano_per_million: per_million(output)? },
            ));
        }
        Ok(Prices(out))
    }
}

impl fmt::Display for Prices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (pattern, p)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(
                f,
                "{sep}{pattern}={}:{}",
                format_usd(p.input_nano_per_million),
                format_usd(p.output_nano_per_million)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins_and_costs_round_up() {
        let prices: Prices = "gpt-4o-mini*=0.15:0.60, gpt-4o*=2.50:10".parse().unwrap();
        let mini = prices.price("gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(mini.cost(1_000_000, 0), 150_000_000);
        assert_eq!(mini.cost(1, 1), 750);
        assert_eq!(Price { input_nano_per_million: 1, output_nano_per_million: 0 }.cost(1, 0), 1, "rounded up");
        assert_eq!(prices.price("gpt-4o").unwrap().cost(1000, 1000), 12_500_000);
        assert_eq!(prices.price("llama"), None);
        assert_eq!(prices.to_string(), "gpt-4o-mini*=0.15:0.6,gpt-4o*=2.5:10");
        let with_default: Prices = "*=1:2".parse().unwrap();
        assert!(with_default.price("anything").is_some());
        for bad in ["gpt", "gpt=1", "gpt=a:1", "=1:1", "gpt=-1:1", "a b=1:1"] {
            assert!(bad.parse::<Prices>().is_err(), "{bad}");
        }
    }
}
