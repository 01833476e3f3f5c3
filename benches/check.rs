//! The Check path, piece by piece and whole.
//!
//! * `pieces/*`: credential extraction, API key parsing and hashing, JWT
//!   verification per algorithm (uncached), path normalization and route
//!   matching, a local rate-limit decision, building the CheckResponse.
//! * `check/*`: the ext_authz handler called in-process (no network, no
//!   gRPC framing), as OPA-Envoy's `BenchmarkCheck` measures it, on an
//!   embedded SQLite store with warm caches.
//!
//! After the timings, allocations per in-process Check are counted (a counting
//! global allocator around the system one) and printed as a table.
//!
//!   cargo bench --bench check                 # everything
//!   cargo bench --bench check -- check/       # only the whole handler
//!   ALLOCS_ONLY=1 cargo bench --bench check   # only the allocation table

use std::alloc::System;
use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
use jsonwebtoken::Algorithm;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

use gatehouse::accounts::KeyRequest;
use gatehouse::app::App;
use gatehouse::clock::Clock;

fn now() -> i64 {
    gatehouse::clock::SystemClock.now()
}
use gatehouse::authn::jwt::{Jwt, JwtKeys, JwtSettings};
use gatehouse::authn::{api_key, credentials};
use gatehouse::authz::RequestView;
use gatehouse::config::Config;
use gatehouse::domain::{DEFAULT_GROUP, Role, User};
use gatehouse::policy::path;
use gatehouse::ratelimit::Limit;
use gatehouse::ratelimit::local::LocalLimiter;
use gatehouse::secret::Secret;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CHAT: &str = r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"Hello!"}]}"#;

/// What Envoy typically sends besides the credential.
const COMMON_HEADERS: &[(&str, &str)] = &[
    (":authority", "gateway.example.com"),
    (":method", "GET"),
    (":path", "/v1/models"),
    (":scheme", "https"),
    ("user-agent", "openai-python/1.40.0"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate"),
    ("x-forwarded-proto", "https"),
    ("x-request-id", "5b1e0c2a-8a1f-4f0e-9d55-3f4b2a1c9e77"),
    ("x-envoy-expected-rq-timeout-ms", "15000"),
];

fn request(method: &str, path: &str, credential: (&str, &str), body: Option<&str>) -> CheckRequest {
    let mut headers: std::collections::HashMap<String, String> =
        COMMON_HEADERS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    headers.insert(credential.0.to_owned(), credential.1.to_owned());
    let mut http = attribute_context::HttpRequest {
        id: "5b1e0c2a-8a1f-4f0e-9d55-3f4b2a1c9e77".into(),
        method: method.into(),
        path: path.into(),
        host: "gateway.example.com".into(),
        scheme: "https".into(),
        protocol: "HTTP/1.1".into(),
        ..Default::default()
    };
    if let Some(body) = body {
        headers.insert("content-type".into(), "application/json".into());
        headers.insert("content-length".into(), body.len().to_string());
        headers.insert("x-envoy-auth-partial-body".into(), "false".into());
        http.size = i64::try_from(body.len()).unwrap_or(i64::MAX);
        http.body = body.into();
    }
    http.headers = headers;
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    }
}

fn http(request: &CheckRequest) -> &attribute_context::HttpRequest {
    request.attributes.as_ref().and_then(|a| a.request.as_ref()).and_then(|r| r.http.as_ref()).unwrap_or_else(|| {
        unreachable!("built above");
    })
}

