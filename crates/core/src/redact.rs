//! What log lines and audit events may keep of a request-derived value:
//! escaped, capped, and with email addresses redacted.
//!
//! What is never logged: API keys, tokens, passwords, `Authorization`
//! values, query strings (they may carry credentials). Emails appear only
//! redacted (`a***@example.com`) unless `GATEHOUSE_LOG_EMAILS=true`.

use std::sync::atomic::{AtomicBool, Ordering};

static LOG_EMAILS: AtomicBool = AtomicBool::new(false);

/// Whether log lines may carry full email addresses (off by default).
pub fn set_log_emails(on: bool) {
    LOG_EMAILS.store(on, Ordering::Relaxed);
}

/// An email address as log lines show it: the first character of the local
/// part and the domain (`a***@example.com`), unless full emails are enabled;
/// escaped and capped like any request-derived value (see [`escape`]).
pub fn email(address: &str) -> String {
    escape(&mask(address), VALUE_CAP).into_owned()
}

fn mask(address: &str) -> String {
    if LOG_EMAILS.load(Ordering::Relaxed) {
        return address.to_owned();
    }
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// The most of a request path a log line or audit event keeps, in bytes.
pub const PATH_CAP: usize = 256;
/// The most of any other request-derived value a log line keeps, in bytes.
pub const VALUE_CAP: usize = 256;

/// A request-derived value as log lines and audit events keep it: control
/// characters and other invisible ones (bidi overrides, zero-width and line
/// separators) escaped as `\u{1b}`, a backslash doubled so an escape cannot
/// be forged, and cut at `cap` bytes with `…(N bytes)` giving the original
/// length. Every value from a request goes through here before it is logged
/// or audited: a value can then neither start a line of its own nor move the
/// terminal, and one request writes a bounded amount.
pub fn escape(value: &str, cap: usize) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write;
    if value.len() <= cap && !value.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len().min(cap) + 24);
    let mut piece = String::new();
    for c in value.chars() {
        piece.clear();
        if c == '\\' {
            piece.push_str("\\\\");
        } else if needs_escape(c) {
            let _ = write!(piece, "\\u{{{:x}}}", u32::from(c));
        } else {
            piece.push(c);
        }
        if out.len() + piece.len() > cap {
            let _ = write!(out, "…({} bytes)", value.len());
            return std::borrow::Cow::Owned(out);
        }
        out.push_str(&piece);
    }
    std::borrow::Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c,
            '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e0000}'..='\u{e007f}')
}

/// A request path as log lines show it: without its query string (which may
/// carry credentials), email addresses in it redacted like [`email`]
/// (`/admin/users/a***@example.com`), escaped and capped at [`PATH_CAP`].
pub fn path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    escape(&redact_emails(path), PATH_CAP).into_owned()
}

/// `text` with every word holding an `@` (or its URL encoding `%40`) shown
/// as [`email`] shows addresses, unless full emails are enabled.
pub fn redact_emails(text: &str) -> std::borrow::Cow<'_, str> {
    let encoded = |t: &str| t.contains("%40");
    if LOG_EMAILS.load(Ordering::Relaxed) || !text.contains('@') && !encoded(text) {
        return std::borrow::Cow::Borrowed(text);
    }
    let is_delimiter = |c: char| c.is_whitespace() || "/,;:()[]<>\"'=?&#".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(is_delimiter).unwrap_or(rest.len());
        let word = &rest[..end];
        if word.contains('@') {
            out.push_str(&mask(word));
        } else if encoded(word) {
            out.push_str(&mask(&word.replace("%40", "@")));
        } else {
            out.push_str(word);
        }
        let delimiter = rest[end..].chars().next().map_or(0, char::len_utf8);
        out.push_str(&rest[end..end + delimiter]);
        rest = &rest[end + delimiter..];
    }
    std::borrow::Cow::Owned(out)
}
