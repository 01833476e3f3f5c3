//! Test harness: a real gatehouse server on 127.0.0.1:0 against a real
//! database (a temporary SQLite file, or a fresh database on the Postgres
//! server named by `GATEHOUSE_TEST_POSTGRES_URL`, which `scripts/test` starts).
#![allow(dead_code)]

pub mod api;
pub mod browser;
pub mod database;
pub mod llm;
pub mod postgres;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
use gatehouse::accounts::{Accounts, KeyRequest};
use gatehouse::app::App;
use gatehouse::config::Config;
use gatehouse::domain::{DEFAULT_GROUP, Role, User};
use gatehouse::store::DynStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each listed async test once per backend:
/// `backend_tests! { my_test, other_test }` with `async fn my_test(b: Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Backend::Sqlite).await })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if $crate::common::database::postgres_missing() {
                    return;
                }
                super::$name($crate::common::Backend::Postgres).await
            })+
        }
    };
}

/// A URL for a fresh database on `backend` and its guard (keep it while the
/// database is used): SQLite in a temporary directory, Postgres a migrated
/// copy of the template, dropped with the guard.
pub async fn fresh_database(backend: Backend) -> (String, database::TestDb) {
    database::fresh(backend).await
}

pub fn test_config(database_url: &str) -> Config {
    Config {
        database_url: gatehouse::config::DatabaseUrl(database_url.to_owned()),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        // The suite's providers (oidc-provider, stand-ins) serve plain http on 127.0.0.1.
        oidc_allow_insecure_http: true,
        // No balancer in front of an in-process server: stop at once.
        shutdown_delay: Duration::ZERO,
        ..Config::default()
    }
}

pub struct TestServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub store: DynStore,
    pub accounts: Accounts,
    /// The server's own decision maker, for checks at an injected time.
    pub authorizer: std::sync::Arc<gatehouse::authz::Authorizer>,
    /// Token and spend budgets, for settlements made by hand.
    pub budgets: std::sync::Arc<gatehouse::budget::Budgets>,
    /// The server's own usage meter (what the Check side records into).
    pub metering: gatehouse::store::Metering,
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<database::TestDb>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let (url, dir) = fresh_database(backend).await;
        let mut config = test_config(&url);
        tweak(&mut config);
        let mut server = TestServer::start_config(config).await;
        server._dir = Some(dir);
        server
    }

    pub async fn start_config(config: Config) -> TestServer {
        TestServer::start_app(config, |_| {}).await
    }

    /// Like [`TestServer::start_config`], with `tweak` applied to the built
    /// app before it serves (e.g. its settlement of metered responses).
    pub async fn start_app(config: Config, tweak: impl FnOnce(&mut App)) -> TestServer {
        TestServer::start_clocked(config, gatehouse::clock::system(), tweak).await
    }

    /// A server whose every door reads the time from `clock`.
    pub async fn start_clocked(
        config: Config,
        clock: gatehouse::clock::SharedClock,
        tweak: impl FnOnce(&mut App),
    ) -> TestServer {
        let grpc_listener = TcpListener::bind(config.grpc_addr).await.unwrap();
        let http_listener = TcpListener::bind(config.http_addr).await.unwrap();
        let database_url = config.database_url.0.clone();
        let mut app = App::build_with_clock(config, clock).await.unwrap();
        tweak(&mut app);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = TestServer {
            grpc: grpc_listener.local_addr().unwrap(),
            http: http_listener.local_addr().unwrap(),
            store: app.store.clone(),
            accounts: app.accounts.clone(),
            authorizer: app.authorizer.clone(),
            budgets: app.budgets.clone(),
            metering: app.metering.clone(),
            database_url,
            stop: Some(stop),
            task: None,
            _dir: None,
        };
        let task = tokio::spawn(app.serve(grpc_listener, http_listener, async {
            let _ = stopped.await;
        }));
        TestServer { task: Some(task), ..server }
    }

    pub async fn client(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc)).await.unwrap()
    }

    pub async fn check(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Check {
        let response = self.client().await.check(check_request(method, path, headers)).await.unwrap();
        Check(response.into_inner())
    }

    /// A Check with a JSON body, as Envoy sends it with `with_request_body`
    /// (`content-type: application/json` unless `headers` set one).
    pub async fn check_body(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Check {
        let response = self.client().await.check(check_request_with_body(method, path, headers, body)).await.unwrap();
        Check(response.into_inner())
    }

    /// Begins shutdown; `finish` waits for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn finish(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
        }
    }

    pub async fn user(&self, email: &str, role: Role) -> User {
        self.accounts.create_user(email, None, role, DEFAULT_GROUP).await.unwrap()
    }

    /// Creates a user and a key for them; returns both.
    pub async fn user_with_key(&self, email: &str, role: Role, permissions: Option<&[&str]>) -> (User, String) {
        let user = self.user(email, role).await;
        let key = self.key_for(&user, permissions).await;
        (user, key)
    }

    pub async fn key_for(&self, user: &User, permissions: Option<&[&str]>) -> String {
        let permissions: Option<Vec<String>> = permissions.map(|p| p.iter().map(|s| s.to_string()).collect());
        let (_, secret) = self
            .accounts
            .create_key(
                &gatehouse::accounts::Acting::operator(),
                Some(&user.id),
                KeyRequest { name: "test key", permissions: permissions.as_deref(), ..Default::default() },
                now(),
            )
            .await
            .unwrap();
        secret.expose().to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// The sum of the samples in `/metrics` (read with `key`, which needs
    /// `read_metrics`) whose line starts with `series` and contains every one
    /// of `labels`.
    pub async fn metric(&self, key: &str, series: &str, labels: &[&str]) -> u64 {
        let text = reqwest::Client::new()
            .get(self.url("/metrics"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(series) && labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn check_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let http = attribute_context::HttpRequest {
        id: "test-request-id".into(),
        method: method.into(),
        path: path.into(),
        host: "gateway.test".into(),
        scheme: "http".into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    }
}

/// A small chat completion request.
pub const CHAT: &str = r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"Hello!"}]}"#;

