//! Logging, metrics and (with the cargo feature `otel`) trace export.
//! Logs go to stderr; `RUST_LOG` filters them.
//!
//! What is never logged: API keys, tokens, passwords, `Authorization`
//! values, query strings (they may carry credentials). Emails appear only
//! redacted (`a***@example.com`) unless `GATEHOUSE_LOG_EMAILS=true`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[cfg(feature = "otel")]
pub mod otel;

static LOG_EMAILS: AtomicBool = AtomicBool::new(false);

/// Whether log lines may carry full email addresses (off by default).
pub fn set_log_emails(on: bool) {
    LOG_EMAILS.store(on, Ordering::Relaxed);
}

/// An email address as log lines show it: the first character of the local
/// part and the domain (`a***@example.com`), unless full emails are enabled.
pub fn email(address: &str) -> String {
    if LOG_EMAILS.load(Ordering::Relaxed) {
        return address.to_owned();
    }
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

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
        metrics::describe_counter!(
            "gatehouse_check_decisions_total",
            "Check decisions by decision, reason and auth method"
        );
        metrics::describe_histogram!("gatehouse_check_duration_seconds", "Time to decide a Check");
        metrics::describe_counter!("gatehouse_rate_limited_total", "Requests refused by a rate limit, by group");
        metrics::describe_gauge!("gatehouse_ratelimit_redis_available", "1 while rate limits are shared through Redis");
        metrics::describe_counter!(
            "gatehouse_ratelimit_fallback_total",
            "Rate limit decisions made locally because Redis was unavailable"
        );
        metrics::describe_counter!(
            "gatehouse_cache_requests_total",
            "Cache lookups on the Check path by cache (keys, users, groups, tokens) and result (hit, miss, stale)"
        );
        metrics::describe_histogram!("gatehouse_store_duration_seconds", "Database reads behind the caches, by cache");
        metrics::describe_counter!("gatehouse_store_errors_total", "Failed database reads behind the caches, by cache");
        metrics::describe_histogram!("gatehouse_redis_duration_seconds", "Shared rate-limit decisions in Redis");
        metrics::describe_counter!("gatehouse_redis_errors_total", "Failed or timed-out Redis rate-limit calls");
        metrics::describe_counter!(
            "gatehouse_jwks_refreshes_total",
            "Provider key (JWKS) fetches by issuer and result"
        );
        metrics::describe_counter!("gatehouse_audit_write_errors_total", "Audit events that could not be stored");
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
    }
}
