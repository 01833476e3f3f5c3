//! Attacks: `Host` values that dodge a host rule. Gatehouse matched
//! `internal.example.com:abc`, `user@internal.example.com`,
//! `[internal.example.com]` or `internal.example.com:443:443` against no host
//! at all, while upstreams and virtual hosts read `internal.example.com` in
//! them. A host that is not a name, IPv4 or bracketed IPv6 address with an
//! optional numeric port is refused with 400, on every Check.

use gatehouse::domain::Role;
use gatehouse::policy::PolicySpec;
use tonic::Code;

use crate::common::*;
use crate::table::*;

/// Everything is public except the internal hosts.
const TABLE: &str = r#"
[policy]
default = "deny"

[[routes]]
name = "internal"
hosts = ["internal.example.com", "*.internal.example.com"]
path = "/*"
access = "deny"

[[routes]]
name = "open"
path = "/*"
access = "public"
"#;

const MALFORMED: &[(&str, &str)] = &[
    ("non-numeric port", "internal.example.com:abc"),
    ("empty port", "internal.example.com:"),
    ("two ports", "internal.example.com:443:443"),
    ("port above 65535", "internal.example.com:99999"),
    ("userinfo", "user@internal.example.com"),
    ("userinfo with a password", "user:pw@internal.example.com"),
    ("brackets around a name", "[internal.example.com]"),
    ("brackets around a name, with a port", "[internal.example.com]:443"),
    ("trailing dot and a bad port", "internal.example.com.:abc"),
    ("two trailing dots", "internal.example.com.."),
    ("an empty label", "internal..example.com"),
    ("encoded dot", "internal%2eexample.com"),
    ("a subdomain with a bad port", "a.internal.example.com:x"),
    ("a comma", "internal.example.com,gateway.test"),
];

async fn server() -> TestServer {
    TestServer::start_with(Backend::Sqlite, |c| c.policy = PolicySpec::from_toml(TABLE).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_hosts_do_not_dodge_a_host_rule() {
    let stack = Stack::start(server().await).await;
    let mut rows = vec![
        Attack::new("control: another host is open", "GET", "/v1/models", 200),
        Attack::new("control: the internal host", "GET", "/v1/models", 403).header("host", "internal.example.com"),
        Attack::new("control: case, port, trailing dot", "GET", "/v1/models", 403)
            .header("host", "INTERNAL.Example.COM.:443"),
        Attack::new("control: a subdomain", "GET", "/v1/models", 403).header("host", "a.internal.example.com"),
        Attack::new("control: an IPv6 address", "GET", "/v1/models", 200).header("host", "[::1]:10000"),
    ];
    for &(name, host) in MALFORMED {
        rows.push(Attack::new(name, "GET", "/v1/models", 400).header("host", host));
    }
    stack.run(&rows).await;
    stack.gatehouse.finish().await;
}

async fn check_host(s: &TestServer, host: &str) -> Check {
    let mut request = check_request("GET", "/v1/models", &[]);
    request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap().host = host.into();
    Check(s.client().await.check(request).await.unwrap().into_inner())
}

/// Straight to Check, so Gatehouse's own refusal is tested whatever Envoy
/// lets through, plus values no HTTP/1.1 client can send through Envoy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_malformed_hosts() {
    let s = server().await;
    assert!(check_host(&s, "gateway.test").await.allowed());
    assert!(check_host(&s, "").await.allowed(), "HTTP/1.0 without a Host");
    check_host(&s, "internal.example.com:443").await.assert_denied(403, Code::PermissionDenied, "PERMISSION_DENIED");
    let more = [
        "internal.example.com ",
        " internal.example.com",
        "internal.example.com\t",
        "internal.example.com\r\nx: y",
        "internal.example.com\0",
        "internal.ex\u{e4}mple.com",
        "internal.example.com/x",
        "internal.example.com\\",
        "[::1",
        "[fe80::1%25eth0]",
    ];
    for host in MALFORMED.iter().map(|(_, h)| *h).chain(more) {
        let c = check_host(&s, host).await;
        c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
        assert!(c.body()["error"]["message"].as_str().unwrap().contains("malformed host"), "{host:?}");
    }
    s.finish().await;
}

/// A malformed host is malformed under any table, not only one with host
/// rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_hosts_are_refused_without_host_rules() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (_, key) = s.user_with_key("u@example.com", Role::Viewer, None).await;
    let mut request = check_request("GET", "/v1/models", &[("x-api-key", &key)]);
    let http = request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.host = "user@gateway.test".into();
    let c = Check(s.client().await.check(request.clone()).await.unwrap().into_inner());
    c.assert_denied(400, Code::InvalidArgument, "VALIDATION_ERROR");
    request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap().host =
        "gateway.test:10000".into();
    assert!(Check(s.client().await.check(request).await.unwrap().into_inner()).allowed());
    s.finish().await;
}