pub fn check_request_with_body(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> CheckRequest {
    let mut request = check_request(method, path, headers);
    let http = request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.headers.entry("content-type".into()).or_insert_with(|| "application/json".into());
    http.headers.insert("content-length".into(), body.len().to_string());
    // What Envoy adds when with_request_body is set.
    http.headers.insert("x-envoy-auth-partial-body".into(), "false".into());
    http.size = body.len() as i64;
    http.body = body.into();
    request
}

/// A CheckResponse with accessors for what tests assert on.
#[derive(Debug, Clone)]
pub struct Check(pub CheckResponse);

impl Check {
    /// The gRPC code inside the CheckResponse (0 = OK).
    pub fn code(&self) -> i32 {
        self.0.status.as_ref().map_or(-1, |s| s.code)
    }

    pub fn allowed(&self) -> bool {
        self.code() == 0 && matches!(self.0.http_response, Some(HttpResponse::OkResponse(_)))
    }

    /// Headers set for the upstream on allow.
    pub fn upstream_headers(&self) -> HashMap<String, String> {
        match &self.0.http_response {
            Some(HttpResponse::OkResponse(ok)) => {
                ok.headers.iter().filter_map(|h| h.header.as_ref()).map(|h| (h.key.clone(), h.value.clone())).collect()
            }
            _ => HashMap::new(),
        }
    }

    /// Headers for the client's response: added on allow, or the denial's.
    pub fn client_headers(&self) -> HashMap<String, String> {
        match &self.0.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok
                .response_headers_to_add
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            _ => self.denied_headers(),
        }
    }

    /// Every string field of the dynamic metadata.
    pub fn all_metadata(&self) -> HashMap<String, String> {
        use envoy_types::pb::google::protobuf::value::Kind;
        let Some(m) = self.0.dynamic_metadata.as_ref() else { return HashMap::new() };
        m.fields
            .iter()
            .filter_map(|(k, v)| match &v.kind {
                Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn removed(&self) -> Vec<String> {
        match &self.0.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok.headers_to_remove.clone(),
            _ => vec![],
        }
    }

    /// HTTP status of a denial (0 when allowed).
    pub fn http_status(&self) -> i32 {
        match &self.0.http_response {
            Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map_or(0, |s| s.code),
            _ => 0,
        }
    }

    pub fn denied_headers(&self) -> HashMap<String, String> {
        match &self.0.http_response {
            Some(HttpResponse::DeniedResponse(d)) => {
                d.headers.iter().filter_map(|h| h.header.as_ref()).map(|h| (h.key.clone(), h.value.clone())).collect()
            }
            _ => HashMap::new(),
        }
    }

    pub fn body(&self) -> serde_json::Value {
        match &self.0.http_response {
            Some(HttpResponse::DeniedResponse(d)) => serde_json::from_str(&d.body).unwrap(),
            _ => serde_json::Value::Null,
        }
    }

    pub fn raw_body(&self) -> String {
        match &self.0.http_response {
            Some(HttpResponse::DeniedResponse(d)) => d.body.clone(),
            _ => String::new(),
        }
    }

    pub fn metadata(&self, field: &str) -> Option<String> {
        use envoy_types::pb::google::protobuf::value::Kind;
        let value = self.0.dynamic_metadata.as_ref()?.fields.get(field)?;
        match &value.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// Asserts a denial with this HTTP status, gRPC code and error code.
    pub fn assert_denied(&self, http: i32, grpc: tonic::Code, code: &str) {
        assert!(!self.allowed(), "expected a denial, got {:?}", self.0);
        assert_eq!(self.http_status(), http, "{:?}", self.0);
        assert_eq!(self.code(), grpc as i32, "{:?}", self.0);
        assert_eq!(self.body()["error"]["code"], code, "{:?}", self.0);
        assert_eq!(self.denied_headers().get("content-type").map(String::as_str), Some("application/json"));
    }
}

/// An upstream that answers every request with the method, path, headers and
/// body it received, as JSON.
pub async fn spawn_echo() -> SocketAddr {
    use axum::extract::Request;
    async fn echo(request: Request) -> axum::Json<serde_json::Value> {
        let headers: serde_json::Map<String, serde_json::Value> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned().into()))
            .collect();
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let body = axum::body::to_bytes(request.into_body(), 64 << 20).await.unwrap_or_default();
        axum::Json(serde_json::json!({
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        }))
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(echo)).await });
    addr
}

