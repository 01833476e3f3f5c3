//! Property tests for what attackers shape: request paths and credential headers.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::sync::LazyLock;

use gatehouse::authn::credentials::{Credential, extract};
use gatehouse::config::Config;
use gatehouse::domain::Denial;
use gatehouse::policy::path::normalize;
use gatehouse::policy::{Policy, PolicySpec, normalize_host};
use proptest::prelude::*;

/// Path-ish strings: the characters path tricks are made of, plus escapes.
fn raw_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("/./".to_owned()),
        Just("/../".to_owned()),
        Just(";".to_owned()),
        Just("?".to_owned()),
        Just("#".to_owned()),
        Just("\\".to_owned()),
        "%[0-9A-Fa-f]{2}",
        "%[0-9A-Za-z]{0,2}",
        "[a-zA-Z0-9_~-]{1,6}",
        "[!$&'()*+,=:@]",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|parts| format!("/{}", parts.concat()))
}

/// Segments made of unreserved characters only.
fn plain_segments() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-zA-Z0-9_~-]{1,8}", 1..6)
}

fn percent_encode_some(segment: &str, mask: u64) -> String {
    segment
        .bytes()
        .enumerate()
        .map(|(i, b)| if mask >> (i % 64) & 1 == 1 { format!("%{b:02X}") } else { (b as char).to_string() })
        .collect()
}

/// The shipped route table with the default public paths.
static SHIPPED: LazyLock<Policy> =
    LazyLock::new(|| Policy::compile(&PolicySpec::default(), &Config::default().public_paths).unwrap());

/// Names in the shipped table (and spellings of them every reader decodes
/// alike).
const NAMES: &[&str] = &[
    "v1",
    "api",
    "models",
    "gpt-4o",
    "chat",
    "completions",
    "embeddings",
    "admin",
    "auth",
    "login",
    "healthz",
    "metrics",
    "x",
    "%6dodels",
    "%61dmin",
    "llama3%3a8b",
    "...",
    "a..b",
];

/// Segments upstreams read in different ways.
const TRICKS: &[&str] = &[
    ".",
    "..",
    "..;",
    ".;",
    ";",
    ";x",
    "x;y=1",
    "admin;x",
    "%2e",
    "%2e%2e",
    "%2E%2E;",
    ".%2e",
    "..%3b",
    "%2f",
    "..%2f",
    "%25",
    "%252e%252e",
    "%5c",
    "..\\",
    "%00",
    "%0a",
    "%c0%ae",
    "%c0%ae%c0%ae",
    "%e0%80%ae",
    "",
];

/// A path in the shipped table (with `{param}` filled in), split in segments.
const ROUTES: &[&str] = &[
    "/v1/models",
    "/v1/models/gpt-4o",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/admin/users",
    "/v1/admin/x",
    "/auth/x",
    "/auth/login",
    "/healthz",
    "/metrics",
    "/api/v1/models/m",
    "/api/v1/inference",
];

/// Paths made of table names and tricky segments, either at random or as a
/// real route with tricky segments put in.
fn attack_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![3 => prop::sample::select(NAMES), 2 => prop::sample::select(TRICKS)];
    let random = prop::collection::vec(segment.clone(), 0..7);
    let seeded = (prop::sample::select(ROUTES), prop::collection::vec((any::<prop::sample::Index>(), segment), 0..4))
        .prop_map(|(route, inserts)| {
            let mut parts: Vec<&str> = route.split('/').skip(1).collect();
            for (at, s) in inserts {
                parts.insert(at.index(parts.len() + 1), s);
            }
            parts
        });
    let tail = prop::sample::select(&["", "/", "?q=/admin/..;/", "#/..;/admin", "/?x"][..]);
    (prop_oneof![1 => random, 2 => seeded], tail).prop_map(|(parts, tail)| format!("/{}{tail}", parts.join("/")))
}

fn path_part(raw: &str) -> &str {
    &raw[..raw.find(['?', '#']).unwrap_or(raw.len())]
}

/// Decodes `%XX` where `keep` says the byte may be decoded.
fn decode_where(segment: &str, decode: impl Fn(u8) -> bool) -> String {
    let mut out = String::new();
    let mut rest = segment;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) if decode(b) => {
                out.push(b as char);
                rest = &rest[i + 3..];
            }
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// The path a prefix-routing upstream that keeps `;` and dot segments
/// literally routes on (Go's `ServeMux` with `EscapedPath`, nginx `location`,
/// Starlette mounts, Express): the path split on `/`, `;params`, dots and
/// empty segments kept as text, only unreserved escapes decoded.
fn literal_upstream(raw: &str) -> String {
    path_part(raw).split('/').map(|s| decode_where(s, unreserved)).collect::<Vec<_>>().join("/")
}

