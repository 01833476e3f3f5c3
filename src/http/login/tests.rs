use super::*;

#[test]
fn pkce_challenge_matches_rfc7636_example() {
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn query_values_are_encoded() {
    assert_eq!(query_string(&[("a", "x y&z"), ("b", "é")]), "a=x%20y%26z&b=%C3%A9");
}
