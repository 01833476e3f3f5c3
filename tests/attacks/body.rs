//! Attacks: body. JSON body rules (`body = "json"`) read what Envoy forwards
//! with the Check; a body that never reached the Check must not pass as "no
//! body". Envoy drops `transfer-encoding` (hop-by-hop) from the Check, so a
//! chunked body on a route Envoy does not buffer leaves no trace there.

use gatehouse::domain::Role;
use gatehouse::policy::PolicySpec;
use gatehouse::policy::spec::SHIPPED;
use tonic::Code;

use crate::common::*;
use crate::table::*;

/// `body` in HTTP/1.1 chunked framing, in two chunks.
fn chunked(body: &str) -> String {
    let (a, b) = body.split_at(body.len() / 2);
    format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len())
}

/// The shipped policy plus a JSON rule on a path the shipped Envoy does not
/// buffer (`/v1/responses` falls through to its catch-all route), for every
/// method.
fn policy_with_unbuffered_json_route() -> PolicySpec {
    let table = format!(
        "{SHIPPED}\n[[routes]]\nname = \"responses\"\npath = \"/v1/responses\"\npermissions = [\"run_inference\"]\nbody = \"json\"\n"
    );
    PolicySpec::from_toml(&table).unwrap()
}

/// The shipped Envoy config, with its ports moved like `Envoy::start` does,
/// and with `/v1/embeddings` (a `body = "json"` route of the shipped policy)
/// no longer buffering its body.
fn envoy_config_without_embeddings_buffering(
    gatehouse: &TestServer,
    upstream: std::net::SocketAddr,
    port: u16,
) -> String {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/envoy.yaml")).unwrap();
    let buffered = "- match: { path_separated_prefix: \"/v1/embeddings\" }\n                route: *inference\n                request_headers_to_remove: *uncompressed\n                typed_per_filter_config: *with_body\n";
    let unbuffered = "- match: { path_separated_prefix: \"/v1/embeddings\" }\n                route: *inference\n";
    assert!(shipped.contains(buffered), "the shipped config buffers /v1/embeddings as this test expects");
    shipped
        .replace(buffered, unbuffered)
        .replace("port_value: 10000", &format!("port_value: {port}"))
        .replace("port_value: 9901", &format!("port_value: {}", free_port()))
        .replace("port_value: 9191", &format!("port_value: {}", gatehouse.grpc.port()))
        .replace("port_value: 8080", &format!("port_value: {}", gatehouse.http.port()))
        .replace("port_value: 9000", &format!("port_value: {}", upstream.port()))
        .replace("address: 0.0.0.0", "address: 127.0.0.1")
}

