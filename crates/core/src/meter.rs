//! The token usage an upstream reports in its response, read as the body goes
//! by: OpenAI-style `usage` (`prompt_tokens`, `completion_tokens`,
//! `total_tokens`; the Responses API's `input_tokens` / `output_tokens` too).
//!
//! A [`Meter`] is fed the response body in chunks, cut anywhere, and says at
//! the end what was used, or why it cannot tell ([`Metered::Unmeasured`]). It
//! holds little: a JSON body up to [`MAX_JSON_BYTES`], and for an event stream
//! (`text/event-stream`) only the line and the event being read. No I/O here.
//!
//! Usage figures are refused loudly (a warning, never the body's content)
//! rather than guessed: each must be a JSON non-negative integer (`7` or
//! `7.0`, not `"7"`, `7.5` or `-7`) of at most [`MAX_TOKENS`], and a
//! `total_tokens` given must be the sum of the other two.

use serde::Deserialize;
use serde_json::Value;

/// The largest JSON response body read for its usage.
pub const MAX_JSON_BYTES: usize = 4 << 20;
/// The largest event-stream line, and event, read (a longer one is skipped).
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// The largest token count believed, per field.
pub const MAX_TOKENS: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// What a response used, or why that is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metered {
    Usage(Usage),
    /// `no_usage`: the whole body was read and reported none.
    /// `malformed_usage`: it reported one that is refused (see the module).
    /// `malformed_body`: a JSON body that does not parse.
    /// `cut`: the body ended before its end (upstream reset, client gone)
    /// and no usage had been read.
    /// `too_large`: the JSON body, or an event, was over the cap.
    /// `unsupported_content_type`, `content_encoding`: not read at all.
    Unmeasured(&'static str),
}

impl Metered {
    /// A label for logs and metrics: `usage` or the reason.
    pub fn outcome(&self) -> &'static str {
        match self {
            Metered::Usage(_) => "usage",
            Metered::Unmeasured(reason) => reason,
        }
    }
}

/// Reads one response body's usage; see the module.
#[derive(Debug)]
pub struct Meter {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Json {
        body: Vec<u8>,
        too_large: bool,
    },
    Sse(Sse),
    /// Not read: the reason.
    Skip(&'static str),
}

impl Meter {
    /// For a response of this `content-type`.
    pub fn new(content_type: Option<&str>) -> Meter {
        let media = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let kind = match media.as_deref() {
            Some("application/json") => Kind::Json { body: Vec::new(), too_large: false },
            Some(m) if m.starts_with("application/") && m.ends_with("+json") => {
                Kind::Json { body: Vec::new(), too_large: false }
            }
            Some("text/event-stream") => Kind::Sse(Sse::default()),
            _ => Kind::Skip("unsupported_content_type"),
        };
        Meter { kind }
    }

    /// For a response with these headers: a compressed body (any
    /// `content-encoding` but `identity`) is not read.
    pub fn for_response(content_type: Option<&str>, content_encoding: Option<&str>) -> Meter {
        match content_encoding.map(str::trim) {
            Some(e) if !e.is_empty() && !e.eq_ignore_ascii_case("identity") => {
                Meter { kind: Kind::Skip("content_encoding") }
            }
            _ => Meter::new(content_type),
        }
    }

    /// The next piece of the body, cut anywhere.
    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.kind {
            Kind::Json { too_large: true, .. } | Kind::Skip(_) => {}
            Kind::Json { body, too_large } => {
                if body.len() + chunk.len() > MAX_JSON_BYTES {
                    *too_large = true;
                    *body = Vec::new();
                } else {
                    body.extend_from_slice(chunk);
                }
            }
            Kind::Sse(sse) => sse.feed(chunk),
        }
    }

    /// What was used. `end_of_stream`: the body was read to its end; without
    /// it (a cut stream) a usage already read still counts, since streams
    /// report it last, and otherwise the answer is `cut`.
    pub fn finish(self, end_of_stream: bool) -> Metered {
        match self.kind {
            Kind::Skip(_) | Kind::Json { .. } if !end_of_stream => Metered::Unmeasured("cut"),
            Kind::Skip(reason) => Metered::Unmeasured(reason),
            Kind::Json { too_large: true, .. } => Metered::Unmeasured("too_large"),
            Kind::Json { body, .. } if body.trim_ascii().is_empty() => Metered::Unmeasured("no_usage"),
            Kind::Json { body, .. } => match Envelope::parse(&body) {
                Ok(envelope) => match envelope.usage() {
                    Some(usage) => checked(usage),
                    None => Metered::Unmeasured("no_usage"),
                },
                Err(e) => {
                    tracing::warn!(
                        error_line = e.line(),
                        error_column = e.column(),
                        bytes = body.len(),
                        "response body is not JSON: its usage is unknown"
                    );
                    Metered::Unmeasured("malformed_body")
                }
            },
            Kind::Sse(sse) => sse.finish(end_of_stream),
        }
    }
}

/// The fields of a response, or of a stream's event, that may hold usage.
/// Every other field is skipped without being kept.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    usage: Option<Value>,
    /// The Responses API's stream events carry it in `response.usage`.
    #[serde(default)]
    response: Option<Value>,
}

impl Envelope {
    /// A JSON object's (serde would read an array as the fields in order).
    fn parse(bytes: &[u8]) -> serde_json::Result<Envelope> {
        match bytes.trim_ascii_start().first() {
            Some(b'{') => serde_json::from_slice(bytes),
            _ => Err(serde::de::Error::custom("not a JSON object")),
        }
    }