/// The path a resolving upstream routes on (Tomcat, Jetty, Spring):
/// `;params` cut from each segment, unreserved escapes decoded, then `.` and
/// `..` resolved and empty segments dropped.
fn resolving_upstream(raw: &str) -> String {
    let mut segments: Vec<String> = Vec::new();
    for segment in path_part(raw).split('/') {
        let segment = decode_where(segment.split(';').next().unwrap_or(""), unreserved);
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    format!("/{}", segments.join("/"))
}

/// The rule the shipped table picks for a path as a reader sees it.
fn rule_for(method: &str, path: &str) -> String {
    SHIPPED.route(method, "", path).name.to_string()
}

/// The models of the two kinds of upstream read the finding's paths the way
/// the upstreams do, and Gatehouse refuses them.
#[test]
fn the_upstream_models_read_dot_parameters_apart() {
    let raw = "/admin/..;/v1/models";
    assert_eq!(rule_for("GET", &literal_upstream(raw)), "admin");
    assert_eq!(rule_for("GET", &resolving_upstream(raw)), "models");
    let raw = "/v1/admin/..;/..;/auth/x";
    assert_eq!(rule_for("GET", &literal_upstream(raw)), "admin");
    assert_eq!(rule_for("GET", &resolving_upstream(raw)), "gatehouse-api");
    for raw in ["/admin/..;/v1/models", "/v1/admin/..;/..;/auth/x", "/admin/%2e%2e;/v1/models", "//admin/x"] {
        assert!(normalize(raw).is_err(), "{raw}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever is accepted comes out canonical: absolute, no empty, `.` or
    /// `..` segments, no parameters, query, fragment, backslash or NUL; and
    /// normalizing again changes nothing.
    #[test]
    fn normalized_paths_are_canonical(raw in raw_path()) {
        if let Ok(path) = normalize(&raw) {
            prop_assert!(path.starts_with('/'));
            prop_assert!(path == "/" || !path.ends_with('/'), "{path}");
            for segment in path.split('/').skip(1) {
                prop_assert!(path == "/" || !segment.is_empty(), "{raw} -> {path}");
                prop_assert!(segment != "." && segment != "..", "{raw} -> {path}");
            }
            for forbidden in [';', '?', '#', '\\', '\0'] {
                prop_assert!(!path.contains(forbidden), "{raw} -> {path}");
            }
            prop_assert_eq!(normalize(&path), Ok(path.clone()));
        }
    }

    /// For any path Gatehouse allows to reach a rule of the shipped table,
    /// both kinds of upstream route it inside that rule's paths: one that
    /// keeps `;params` and dot segments literally, and one that strips the
    /// parameters and resolves the dots. (Stated as "the same table picks
    /// the same rule for the upstream's reading", which implies the rule's
    /// patterns match that reading.)
    #[test]
    fn allowed_paths_route_alike_for_every_upstream(
        raw in attack_path(),
        method in prop::sample::select(&["GET", "POST", "DELETE", "PUT"][..]),
    ) {
        if let Ok(path) = normalize(&raw) {
            let rule = rule_for(method, &path);
            if rule != "default" {
                let literal = literal_upstream(&raw);
                let resolving = resolving_upstream(&raw);
                prop_assert_eq!(&rule_for(method, &literal), &rule, "{} {} -> {} (literal upstream: {})", method, raw, path, literal);
                prop_assert_eq!(&rule_for(method, &resolving), &rule, "{} {} -> {} (resolving upstream: {})", method, raw, path, resolving);
            }
        }
    }

    /// An encoded `/`, `.`, `\`, `;` or `%`, or an encoded control byte, is
    /// never decoded into structure: refused.
    #[test]
    fn encoded_separators_are_refused(segments in plain_segments(), which in 0usize..11, at in 0usize..6) {
        let encoded = ["%2F", "%2f", "%2E", "%2e", "%5C", "%00", "%3B", "%25", "%0A", "%7F", "%C0%AE"][which];
        let mut parts = segments.clone();
        let i = at % parts.len();
        parts[i] = format!("{}{encoded}", parts[i]);
        let raw = format!("/{}", parts.join("/"));
        prop_assert!(normalize(&raw).is_err(), "{raw}");
    }

    /// Percent-encoding unreserved characters, a trailing slash, a query and
    /// a fragment do not change where a path leads.
    #[test]
    fn equivalent_spellings_normalize_alike(
        segments in plain_segments(),
        masks in prop::collection::vec(any::<u64>(), 6),
        slash in any::<bool>(),
    ) {
        let canonical = format!("/{}", segments.join("/"));
        let disguised: Vec<String> = segments.iter().zip(&masks).map(|(s, m)| percent_encode_some(s, *m)).collect();
        let raw = format!("/{}{}?q=/../admin;x#/..;/x", disguised.join("/"), if slash { "/" } else { "" });
        prop_assert_eq!(normalize(&raw), Ok(canonical));
    }

    /// A `.`, `..` or empty segment, or `;params` anywhere in the path, is
    /// refused, never resolved, merged or cut.
    #[test]
    fn dot_segments_parameters_and_empty_segments_are_refused(
        segments in plain_segments(),
        at in any::<prop::sample::Index>(),
        which in 0usize..9,
    ) {
        let trick = [".", "..", "..;", ".;", "..;x=1", "", "x;y", ";", "%2e%2e;"][which];
        let mut parts = segments.clone();
        // (An empty last segment is a trailing slash, which is ignored.)
        let positions = if trick.is_empty() { parts.len() } else { parts.len() + 1 };
        parts.insert(at.index(positions), trick.to_owned());
        let raw = format!("/{}", parts.join("/"));
        prop_assert!(normalize(&raw).is_err(), "{raw}");
    }

    /// A host Gatehouse accepts is the host a URL parser reads from it (no
    /// userinfo, port or bracket trick moves the host elsewhere), so a host
    /// rule sees what the upstream's virtual hosting sees.
    #[test]
    fn accepted_hosts_are_the_host_a_url_parser_reads(
        parts in prop::collection::vec(
            prop::sample::select(&[
                "internal", "example", "com", ".", ":", "443", "65536", "abc", "@", "[", "]", "::1", "0x7f", "1",
                "127", "0", "%2e", " ", "_", "-", "API", "\t", "\u{e9}", "user:pass", "/", "#", "?", "\\",
            ][..]),
            1..8,
        ),
    ) {
        let host = parts.concat();
        if let Ok(normalized) = normalize_host(&host) {
            let url = reqwest::Url::parse(&format!("http://{host}/"));
            prop_assert!(url.is_ok(), "{host:?} accepted as {normalized:?}, but a URL parser refuses it");
            let url = url.unwrap();
            prop_assert_eq!(url.username(), "", "{:?}", host);
            prop_assert_eq!(url.password(), None, "{:?}", host);
            let read = url.host_str().unwrap_or("");
            prop_assert_eq!(read.strip_suffix('.').unwrap_or(read), &*normalized, "{:?}", host);
        }
    }

    /// Header names match in any case; the same credential twice is one
    /// credential; two different ones are refused.
    #[test]
    fn credential_headers(
        key in "gk_[0-9a-f]{16}_[A-Za-z0-9]{49}",
        other in "gk_[0-9a-f]{16}_[A-Za-z0-9]{49}",
        upper in prop::collection::vec(any::<bool>(), 13),
        noise in prop::collection::vec(("[a-z-]{1,12}", "[ -~]{0,20}"), 0..6),
    ) {
        let name: String = "authorization"
            .chars()
            .zip(&upper)
            .map(|(c, u)| if *u { c.to_ascii_uppercase() } else { c })
            .collect();
        let api_name: String = "x-api-key".chars().zip(&upper).map(|(c, u)| if *u { c.to_ascii_uppercase() } else { c }).collect();
        let bearer = format!("Bearer {key}");
        let noise: Vec<(String, String)> = noise
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("authorization") && !n.eq_ignore_ascii_case("x-api-key"))
            .collect();
        let mut headers: Vec<(&str, &str)> = noise.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        headers.push((&name, &bearer));
        headers.push((&api_name, &key));
        prop_assert_eq!(extract(headers.clone()), Ok(Some(Credential::ApiKey(key.as_str()))));
        if other != key {
            headers.push(("X-API-KEY", &other));
            prop_assert_eq!(extract(headers), Err(Denial::ConflictingCredentials));
        }
    }
}
