//! A fake OpenAI-compatible upstream: `POST /v1/chat/completions` (and any
//! other path) answers what the request's `model` asks for, with a usage of
//! its own to check the metering against.
//!
//! * not streaming (`"stream": false` or none): one JSON completion with
//!   [`JSON_USAGE`];
//! * `"stream": true`: an event stream of [`chunk count`](chunks) content
//!   chunks, then one with [`SSE_USAGE`] (OpenAI's `include_usage` shape),
//!   then `[DONE]`. Models:
//!   - `no-usage`: no usage chunk;
//!   - `cut`: the connection is dropped after a few chunks, mid-stream;
//!   - `slow`: a chunk every 50 ms, 600 of them (for clients that leave);
//!   - `chunks-N`: N content chunks, 2 ms apart;
//!   - anything else: 5 chunks;
//!
//!   and `max_tokens`, when given, is the number of content chunks.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use tokio::net::TcpListener;

/// (prompt, completion) of a JSON completion.
pub const JSON_USAGE: (u64, u64) = (11, 22);
/// (prompt, completion) of a streamed one.
pub const SSE_USAGE: (u64, u64) = (33, 44);

pub async fn spawn_llm() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(complete)).await });
    addr
}

async fn complete(request: Request) -> Response {
    let body = axum::body::to_bytes(request.into_body(), 16 << 20).await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = body["model"].as_str().unwrap_or("").to_owned();
    if body["stream"] != true {
        let (prompt, completion) = JSON_USAGE;
        let answer = serde_json::json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(answer.to_string()))
            .unwrap();
    }
    let (mut chunks, pause, usage, cut_after) = match model.as_str() {
        "no-usage" => (5, Duration::ZERO, false, None),
        "cut" => (50, Duration::from_millis(5), true, Some(3)),
        "slow" => (600, Duration::from_millis(50), true, None),
        // Apart, as a model's tokens come: one read, one event.
        m => {
            (m.strip_prefix("chunks-").and_then(|n| n.parse().ok()).unwrap_or(5), Duration::from_millis(2), true, None)
        }
    };
    if let Some(n) = body["max_tokens"].as_u64() {
        chunks = n;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for i in 0..chunks {
            if cut_after == Some(i) {
                let _ = tx.send(Err(std::io::Error::other("cut mid-stream"))).await;
                return;
            }
            let event = serde_json::json!({
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": format!("word{i} ")}}],
                "usage": null,
            });
            if tx.send(Ok(Bytes::from(format!("data: {event}\n\n")))).await.is_err() {
                return;
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        if usage {
            let (prompt, completion) = SSE_USAGE;
            let event = serde_json::json!({
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            });
            let _ = tx.send(Ok(Bytes::from(format!("data: {event}\n\n")))).await;
        }
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap()
}