    /// The usage value, when one is given (`null` is none).
    fn usage(self) -> Option<Value> {
        match self.usage {
            Some(Value::Null) | None => match self.response {
                Some(Value::Object(mut response)) => response.remove("usage").filter(|u| !u.is_null()),
                _ => None,
            },
            usage => usage,
        }
    }
}

/// A usage value checked, or refused with a warning.
fn checked(usage: Value) -> Metered {
    match parse_usage(&usage) {
        Ok(usage) => Metered::Usage(usage),
        Err(why) => {
            tracing::warn!(why, "upstream reported a usage that is refused: this response is not metered");
            Metered::Unmeasured("malformed_usage")
        }
    }
}

fn parse_usage(usage: &Value) -> Result<Usage, &'static str> {
    let Value::Object(fields) = usage else { return Err("usage is not an object") };
    let (prompt, completion) = if fields.contains_key("prompt_tokens") || fields.contains_key("completion_tokens") {
        ("prompt_tokens", "completion_tokens")
    } else {
        ("input_tokens", "output_tokens")
    };
    let count = |name: &str| -> Result<Option<u64>, &'static str> {
        let Some(value) = fields.get(name) else { return Ok(None) };
        let n = match value {
            Value::Number(n) => match (n.as_u64(), n.as_f64()) {
                (Some(n), _) => n,
                (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f <= MAX_TOKENS as f64 => f as u64,
                (None, Some(f)) if f.fract() != 0.0 => return Err("a token count has a fraction"),
                _ => return Err("a token count is negative or too large"),
            },
            _ => return Err("a token count is not a number"),
        };
        if n > MAX_TOKENS {
            return Err("a token count is over the limit");
        }
        Ok(Some(n))
    };
    let prompt_tokens = count(prompt)?.ok_or("no prompt (input) token count")?;
    // Embeddings report no completion.
    let completion_tokens = count(completion)?.unwrap_or(0);
    let sum = prompt_tokens + completion_tokens;
    match count("total_tokens")? {
        Some(total) if total != sum => Err("total_tokens is not the sum of the others"),
        _ => Ok(Usage { prompt_tokens, completion_tokens, total_tokens: sum }),
    }
}

/// An event stream read line by line: the unfinished line, the unfinished
/// event's data, and the last usage read.
#[derive(Debug, Default)]
struct Sse {
    line: Vec<u8>,
    /// The line is over the cap: skipped up to its end.
    line_skipped: bool,
    /// The previous chunk ended with `\r`: a `\n` first in this one ends nothing.
    after_cr: bool,
    data: Vec<u8>,
    has_data: bool,
    /// The event's data is over the cap: skipped up to its end.
    data_skipped: bool,
    /// Something was skipped for its size.
    skipped: bool,
    last: Option<Metered>,
}

impl Sse {
    fn feed(&mut self, mut chunk: &[u8]) {
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', rest @ ..] = chunk {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push_line_part(&chunk[..end]);
            self.end_line();
            if chunk[end] == b'\r' {
                match chunk.get(end + 1) {
                    Some(b'\n') => chunk = &chunk[end + 2..],
                    Some(_) => chunk = &chunk[end + 1..],
                    None => {
                        self.after_cr = true;
                        return;
                    }
                }
            } else {
                chunk = &chunk[end + 1..];
            }
        }
        self.push_line_part(chunk);
    }

    fn push_line_part(&mut self, part: &[u8]) {
        if self.line_skipped {
            return;
        }
        if self.line.len() + part.len() > MAX_EVENT_BYTES {
            self.line_skipped = true;
            self.skipped = true;
            self.line = Vec::new();
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.line_skipped) {
            // A data line too long to keep spoils its event.
            self.data_skipped = true;
            self.has_data = true;
            return;
        }
        if line.is_empty() {
            self.dispatch();
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // a comment
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &[][..]),
        };
        if field != b"data" || self.data_skipped {
            return;
        }
        if self.has_data {
            self.data.push(b'\n');
        }
        self.has_data = true;
        if self.data.len() + value.len() > MAX_EVENT_BYTES {
            self.data_skipped = true;
            self.skipped = true;
            self.data = Vec::new();
        } else {
            self.data.extend_from_slice(value);
        }
        self.line = line;
        self.line.clear();
    }

    /// The event is complete: its usage, if it has one, is the last one.
    fn dispatch(&mut self) {
        let data = std::mem::take(&mut self.data);
        let (has_data, skipped) = (std::mem::take(&mut self.has_data), std::mem::take(&mut self.data_skipped));
        if !has_data || skipped || data == b"[DONE]" {
            return;
        }
        // Only events that mention usage are parsed.
        if !data.windows(7).any(|w| w == b"\"usage\"") {
            return;
        }
        match Envelope::parse(&data) {
            Ok(envelope) => {
                if let Some(usage) = envelope.usage() {
                    self.last = Some(checked(usage));
                }
            }
            Err(e) => tracing::debug!(error_column = e.column(), "an event's data is not JSON: skipped"),
        }
    }

    fn finish(mut self, end_of_stream: bool) -> Metered {
        if end_of_stream {
            // The last event, when the stream ends without a blank line.
            if !self.line.is_empty() || self.line_skipped {
                self.end_line();
            }
            self.dispatch();
        }
        match self.last {
            Some(last) => last,
            None if !end_of_stream => Metered::Unmeasured("cut"),
            None if self.skipped => Metered::Unmeasured("too_large"),
            None => Metered::Unmeasured("no_usage"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly by design")]
mod tests;
