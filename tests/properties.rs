//! Property tests for what attackers shape: request paths and credential headers.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use gatehouse::authn::credentials::{Credential, extract};
use gatehouse::domain::Denial;
use gatehouse::policy::path::normalize;
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

    /// An encoded `/`, `.` or `\` is never decoded into structure: refused.
    #[test]
    fn encoded_separators_are_refused(segments in plain_segments(), which in 0usize..6, at in 0usize..6) {
        let encoded = ["%2F", "%2f", "%2E", "%2e", "%5C", "%00"][which];
        let mut parts = segments.clone();
        let i = at % parts.len();
        parts[i] = format!("{}{encoded}", parts[i]);
        let raw = format!("/{}", parts.join("/"));
        prop_assert!(normalize(&raw).is_err(), "{raw}");
    }

    /// Percent-encoding unreserved characters, doubling slashes or adding `.`
    /// segments, `;params` and a query does not change where a path leads.
    #[test]
    fn equivalent_spellings_normalize_alike(segments in plain_segments(), masks in prop::collection::vec(any::<u64>(), 6)) {
        let canonical = format!("/{}", segments.join("/"));
        let disguised: Vec<String> = segments
            .iter()
            .zip(&masks)
            .map(|(s, m)| format!("./{};v=1", percent_encode_some(s, *m)))
            .collect();
        let raw = format!("//{}/?q=/admin#x", disguised.join("//"));
        prop_assert_eq!(normalize(&raw), Ok(canonical));
    }

    /// `..` never climbs above the root.
    #[test]
    fn dot_dot_stays_under_the_root(ups in 1usize..8, segments in plain_segments()) {
        let raw = format!("{}/{}", "/..".repeat(ups), segments.join("/"));
        prop_assert_eq!(normalize(&raw), Ok(format!("/{}", segments.join("/"))));
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
