//! Token metering end to end: a client talks to a real Envoy running the
//! shipped config, Envoy asks Gatehouse (ext_authz), forwards to a fake
//! OpenAI-compatible upstream, and shows Gatehouse the response (ext_proc,
//! observability mode), which reads its usage and settles the reservation
//! the Check put in ext_authz's metadata.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::llm::{JSON_USAGE, SSE_USAGE, spawn_llm};
use common::{Backend, Envoy, TestServer};
use gatehouse::domain::Role;
use gatehouse::grpc::ext_proc::{Attribution, LogSettle, Settle};
use gatehouse::meter::{Metered, Usage};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Settled {
    reservation: String,
    status: u16,
    metered: Metered,
}

/// Keeps every settlement, and lets the shipped one log and count it too.
#[derive(Default)]
struct Recorder(Mutex<Vec<Settled>>);

#[async_trait::async_trait]
impl Settle for Recorder {
    async fn settle(&self, attribution: &Attribution, status: u16, metered: Metered) {
        LogSettle.settle(attribution, status, metered).await;
        let reservation = gatehouse::grpc::ext_proc::reservation(attribution).to_owned();
        assert!(attribution.get("user_id").is_some_and(|u| !u.is_empty()), "{attribution:?}");
        self.0.lock().unwrap().push(Settled { reservation, status, metered });
    }
}

impl Recorder {
    fn all(&self) -> Vec<Settled> {
        self.0.lock().unwrap().clone()
    }

    /// The settlement number `n` (from 0), waited for up to `wait`.
    async fn nth(&self, n: usize, wait: Duration) -> Settled {
        let start = std::time::Instant::now();
        loop {
            if let Some(s) = self.all().get(n) {
                return s.clone();
            }
            assert!(start.elapsed() < wait, "no settlement #{n} within {wait:?}: {:?}", self.all());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn usage((prompt, completion): (u64, u64)) -> Metered {
    Metered::Usage(Usage { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion })
}

/// Envoy's ext_proc counters (`http.gateway.ext_proc.*`), by their last name.
async fn ext_proc_stats(envoy: &Envoy) -> HashMap<String, u64> {
    let url = format!("http://127.0.0.1:{}/stats?filter=ext_proc", envoy.admin_port);
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            let name = name.strip_prefix("http.gateway.ext_proc.")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// How far the counters moved since `before` (once Envoy is done with the
/// requests sent: 1 s), and the counters now.
async fn stats_delta(envoy: &Envoy, before: &HashMap<String, u64>) -> (HashMap<String, u64>, HashMap<String, u64>) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let now = ext_proc_stats(envoy).await;
    let delta = now.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).collect();
    (delta, now)
}

async fn start() -> (TestServer, common::database::TestDb, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let (url, db) = common::fresh_database(Backend::Sqlite).await;
    let settle: Arc<dyn Settle> = recorder.clone();
    let s = TestServer::start_app(common::test_config(&url), |app| app.settle = settle).await;
    (s, db, recorder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_meters_each_inference_response_once() {
    let (s, _db, recorder) = start().await;
    let upstream = spawn_llm().await;
    let envoy = Envoy::start(&s, upstream).await;
    let (_, key) = s.user_with_key("meter@example.com", Role::Admin, None).await;
    let http = reqwest::Client::new();
    let chat = |body: serde_json::Value| {
        http.post(envoy.url("/v1/chat/completions")).header("x-api-key", &key).json(&body).send()
    };
    let wait = Duration::from_secs(10);

    // A JSON completion: its usage, with the upstream's status.
    let r = chat(serde_json::json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]})).await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["usage"]["prompt_tokens"], JSON_USAGE.0, "the response reaches the client unchanged");
    let json = recorder.nth(0, wait).await;
    assert_eq!((json.status, json.metered), (200, usage(JSON_USAGE)));
    assert!(!json.reservation.is_empty(), "{json:?}");

    // A stream whose last chunk has the usage.
    let r = chat(serde_json::json!({"model": "chunks-20", "stream": true, "messages": []})).await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n") && text.contains("word19"), "{text}");
    assert_eq!(recorder.nth(1, wait).await.metered, usage(SSE_USAGE));

    // A stream without usage.
    let r = chat(serde_json::json!({"model": "no-usage", "stream": true, "messages": []})).await.unwrap();
    r.text().await.unwrap();
    assert_eq!(recorder.nth(2, wait).await.metered, Metered::Unmeasured("no_usage"));

