//! `deploy/observability/` against the real tools: `promtool` checks the
//! rules and runs their unit tests, every query of the rules and the Grafana
//! dashboard names a metric Gatehouse exports, the code records no metric
//! outside the catalogue, and a real Prometheus, with the shipped config and
//! rules, scrapes two running Gatehouse processes and raises the alerts their
//! state calls for.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package
//! (`scripts/test` installs it). Without them, these tests say so and pass,
//! except under CI, where they fail.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Process, check_request, free_port};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use gatehouse::telemetry::{METRICS, MetricKind};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/observability");

/// The alerts the rules must have, one for each situation operators asked for.
const ALERTS: [&str; 8] = [
    "GatehouseDown",
    "GatehouseDenyRateSpike",
    "GatehouseAuthBackendUnavailable",
    "GatehouseRedisFallback",
    "GatehousePolicyReloadFailing",
    "GatehouseCheckLatencyHigh",
    "GatehouseCertificateExpiringSoon",
    "GatehouseLoginLockoutsSpiking",
];

/// A Prometheus tool from `GATEHOUSE_TEST_<NAME>` or the PATH; `None` (the
/// test then passes, saying why) when it is missing outside CI.
fn tool(name: &str) -> Option<PathBuf> {
    let var = format!("GATEHOUSE_TEST_{}", name.to_uppercase());
    if let Some(path) = std::env::var_os(&var) {
        return Some(PathBuf::from(path));
    }
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing: install Debian's prometheus package (scripts/test does)"
        );
        eprintln!("SKIPPED: {name} is not installed (Debian's prometheus package; scripts/test installs it)");
    }
    found
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rules() -> Value {
    yaml(&Path::new(DIR).join("rules.yaml"))
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(Path::new(DIR).join("grafana-dashboard.json")).unwrap()).unwrap()
}

fn every_rule(rules: &Value) -> impl Iterator<Item = &Value> {
    rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap())
}

/// Every query of the dashboard, with Grafana's variables filled in as a
/// panel would send them.
fn dashboard_queries() -> Vec<(String, String)> {
    dashboard()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_owned();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_owned()))
        })
        .map(|(title, expr)| (title, expr.replace("$__rate_interval", "1m").replace("$job", "gatehouse")))
        .collect()
}

/// Metric names a PromQL expression reads: identifiers outside strings that
/// name Gatehouse's series (or recording rules over them), and `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut word = String::new();
    let mut flush = |word: &mut String| {
        if word.contains("gatehouse_") || word == "up" {
            names.insert(std::mem::take(word));
        }
        word.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                flush(&mut word);
                // Skip the string, escapes included.
                while let Some(s) = chars.next() {
                    if s == '\\' {
                        chars.next();
                    } else if s == c {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == ':' => word.push(c),
            _ => flush(&mut word),
        }
    }
    flush(&mut word);
    names
}

/// Whether `name` is a series Gatehouse exports (a histogram as its
/// `_bucket`, `_sum` and `_count`).
fn exported(name: &str) -> bool {
    METRICS.iter().any(|m| match m.kind {
        MetricKind::Histogram => ["_bucket", "_sum", "_count"].iter().any(|s| name == format!("{}{s}", m.name)),
        _ => name == m.name,
    })
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let Some(promtool) = tool("promtool") else { return };
    for args in [
        &["check", "rules", "rules.yaml"][..],
        &["test", "rules", "rules.test.yaml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let out = std::process::Command::new(&promtool).args(args).current_dir(DIR).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("SUCCESS"), "promtool {}: {text}", args.join(" "));
    }

    // Every alert asked for exists, and its unit tests see it fire.
    let rules = rules();
    let alerts: BTreeSet<&str> = every_rule(&rules).filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(alerts, ALERTS.into_iter().collect(), "the alerting rules");
    let tests = yaml(&Path::new(DIR).join("rules.test.yaml"));
    let fired: BTreeSet<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .filter(|a| a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()))
        .map(|a| a["alertname"].as_str().unwrap())
        .collect();
    assert_eq!(fired, alerts, "a unit test that fires each alert");
    let quiet: BTreeSet<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .filter(|a| a["exp_alerts"].as_array().is_some_and(Vec::is_empty))
        .map(|a| a["alertname"].as_str().unwrap())
        .collect();
    assert_eq!(quiet, alerts, "a unit test where each alert stays quiet");
}

