//! Logging, metrics and (with the cargo feature `otel`) trace export.
//! Logs go to stderr; `RUST_LOG` filters them.
//!
//! What is never logged: API keys, tokens, passwords, `Authorization`
//! values, query strings (they may carry credentials). Emails appear only
//! redacted (`a***@example.com`) unless `GATEHOUSE_LOG_EMAILS=true`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[cfg(feature = "otel")]
pub mod otel;

pub use gatehouse_core::redact::{PATH_CAP, VALUE_CAP, email, escape, path, redact_emails, set_log_emails};

/// Keeps trace export running; flushes it when dropped (at the end of `main`).
pub struct Telemetry {
    #[cfg(feature = "otel")]
    _otel: Option<otel::Guard>,
}

/// Installs the log subscriber (text or JSON on stderr) and, in builds with
/// the `otel` feature, the OpenTelemetry exporter when `OTEL_EXPORTER_OTLP_*`
/// asks for it. A second initialisation (tests) keeps the first subscriber.
pub fn init(json: bool) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr);
    let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };
    // RUST_LOG filters the log lines only; exported spans have their own filter.
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    #[cfg(feature = "otel")]
    {
        let (layer, guard) = match otel::layer().map_err(anyhow::Error::msg)? {
            Some((layer, guard)) => (Some(layer), Some(guard)),
            None => (None, None),
        };
        let _ = registry.with(layer).try_init();
        if guard.is_some() {
            tracing::info!("exporting traces over OTLP");
        }
        Ok(Telemetry { _otel: guard })
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = registry.try_init();
        if ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_* is set, but this build exports no traces: build with `--features otel`"
            );
        }
        Ok(Telemetry {})
    }
}

/// What a metric is, as Prometheus types it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    /// Exported as `_bucket`, `_sum` and `_count` series.
    Histogram,
}

/// One metric Gatehouse exports.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
}

const fn metric(name: &'static str, kind: MetricKind, help: &'static str) -> Metric {
    Metric { name, kind, help }
}

/// Every metric Gatehouse exports (a series appears once it has a value).
/// The dashboards and alerting rules in `deploy/observability/` use only
/// these; the suite checks both that and that the code records no other.
pub const METRICS: &[Metric] = {
    use MetricKind::{Counter, Gauge, Histogram};
    &[
        metric("gatehouse_check_decisions_total", Counter, "Check decisions by decision, reason and auth method"),
        metric("gatehouse_check_duration_seconds", Histogram, "Time to decide a Check"),
        metric("gatehouse_rate_limited_total", Counter, "Requests refused by a rate limit, by group"),
        metric("gatehouse_ratelimit_redis_available", Gauge, "1 while rate limits are shared through Redis"),
        metric("gatehouse_budget_reservations_total", Counter, "Budget reservations at Check, granted or refused"),
        metric(
            "gatehouse_budget_settlements_total",
            Counter,
            "Reservations settled: measured, charged_reservation (no usage), expired, unknown, error",
        ),
        metric(
            "gatehouse_ratelimit_fallback_total",
            Counter,
            "Rate limit decisions made locally because Redis was unavailable",
        ),
        metric(
            "gatehouse_cache_requests_total",
            Counter,
            "Cache lookups on the Check path by cache (keys, users, groups, tokens) and result (hit, miss, stale)",
        ),
        metric("gatehouse_store_duration_seconds", Histogram, "Database reads behind the caches, by cache"),
        metric("gatehouse_store_errors_total", Counter, "Failed database reads behind the caches, by cache"),
        metric("gatehouse_store_queries_total", Counter, "Database lookups made for Checks, by query"),
        metric("gatehouse_redis_duration_seconds", Histogram, "Shared rate-limit decisions in Redis"),
        metric("gatehouse_redis_errors_total", Counter, "Failed or timed-out Redis rate-limit calls"),
        metric("gatehouse_jwks_refreshes_total", Counter, "Provider key (JWKS) fetches by issuer and result"),
        metric("gatehouse_audit_write_errors_total", Counter, "Audit events that could not be stored"),
        metric(
            "gatehouse_audit_suppressed_total",
            Counter,
            "Audit events counted but not stored, over the per-caller or per-minute bound, by action",
        ),
        metric(
            "gatehouse_auth_rate_limited_total",
            Counter,
            "Registrations and logins refused by their per-address rate limit, by endpoint",
        ),
        metric(
            "gatehouse_password_hashing_refused_total",
            Counter,
            "Password hashes or verifications refused (503) because too many were waiting",
        ),
        metric(
            "gatehouse_login_lockouts_total",
            Counter,
            "Logins refused because the account's or the address's failures are spent, by scope",
        ),
        metric("gatehouse_policy_reloads_total", Counter, "Route table reloads by result (ok, error)"),
        metric(
            "gatehouse_policy_last_reload_successful",
            Gauge,
            "0 while the policy file is refused and an older table serves",
        ),
        metric("gatehouse_policy_rules", Gauge, "Rules in the route table loaded last"),
        metric(
            "gatehouse_tls_certificate_expiry_timestamp_seconds",
            Gauge,
            "notAfter of the served certificate (server) and of the earliest client CA certificate (client_ca)",
        ),
        metric("gatehouse_tls_reloads_total", Counter, "TLS certificate reloads from disk, by result"),
        metric(
            "gatehouse_usage_settlements_total",
            Counter,
            "Responses metered (ext_proc) and settled, by outcome (usage, or why it is unknown: no_usage, cut, ...)",
        ),
        metric("gatehouse_llm_tokens_total", Counter, "LLM tokens metered, by kind (prompt, completion) and group"),
        metric("gatehouse_llm_spend_nano_usd_total", Counter, "LLM spend metered, in 1e-9 USD, by group"),
        metric(
            "gatehouse_llm_unmeasured_total",
            Counter,
            "LLM requests charged their reservation because no usage was reported, by group",
        ),
        metric(
            "gatehouse_llm_usage_dropped_total",
            Counter,
            "LLM requests not added to the usage table: too many rows were waiting for the database",
        ),
        metric("gatehouse_build_info", Gauge, "1, with the version as a label"),
    ]
};