    // The upstream drops the connection mid-stream.
    let r = chat(serde_json::json!({"model": "cut", "stream": true, "messages": []})).await.unwrap();
    assert!(r.text().await.is_err(), "the client sees the stream cut");
    let cut = recorder.nth(3, wait).await;
    assert_eq!((cut.status, cut.metered), (200, Metered::Unmeasured("cut")));

    // The client leaves mid-stream.
    let mut r = chat(serde_json::json!({"model": "slow", "stream": true, "messages": []})).await.unwrap();
    assert!(r.chunk().await.unwrap().is_some());
    drop(r);
    let gone = std::time::Instant::now();
    let left = recorder.nth(4, Duration::from_secs(20)).await;
    eprintln!("client gone: settled after {:?}", gone.elapsed());
    assert_eq!((left.status, left.metered), (200, Metered::Unmeasured("cut")));

    // Every allowed request on an inference route holds a reservation, with a
    // model or without.
    let stats = ext_proc_stats(&envoy).await;
    let r = chat(serde_json::json!({"stream": true, "max_tokens": 50, "messages": []})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("word49"));
    assert_eq!(recorder.nth(5, wait).await.metered, usage(SSE_USAGE));
    let (delta, stats) = stats_delta(&envoy, &stats).await;
    assert_eq!(delta["streams_started"], 1, "{delta:?}");
    // Routes without metering open no stream at all.
    assert_eq!(http.get(envoy.url("/v1/models")).header("x-api-key", &key).send().await.unwrap().status(), 200);
    let (delta, stats) = stats_delta(&envoy, &stats).await;
    assert_eq!((delta["streams_started"], delta["stream_msgs_sent"]), (0, 0), "{delta:?}");
    // A refusal on a metered route passes through the filter too (Envoy's
    // local reply), without a reservation: Gatehouse closes the stream at its
    // first message and Envoy sends nothing more (what was on its way when
    // the close came at most), no settlement.
    let r = http.post(envoy.url("/v1/chat/completions")).json(&serde_json::json!({"model": "m"})).send().await;
    assert_eq!(r.unwrap().status(), 401);
    let (delta, _) = stats_delta(&envoy, &stats).await;
    assert_eq!(delta["streams_started"], 1, "{delta:?}");
    assert!(delta["stream_msgs_sent"] <= 2, "{delta:?}");
    eprintln!("refused: {} messages", delta["stream_msgs_sent"]);

    // Exactly one settlement each, none for the others, each its own reservation.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let all = recorder.all();
    assert_eq!(all.len(), 6, "{all:?}");
    let mut reservations: Vec<&str> = all.iter().map(|s| s.reservation.as_str()).collect();
    reservations.sort_unstable();
    reservations.dedup();
    assert_eq!(reservations.len(), 6, "{all:?}");

    // Counted by outcome.
    let usage_settled = s.metric(&key, "gatehouse_usage_settlements_total{", &["outcome=\"usage\""]).await;
    let cut_settled = s.metric(&key, "gatehouse_usage_settlements_total{", &["outcome=\"cut\""]).await;
    assert!(usage_settled >= 2 && cut_settled >= 2, "usage {usage_settled}, cut {cut_settled}");
    drop(envoy);
    s.finish().await;
}

/// What Envoy sends, seen by a processor that only listens: one stream per
/// request, each message's kind and whether it carries the reservation.
mod probe {
    use std::sync::{Arc, Mutex};

