//! What an email address, a login name, a group name or a free-text field
//! must look like before anything is written.

use super::*;

/// An email as Gatehouse stores it and forwards it (`x-auth-email`):
/// lower-case ASCII, a local part of letters, digits and `. _ + -`, and a
/// domain of dot-separated letter-digit-hyphen labels. Quoted local parts,
/// `,` `;` `"` `<` `>` `(` `)` `:` `%` `/` `?` `#`, spaces, non-ASCII and
/// look-alike characters are refused: an upstream that reads the header as a
/// list, an address with a display name, or a URL must see exactly one plain
/// address, the same one Gatehouse checked.
pub fn validate_email(email: &str) -> Result<String, AccountError> {
    let email = normalize_email(email);
    if is_plain_email(&email) { Ok(email) } else { Err(validation("email", "not a valid email address")) }
}

/// An email as it is stored: surrounding (Unicode) whitespace removed, ASCII
/// letters in lower case. Anything else is left as is, so it can never
/// match a stored (plain ASCII) address.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// The account a login attempt names, normalized once ([`normalize_email`]):
/// the login throttle counts against it and the account is looked up by it,
/// so no spelling (`"  Victim@Example.com"`, a no-break space) reaches the
/// account with a budget of its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoginName(String);

impl LoginName {
    pub fn new(identifier: &str) -> LoginName {
        LoginName(normalize_email(identifier))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stored email it can match: `None` when it is no plain address
    /// (the store's own case folding never sees anything but ASCII).
    pub fn email(&self) -> Option<&str> {
        is_plain_email(&self.0).then_some(self.0.as_str())
    }
}

/// Whether `email` is already in the form [`validate_email`] returns.
pub fn is_plain_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    let local_ok = (1..=64).contains(&local.len())
        && local.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._+-".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    email.len() <= 254 && local_ok && domain.contains('.') && domain.split('.').all(label_ok)
}

/// Whether an email may be used for a self-registered account: plain, and
/// not in the reserved `.invalid` domain that provider accounts without an
/// email are given (registering one would let a password account pose as,
/// or be linked to, a provider's user).
pub(super) fn registrable(email: &str) -> bool {
    !email.ends_with(".invalid")
}

/// Characters that change how text looks without being seen: bidi
/// overrides and isolates, zero-width characters, joiners, the BOM, tags,
/// variation selectors, soft hyphens and other format characters. A name
/// carrying them can pose as another in a list or a log.
pub(super) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

pub(super) fn validate_text(field: &'static str, value: &str, max: usize) -> Result<String, AccountError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(validation(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(validation(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(validation(field, "must not contain control characters"));
    }
    if value.chars().any(is_invisible) {
        return Err(validation(field, "must not contain invisible or formatting characters (bidi, zero-width)"));
    }
    Ok(value.to_owned())
}

pub fn validate_group_name(name: &str) -> Result<(), AccountError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(validation("group", "use 1-64 characters: a-z, 0-9, '-' and '_'")) }
}
