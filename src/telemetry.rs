//! Logging set-up. Logs go to stderr; `RUST_LOG` filters them.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// The process's Prometheus registry, installed on first use.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("gatehouse_check_duration_seconds".into()), &buckets)
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