    use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
        ExternalProcessor, ExternalProcessorServer,
    };
    use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse, processing_request};
    use tonic::{Request, Response, Status, Streaming};

    #[derive(Debug, Clone)]
    pub struct Seen {
        pub kind: &'static str,
        pub reservation: bool,
        pub observability: bool,
        pub bytes: usize,
        pub end_of_stream: bool,
    }

    /// A stream's messages, and how it ended (`None` while open).
    pub type Stream = (Vec<Seen>, Option<String>);

    /// Streams in the order they opened.
    #[derive(Clone, Default)]
    pub struct Probe(pub Arc<Mutex<Vec<Stream>>>);

    #[tonic::async_trait]
    impl ExternalProcessor for Probe {
        type ProcessStream = tokio_stream::wrappers::ReceiverStream<Result<ProcessingResponse, Status>>;

        async fn process(
            &self,
            request: Request<Streaming<ProcessingRequest>>,
        ) -> Result<Response<Self::ProcessStream>, Status> {
            use processing_request::Request as R;
            let mut inbound = request.into_inner();
            let (open, answers) = tokio::sync::mpsc::channel(1);
            let streams = self.0.clone();
            let index = {
                let mut s = streams.lock().unwrap();
                s.push((Vec::new(), None));
                s.len() - 1
            };
            tokio::spawn(async move {
                let end = loop {
                    match inbound.message().await {
                        Ok(Some(m)) => {
                            let reservation = m
                                .metadata_context
                                .as_ref()
                                .and_then(|c| c.filter_metadata.get("envoy.filters.http.ext_authz"))
                                .is_some_and(|n| n.fields.contains_key("reservation"));
                            let (kind, bytes, end_of_stream) = match &m.request {
                                Some(R::RequestHeaders(h)) => ("request_headers", 0, h.end_of_stream),
                                Some(R::ResponseHeaders(h)) => ("response_headers", 0, h.end_of_stream),
                                Some(R::RequestBody(b)) => ("request_body", b.body.len(), b.end_of_stream),
                                Some(R::ResponseBody(b)) => ("response_body", b.body.len(), b.end_of_stream),
                                Some(R::RequestTrailers(_)) => ("request_trailers", 0, true),
                                Some(R::ResponseTrailers(_)) => ("response_trailers", 0, true),
                                None => ("none", 0, false),
                            };
                            let seen =
                                Seen { kind, reservation, observability: m.observability_mode, bytes, end_of_stream };
                            streams.lock().unwrap()[index].0.push(seen);
                        }
                        Ok(None) => break "ended".to_owned(),
                        Err(e) => break format!("error {:?}: {}", e.code(), e.message()),
                    }
                };
                streams.lock().unwrap()[index].1 = Some(end);
                drop(open);
            });
            Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(answers)))
        }
    }

    pub async fn spawn(probe: Probe) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ExternalProcessorServer::new(probe))
                .serve_with_incoming(incoming),
        );
        port
    }
}

/// The shipped config with its ext_proc filter talking to `port` instead.
fn ext_proc_to(port: u16) -> impl Fn(String) -> String {
    move |config: String| {
        let (head, tail) = config.split_once("name: envoy.filters.http.ext_proc\n").unwrap();
        let tail = tail.replacen("cluster_name: gatehouse_grpc", "cluster_name: ext_proc_probe", 1);
        format!(
            "{head}name: envoy.filters.http.ext_proc\n{tail}
  - name: ext_proc_probe
    type: STATIC
    connect_timeout: 0.25s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: ext_proc_probe
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"
        )
    }
}

