//! Measuring tools for Gatehouse's Check path (see BENCHMARKS.md):
//!
//! * `load`: a closed-loop load generator for `Authorization/Check`;
//! * `noop`: the floor, an ext_authz server that allows everything at once;
//! * `seed`: many API keys in a database, fast, with some written out for `load`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
use envoy_types::pb::google::rpc;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(name = "gatehouse-bench", about = "Load generator, no-op ext_authz server and key seeder")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive `Authorization/Check` in a closed loop and report throughput and latency.
    Load(LoadArgs),
    /// Serve `Authorization/Check`, allowing everything at once (the floor).
    Noop {
        #[arg(long, default_value = "127.0.0.1:9292")]
        addr: std::net::SocketAddr,
        /// Ask this ext_authz server (e.g. Gatehouse) once, with the request
        /// below, and answer every Check with its answer: a floor that gives
        /// the same answer (headers to inject, metadata) at no cost of its own.
        #[arg(long)]
        replay_from: Option<String>,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Create an owner and many API keys in a database (migrating it first).
    Seed(SeedArgs),
}

#[derive(Args)]
struct LoadArgs {
    #[arg(long, default_value = "http://127.0.0.1:9191")]
    addr: String,
    /// Requests in flight at any time (one task each, closed loop).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the tasks share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measured time, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured time first, in seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Open loop: send this many requests per second in total, each header
    /// set in turn. A request sent late because every task was busy counts
    /// its latency from when it was due (a slow server cannot hide its
    /// queueing). 0: closed loop.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[command(flatten)]
    request: RequestArgs,
    /// Header sets to rotate through: one per line, `name: value` pairs
    /// separated by `|` (e.g. `x-api-key: gk_...`).
    #[arg(long)]
    header_sets: Option<PathBuf>,
    /// The server's process id: its CPU time over the measured window is
    /// reported per Check (`server_cpu_us_per_check`), a figure that does not
    /// depend on how busy the machine was. The load generator's own is
    /// reported too (`client_cpu_us_per_check`).
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label for the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The request a Check carries (the load generator's, or the one a replaying
/// floor asks with).
#[derive(Args)]
struct RequestArgs {
    #[arg(long, default_value = "GET")]
    method: String,
    #[arg(long, default_value = "/v1/models")]
    path: String,
    /// A JSON request body, forwarded as Envoy does with `with_request_body`
    /// (sets `content-type: application/json` and the partial-body marker).
    #[arg(long)]
    body: Option<String>,
    /// A header for every request, `name: value` (repeat).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
}

#[derive(Args)]
struct SeedArgs {
    #[arg(long)]
    database_url: String,
    /// Keys to create.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Write the first N keys, as `x-api-key: <key>` lines, to --out.
    #[arg(long, default_value_t = 0)]
    write: usize,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Load(args) => load(args).await,
        Command::Noop { addr, replay_from, request } => noop(addr, replay_from, request).await,
        Command::Seed(args) => seed(args).await,
    }
}

// ---- the floor ---------------------------------------------------------------

/// Answers every Check with `answer`: by default an allow with nothing in it.
struct Noop {
    answer: CheckResponse,
}

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _: tonic::Request<CheckRequest>) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.answer.clone()))
    }
}