/// A Redis limiter (`url`: one Redis or a cluster) with `timeout` per call,
/// once it is connected.
pub async fn connected_redis_limiter(url: &str, timeout: Duration) -> gatehouse::ratelimit::redis::RedisLimiter {
    use gatehouse::ratelimit::local::LocalLimiter;
    use gatehouse::ratelimit::redis::RedisLimiter;
    let target = std::sync::Arc::new(gatehouse::redis_target::RedisTarget::parse(url).unwrap());
    let limiter = RedisLimiter::new(target, LocalLimiter::default(), timeout);
    tokio::spawn(limiter.clone().connect(std::future::pending()));
    for _ in 0..200 {
        if limiter.connection().await.is_some() {
            return limiter;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no Redis at {url}");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real Envoy (from `GATEHOUSE_TEST_ENVOY`, installed by `scripts/test`)
/// running the shipped `envoy/envoy.yaml` with its ports moved to free ones.
pub struct Envoy {
    pub port: u16,
    /// The admin interface's port (`/clusters`, `/stats`).
    pub admin_port: u16,
    child: std::process::Child,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Envoy {
    pub async fn start(gatehouse: &TestServer, upstream: SocketAddr) -> Envoy {
        Envoy::start_edited(gatehouse, upstream, |config| config).await
    }

    /// [`Envoy::start`] with the shipped config changed by `edit` first.
    pub async fn start_edited(gatehouse: &TestServer, upstream: SocketAddr, edit: impl Fn(String) -> String) -> Envoy {
        // Free ports are picked before Envoy binds them, so another process
        // may take one first: Envoy then exits, and a fresh set is tried.
        for _ in 0..5 {
            let port = free_port();
            let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/envoy.yaml")).unwrap();
            let config = edit(shipped)
                .replace("port_value: 10000", &format!("port_value: {port}"))
                .replace("port_value: 9901", &format!("port_value: {}", free_port()))
                .replace("port_value: 9191", &format!("port_value: {}", gatehouse.grpc.port()))
                .replace("port_value: 8080", &format!("port_value: {}", gatehouse.http.port()))
                .replace("port_value: 9000", &format!("port_value: {}", upstream.port()))
                .replace("address: 0.0.0.0", "address: 127.0.0.1");
            if let Ok(envoy) = Envoy::try_run(port, &config).await {
                return envoy;
            }
        }
        panic!("Envoy did not start on five sets of free ports");
    }

    /// The shipped config in front of several replicas: Checks go to every
    /// one of `grpc_ports` (the `gatehouse_grpc` cluster), the HTTP API to
    /// every one of `http_ports`.
    pub async fn start_replicas(grpc_ports: &[u16], http_ports: &[u16], upstream: SocketAddr) -> Envoy {
        let (port, config) = Envoy::replicas_config(grpc_ports, http_ports, upstream);
        Envoy::run(port, &config).await
    }

    /// [`Envoy::start_replicas`]'s config, and the port it listens on.
    pub fn replicas_config(grpc_ports: &[u16], http_ports: &[u16], upstream: SocketAddr) -> (u16, String) {
        let port = free_port();
        let endpoints = |ports: &[u16]| {
            ports
                .iter()
                .map(|p| {
                    format!(
                        "- endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }}"
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut config = String::new();
        for line in std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/envoy.yaml")).unwrap().lines() {
            let indent = &line[..line.len() - line.trim_start().len()];
            let replaced = match line.trim_start() {
                l if l.contains("port_value: 9191 }") && l.starts_with("- endpoint:") => Some(endpoints(grpc_ports)),
                l if l.contains("port_value: 8080 }") && l.starts_with("- endpoint:") => Some(endpoints(http_ports)),
                _ => None,
            };
            match replaced {
                Some(lines) => lines.iter().for_each(|l| config.push_str(&format!("{indent}{l}\n"))),
                None => {
                    config.push_str(line);
                    config.push('\n');
                }
            }
        }
        let config = config
            .replace("port_value: 10000", &format!("port_value: {port}"))
            .replace("port_value: 9901", &format!("port_value: {}", free_port()))
            .replace("port_value: 9000", &format!("port_value: {}", upstream.port()))
            .replace("address: 0.0.0.0", "address: 127.0.0.1");
        (port, config)
    }

    /// The health flags Envoy's active health checking gives each endpoint
    /// of `cluster`, by port (`healthy`, or e.g. `/failed_active_hc`).
    pub async fn health_flags(&self, cluster: &str) -> HashMap<u16, String> {
        let text =
            reqwest::get(format!("http://127.0.0.1:{}/clusters", self.admin_port)).await.unwrap().text().await.unwrap();
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(cluster)?.strip_prefix("::")?;
                let (host, flags) = rest.split_once("::health_flags::")?;
                Some((host.rsplit(':').next()?.parse().ok()?, flags.to_owned()))
            })
            .collect()
    }

    /// Waits (up to 30 s) until Envoy's health check counts the endpoint on
    /// `port` of `cluster` healthy, or not, as `healthy` says.
    pub async fn wait_health(&self, cluster: &str, port: u16, healthy: bool) {
        for _ in 0..300 {
            if self.health_flags(cluster).await.get(&port).is_some_and(|f| (f == "healthy") == healthy) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{cluster} endpoint {port}: healthy={healthy} never came: {:?}", self.health_flags(cluster).await);
    }

    /// Runs `config`, whose listener is on `port` and answers `/healthz`
    /// with 200 once up.
    pub async fn run(port: u16, config: &str) -> Envoy {
        Envoy::try_run(port, config).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Envoy::run`]; an error (with Envoy's own words) when it exits
    /// before it is ready, or is not ready within 30 s.
    pub async fn try_run(port: u16, config: &str) -> Result<Envoy, String> {
        let binary = std::env::var("GATEHOUSE_TEST_ENVOY")
            .expect("GATEHOUSE_TEST_ENVOY is not set: run the suite with scripts/test, which installs Envoy");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("access.log");
        let errors = dir.path().join("envoy.log");
        let child = std::process::Command::new(binary)
            .args([
                "-c",
                path.to_str().unwrap(),
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "-l",
                "warning",
                "--file-flush-interval-msec",
                "50",
            ])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&errors).unwrap())
            .spawn()
            .unwrap();
        // The admin listener is the first port in the config.
        let admin_port = config
            .split_once("admin:")
            .and_then(|(_, rest)| rest.split_once("port_value:"))
            .and_then(|(_, rest)| rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or(0);
        let mut envoy = Envoy { port, admin_port, child, log, _dir: dir };
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                let said = std::fs::read_to_string(&errors).unwrap_or_default();
                return Err(format!("Envoy exited ({status}) before it was ready:\n{said}"));
            }
            // Another test's server may have taken the port first (ephemeral
            // ports are reused): only an answer relayed by Envoy counts.
            if let Ok(r) = client.get(envoy.url("/healthz")).send().await
                && r.status() == 200
                && r.headers().get("server").is_some_and(|v| v == "envoy")
                && matches!(envoy.child.try_wait(), Ok(None))
            {
                return Ok(envoy);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let said = std::fs::read_to_string(&errors).unwrap_or_default();
        Err(format!("Envoy did not become ready within 30 s:\n{said}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The access log once it contains `needle` (Envoy flushes it on its own
    /// schedule), or as it is after 5 s.
    pub async fn access_log_with(&self, needle: &str) -> String {
        for _ in 0..50 {
            let log = self.access_log();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.access_log()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `gatehouse serve` process of its own, ready (with Redis connected when
/// `redis_url` is given).
pub struct Process {
    pub grpc: u16,
    pub http: u16,
    child: std::process::Child,
    log: tempfile::NamedTempFile,
    /// Serving TLS: the CA file to trust.
    tls: Option<String>,
}

impl Process {
    pub async fn start(database_url: &str, redis_url: &str) -> Process {
        Process::start_env(&[("DATABASE_URL", database_url), ("REDIS_URL", redis_url)]).await
    }

    /// With these environment variables; ready means `/readyz` says so
    /// (including Redis, when `REDIS_URL` is set).
    pub async fn start_env(env: &[(&str, &str)]) -> Process {
        Process::start_at(free_port(), free_port(), env).await
    }

    /// On these ports (a replica restarted where it was); ready means
    /// `/readyz` says so (including Redis, when `REDIS_URL` is set).
    pub async fn start_at(grpc: u16, http: u16, env: &[(&str, &str)]) -> Process {
        Process::try_start_at(grpc, http, env).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Started with these environment variables, not waited for.
    pub fn spawn(env: &[(&str, &str)]) -> Process {
        Process::spawn_at(free_port(), free_port(), env)
    }

    /// [`Process::start_at`], or why not: the process exited (its log), or
    /// was not ready in 30 s.
    pub async fn try_start_at(grpc: u16, http: u16, env: &[(&str, &str)]) -> Result<Process, String> {
        let mut p = Process::spawn_at(grpc, http, env);
        let wants_redis = env.iter().any(|(k, _)| *k == "REDIS_URL");
        for _ in 0..300 {
            if let Ok(r) = p.http_client().get(p.url("/readyz")).send().await
                && r.json::<serde_json::Value>().await.is_ok_and(|b| !wants_redis || b["redis"] == "ok")
            {
                return Ok(p);
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!("gatehouse exited ({status}): {}", p.logs()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("gatehouse did not become ready in 30 s: {}", p.logs()))
    }

    fn spawn_at(grpc: u16, http: u16, env: &[(&str, &str)]) -> Process {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["serve", "--grpc-addr", &format!("127.0.0.1:{grpc}"), "--http-addr", &format!("127.0.0.1:{http}")])
            .env("JWT_SECRET", "a shared test secret of at least 32 chars")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let tls = env.iter().any(|(k, _)| *k == "GATEHOUSE_TLS_CERT_FILE").then(|| {
            // The suite signs server and client certificates with one CA.
            let ca = env.iter().find(|(k, _)| *k == "GATEHOUSE_TLS_CLIENT_CA_FILE");
            ca.map_or_else(|| fixture("tls-ca.pem"), |(_, v)| (*v).to_owned())
        });
        Process { grpc, http, child, log, tls }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (a graceful shutdown) and waits for the process to exit;
    /// its exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(sent.success());
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gatehouse did not exit within 30 s of SIGTERM: {}", self.logs());
    }

    pub async fn check_request(&self, request: CheckRequest) -> Check {
        let mut client = AuthorizationClient::connect(format!("http://127.0.0.1:{}", self.grpc)).await.unwrap();
        Check(client.check(request).await.unwrap().into_inner())
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.http)
    }

    /// A client for the HTTP API (trusting the test CA when it serves TLS).
    pub fn http_client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &self.tls {
            let ca = std::fs::read(ca).unwrap();
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
        }
        builder.build().unwrap()
    }

    pub async fn check(&self, headers: &[(&str, &str)]) -> Check {
        let mut client = AuthorizationClient::connect(format!("http://127.0.0.1:{}", self.grpc)).await.unwrap();
        Check(client.check(check_request("GET", "/v1/models", headers)).await.unwrap().into_inner())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// POSTs `body` as JSON (with a bearer token when given); the status and the JSON answer.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut request = client.post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// Logs in through `login_url` (a gatehouse `/auth/login`, direct or through
/// Envoy); returns the access token.
pub async fn login(login_url: &str, email: &str, password: &str) -> String {
    let body = serde_json::json!({"email": email, "password": password});
    let (_, body) = post_json(&reqwest::Client::new(), login_url, None, &body).await;
    body["access_token"].as_str().unwrap_or_else(|| panic!("login failed: {body}")).to_owned()
}

/// A self-signed P-256 certificate for localhost, valid for `days`, made by
/// `openssl` in `dir`: (certificate, key) paths.
pub fn self_signed_certificate(dir: &std::path::Path, days: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("cert-{days}.pem")), dir.join(format!("key-{days}.pem")));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-days", &days.to_string(), "-keyout", key.to_str().unwrap(), "-out", cert.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req");
    (cert, key)
}
