//! OpenTelemetry trace export (cargo feature `otel`): spans go to an OTLP
//! collector over HTTP/protobuf when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the standard `OTEL_*`
//! variables (service name, resource attributes, batch delays, headers)
//! apply. Each Check is a server span whose parent is the caller's W3C
//! `traceparent`, so it joins the trace Envoy started; each API request is a
//! span too. Span attributes never carry credentials or query strings.

use std::sync::atomic::{AtomicBool, Ordering};

use envoy_types::ext_authz::v3::pb::CheckRequest;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Flushes and stops the exporter when dropped (at the end of `main`).
pub struct Guard(SdkTracerProvider);

impl Drop for Guard {
    fn drop(&mut self) {
        EXPORTING.store(false, Ordering::Relaxed);
        if let Err(e) = self.0.shutdown() {
            eprintln!("OpenTelemetry: flushing spans at exit failed: {e}");
        }
    }
}

/// Whether the process exports spans; Check builds its span only then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Whether the environment asks for trace export.
pub fn requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The tracing layer that exports spans, and the guard that flushes them,
/// when the environment asks for export.
pub fn layer<S>() -> Result<Option<(impl Layer<S>, Guard)>, String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    if !requested() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("OpenTelemetry exporter: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "gatehouse".to_owned());
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("gatehouse");
    EXPORTING.store(true, Ordering::Relaxed);
    // Gatehouse's own spans at info and above, whatever RUST_LOG says of logs.
    let filter = tracing_subscriber::filter::Targets::new().with_target("gatehouse", tracing::Level::INFO);
    Ok(Some((tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter), Guard(provider))))
}

/// The span of one Check: method and path (without the query), the
/// decision recorded by [`record_check`], parented on the request's
/// `traceparent`.
pub fn check_span(request: &CheckRequest) -> tracing::Span {
    let http = request.attributes.as_ref().and_then(|a| a.request.as_ref()).and_then(|r| r.http.as_ref());
    let method = http.map_or("", |h| h.method.as_str());
    let path = http.map_or("", |h| h.path.split(['?', '#']).next().unwrap_or_default());
    let span = tracing::info_span!(
        "ext_authz.check",
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = "envoy.service.auth.v3.Authorization/Check",
        http.request.method = method,
        url.path = path,
        gatehouse.decision = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(http) = http {
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(&http.headers)));
        let _ = span.set_parent(parent);
    }
    span
}

/// Records the verdict on the Check's span.
pub fn record_check(span: &tracing::Span, allowed: bool, http_status: i32) {
    span.record("gatehouse.decision", if allowed { "allow" } else { "deny" });
    span.record("http.response.status_code", http_status);
}

struct Headers<'a>(&'a std::collections::HashMap<String, String>);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