/// Two embedded Gatehouses (HS256 and RS256 session tokens), a user, a key,
/// tokens, and the Check requests of each scenario.
struct Fixture {
    rt: tokio::runtime::Runtime,
    hs: App,
    rs: App,
    user: User,
    key: String,
    scenarios: Vec<(&'static str, bool, CheckRequest)>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = |name: &str| {
        let mut config = Config {
            database_url: gatehouse::config::DatabaseUrl(format!("sqlite://{}", dir.path().join(name).display())),
            ..Config::default()
        };
        config.jwt.secret = Some(Secret::new("bench-secret-0123456789abcdef0123456789"));
        config
    };
    let rsa = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa.pem");
    let (hs, rs, user, key, hs_token, rs_token) = rt.block_on(async {
        let hs = App::build(config("hs.db")).await.unwrap_or_else(|e| panic!("{e:#}"));
        let mut rs_config = config("rs.db");
        rs_config.jwt.algorithm = Algorithm::RS256;
        rs_config.jwt.private_key_file = Some(rsa.into());
        let rs = App::build(rs_config).await.unwrap_or_else(|e| panic!("{e:#}"));
        let user = hs
            .accounts
            .create_user("bench@example.com", None, Role::Operator, DEFAULT_GROUP)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let request = KeyRequest {
            name: "bench",
            permissions: None,
            expires_in_days: None,
            models: None,
            budget: Default::default(),
        };
        let (_, key) = hs
            .accounts
            .create_key(&gatehouse::accounts::Acting::operator(), Some(&user.id), request, now())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rs_user = rs
            .accounts
            .create_user("bench@example.com", None, Role::Operator, DEFAULT_GROUP)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let hs_token = hs.authorizer.authn().jwt().issue(&user, now()).unwrap_or_else(|e| panic!("{e}"));
        let rs_token = rs.authorizer.authn().jwt().issue(&rs_user, now()).unwrap_or_else(|e| panic!("{e}"));
        (hs, rs, user, key.expose().to_owned(), hs_token.token.expose().to_owned(), rs_token.token.expose().to_owned())
    });
    let unknown = format!("gk_{:016x}_{}", 42, "A".repeat(49));
    let hs_bearer = format!("Bearer {hs_token}");
    let rs_bearer = format!("Bearer {rs_token}");
    let scenarios = vec![
        ("warm_api_key", false, request("GET", "/v1/models", ("x-api-key", &key), None)),
        ("warm_hs256_jwt", false, request("GET", "/v1/models", ("authorization", &hs_bearer), None)),
        ("warm_rs256_jwt", true, request("GET", "/v1/models", ("authorization", &rs_bearer), None)),
        ("chat_body_api_key", false, request("POST", "/v1/chat/completions", ("x-api-key", &key), Some(CHAT))),
        ("denied_unknown_key", false, request("GET", "/v1/models", ("x-api-key", &unknown), None)),
        ("denied_no_credential", false, request("GET", "/v1/models", ("x-request-id", "1"), None)),
    ];
    let fixture = Fixture { rt, hs, rs, user, key, scenarios, _dir: dir };
    // Warm every cache the scenarios read through.
    for (_, on_rs, request) in &fixture.scenarios {
        let app = if *on_rs { &fixture.rs } else { &fixture.hs };
        fixture.rt.block_on(app.ext_authz.check(request));
    }
    fixture
}