async fn noop(addr: std::net::SocketAddr, replay_from: Option<String>, request: RequestArgs) -> anyhow::Result<()> {
    let answer = match replay_from {
        Some(from) => {
            let fixed = parse_headers(request.headers.iter().map(String::as_str))?;
            let channel = Endpoint::from_shared(from.clone())?.connect().await.with_context(|| from.clone())?;
            let answer =
                AuthorizationClient::new(channel).check(self::request(&request, &[], &fixed)).await?.into_inner();
            eprintln!("replaying {from}'s answer ({} bytes)", prost::Message::encoded_len(&answer));
            answer
        }
        None => CheckResponse {
            status: Some(rpc::Status { code: 0, ..Default::default() }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            dynamic_metadata: None,
        },
    };
    eprintln!("no-op ext_authz server on {addr}");
    tonic::transport::Server::builder().add_service(AuthorizationServer::new(Noop { answer })).serve(addr).await?;
    Ok(())
}

// ---- the load generator -----------------------------------------------------

fn parse_headers<'a>(pairs: impl Iterator<Item = &'a str>) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once(':').with_context(|| format!("header {p:?} is not 'name: value'"))?;
            Ok((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

fn request(args: &RequestArgs, set: &[(String, String)], fixed: &[(String, String)]) -> CheckRequest {
    let mut headers: std::collections::HashMap<String, String> = fixed.iter().chain(set).cloned().collect();
    if let Some(body) = &args.body {
        headers.insert("content-type".into(), "application/json".into());
        headers.insert("content-length".into(), body.len().to_string());
        headers.insert("x-envoy-auth-partial-body".into(), "false".into());
    }
    let http = attribute_context::HttpRequest {
        id: "bench".into(),
        method: args.method.clone(),
        path: args.path.clone(),
        host: "gateway.bench".into(),
        scheme: "http".into(),
        protocol: "HTTP/1.1".into(),
        headers,
        size: args.body.as_ref().map_or(-1, |b| i64::try_from(b.len()).unwrap_or(-1)),
        body: args.body.clone().unwrap_or_default(),
        ..Default::default()
    };
    let source = attribute_context::Peer {
        address: Some(envoy_types::pb::envoy::config::core::v3::Address {
            address: Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                envoy_types::pb::envoy::config::core::v3::SocketAddress {
                    address: "10.0.0.1".into(),
                    ..Default::default()
                },
            )),
        }),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(source),
            request: Some(attribute_context::Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    }
}

/// One task's observations.
#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    outcomes: BTreeMap<String, u64>,
    errors: u64,
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let fixed = parse_headers(args.request.headers.iter().map(String::as_str))?;
    let sets: Vec<Vec<(String, String)>> = match &args.header_sets {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| parse_headers(l.split('|')))
                .collect::<Result<_, _>>()?
        }
        None => vec![Vec::new()],
    };
    anyhow::ensure!(!sets.is_empty(), "no header sets");
    // Requests are built once; the loop only clones them.
    let requests: Arc<Vec<CheckRequest>> = Arc::new(sets.iter().map(|s| request(&args.request, s, &fixed)).collect());
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel: Channel = Endpoint::from_shared(args.addr.clone())?.tcp_nodelay(true).connect().await?;
        channels.push(channel);
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    // The server's CPU time and the load generator's own when measuring
    // starts (read on time by a task of its own) and when it ends.
    let (server_pid, own_pid) = (args.server_pid, std::process::id());
    let cpu_from = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        (server_pid.and_then(cpu_ticks), cpu_ticks(own_pid))
    });
    let mut tasks = Vec::new();
    let tickets = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let rate = args.rate;
    for i in 0..args.concurrency.max(1) {
        let mut client = AuthorizationClient::new(channels[i % channels.len()].clone());
        let requests = requests.clone();
        let tickets = tickets.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut n = i;
            loop {
                let sent = if rate > 0.0 {
                    // The next request due, in order, at its time.
                    let ticket = tickets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    n = usize::try_from(ticket).unwrap_or(usize::MAX);
                    let due = start + Duration::from_secs_f64(ticket as f64 / rate);
                    if Instant::now() < due {
                        // On time: latency counts from the send (tokio's timer
                        // wakes up to a millisecond late; that is not the server).
                        tokio::time::sleep_until(due.into()).await;
                        Instant::now()
                    } else {
                        // Late because every task was busy: the wait counts.
                        due
                    }
                } else {
                    n = n.wrapping_add(7919);
                    Instant::now()
                };
                if sent >= end {
                    break;
                }
                let request = requests[n % requests.len()].clone();
                let result = client.check(request).await;
                let took = sent.elapsed();
                if sent < measure_from {
                    continue;
                }
                match result {
                    Ok(r) => {
                        let r = r.into_inner();
                        let label = match r.http_response {
                            Some(HttpResponse::DeniedResponse(d)) => {
                                format!("deny_{}", d.status.map_or(0, |s| s.code))
                            }
                            _ if r.status.as_ref().is_some_and(|s| s.code == 0) => "allow".to_owned(),
                            _ => "other".to_owned(),
                        };
                        *tally.outcomes.entry(label).or_default() += 1;
                        tally.latencies_ns.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                    }
                    Err(_) => tally.errors += 1,
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await?;
        all.latencies_ns.extend(t.latencies_ns);
        for (k, v) in t.outcomes {
            *all.outcomes.entry(k).or_default() += v;
        }
        all.errors += t.errors;
    }
    let cpu_to = (server_pid.and_then(cpu_ticks), cpu_ticks(own_pid));
    all.latencies_ns.sort_unstable();
    let n = all.latencies_ns.len();
    let cpu_from = cpu_from.await?;
    let per_check = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(from), Some(to)) if n > 0 => Some(to.saturating_sub(from) as f64 * 1e6 / USER_HZ / n as f64),
        _ => None,
    };
    let cpu_us_per_check = per_check(cpu_from.0, cpu_to.0);
    let client_cpu_us_per_check = per_check(cpu_from.1, cpu_to.1);
    let pct = |p: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        let i = ((p / 100.0) * n as f64).ceil().max(1.0) as usize - 1;
        all.latencies_ns[i.min(n - 1)] as f64 / 1000.0
    };
    let report = serde_json::json!({
        "label": args.label,
        "addr": args.addr,
        "concurrency": args.concurrency,
        "connections": args.connections,
        "duration_s": args.duration,
        "rate": args.rate,
        "requests": n,
        "rps": n as f64 / args.duration,
        "latency_us": {"p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0), "p99_9": pct(99.9), "max": pct(100.0)},
        "outcomes": all.outcomes,
        "errors": all.errors,
        "header_sets": sets.len(),
        "server_cpu_us_per_check": cpu_us_per_check,
        "client_cpu_us_per_check": client_cpu_us_per_check,
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        writeln!(
            out,
            "{:<28} {:>10.0} req/s  p50 {:>7.1}us  p90 {:>7.1}us  p99 {:>7.1}us  p99.9 {:>7.1}us  {}  errors {}{}",
            args.label,
            report["rps"].as_f64().unwrap_or(0.0),
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(99.9),
            serde_json::to_string(&report["outcomes"])?,
            all.errors,
            cpu_us_per_check.map_or_else(String::new, |c| format!("  server CPU {c:.1}us/Check")),
        )?;
    }
    Ok(())
}

// ---- the seeder ----------------------------------------------------------------

macro_rules! seed_with {
    ($pool:expr, $hash:expr, $args:expr, $keys:expr) => {{
        let pool = $pool;
        let owner = uuid::Uuid::new_v4().to_string();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        sqlx::query(
            "INSERT INTO users (id, email, name, role, group_name, password_hash, disabled, created_at, updated_at) \
             VALUES ($1, $2, NULL, 'operator', 'default', NULL, FALSE, $3, $3)",
        )
        .bind(&owner)
        .bind(format!("bench-{owner}@example.com"))
        .bind(now)
        .execute(&pool)
        .await?;
        let mut written = 0usize;
        let batch = 1000usize;
        let mut created = 0usize;
        while created < $args.keys {
            let n = batch.min($args.keys - created);
            let mut sql = String::from(
                "INSERT INTO api_keys (id, user_id, name, secret_hash, permissions, expires_at, created_at) VALUES ",
            );
            for i in 0..n {
                let key = gatehouse::authn::api_key::generate();
                if written < $args.write {
                    $keys.push(key.key.expose().to_owned());
                    written += 1;
                }
                let hex: String = key.secret_hash.iter().map(|b| format!("{b:02x}")).collect();
                if i > 0 {
                    sql.push(',');
                }
                // Every value is generated here (hex, UUID, digits): nothing to escape.
                sql.push_str(&format!("('{}', '{owner}', 'bench', {}, NULL, NULL, {now})", key.id, $hash(&hex)));
            }
            sqlx::raw_sql(&sql).execute(&pool).await?;
            created += n;
            if created % 100_000 == 0 {
                eprintln!("{created} keys");
            }
        }
    }};
}

async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    // Creates and migrates the schema.
    drop(gatehouse::store::connect(&args.database_url, true, Duration::from_secs(5)).await?);
    let mut keys: Vec<String> = Vec::new();
    let started = Instant::now();
    if args.database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&args.database_url).await?;
        seed_with!(pool, |hex: &str| format!("X'{hex}'"), args, keys);
    } else {
        let pool = sqlx::PgPool::connect(&args.database_url).await?;
        seed_with!(pool, |hex: &str| format!("decode('{hex}', 'hex')"), args, keys);
    }
    eprintln!("seeded {} keys in {:.1}s", args.keys, started.elapsed().as_secs_f64());
    if let Some(out) = &args.out {
        let text: String = keys.iter().map(|k| format!("x-api-key: {k}\n")).collect();
        std::fs::write(out, text)?;
    }
    Ok(())
}

/// Clock ticks per second in /proc (USER_HZ: 100 on Linux, whatever the kernel's HZ).
const USER_HZ: f64 = 100.0;

/// A process's CPU time so far (user + system, all threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on:
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}