#[test]
fn every_query_names_a_metric_gatehouse_exports() {
    let rules = rules();
    let recorded: BTreeSet<String> =
        every_rule(&rules).filter_map(|r| r["record"].as_str()).map(str::to_owned).collect();
    let known = |name: &str| exported(name) || recorded.contains(name) || name == "up";

    let mut queries: Vec<(String, String)> = every_rule(&rules)
        .map(|r| {
            let what = r["alert"].as_str().or(r["record"].as_str()).unwrap().to_owned();
            (what, r["expr"].as_str().unwrap().to_owned())
        })
        .collect();
    queries.extend(dashboard_queries());
    assert!(queries.len() > 30, "{} queries", queries.len());
    for (what, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what}: {expr} reads no Gatehouse metric");
        for name in names {
            assert!(known(&name), "{what}: {name} is not a metric Gatehouse exports (telemetry::METRICS)");
        }
    }
    // The deny reason the 503 alert counts is the one Check records.
    let backend = gatehouse::domain::Denial::BackendUnavailable.reason();
    let alert = every_rule(&rules).find(|r| r["alert"] == "GatehouseAuthBackendUnavailable").unwrap();
    assert!(alert["expr"].as_str().unwrap().contains(&format!("reason=\"{backend}\"")));

    // The dashboard's panels: unique ids, inside 24 columns, not overlapping,
    // each query on the dashboard's data source variable.
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut cells = BTreeSet::new();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len());
    for p in panels {
        let g = &p["gridPos"];
        let (x, y, w, h) =
            (g["x"].as_u64().unwrap(), g["y"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
        assert!(x + w <= 24, "{}", p["title"]);
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(cells.insert(cell), "{} overlaps another panel", p["title"]);
        }
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
}

/// Metric names the code records: literals given to the `metrics` macros,
/// and constants holding such names.
#[test]
fn the_code_records_only_catalogued_metrics() {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(ROOT).join("src"), &mut files);
    let mut recorded = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("\"gatehouse_") {
            let name: String = text[at + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let before = text[..at].trim_end();
            let is_metric = ["counter!(", "gauge!(", "histogram!("].iter().any(|m| before.ends_with(m))
                || (before.ends_with("&str =") && before.rsplit('\n').next().is_some_and(|l| l.contains("const ")))
                || before.ends_with("metric(");
            if is_metric {
                assert!(
                    METRICS.iter().any(|m| m.name == name),
                    "{}: {name} is recorded but not in telemetry::METRICS",
                    file.display()
                );
                recorded.insert(name);
            }
        }
    }
    for m in METRICS {
        assert!(recorded.contains(m.name), "{} is catalogued but never recorded", m.name);
    }
}

/// A child process killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