/// The process's Prometheus registry, installed on first use.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), &buckets)
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Another recorder may exist already (tests); this handle then renders
        // an empty registry rather than failing.
        let _ = metrics::set_global_recorder(recorder);
        for m in METRICS {
            match m.kind {
                MetricKind::Counter => metrics::describe_counter!(m.name, m.help),
                MetricKind::Gauge => metrics::describe_gauge!(m.name, m.help),
                MetricKind::Histogram => metrics::describe_histogram!(m.name, m.help),
            }
        }
        metrics::gauge!("gatehouse_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle
    })
}

/// Drains histogram samples into their summaries every `interval` until
/// `shutdown`. The recorder keeps every sample recorded since the last
/// drain; without this, a deployment whose `/metrics` is never scraped grows
/// by 8 bytes per Check.
pub async fn run_upkeep(interval: std::time::Duration, shutdown: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => metrics().run_upkeep(),
            () = &mut shutdown => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_redacted() {
        assert_eq!(email("alice@example.com"), "a***@example.com");
        assert_eq!(email("not an email"), "***");
        assert_eq!(email("@example.com"), "***@example.com");
        assert_eq!(email("a@evil.example\nforged"), "a***@evil.example\\u{a}forged");
    }

    #[test]
    fn request_values_cannot_forge_lines_or_move_the_terminal() {
        assert_eq!(escape("plain /path", 256), "plain /path");
        assert_eq!(escape("a\r\nINFO forged\u{1b}[2J", 256), "a\\u{d}\\u{a}INFO forged\\u{1b}[2J");
        // A backslash is doubled, so `\u{a}` written by the client stays text.
        assert_eq!(escape("\\u{a}", 256), "\\\\u{a}");
        assert_eq!(escape("bidi\u{202e}zero\u{200b}", 256), "bidi\\u{202e}zero\\u{200b}");
        assert_eq!(escape("ümlaut", 256), "ümlaut");
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let long = "x".repeat(60_000);
        let shown = escape(&long, PATH_CAP);
        assert_eq!(shown, format!("{}…(60000 bytes)", "x".repeat(PATH_CAP)));
        // Never inside a character or an escape.
        let lines = "é\n".repeat(200);
        assert_eq!(escape(&lines, 10), "é\\u{a}é…(600 bytes)");
    }

    #[test]
    fn paths_drop_the_query_and_redact_emails() {
        assert_eq!(path("/admin/users/alice@example.com?token=x"), "/admin/users/a***@example.com");
        assert_eq!(path("/admin/users/bob%40example.com/keys"), "/admin/users/b***@example.com/keys");
        assert_eq!(path("/v1/models"), "/v1/models");
        assert_eq!(redact_emails("GET /admin/users/alice@example.com"), "GET /admin/users/a***@example.com");
    }
}
