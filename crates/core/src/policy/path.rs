//! Request paths as a route matcher must see them.
//!
//! Gatehouse decides on one reading of the path, and the upstream acts on its
//! own. Readers disagree on several spellings, so those are refused
//! ([`PathError`], 400 "ambiguous or malformed path") rather than read one
//! way and acted on another:
//!
//! * `;` anywhere in the path, raw or encoded (`%3B`). Tomcat, Jetty and
//!   Spring cut `;params` from each segment; Go's `ServeMux`, nginx, Starlette
//!   and Express keep them as segment text. `/admin/..;/v1/models` is
//!   `/v1/models` to the first kind and a path under `/admin/` to the second.
//! * `.` and `..` segments. Most readers resolve them, some route on them
//!   literally; Envoy's `normalize_path` already resolves them before asking,
//!   so only a spelling Envoy leaves alone (`..;`, `%2e%2e;`) reaches here.
//! * Empty segments (`//`): nginx, Tomcat and Spring merge them, Go's
//!   `ServeMux` redirects, Starlette and Express match them literally (`//admin`
//!   is not under `/admin`), and URL parsers that expect a full URL read a
//!   leading `//admin/x` as the host `admin` and the path `/x`. Envoy's
//!   `merge_slashes` merges them before asking. A single trailing slash is
//!   ignored: every reader either treats `/x/` as `/x`, redirects it there,
//!   or serves it as the root of `/x/...`, which a `/x/*` rule covers.
//! * Encodings whose meaning depends on who decodes them, and how often: an
//!   encoded `/`, `\`, `.`, `;` or `%` (`%25`, for readers that decode twice),
//!   encoded control bytes (`%00`-`%1F`, `%7F`), encoded bytes that are not
//!   UTF-8 (the overlong `%C0%AE` is a `.` to some decoders), and raw `\`,
//!   control, space or non-ASCII bytes.
//!
//! What is accepted comes out canonical: the query and fragment dropped,
//! percent-encoded unreserved characters decoded, other escapes in upper
//! case, a trailing slash removed.

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
    #[error("path contains a ';' parameter")]
    Parameters,
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
    #[error("path contains an empty segment ('//')")]
    EmptySegment,
}

pub fn normalize(raw: &str) -> Result<String, PathError> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = &raw[..end];
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    if rest.is_empty() {
        return Ok("/".to_owned());
    }
    // One trailing slash is ignored; `//` at the end is an empty segment.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut out = String::with_capacity(path.len());
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err(PathError::EmptySegment);
        }
        let start = out.len() + 1;
        out.push('/');
        decode_segment(segment, &mut out)?;
        if matches!(&out[start..], "." | "..") {
            return Err(PathError::DotSegment);
        }
    }
    Ok(out)
}

