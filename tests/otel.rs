//! OpenTelemetry trace export (cargo feature `otel`; scripts/test runs this
//! file with `--features otel`): a Check's span reaches an OTLP/HTTP
//! collector, joined to the trace in the request's `traceparent`, with the
//! decision and without the credential or the query string.

#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::{Process, check_request};

/// Stands in for an OpenTelemetry collector: keeps every OTLP/HTTP export body.
async fn collector() -> (u16, Arc<Mutex<Vec<Bytes>>>) {
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(|State(b): State<Arc<Mutex<Vec<Bytes>>>>, body: Bytes| async move {
                b.lock().unwrap().push(body);
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }),
        )
        .with_state(bodies.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, bodies)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_spans_reach_the_collector_in_the_callers_trace() {
    let (port, bodies) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("g.db").display());
    let endpoint = format!("http://127.0.0.1:{port}");
    let p = Process::start_env(&[
        ("DATABASE_URL", &database),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "gatehouse-under-test"),
    ])
    .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let key = "gk_0123456789abcdef_notarealsecretnotarealsecretnotarealsecret0000";
    let c = p
        .check_request(check_request(
            "GET",
            "/v1/models?api_key=QUERYSECRET",
            &[("traceparent", &traceparent), ("x-api-key", key)],
        ))
        .await;
    assert_eq!(c.http_status(), 401);

    let id: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap()).collect();
    let mut exported = None;
    for _ in 0..100 {
        exported = bodies.lock().unwrap().iter().find(|b| contains(b, b"ext_authz.check")).cloned();
        if exported.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = exported.unwrap_or_else(|| panic!("no Check span exported; logs: {}", p.logs()));
    assert!(contains(&body, &id), "the span joins the caller's trace");
    assert!(contains(&body, b"gatehouse-under-test"), "service name from OTEL_SERVICE_NAME");
    assert!(contains(&body, b"deny"), "the decision is an attribute");
    assert!(contains(&body, b"/v1/models"));
    assert!(!contains(&body, b"QUERYSECRET"), "no query string in spans");
    assert!(!contains(&body, key.as_bytes()), "no credential in spans");
}
