use super::*;

fn policy(toml: &str) -> Policy {
    let spec = PolicySpec::from_toml(toml).unwrap();
    Policy::compile(&spec, &[PathPattern::parse("/healthz").unwrap()]).unwrap()
}

#[test]
fn exact_prefix_and_template_patterns() {
    for (pattern, path, want) in [
        ("/healthz", "/healthz", true),
        ("/healthz", "/healthz/x", false),
        ("/healthz", "/healthzz", false),
        ("/auth/oidc/*", "/auth/oidc", true),
        ("/auth/oidc/*", "/auth/oidc/callback", true),
        ("/auth/oidc/*", "/auth/oidcx", false),
        ("/*", "/anything/at/all", true),
        ("/*", "/", true),
        ("/", "/", true),
        ("/", "/x", false),
        ("/v1/models/{id}", "/v1/models/gpt-4o", true),
        ("/v1/models/{id}", "/v1/models", false),
        ("/v1/models/{id}", "/v1/models/a/b", false),
        ("/v1/threads/{id}/runs/*", "/v1/threads/t1/runs/r2/steps", true),
        ("/v1/threads/{id}/runs/*", "/v1/threads/t1/messages", false),
    ] {
        let p = PathPattern::parse(pattern).unwrap();
        assert_eq!(p.matches(path), want, "{pattern} vs {path}");
    }
    for bad in ["/a%2fb", "/v1/{}", "/v1/x*", "/v1/*/y", "/v1/{a-b}", "/v1/{id}x", "relative"] {
        assert!(PathPattern::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn hosts_ignore_case_port_and_trailing_dot() {
    let exact = HostPattern::parse("API.example.com").unwrap();
    let wild = HostPattern::parse("*.example.com").unwrap();
    for (host, e, w) in [
        ("api.example.com", true, true),
        ("API.EXAMPLE.COM:443", true, true),
        ("api.example.com.", true, true),
        ("api.example.com.:8443", true, true),
        ("api.example.com:0", true, true),
        ("api.example.com:65535", true, true),
        ("example.com", false, false),
        ("evil-example.com", false, false),
        ("api.example.com.evil.net", false, false),
        ("a.b.example.com", false, true),
        ("", false, false),
    ] {
        let h = normalize_host(host).unwrap();
        assert_eq!((exact.matches(&h), wild.matches(&h)), (e, w), "{host} -> {h}");
    }
    for (host, want) in [
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("[0:0::1]", "[::1]"),
        ("[FE80::A]:443", "[fe80::a]"),
        ("127.0.0.1:10000", "127.0.0.1"),
        ("10.0.0.1.", "10.0.0.1"),
        ("1password.com", "1password.com"),
        ("v1.internal", "v1.internal"),
        ("0x.example.com", "0x.example.com"),
        ("svc_internal.local", "svc_internal.local"),
        ("localhost", "localhost"),
    ] {
        assert_eq!(normalize_host(host).as_deref(), Ok(want), "{host}");
    }
    assert!(matches!(normalize_host("api.example.com"), Ok(Cow::Borrowed(_))));
    assert!(matches!(normalize_host("api.example.com:443"), Ok(Cow::Borrowed(_))));
    assert!(HostPattern::parse("bad host").is_err());
    assert!(HostPattern::parse("*.").is_err());
    assert!(HostPattern::parse("").is_err());
    assert!(HostPattern::parse("*.[::1]").is_err());
    assert!(HostPattern::parse("user@api.example.com").is_err());
    assert_eq!(HostPattern::parse("[::1]").unwrap(), HostPattern::parse("[0::1]:80").unwrap());
}

/// Host values readers disagree on: refused, so a host rule cannot be
/// dodged by spelling its host in a way it does not recognize.
#[test]
fn malformed_hosts_are_refused() {
    for host in [
        "internal.example.com:abc",
        "internal.example.com:",
        "internal.example.com:443:443",
        "internal.example.com:65536",
        "internal.example.com:99999",
        "internal.example.com:000443",
        "internal.example.com:-1",
        "internal.example.com:+443",
        "internal.example.com: 443",
        "user@internal.example.com",
        "user:pass@internal.example.com",
        "internal.example.com@evil.net",
        "[internal.example.com]",
        "[internal.example.com]:443",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[::1]:abc",
        "[::1]:80:80",
        "[::1]]",
        "[fe80::1%25eth0]",
        "[v1.fe80::1]",
        "::1",
        "fe80::1:443",
        " internal.example.com",
        "internal.example.com ",
        "internal .example.com",
        "internal.example.com\t",
        "internal.example.com\r\nx: y",
        "internal.example.com\0",
        "internal.ex\u{e4}mple.com",
        "internal%2eexample.com",
        "internal.example.com/",
        "internal.example.com/x",
        "internal.example.com\\",
        "internal.example.com?",
        "internal.example.com#",
        "internal..example.com",
        ".internal.example.com",
        "internal.example.com..",
        ".",
        ":443",
        "internal,example.com",
        "internal.example.com,other",
        "\"internal.example.com\"",
        "127.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "2130706433",
        "127.000.000.001",
        "010.0.0.1",
        "1.2.3.4.5",
        "internal.1",
        "internal.0x",
    ] {
        assert_eq!(normalize_host(host), Err(HostError), "{host:?}");
        assert!(HostPattern::parse(host).is_err() || host.trim() != host, "{host:?}");
    }
    // A wildcard is a pattern, not a host.
    assert_eq!(normalize_host("*.example.com"), Err(HostError));
}

#[test]
fn first_match_wins_and_the_default_applies_otherwise() {
    let p = policy(
        r#"
        [policy]
        default = "deny"
        [[routes]]
        name = "models"
        methods = ["GET"]
        paths = ["/v1/models", "/v1/models/{id}"]
        permissions = ["read_models"]
        [[routes]]
        name = "internal"
        host = "internal.example.com"
        path = "/*"
        access = "authenticated"
        [[routes]]
        name = "admin"
        path = "/admin/*"
        roles = ["admin"]
        "#,
    );
    for (method, host, path, want) in [
        ("GET", "x", "/v1/models", "models"),
        ("get", "x", "/v1/models/m1", "models"),
        ("POST", "x", "/v1/models", "default"),
        ("POST", "internal.example.com:80", "/v1/models", "internal"),
        ("GET", "x", "/admin", "admin"),
        ("GET", "x", "/admin/users/1", "admin"),
        ("GET", "x", "/healthz", "public /healthz"),
        ("GET", "x", "/v2/models", "default"),
    ] {
        let rule = p.route(method, &normalize_host(host).unwrap(), path);
        assert_eq!(&*rule.name, want, "{method} {host} {path}");
    }
    assert_eq!(p.route("GET", "x", "/nope").access, Access::Deny);
}

#[test]
fn bypass_shapes_do_not_reach_a_public_rule() {
    let p = policy("[policy]\ndefault = \"deny\"\n");
    for raw in ["/healthz/../v1/chat/completions", "/healthz/x", "/healthz;/../v1", "/healthz%2f..%2fv1", "//healthz"] {
        // A path that does not normalize is refused outright (400).
        if let Ok(n) = path::normalize(raw) {
            assert_eq!(p.route("GET", "", &n).access, Access::Deny, "{raw} -> {n}");
        }
    }
    let n = path::normalize("/healthz/?probe=1").unwrap();
    assert_eq!(p.route("GET", "", &n).access, Access::Public);
}

#[test]
fn invalid_tables_name_the_rule() {
    for (toml, want) in [
        ("[[routes]]\npath = \"/x\"\npermissions = [\"fly\"]\n", "routes[0]"),
        ("[[routes]]\npath = \"/x\"\nroles = [\"king\"]\n", "routes[0]"),
        ("[[routes]]\npath = \"/x\"\n[[routes]]\npath = \"/a%2fb\"\n", "routes[1]"),
        ("[[routes]]\nname = \"a\"\npath = \"/x\"\n[[routes]]\nname = \"a\"\npath = \"/y\"\n", "named 'a'"),
        ("[[routes]]\npath = \"/x\"\nlimit = \"0/1\"\n", "routes[0]"),
        ("[[routes]]\nname = \"no paths\"\n", "routes[0]"),
        ("[[routes]]\npath = \"/x\"\naccess = \"public\"\nroles = [\"admin\"]\n", "routes[0]"),
        ("[[routes]]\npath = \"/x\"\nbody = \"xml\"\n", "body"),
    ] {
        let e = PolicySpec::from_toml(toml)
            .map_err(|e| e.to_string())
            .and_then(|s| Policy::compile(&s, &[]).map(|_| ()))
            .unwrap_err();
        assert!(e.contains(want), "{toml}: {e}");
    }
}

#[test]
fn the_shipped_table_covers_an_openai_gateway() {
    let p = Policy::compile(&PolicySpec::default(), &[]).unwrap();
    for (method, path, want) in [
        ("GET", "/v1/models", Some(crate::domain::Permission::ReadModels)),
        ("GET", "/v1/models/gpt-4o", Some(crate::domain::Permission::ReadModels)),
        ("POST", "/v1/chat/completions", Some(crate::domain::Permission::RunInference)),
        ("POST", "/v1/completions", Some(crate::domain::Permission::RunInference)),
        ("POST", "/v1/embeddings", Some(crate::domain::Permission::RunInference)),
    ] {
        let rule = p.route(method, "", path);
        assert_eq!(rule.access, Access::Authenticated, "{path}");
        assert!(rule.permissions.contains(want.unwrap()), "{path}");
    }
    assert!(p.route("POST", "", "/v1/chat/completions").body.is_some());
    assert_eq!(p.route("GET", "", "/admin/settings").roles, vec![Role::Admin]);
    assert_eq!(p.route("DELETE", "", "/v1/chat/completions").access, Access::Deny);
    assert_eq!(p.route("GET", "", "/unknown").access, Access::Deny);
}