/// What Envoy 1.40 sends in observability mode: the metadata with every
/// message, the headers, then each body piece as it comes (one message per
/// upstream read), the last with end_of_stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sends_the_reservation_with_every_message() {
    let s = TestServer::start(Backend::Sqlite).await;
    let upstream = spawn_llm().await;
    let probe = probe::Probe::default();
    let port = probe::spawn(probe.clone()).await;
    let envoy = Envoy::start_edited(&s, upstream, ext_proc_to(port)).await;
    let (_, key) = s.user_with_key("probe@example.com", Role::Admin, None).await;
    let http = reqwest::Client::new();
    let chat = |body: serde_json::Value| {
        http.post(envoy.url("/v1/chat/completions")).header("x-api-key", &key).json(&body).send()
    };
    let streams = |n: usize| {
        let probe = probe.clone();
        async move {
            for _ in 0..200 {
                let all = probe.0.lock().unwrap().clone();
                if all.len() >= n && all[..n].iter().all(|(_, end)| end.is_some()) {
                    return all;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{n} streams did not end: {:?}", probe.0.lock().unwrap());
        }
    };
    let started = std::time::Instant::now();
    chat(serde_json::json!({"model": "m", "messages": []})).await.unwrap().text().await.unwrap();
    let all = streams(1).await;
    eprintln!("JSON: {:?} after {:?}", all[0], started.elapsed());
    let started = std::time::Instant::now();
    chat(serde_json::json!({"model": "chunks-100", "stream": true, "messages": []}))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let all = streams(2).await;
    let (sse, end) = &all[1];
    let kinds: Vec<&str> = sse.iter().map(|m| m.kind).collect();
    eprintln!("SSE of 100 chunks: {} messages, {end:?} after {:?}: {sse:?}", sse.len(), started.elapsed());
    eprintln!("kinds: {kinds:?}");
    assert_eq!(sse[0].kind, "response_headers");
    assert!(sse.iter().all(|m| m.reservation && m.observability), "{sse:?}");
    assert!(sse.last().unwrap().end_of_stream);
    // Every byte, each piece as it came: 102 events (100 chunks, the usage,
    // [DONE]), a few reads holding two, and the end perhaps on its own.
    assert!(sse.iter().map(|m| m.bytes).sum::<usize>() > 100 * 100, "{sse:?}");
    assert!((60..=104).contains(&sse.len()), "{}", sse.len());
    drop(envoy);
    s.finish().await;
}

/// The CPU Gatehouse spends metering one streamed response (`cargo nextest
/// run --test metering --run-ignored only --no-capture`; set
/// `GATEHOUSE_MEASURE_BIN` to a release build for figures worth quoting):
/// 100-chunk event streams through the shipped Envoy, with a reservation (a
/// model was read: metered, ~102 messages) and without (closed at the first
/// message). Both pay the Check; the difference is the metering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn measure_metering_cpu() {
    let (url, _db) = common::fresh_database(Backend::Sqlite).await;
    let binary = std::env::var("GATEHOUSE_MEASURE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_gatehouse").to_owned());
    let (grpc, http_port) = (common::free_port(), common::free_port());
    let mut child = std::process::Command::new(&binary)
        .args(["serve", "--grpc-addr", &format!("127.0.0.1:{grpc}"), "--http-addr", &format!("127.0.0.1:{http_port}")])
        .env("DATABASE_URL", &url)
        .env("JWT_SECRET", "a shared test secret of at least 32 chars")
        .env("GATEHOUSE_BOOTSTRAP_ADMIN_EMAIL", "measure@example.com")
        .env("GATEHOUSE_BOOTSTRAP_ADMIN_PASSWORD", "a long password")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{http_port}");
    for _ in 0..300 {
        if reqwest::get(format!("{base}/readyz")).await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = common::login(&format!("{base}/auth/login"), "measure@example.com", "a long password").await;
    let upstream = spawn_llm().await;
    let (port, config) = Envoy::replicas_config(&[grpc], &[http_port], upstream);
    let envoy = Envoy::run(port, &config).await;
    let (gatehouse_pid, envoy_pid) = (child.id(), envoy.pid());
    let cpu_of = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // After the name: the state (field 3), ..., utime and stime (fields
        // 14 and 15), in clock ticks (100 per second).
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    };
    let cpu = || (cpu_of(gatehouse_pid), cpu_of(envoy_pid));
    let http = reqwest::Client::new();
    let run = |n: usize, model: Option<&'static str>| {
        let (http, url, token) = (http.clone(), envoy.url("/v1/chat/completions"), token.clone());
        async move {
            let mut tasks = Vec::new();
            for worker in 0..8 {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in (worker..n).step_by(8) {
                        let mut body = serde_json::json!({"stream": true, "max_tokens": 100, "messages": []});
                        if let Some(m) = model {
                            body["model"] = m.into();
                        }
                        let r = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
                        assert_eq!(r.status(), 200);
                        assert!(r.text().await.unwrap().contains("word99"));
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    run(40, Some("m")).await;
    let n = 400;
    for round in 0..2 {
        let before = (cpu(), ext_proc_stats(&envoy).await);
        run(n, Some("m")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let metered = (cpu(), ext_proc_stats(&envoy).await);
        run(n, None).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let unmetered = (cpu(), ext_proc_stats(&envoy).await);
        let msgs = |a: &HashMap<String, u64>, b: &HashMap<String, u64>| b["stream_msgs_sent"] - a["stream_msgs_sent"];
        let (m_cpu, u_cpu) = (metered.0.0 - before.0.0, unmetered.0.0 - metered.0.0);
        let (m_envoy, u_envoy) = (metered.0.1 - before.0.1, unmetered.0.1 - metered.0.1);
        let (m_msgs, u_msgs) = (msgs(&before.1, &metered.1), msgs(&metered.1, &unmetered.1));
        eprintln!(
            "round {round}, {n} responses of 100 chunks each ({binary}):\n  metered: {m_cpu:?} CPU, {m_msgs} messages \
             ({:.1} per response, {:?} per response)\n  not metered (closed at once): {u_cpu:?} CPU, {u_msgs} messages \
             ({:.1} per response, {:?} per response)\n  metering: {:?} per response, {:.2} us per message\n  \
             Envoy: {m_envoy:?} metered, {u_envoy:?} not: {:?} per response",
            m_msgs as f64 / n as f64,
            m_cpu / n as u32,
            u_msgs as f64 / n as f64,
            u_cpu / n as u32,
            m_cpu.saturating_sub(u_cpu) / n as u32,
            m_cpu.saturating_sub(u_cpu).as_secs_f64() * 1e6 / (m_msgs.saturating_sub(u_msgs)) as f64,
            m_envoy.saturating_sub(u_envoy) / n as u32,
        );
    }
    drop(envoy);
    let _ = child.kill();
    let _ = child.wait();
}