/// Appends the canonical form of one segment to `out`.
fn decode_segment(segment: &str, out: &mut String) -> Result<(), PathError> {
    let bytes = segment.as_bytes();
    // Consecutive encoded bytes >= 0x80, checked to be UTF-8 once the run ends.
    let mut high = [0u8; 4];
    let mut high_len = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = b == b'%';
        let value = if escaped {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadPercentEncoding)?;
            let value = hex_value(hex[0])
                .zip(hex_value(hex[1]))
                .map(|(h, l)| h << 4 | l)
                .ok_or(PathError::BadPercentEncoding)?;
            i += 3;
            value
        } else {
            i += 1;
            b
        };
        if escaped && value >= 0x80 {
            // Longer than any UTF-8 sequence: not UTF-8.
            *high.get_mut(high_len).ok_or(PathError::AmbiguousEncoding)? = value;
            high_len += 1;
            if std::str::from_utf8(&high[..high_len]).is_ok() {
                high_len = 0;
            }
        } else if high_len > 0 {
            return Err(PathError::AmbiguousEncoding);
        }
        match (escaped, value) {
            (false, b';') => return Err(PathError::Parameters),
            (false, b'\\') => return Err(PathError::AmbiguousEncoding),
            (false, v) if v.is_ascii_graphic() => out.push(v as char),
            (false, _) => return Err(PathError::ForbiddenCharacter),
            (true, b'/' | b'\\' | b'.' | b'%' | b';' | 0..=0x1f | 0x7f) => return Err(PathError::AmbiguousEncoding),
            (true, v) if v.is_ascii_alphanumeric() || v == b'-' || v == b'_' || v == b'~' => out.push(v as char),
            // Characters a segment may hold literally (RFC 3986 pchar: `:`,
            // `@` and the sub-delimiters other than `;`) mean the same encoded
            // or not to an upstream that decodes them (Go, nginx, most
            // frameworks): decode them, so `x%3Agenerate` meets a rule for
            // `x:generate` as those upstreams would route it.
            (true, v @ (b':' | b'@' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=')) => {
                out.push(v as char)
            }
            // Other bytes stay encoded, in one canonical (upper-case) form.
            (true, v) => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[(v >> 4) as usize]));
                out.push(char::from(b"0123456789ABCDEF"[(v & 15) as usize]));
            }
        }
    }
    if high_len > 0 {
        return Err(PathError::AmbiguousEncoding);
    }
    Ok(())
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
    fn canonical_spellings() {
        for (raw, want) in [
            ("/", "/"),
            ("/?x=1", "/"),
            ("/v1/models", "/v1/models"),
            ("/v1/models/", "/v1/models"),
            ("/v1/models?x=/healthz", "/v1/models"),
            ("/v1/models?x=/../;a", "/v1/models"),
            ("/v1/models#frag/../;", "/v1/models"),
            ("/v1/%6dodels", "/v1/models"),
            ("/v1/a%20b", "/v1/a%20b"),
            ("/v1/a%3ab", "/v1/a:b"),
            ("/v1/models/ft%3Agpt%3Aorg%40x", "/v1/models/ft:gpt:org@x"),
            ("/v1/a%2Cb%3Dc", "/v1/a,b=c"),
            ("/v1/a%3Fb%23c", "/v1/a%3Fb%23c"),
            ("/v1/caf%C3%A9", "/v1/caf%C3%A9"),
            ("/v1/%e2%82%ac%F0%9F%98%80", "/v1/%E2%82%AC%F0%9F%98%80"),
            ("/v1/...", "/v1/..."),
            ("/v1/.well-known", "/v1/.well-known"),
            ("/v1/a..b/..c/d..", "/v1/a..b/..c/d.."),
            ("/v1/models/llama3:8b", "/v1/models/llama3:8b"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    /// Spellings that upstreams read in different ways: refused, never
    /// resolved, stripped or merged.
    #[test]
    fn refuses_what_readers_disagree_on() {
        for (raw, err) in [
            ("v1/models", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            // Parameters, raw or encoded, with or without dots.
            ("/admin/..;/v1/models", PathError::Parameters),
            ("/v1/admin/..;/..;/auth/x", PathError::Parameters),
            ("/admin/..;x=1/v1/models", PathError::Parameters),
            ("/admin/.;/v1", PathError::Parameters),
            ("/v1/models;jsessionid=1", PathError::Parameters),
            ("/v1/models;", PathError::Parameters),
            ("/;/v1", PathError::Parameters),
            ("/admin/..%3b/v1/models", PathError::AmbiguousEncoding),
            ("/admin/..%3B/v1/models", PathError::AmbiguousEncoding),
            // Dot segments, plain or encoded.
            ("/v1/./models", PathError::DotSegment),
            ("/healthz/../v1/chat", PathError::DotSegment),
            ("/../../v1", PathError::DotSegment),
            ("/.", PathError::DotSegment),
            ("/..", PathError::DotSegment),
            ("/v1/..", PathError::DotSegment),
            ("/v1/../", PathError::DotSegment),
            ("/%2e%2e/admin", PathError::AmbiguousEncoding),
            ("/admin/%2e%2e;/v1/models", PathError::AmbiguousEncoding),
            ("/v1/.%2e/admin", PathError::AmbiguousEncoding),
            ("/v1/%2E/admin", PathError::AmbiguousEncoding),
            ("/v1/%c0%ae%c0%ae/admin", PathError::AmbiguousEncoding),
            ("/v1/%C0%2E", PathError::AmbiguousEncoding),
            ("/v1/%e0%80%ae", PathError::AmbiguousEncoding),
            // Empty segments.
            ("//v1/models", PathError::EmptySegment),
            ("//admin/x", PathError::EmptySegment),
            ("/v1//models", PathError::EmptySegment),
            ("/v1/models//", PathError::EmptySegment),
            ("//", PathError::EmptySegment),
            // Separators and escapes that mean more after another decode.
            ("/v1%2fmodels", PathError::AmbiguousEncoding),
            ("/v1%2Fmodels", PathError::AmbiguousEncoding),
            ("/v1%5cmodels", PathError::AmbiguousEncoding),
            ("/v1\\..\\admin", PathError::AmbiguousEncoding),
            ("/v1/%252e%252e/admin", PathError::AmbiguousEncoding),
            ("/v1/%25", PathError::AmbiguousEncoding),
            ("/v1/%252F", PathError::AmbiguousEncoding),
            // Encoded control bytes.
            ("/v1%00", PathError::AmbiguousEncoding),
            ("/v1/a%0a", PathError::AmbiguousEncoding),
            ("/v1/a%0D%0Ab", PathError::AmbiguousEncoding),
            ("/v1/a%09", PathError::AmbiguousEncoding),
            ("/v1/a%1f", PathError::AmbiguousEncoding),
            ("/v1/a%7F", PathError::AmbiguousEncoding),
            // Encoded bytes that are not UTF-8.
            ("/v1/%80", PathError::AmbiguousEncoding),
            ("/v1/%C3", PathError::AmbiguousEncoding),
            ("/v1/%C3x", PathError::AmbiguousEncoding),
            ("/v1/%C3/x", PathError::AmbiguousEncoding),
            ("/v1/%ff%fe", PathError::AmbiguousEncoding),
            ("/v1/%ed%a0%80", PathError::AmbiguousEncoding),
            ("/v1/%f8%88%80%80%80", PathError::AmbiguousEncoding),
            ("/v1/%C3%A9%A9", PathError::AmbiguousEncoding),
            // Malformed escapes and raw bytes.
            ("/v1/%zz", PathError::BadPercentEncoding),
            ("/v1/%4", PathError::BadPercentEncoding),
            ("/v1/%", PathError::BadPercentEncoding),
            ("/v1/\u{0}", PathError::ForbiddenCharacter),
            ("/v1/caf\u{e9}", PathError::ForbiddenCharacter),
            ("/v1/a b", PathError::ForbiddenCharacter),
            ("/v1/a\tb", PathError::ForbiddenCharacter),
            ("/v1/\u{7f}", PathError::ForbiddenCharacter),
        ] {
            assert_eq!(normalize(raw), Err(err), "{raw:?}");
        }
    }

    #[test]
    fn accepted_paths_normalize_to_themselves() {
        for raw in ["/", "/v1/%6dodels/", "/v1/a%3ab", "/v1/caf%c3%a9?x", "/v1/a..b"] {
            let once = normalize(raw).unwrap();
            assert_eq!(normalize(&once), Ok(once.clone()), "{raw}");
        }
    }
}
