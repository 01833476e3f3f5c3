//! HTTP transport: probes now; the REST API joins here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::domain::ErrorKind;
use crate::store::DynStore;

#[derive(Clone)]
pub struct HttpState {
    pub store: DynStore,
    /// False once shutdown has begun.
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).fallback(not_found).with_state(state)
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: not shutting down, and the database answers.
async fn readyz(State(state): State<HttpState>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return not_ready("shutting down");
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Json(json!({"status": "ready", "database": "ok"})).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            not_ready("database unavailable")
        }
        Err(_) => not_ready("database timed out"),
    }
}

fn not_ready(reason: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not_ready", "reason": reason}))).into_response()
}

async fn not_found() -> Response {
    let body = json!({"error": {"code": "NOT_FOUND", "message": "no such endpoint", "type": ErrorKind::InvalidRequest.error_type(), "param": null, "details": null}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
