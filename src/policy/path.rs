//! Request paths as a route matcher must see them.
//!
//! The path is normalized the way an attacker would hope the matcher does not:
//! the query and fragment are dropped, `;params` are cut from each segment,
//! percent-encoded unreserved characters are decoded, repeated slashes merge,
//! `.` and `..` segments are resolved (never above the root), and a trailing
//! slash is ignored. Encodings whose meaning depends on who decodes them (an
//! encoded `/`, `\` or `.`, a NUL, a backslash, control or non-ASCII bytes) are
//! rejected, not guessed.

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path contains an ambiguous encoding")]
    AmbiguousEncoding,
    #[error("path contains a malformed percent-encoding")]
    BadPercentEncoding,
    #[error("path contains a forbidden character")]
    ForbiddenCharacter,
}

pub fn normalize(raw: &str) -> Result<String, PathError> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = &raw[..end];
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in path.split('/') {
        let segment = segment.split(';').next().unwrap_or("");
        let decoded = decode_segment(segment)?;
        match decoded.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(decoded),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn decode_segment(segment: &str) -> Result<String, PathError> {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadPercentEncoding)?;
                let value = hex_value(hex[0])
                    .zip(hex_value(hex[1]))
                    .map(|(h, l)| h << 4 | l)
                    .ok_or(PathError::BadPercentEncoding)?;
                match value {
                    b'/' | b'\\' | b'.' | 0 => return Err(PathError::AmbiguousEncoding),
                    v if v.is_ascii_alphanumeric() || v == b'-' || v == b'_' || v == b'~' => out.push(v as char),
                    // Reserved or other bytes stay encoded, in one canonical (upper-case) form.
                    v => {
                        out.push('%');
                        out.push(char::from(b"0123456789ABCDEF"[(v >> 4) as usize]));
                        out.push(char::from(b"0123456789ABCDEF"[(v & 15) as usize]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::AmbiguousEncoding),
            b if b.is_ascii_graphic() => {
                out.push(b as char);
                i += 1;
            }
            _ => return Err(PathError::ForbiddenCharacter),
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_the_usual_tricks() {
        for (raw, want) in [
            ("/", "/"),
            ("/v1/models", "/v1/models"),
            ("/v1/models/", "/v1/models"),
            ("//v1///models", "/v1/models"),
            ("/v1/./models", "/v1/models"),
            ("/healthz/../v1/chat", "/v1/chat"),
            ("/../../v1", "/v1"),
            ("/v1/models?x=/healthz", "/v1/models"),
            ("/v1/models#frag", "/v1/models"),
            ("/v1/models;jsessionid=1/x", "/v1/models/x"),
            ("/v1/%6dodels", "/v1/models"),
            ("/v1/a%20b", "/v1/a%20b"),
            ("/v1/a%3ab", "/v1/a%3Ab"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn rejects_ambiguous_paths() {
        for (raw, err) in [
            ("v1/models", PathError::NotAbsolute),
            ("/v1%2fmodels", PathError::AmbiguousEncoding),
            ("/v1%2Fmodels", PathError::AmbiguousEncoding),
            ("/%2e%2e/admin", PathError::AmbiguousEncoding),
            ("/v1%5cmodels", PathError::AmbiguousEncoding),
            ("/v1\\..\\admin", PathError::AmbiguousEncoding),
            ("/v1%00", PathError::AmbiguousEncoding),
            ("/v1/%zz", PathError::BadPercentEncoding),
            ("/v1/%4", PathError::BadPercentEncoding),
            ("/v1/\u{0}", PathError::ForbiddenCharacter),
            ("/v1/caf\u{e9}", PathError::ForbiddenCharacter),
            ("/v1/a b", PathError::ForbiddenCharacter),
        ] {
            assert_eq!(normalize(raw), Err(err), "{raw:?}");
        }
    }
}
