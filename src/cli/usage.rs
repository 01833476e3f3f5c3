//! `gatehouse usage`: LLM token and spend usage, as a table or JSON.

use super::*;

/// What `gatehouse usage --json` prints.
#[derive(Debug, Serialize)]
pub(super) struct UsageOutput {
    from: String,
    to: String,
    group_by: &'static str,
    rows: Vec<UsageLine>,
    totals: UsageLine,
}

#[derive(Debug, Serialize)]
pub(super) struct UsageLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    total_tokens: i64,
    cost_usd: f64,
    unmeasured: i64,
}

impl UsageLine {
    pub(super) fn new(day: Option<String>, model: Option<String>, c: &UsageCounters) -> Self {
        UsageLine {
            day,
            model,
            requests: c.requests,
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
            total_tokens: c.total_tokens(),
            cost_usd: c.cost_usd(),
            unmeasured: c.unmeasured,
        }
    }
}

/// `gatehouse usage`: a table (or `--json`) of usage straight from the store.
pub async fn run_usage(accounts: Accounts, json: bool, args: UsageArgs) -> anyhow::Result<()> {
    let (from, to) = day_range(args.from.as_deref(), args.to.as_deref(), now())
        .map_err(|e| anyhow::anyhow!("--{}: {}", e.field, e.message))?;
    let user_id = match args.user {
        Some(u) if u.contains('@') => Some(accounts.find_user(&u).await?.id),
        other => other,
    };
    let q = UsageQuery {
        user_id,
        group: args.group,
        key_id: args.key,
        model: args.model,
        from: Some(from.clone()),
        to: Some(to.clone()),
        group_by: args.by,
        limit: 0,
    };
    let rows = accounts.usage(&q).await?;
    let totals = accounts.usage(&UsageQuery { group_by: UsageGroupBy::Total, ..q.clone() }).await?;
    let totals = totals.first().map(|t| t.counters).unwrap_or_default();
    let output = UsageOutput {
        from,
        to,
        group_by: args.by.as_str(),
        rows: rows.iter().map(|r| UsageLine::new(r.day.clone(), r.model.clone(), &r.counters)).collect(),
        totals: UsageLine::new(None, None, &totals),
    };
    print(json, &output, || usage_table(&output, args.by))
}

pub(super) fn usage_table(output: &UsageOutput, by: UsageGroupBy) -> String {
    let mut header: Vec<&str> = Vec::new();
    if by.by_day() {
        header.push("DAY");
    }
    if by.by_model() {
        header.push("MODEL");
    }
    let labels = header.len();
    header.extend(["REQUESTS", "PROMPT", "COMPLETION", "TOTAL", "COST_USD", "UNMEASURED"]);
    let cells = |l: &UsageLine, label: Vec<String>| -> Vec<String> {
        let mut row = label;
        row.extend([
            l.requests.to_string(),
            l.prompt_tokens.to_string(),
            l.completion_tokens.to_string(),
            l.total_tokens.to_string(),
            format!("{:.6}", l.cost_usd),
            l.unmeasured.to_string(),
        ]);
        row
    };
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for l in &output.rows {
        let label = [&l.day, &l.model].into_iter().flatten().cloned().collect();
        table.push(cells(l, label));
    }
    let mut total_label = vec!["TOTAL".to_owned()];
    total_label.resize(labels, String::new());
    table.push(cells(&output.totals, total_label));
    let widths: Vec<usize> =
        (0..header.len()).map(|i| table.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut lines = vec![format!("usage from {} to {} (UTC days), by {}", output.from, output.to, output.group_by)];
    for row in &table {
        let line: Vec<String> =
            row.iter()
                .enumerate()
                .map(|(i, cell)| {
                    if i < labels { format!("{cell:<w$}", w = widths[i]) } else { format!("{cell:>w$}", w = widths[i]) }
                })
                .collect();
        lines.push(line.join("  ").trim_end().to_owned());
    }
    lines.join("\n")
}