const EMBED: &str = r#"{"model":"text-embed","input":"hello"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_envoy_never_forwarded_is_refused() {
    let gatehouse = TestServer::start(Backend::Sqlite).await;
    let (_, key) = gatehouse.user_with_key("u@example.com", Role::Viewer, None).await;
    let upstream = spawn_echo().await;
    let port = free_port();
    let config = envoy_config_without_embeddings_buffering(&gatehouse, upstream, port);
    let envoy = Envoy::run(port, &config).await;
    let stack = Stack { gatehouse, envoy };
    let long_prompt = format!(r#"{{"model":"m","input":"{}"}}"#, "x".repeat(20_000));
    let attack = |name, body: Option<String>| {
        let a = Attack::new(name, "POST", "/v1/embeddings", 400).header("x-api-key", key.clone());
        match body {
            Some(b) => {
                a.header("content-type", "application/json").header("transfer-encoding", "chunked").body(chunked(&b))
            }
            None => a,
        }
    };
    stack
        .run(&[
            attack("chunked, unbuffered", Some(EMBED.to_owned())),
            attack("chunked, unbuffered, prompt over the limit", Some(long_prompt.clone())),
            attack("chunked, unbuffered, model-less", Some(r#"{"input":"hi"}"#.to_owned())),
            Attack::new("chunked, header spelled in capitals", "POST", "/v1/embeddings", 400)
                .header("x-api-key", key.clone())
                .header("Transfer-Encoding", "CHUNKED")
                .body(chunked(EMBED)),
            Attack::new("content-length, unbuffered", "POST", "/v1/embeddings", 400)
                .header("x-api-key", key.clone())
                .header("content-type", "application/json")
                .body(EMBED),
            attack("no body at all", None),
            // Where Envoy buffers, a chunked body is read like any other.
            Attack::new("chunked, buffered", "POST", "/v1/chat/completions", 200)
                .header("x-api-key", key.clone())
                .header("transfer-encoding", "chunked")
                .body(chunked(CHAT)),
            Attack::new("chunked, buffered, prompt over the limit", "POST", "/v1/chat/completions", 400)
                .header("x-api-key", key.clone())
                .header("transfer-encoding", "chunked")
                .body(chunked(&long_prompt)),
        ])
        .await;
    // The refusal says why.
    let (_, head) = raw_request(stack.envoy.port, &attack("message", Some(EMBED.to_owned()))).await;
    assert!(head.contains("not forwarded") && head.contains("JSON body"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_rule_on_a_path_envoy_does_not_buffer_refuses_bodies_it_never_saw() {
    let gatehouse = TestServer::start_with(Backend::Sqlite, |c| c.policy = policy_with_unbuffered_json_route()).await;
    let (_, key) = gatehouse.user_with_key("u@example.com", Role::Viewer, None).await;
    let stack = Stack::start(gatehouse).await;
    let body = r#"{"model":"m","input":"hi"}"#;
    let mut rows = Vec::new();
    for method in ["POST", "PUT", "PATCH"] {
        rows.push(
            Attack::new("chunked", method, "/v1/responses", 400)
                .header("x-api-key", key.clone())
                .header("content-type", "application/json")
                .header("transfer-encoding", "chunked")
                .body(chunked(body)),
        );
        rows.push(Attack::new("empty", method, "/v1/responses", 400).header("x-api-key", key.clone()));
    }
    // Nothing to inspect on a request that carries no body.
    rows.push(Attack::new("GET", "GET", "/v1/responses", 200).header("x-api-key", key.clone()));
    stack.run(&rows).await;
}

/// Direct Checks: what Envoy sends for a POST whose body it did not buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_without_the_body_is_refused() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.policy = policy_with_unbuffered_json_route()).await;
    let (_, key) = s.user_with_key("u@example.com", Role::Viewer, None).await;
    let h = [("x-api-key", key.as_str())];
    for (method, path) in [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/embeddings"),
        ("PUT", "/v1/responses"),
        ("PATCH", "/v1/responses"),
        ("post", "/v1/responses"),
    ] {
        let c = s.check(method, path, &h).await;
        c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
        let message = c.body()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("not forwarded") && message.contains("JSON body"), "{method} {path}: {message}");
    }
    // A client cannot claim the body was forwarded: the marker with no bytes
    // is an empty body, not JSON.
    let c = s.check("POST", "/v1/chat/completions", &[h[0], ("x-envoy-auth-partial-body", "false")]).await;
    c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
    assert!(s.check("GET", "/v1/responses", &h).await.allowed());
    // The body, when it comes, is read.
    assert!(s.check_body("POST", "/v1/chat/completions", &h, CHAT).await.allowed());
    s.finish().await;
}

/// Bodies above tonic's default 4 MiB message limit, up to max_request_bytes
/// (10 MiB), get a decision rather than a transport error (503 at Envoy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_get_a_decision() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (_, key) = s.user_with_key("u@example.com", Role::Viewer, None).await;
    let h = [("x-api-key", key.as_str())];
    let padding = "a".repeat(6 << 20);
    let body =
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"metadata":{{"blob":"{padding}"}}}}"#);
    let answer = s.client().await.check(check_request_with_body("POST", "/v1/chat/completions", &h, &body)).await;
    let c = Check(answer.expect("a 6 MiB body gets a decision, not a transport error").into_inner());
    assert!(c.allowed(), "{:?}", c.0.status);
    let prompt = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{padding}"}}]}}"#);
    let c = Check(
        s.client()
            .await
            .check(check_request_with_body("POST", "/v1/chat/completions", &h, &prompt))
            .await
            .unwrap()
            .into_inner(),
    );
    c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
    assert_eq!(c.metadata("reason").as_deref(), Some("prompt_too_long"));
    let over = format!(r#"{{"model":"m","blob":"{}"}}"#, "a".repeat(10 << 20));
    let c = Check(
        s.client()
            .await
            .check(check_request_with_body("POST", "/v1/chat/completions", &h, &over))
            .await
            .unwrap()
            .into_inner(),
    );
    c.assert_denied(413, Code::InvalidArgument, "PAYLOAD_TOO_LARGE");
    s.finish().await;
}

/// Text the model reads outside `messages[].content` counts toward
/// max_prompt_chars, through the real Envoy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_hidden_in_other_fields_are_counted() {
    let gatehouse = TestServer::start(Backend::Sqlite).await;
    let (_, key) = gatehouse.user_with_key("u@example.com", Role::Viewer, None).await;
    let stack = Stack::start(gatehouse).await;
    let long = "x".repeat(10_001);
    let image = "A".repeat(50_000);
    let post = |name, body: String, want| {
        Attack::new(name, "POST", "/v1/chat/completions", want)
            .header("x-api-key", key.clone())
            .header("content-type", "application/json")
            .body(body)
    };
    let hi = r#"[{"role":"user","content":"hi"}]"#;
    stack
        .run(&[
            post(
                "tool description",
                format!(r#"{{"model":"m","messages":{hi},"tools":[{{"type":"function","function":{{"name":"f","description":"{long}"}}}}]}}"#),
                400,
            ),
            post(
                "tool parameters",
                format!(r#"{{"model":"m","messages":{hi},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object","description":"{long}"}}}}}}]}}"#),
                400,
            ),
            post("system", format!(r#"{{"model":"m","system":"{long}","messages":{hi}}}"#), 400),
            post(
                "tool-call arguments",
                format!(r#"{{"model":"m","messages":[{{"role":"assistant","tool_calls":[{{"id":"c","type":"function","function":{{"name":"f","arguments":"{long}"}}}}]}}]}}"#),
                400,
            ),
            post(
                "response schema",
                format!(r#"{{"model":"m","messages":{hi},"response_format":{{"type":"json_schema","json_schema":{{"name":"s","schema":{{"description":"{long}"}}}}}}}}"#),
                400,
            ),
            post(
                "a duplicated nested field",
                format!(r#"{{"model":"m","messages":{hi},"tools":[{{"type":"function","function":{{"name":"f","description":"short","description":"{long}"}}}}]}}"#),
                400,
            ),
            post(
                "a large image is not prompt text",
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"text","text":"what is this?"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{image}"}}}}]}}]}}"#),
                200,
            ),
        ])
        .await;
}
