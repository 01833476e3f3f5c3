use super::providers::placeholder_email;
use super::*;

#[test]
fn emails() {
    assert_eq!(validate_email(" Alice@Example.COM ").unwrap(), "alice@example.com");
    for bad in [
        "",
        "alice",
        "@example.com",
        "alice@",
        "alice@example",
        "a@b@c.com",
        "al ice@x.com",
        "a@.x.com",
        "mallory,admin@example.com",
        "mallory;admin@example.com",
        "\"mallory\"@example.com",
        "<admin@example.com>",
        "admin@example.com>",
        "mallory(admin)@example.com",
        "a:b@example.com",
        "a%2c@example.com",
        "a/b@example.com",
        "\u{430}dmin@example.com",
        "admin@ex\u{430}mple.com",
        "admin@example.com\u{200B}",
        "a..b@example.com",
        ".a@example.com",
        "a@-x.com",
        "a@x_y.com",
    ] {
        assert!(validate_email(bad).is_err(), "{bad}");
    }
    for good in ["a.b+tag@mail.example.com", "o-k_1@x-y.example.org"] {
        assert!(validate_email(good).is_ok(), "{good}");
    }
}

#[test]
fn login_names_are_emails_as_stored() {
    let victim = LoginName::new("victim@example.com");
    for spelling in [
        "  victim@example.com",
        "VICTIM@Example.Com\t",
        "\u{a0}victim@example.com\u{3000}",
        "\u{2003}\u{85}victim@example.com\u{2028}\n",
    ] {
        assert_eq!(LoginName::new(spelling), victim, "{spelling:?}");
    }
    assert_eq!(victim.email(), Some("victim@example.com"));
    // The Kelvin sign lower-cases to `k` in Unicode: never looked up.
    assert_eq!(LoginName::new("\u{212a}im@example.com").email(), None);
    assert_eq!(LoginName::new("not an email").email(), None);
}

#[test]
fn names_refuse_invisible_characters() {
    for bad in ["ci\u{202E}yek", "ci\u{200B}key", "key\u{2066}", "\u{FEFF}key", "ke\u{00AD}y", "k\u{E0041}"] {
        assert!(validate_text("name", bad, 100).is_err(), "{bad:?}");
    }
    assert_eq!(validate_text("name", " Clé d'équipe ", 100).unwrap(), "Clé d'équipe");
}

#[test]
fn placeholder_emails_are_valid_and_unregistrable() {
    let identity = ExternalIdentity {
        provider: "https://idp.example.com:8443/realms/x".into(),
        subject: "Ünïcode sub/with,odd;chars".into(),
        ..ExternalIdentity::default()
    };
    let email = placeholder_email(&identity);
    assert!(validate_email(&email).is_ok(), "{email}");
    let twin = ExternalIdentity { subject: identity.subject.to_uppercase(), ..identity.clone() };
    assert_ne!(placeholder_email(&twin), email, "subjects differing in case get different addresses");
    assert!(!registrable(&email));
}

#[test]
fn group_names() {
    assert!(validate_group_name("team-a_1").is_ok());
    for bad in ["", "Team", "a b", "ä", &"x".repeat(65)] {
        assert!(validate_group_name(bad).is_err(), "{bad}");
    }
}