/// Waits up to `seconds` for `f` to give `Some`.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    seconds: u64,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_gatehouse_and_raises_the_alerts() {
    let Some(prometheus) = tool("prometheus") else { return };
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    // Replica A: Redis configured but down, a policy file that will break,
    // a two-failure lockout, ten requests a minute.
    let (metrics_a, metrics_b) = (free_port(), free_port());
    let policy = dir.path().join("policy.toml");
    std::fs::copy(Path::new(ROOT).join("policy.toml"), &policy).unwrap();
    let db_a = format!("sqlite://{}", dir.path().join("a.db").display());
    let a = Process::spawn(&[
        ("DATABASE_URL", &db_a),
        ("GATEHOUSE_METRICS_ADDR", &format!("127.0.0.1:{metrics_a}")),
        ("REDIS_URL", &format!("redis://127.0.0.1:{}", free_port())),
        ("GATEHOUSE_POLICY_FILE", policy.to_str().unwrap()),
        ("GATEHOUSE_POLICY_RELOAD_SECONDS", "1"),
        ("GATEHOUSE_LOGIN_MAX_FAILURES", "2"),
        ("GATEHOUSE_LOGIN_RATE_LIMIT", "off"),
        ("GATEHOUSE_DEFAULT_RATE_LIMIT", "10/60"),
        ("GATEHOUSE_BOOTSTRAP_ADMIN_EMAIL", "ops@example.com"),
        ("GATEHOUSE_BOOTSTRAP_ADMIN_PASSWORD", "an operator password"),
    ]);
    // Replica B: TLS with a certificate that expires in five days.
    let (cert, key) = common::self_signed_certificate(dir.path(), 5);
    let db_b = format!("sqlite://{}", dir.path().join("b.db").display());
    let b = Process::spawn(&[
        ("DATABASE_URL", &db_b),
        ("GATEHOUSE_METRICS_ADDR", &format!("127.0.0.1:{metrics_b}")),
        ("GATEHOUSE_TLS_CERT_FILE", cert.to_str().unwrap()),
        ("GATEHOUSE_TLS_KEY_FILE", key.to_str().unwrap()),
    ]);
    for (p, port) in [(&a, metrics_a), (&b, metrics_b)] {
        let url = format!("http://127.0.0.1:{port}/metrics");
        wait_for(30, "a metrics listener", || async {
            http.get(&url).send().await.ok().filter(|r| r.status() == 200).map(|_| ())
        })
        .await;
        assert!(!p.logs().contains("ERROR"), "{}", p.logs());
    }
    wait_for(30, "replica A's API", || async { get_json(&http, &a.url("/readyz")).await }).await;

    // A key, and one Check before Prometheus starts: the series exists
    // when first scraped, so its increase shows in rate().
    let token = common::login(&a.url("/auth/login"), "ops@example.com", "an operator password").await;
    let (status, body) =
        common::post_json(&http, &a.url("/auth/keys"), Some(&token), &json!({"name": "prometheus test"})).await;
    assert_eq!(status, 201, "{body}");
    let key = body["key"].as_str().unwrap().to_owned();
    let mut client = AuthorizationClient::connect(format!("http://127.0.0.1:{}", a.grpc)).await.unwrap();
    let allowed = client.check(check_request("GET", "/v1/models", &[("x-api-key", &key)])).await.unwrap();
    assert_eq!(allowed.into_inner().status.unwrap().code, 0);

    // The shipped Prometheus config, scraping both every second.
    let config = std::fs::read_to_string(Path::new(DIR).join("prometheus.yml")).unwrap();
    let mut replaced = config.clone();
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s".to_owned()),
        ("evaluation_interval: 15s", "evaluation_interval: 1s".to_owned()),
        ("  - rules.yaml", format!("  - {DIR}/rules.yaml")),
        ("targets: [\"gatehouse:9464\"]", format!("targets: [\"127.0.0.1:{metrics_a}\", \"127.0.0.1:{metrics_b}\"]")),
    ] {
        assert!(replaced.contains(from), "prometheus.yml changed shape: no {from}");
        replaced = replaced.replace(from, &to);
    }
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, &replaced).unwrap();
    let port = free_port();
    let _prometheus = Child(
        std::process::Command::new(prometheus)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let api = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let query = |expr: String| {
        let http = http.clone();
        let url = api("/api/v1/query");
        async move {
            let r = http.get(url).query(&[("query", expr.as_str())]).send().await.ok()?;
            r.json::<Value>().await.ok()
        }
    };
    wait_for(30, "both targets up", || async {
        let r = query("up{job=\"gatehouse\"} == 1".into()).await?;
        (r["data"]["result"].as_array()?.len() == 2).then_some(())
    })
    .await;

    // Traffic on A: allowed and refused Checks, logins into the lockout.
    for i in 0..40 {
        let credential = if i % 2 == 0 { key.clone() } else { format!("gk_{i:016x}_nope") };
        client.check(check_request("GET", "/v1/models", &[("x-api-key", &credential)])).await.unwrap();
    }
    let wrong = json!({"email": "ops@example.com", "password": "not the password"});
    let mut lockouts = 0;
    for _ in 0..80 {
        let (status, _) = common::post_json(&http, &a.url("/auth/login"), None, &wrong).await;
        lockouts += usize::from(status == 429);
    }
    assert_eq!(lockouts, 78, "two failures, then the lockout");
    std::fs::write(&policy, "[[routes]]\nname = 'broken'\naccess = 'nonsense'\n").unwrap();
    let metrics_url = format!("http://127.0.0.1:{metrics_a}/metrics");
    wait_for(30, "the policy reload to fail", || async {
        let text = http.get(&metrics_url).send().await.ok()?.text().await.ok()?;
        text.lines().any(|l| l == "gatehouse_policy_last_reload_successful 0").then_some(())
    })
    .await;

    // Every metric Prometheus sees from Gatehouse is one it exports, and the
    // run produced the ones the alerts read.
    let produced = [
        "gatehouse_check_decisions_total",
        "gatehouse_check_duration_seconds_bucket",
        "gatehouse_rate_limited_total",
        "gatehouse_ratelimit_redis_available",
        "gatehouse_ratelimit_fallback_total",
        "gatehouse_redis_errors_total",
        "gatehouse_redis_duration_seconds_bucket",
        "gatehouse_policy_last_reload_successful",
        "gatehouse_policy_reloads_total",
        "gatehouse_policy_rules",
        "gatehouse_login_lockouts_total",
        "gatehouse_tls_certificate_expiry_timestamp_seconds",
        "gatehouse_cache_requests_total",
        "gatehouse_store_duration_seconds_bucket",
        "gatehouse_build_info",
    ];
    let names = wait_for(30, "the series names", || async {
        let r = get_json(&http, &api("/api/v1/label/__name__/values")).await?;
        let names: BTreeSet<String> = r["data"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .filter(|n| n.starts_with("gatehouse_"))
            .map(str::to_owned)
            .collect();
        produced.iter().all(|n| names.contains(*n)).then_some(names)
    })
    .await;
    for name in &names {
        assert!(exported(name), "Prometheus scraped {name}, which telemetry::METRICS does not list");
    }

    // The alerts this state calls for are raised (pending, as their `for`
    // has not passed), and no other.
    let active = || async {
        let r = get_json(&http, &api("/api/v1/alerts")).await?;
        let alerts: BTreeSet<(String, String)> = r["data"]["alerts"]
            .as_array()?
            .iter()
            .map(|a| {
                let labels = &a["labels"];
                let whom = labels["instance"].as_str().or(labels["certificate"].as_str()).unwrap_or("");
                (labels["alertname"].as_str().unwrap_or("").to_owned(), whom.to_owned())
            })
            .collect();
        Some(alerts)
    };
    let (a_target, b_target) = (format!("127.0.0.1:{metrics_a}"), format!("127.0.0.1:{metrics_b}"));
    let expected: BTreeSet<(String, String)> = [
        ("GatehouseRedisFallback", a_target.as_str()),
        ("GatehousePolicyReloadFailing", a_target.as_str()),
        ("GatehouseCertificateExpiringSoon", b_target.as_str()),
        ("GatehouseLoginLockoutsSpiking", ""),
    ]
    .into_iter()
    .map(|(n, w)| (n.to_owned(), w.to_owned()))
    .collect();
    wait_for(30, "the alerts", || async { active().await.filter(|a| *a == expected) }).await;

    // Recording rules evaluate, and every dashboard query runs.
    wait_for(30, "the recorded allow rate", || async {
        let r = query("job_decision:gatehouse_check_decisions:rate5m{decision=\"allow\"} > 0".into()).await?;
        (!r["data"]["result"].as_array()?.is_empty()).then_some(())
    })
    .await;
    // A `rate(...[1m])` needs two scrapes of a series inside the window: on
    // a busy machine the second may come late, so wait for it.
    let started = std::time::Instant::now();
    loop {
        let mut empty = Vec::new();
        for (title, expr) in dashboard_queries() {
            let r = query(expr.clone()).await.unwrap();
            assert_eq!(r["status"], "success", "{title}: {expr}: {r}");
            let present = metric_names(&expr).iter().all(|n| n == "up" || names.contains(n));
            if present && r["data"]["result"].as_array().unwrap().is_empty() {
                empty.push(format!("{title}: {expr}"));
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "queries on scraped metrics returned nothing for 45 s: {empty:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Replica B stops: Prometheus notices, and GatehouseDown names it.
    drop(b);
    wait_for(30, "GatehouseDown for the stopped replica", || async {
        active().await.filter(|a| a.contains(&("GatehouseDown".to_owned(), b_target.clone())))
    })
    .await;
    drop(a);
}
