//! The `gatehouse` binary's operator commands, on SQLite and Postgres.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, fresh_database};
use serde_json::Value;

backend_tests! {
    users_groups_and_keys_round_trip,
    bad_input_fails_and_changes_nothing,
}

fn gatehouse(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("GATEHOUSE_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Runs a command that must succeed and print JSON.
fn json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = gatehouse(url, &all);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr.
fn fails(url: &str, args: &[&str]) -> String {
    let out = gatehouse(url, args);
    assert!(!out.status.success(), "{args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty(), "errors go to stderr, not stdout");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn users_groups_and_keys_round_trip(b: Backend) {
    let (url, _dir) = fresh_database(b).await;
    assert_eq!(json(&url, &["migrate"])["migrated"], true);
    let group = json(&url, &["groups", "create", "research", "--requests", "60", "--period-seconds", "60"]);
    assert_eq!(group["requests_per_period"], 60);
    let user = json(&url, &["users", "create", "--email", "Ops@Example.com", "--role", "admin", "--group", "research"]);
    assert_eq!(user["email"], "ops@example.com");
    assert_eq!(user["role"], "admin");
    assert_eq!(user["group"], "research");

    let created = json(
        &url,
        &[
            "keys",
            "create",
            "--user",
            "ops@example.com",
            "--name",
            "ci",
            "--permission",
            "read_models",
            "--permission",
            "run_inference",
            "--expires-in-days",
            "30",
        ],
    );
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("gk_"));
    assert_eq!(created["permissions"], serde_json::json!(["read_models", "run_inference"]));
    assert_eq!(created["status"], "active");
    assert!(created["expires_at"].as_str().unwrap().ends_with('Z'));
    let id = created["id"].as_str().unwrap();

    let listed = json(&url, &["keys", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert!(listed[0].get("key").is_none());
    assert!(!listed.to_string().contains(&key[20..]), "listing must never show a secret");
    assert_eq!(json(&url, &["keys", "list", "--user", "ops@example.com"]).as_array().unwrap().len(), 1);

    // Rotation: a new secret for the same id, printed once; the old one stops
    // at once with --grace-seconds 0; recorded in the audit log.
    let rotated = json(&url, &["keys", "rotate", id, "--grace-seconds", "0"]);
    let new_key = rotated["key"].as_str().unwrap();
    assert_eq!(rotated["id"], id);
    assert!(new_key.starts_with(&format!("gk_{id}_")) && new_key != key);
    assert_eq!(rotated["permissions"], serde_json::json!(["read_models", "run_inference"]));
    assert!(rotated["previous_secret_expires_at"].is_null());
    assert!(fails(&url, &["keys", "rotate", id, "--grace-seconds", "99999999"]).contains("grace_seconds"));
    let store = gatehouse::store::connect(&url, false, std::time::Duration::from_secs(5)).await.unwrap();
    let events = store
        .audit_events(&gatehouse::domain::AuditQuery {
            target: Some(format!("key:{id}")),
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    // Every operator command is audited: the key's creation and its rotation.
    let actions: Vec<&str> = events.iter().map(|e| &*e.action).collect();
    assert_eq!(actions, ["key.rotated", "key.created"]);
    assert!(events.iter().all(|e| e.actor_id.as_deref() == Some("operator")));
    assert!(events[0].detail.as_deref().unwrap().contains("command line"));

    let revoked = json(&url, &["keys", "revoke", id]);
    assert_eq!(revoked["status"], "revoked");
    assert!(fails(&url, &["keys", "rotate", id]).contains("revoked"), "a revoked key cannot be rotated");
    // Revoking twice is harmless.
    assert_eq!(json(&url, &["keys", "revoke", id])["status"], "revoked");

    // Human output prints the key once, on its own line.
    let out = gatehouse(&url, &["keys", "create", "--user", "ops@example.com", "--name", "human"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l.contains("gk_")), "{text}");
    assert_eq!(json(&url, &["users", "list"]).as_array().unwrap().len(), 1);
}

async fn bad_input_fails_and_changes_nothing(b: Backend) {
    let (url, _dir) = fresh_database(b).await;
    json(&url, &["users", "create", "--email", "v@example.com", "--role", "viewer"]);

    assert!(fails(&url, &["users", "create", "--email", "x@example.com", "--role", "root"]).contains("root"));
    assert!(fails(&url, &["users", "create", "--email", "not-an-email", "--role", "viewer"]).contains("email"));
    assert!(
        fails(&url, &["users", "create", "--email", "V@example.com", "--role", "viewer"]).contains("already exists")
    );
    assert!(
        fails(&url, &["users", "create", "--email", "y@example.com", "--role", "viewer", "--group", "nope"])
            .contains("nope")
    );
    assert_eq!(json(&url, &["users", "list"]).as_array().unwrap().len(), 1);

    let e = fails(&url, &["keys", "create", "--user", "v@example.com", "--name", "k", "--permission", "manage_users"]);
    assert!(e.contains("manage_users"), "{e}");
    assert!(
        fails(&url, &["keys", "create", "--user", "v@example.com", "--name", "k", "--permission", "fly"])
            .contains("fly")
    );
    assert!(fails(&url, &["keys", "create", "--user", "ghost@example.com", "--name", "k"]).contains("not found"));
    assert!(
        fails(&url, &["keys", "create", "--user", "v@example.com", "--name", "k", "--expires-in-days", "0"])
            .contains("expires_in_days")
    );
    assert!(fails(&url, &["keys", "create", "--user", "v@example.com", "--name", " "]).contains("name"));
    assert_eq!(json(&url, &["keys", "list"]).as_array().unwrap().len(), 0);

    assert!(fails(&url, &["keys", "revoke", "0123456789abcdef"]).contains("not found"));
    assert!(fails(&url, &["keys", "revoke", "'; DROP TABLE api_keys; --"]).contains("not found"));
    assert!(fails(&url, &["groups", "create", "Bad Name"]).contains("group"));
    assert!(fails(&url, &["groups", "create", "g", "--requests=-1", "--period-seconds", "60"]).contains("positive"));
    assert_eq!(json(&url, &["groups", "list"]).as_array().unwrap().len(), 1);
}

#[test]
fn invalid_configuration_names_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["keys", "list"])
        .env("REQUIRE_AUTH", "perhaps")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REQUIRE_AUTH"));
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("g.db").display()))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let started = Instant::now();
    loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        if line.contains("gatehouse listening") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}; log: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("NOT_SERVING")), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_from_stdin_allows_login() {
    use std::io::Write;
    let (url, _dir) = fresh_database(Backend::Sqlite).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["users", "create", "--email", "first@example.com", "--role", "admin", "--password-stdin", "--json"])
        .env("DATABASE_URL", &url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"first admin password\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("first admin password"));
    let s = common::TestServer::start_config(common::test_config(&url)).await;
    let r = reqwest::Client::new()
        .post(s.url("/auth/login"))
        .json(&serde_json::json!({"email": "first@example.com", "password": "first admin password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.finish().await;
    // Too short a password is refused, and no user is created.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["users", "create", "--email", "second@example.com", "--role", "viewer", "--password-stdin"])
        .env("DATABASE_URL", &url)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));
    assert_eq!(json(&url, &["users", "list"]).as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_command_reports_the_decision() {
    let s = common::TestServer::start(Backend::Sqlite).await;
    let (user, key) = s.user_with_key("c@example.com", gatehouse::domain::Role::Viewer, None).await;
    let addr = format!("http://{}", s.grpc);
    let run = |args: Vec<String>| {
        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse")).args(args).output().unwrap();
        let body: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), body)
    };
    let header = format!("x-api-key: {key}");
    let (code, body) = run(vec![
        "check".into(),
        "--json".into(),
        "--addr".into(),
        addr.clone(),
        "--path".into(),
        "/v1/models".into(),
        "-H".into(),
        header,
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(body["decision"], "allow");
    assert_eq!(body["upstream_headers"]["x-auth-user-id"], user.id.as_str());
    assert_eq!(body["removed_headers"], serde_json::json!(["x-api-key"]));
    let (code, body) =
        run(vec!["check".into(), "--json".into(), "--addr".into(), addr.clone(), "--path".into(), "/v1/models".into()]);
    assert_eq!(code, Some(3), "a denial has its own exit status");
    assert_eq!(body["http_status"], 401);
    assert_eq!(body["body"]["error"]["code"], "AUTHENTICATION_FAILED");
    let (code, _) = run(vec!["check".into(), "--addr".into(), addr, "-H".into(), "no colon".into()]);
    assert_eq!(code, Some(1));
    s.finish().await;
}