fn pieces(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("pieces");
    let headers: Vec<(&str, &str)> = COMMON_HEADERS.iter().copied().chain([("x-api-key", f.key.as_str())]).collect();
    g.bench_function("extract_credential", |b| {
        b.iter(|| credentials::extract(black_box(&headers).iter().copied()));
    });
    g.bench_function("api_key_parse_and_hash", |b| {
        b.iter(|| {
            let presented = api_key::parse(black_box(&f.key)).unwrap_or_else(|_| unreachable!());
            api_key::hash_secret(presented.secret)
        });
    });
    let authn = f.hs.authorizer.authn();
    g.bench_function("api_key_warm_cache_lookup", |b| {
        b.to_async(&f.rt).iter(|| authn.authenticate(credentials::Credential::ApiKey(black_box(&f.key)), now()));
    });
    let settings = |algorithm| JwtSettings {
        algorithm,
        issuer: "gatehouse".into(),
        audience: "gatehouse".into(),
        expiry_seconds: 3600,
        leeway_seconds: 30,
        refresh_grace_seconds: 0,
    };
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let keys = [
        ("HS256", Algorithm::HS256, None),
        ("RS256", Algorithm::RS256, Some("rsa.pem")),
        ("ES256", Algorithm::ES256, Some("p256.pem")),
        ("EdDSA", Algorithm::EdDSA, Some("ed25519.pem")),
    ];
    for (name, algorithm, pem) in keys {
        let keys = match pem {
            None => JwtKeys::hmac(&Secret::new("bench-secret-0123456789abcdef0123456789")),
            Some(file) => JwtKeys::from_pem_file(algorithm, format!("{fixtures}{file}").as_ref()),
        }
        .unwrap_or_else(|e| panic!("{e}"));
        let jwt = Jwt::new(keys, settings(algorithm));
        let token = jwt.issue(&f.user, now()).unwrap_or_else(|e| panic!("{e}")).token;
        g.bench_function(format!("jwt_verify_uncached_{name}"), |b| {
            b.iter(|| jwt.verify(black_box(token.expose()), now()).unwrap_or_else(|e| panic!("{e}")));
        });
    }
    let policy = f.hs.authorizer.policy();
    for (name, raw) in [("plain", "/v1/chat/completions"), ("tricky", "/v1/%6dodels/%6c%6c%61%6d%61%3a8b/?q=/../x;y#f")]
    {
        g.bench_function(format!("path_normalize_and_route_{name}"), |b| {
            b.iter(|| {
                let normalized = path::normalize(black_box(raw)).unwrap_or_else(|_| unreachable!());
                policy.route("POST", "", &normalized).name.len()
            });
        });
    }
    let limiter = LocalLimiter::default();
    let limit = Limit { requests: u32::MAX, period: Duration::from_secs(1), burst: u32::MAX };
    g.bench_function("local_limiter_decision", |b| {
        b.iter(|| limiter.decide(black_box("user:0b6f7c1e-2f8a-4c3e-9d1b-7a5e4c3b2a10"), limit));
    });
    for (name, on_rs, request) in &f.scenarios[..1] {
        let app = if *on_rs { &f.rs } else { &f.hs };
        let http = http(request);
        let view = RequestView { method: &http.method, host: &http.host, path: &http.path, ..Default::default() };
        let headers = http.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let decision = f.rt.block_on(app.authorizer.decide(view, headers, now()));
        g.bench_function(format!("build_check_response_{name}"), |b| {
            b.iter(|| app.ext_authz.respond(http, black_box(&decision)));
        });
    }
    g.finish();
}

fn checks(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("check");
    for (name, on_rs, request) in &f.scenarios {
        let app = if *on_rs { &f.rs } else { &f.hs };
        g.bench_function(*name, |b| b.to_async(&f.rt).iter(|| app.ext_authz.check(black_box(request))));
    }
    g.finish();
}

/// Allocations (and bytes) per in-process Check, averaged over many warm calls.
fn allocations(f: &Fixture) {
    const CALLS: usize = 10_000;
    println!("\nallocations per in-process Check (warm caches, mean of {CALLS} calls)");
    println!("{:<24} {:>8} {:>10} {:>14} {:>14}", "scenario", "allocs", "bytes", "future bytes", "answer bytes");
    for (name, on_rs, request) in &f.scenarios {
        let app = if *on_rs { &f.rs } else { &f.hs };
        let region = Region::new(GLOBAL);
        f.rt.block_on(async {
            for _ in 0..CALLS {
                black_box(app.ext_authz.check(request).await);
            }
        });
        let change = region.change();
        // What a Check's future occupies: tonic and async_trait move it into
        // a box on every call.
        let future = std::mem::size_of_val(&app.ext_authz.check(request));
        // The CheckResponse as sent (before gRPC's 5-byte prefix). Over
        // 251 bytes, h2 writes it apart from its trailers (BENCHMARKS.md,
        // "One write per answer").
        let answer = prost::Message::encoded_len(&f.rt.block_on(app.ext_authz.check(request)));
        println!(
            "{name:<24} {:>8.1} {:>10.0} {future:>14} {answer:>14}",
            change.allocations as f64 / CALLS as f64,
            change.bytes_allocated as f64 / CALLS as f64
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test` / nextest list the benchmarks or run each once; the
    // allocation table is for `cargo bench` only.
    let benchmarking = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list");
    let f = fixture();
    if std::env::var_os("ALLOCS_ONLY").is_none() {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .configure_from_args();
        pieces(&mut c, &f);
        checks(&mut c, &f);
        c.final_summary();
    }
    if benchmarking {
        allocations(&f);
    }
}
