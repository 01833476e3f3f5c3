//! Request-body rules for AI-gateway routes: size, JSON shape, and the
//! OpenAI fields that matter for authorization (`model`, `stream`, the prompt).
//!
//! The body is parsed once, into only the fields checked here; everything else
//! is skipped without being built. A field that appears twice is refused, so
//! Gatehouse and the upstream cannot read different values from one body.

use serde::Deserialize;

use crate::domain::Denial;

/// Limits for one route's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub max_prompt_chars: usize,
}

/// The request body as the proxy forwarded it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestBody<'a> {
    pub bytes: &'a [u8],
    /// The size the request declared (`Content-Length`), when known.
    pub declared_size: Option<u64>,
    pub content_type: Option<&'a str>,
    /// The proxy says it forwards bodies (Envoy adds `x-envoy-auth-partial-body`
    /// to the Check when `with_request_body` is set).
    pub forwarded: bool,
    /// The proxy forwarded only the start of the body.
    pub truncated: bool,
    /// The request has a body of unknown length (`Transfer-Encoding: chunked`).
    pub chunked: bool,
}

impl RequestBody<'_> {
    /// No body at all: nothing forwarded, none declared, none streaming.
    pub fn is_absent(&self) -> bool {
        !self.forwarded && self.bytes.is_empty() && self.declared_size.unwrap_or(0) == 0 && !self.chunked
    }

    /// The body's size as far as anyone can tell.
    pub fn size(&self) -> u64 {
        self.declared_size.unwrap_or(0).max(self.bytes.len() as u64)
    }

    /// Refuses bodies over `max_bytes`: 413.
    pub fn check_size(&self, max_bytes: usize) -> Result<(), Denial> {
        if self.size() > max_bytes as u64 {
            return Err(Denial::BodyTooLarge { max_bytes });
        }
        Ok(())
    }
}

/// What a JSON body asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspected {
    pub model: Option<String>,
    pub stream: bool,
    /// Characters of `messages[].content`, `prompt` and `input`.
    pub prompt_chars: usize,
}

/// Checks size, media type and JSON shape, and reads the OpenAI fields.
///
/// A request with no body at all has nothing to inspect: it passes with no
/// model and no prompt (a caller held to a model list is then refused for
/// naming no model). A body that exists but did not arrive whole is refused.
pub fn inspect(body: &RequestBody<'_>, limits: BodyLimits) -> Result<Inspected, Denial> {
    body.check_size(limits.max_bytes)?;
    if body.is_absent() {
        return Ok(Inspected::default());
    }
    let incomplete = (body.bytes.len() as u64) < body.declared_size.unwrap_or(0) || (body.chunked && !body.forwarded);
    if body.truncated || incomplete {
        if body.bytes.is_empty() {
            return Err(Denial::InvalidBody(
                "the request body was not forwarded for inspection (the proxy must send it)".into(),
            ));
        }
        return Err(Denial::BodyTooLarge { max_bytes: body.bytes.len() });
    }
    if let Some(ct) = body.content_type
        && !is_json_media_type(ct)
    {
        return Err(Denial::InvalidBody("content-type must be application/json".into()));
    }
    let first = body.bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(Denial::InvalidBody("the body must be a JSON object".into()));
    }
    let fields: Fields = serde_json::from_slice(body.bytes)
        .map_err(|e| Denial::InvalidBody(format!("the body is not valid JSON for this route: {e}")))?;
    let prompt_chars =
        fields.messages.iter().flatten().filter_map(|m| m.content.as_ref()).map(Content::chars).sum::<usize>()
            + fields.prompt.as_ref().map_or(0, Text::chars)
            + fields.input.as_ref().map_or(0, Text::chars);
    if prompt_chars > limits.max_prompt_chars {
        return Err(Denial::PromptTooLong { chars: prompt_chars, max_chars: limits.max_prompt_chars });
    }
    Ok(Inspected { model: fields.model, stream: fields.stream.unwrap_or(false), prompt_chars })
}

/// `application/json`, `application/<x>+json`, with any parameters.
fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The fields read; all others are skipped. Serde refuses a duplicate of any
/// of these.
#[derive(Deserialize)]
struct Fields {
    model: Option<String>,
    stream: Option<bool>,
    messages: Option<Vec<Message>>,
    prompt: Option<Text>,
    input: Option<Text>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<Content>,
}

/// A message's content: a string, or parts of which the `text` ones count.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

impl Content {
    fn chars(&self) -> usize {
        match self {
            Content::Text(s) => s.chars().count(),
            Content::Parts(parts) => parts.iter().filter_map(|p| p.text.as_deref()).map(|t| t.chars().count()).sum(),
        }
    }
}

#[derive(Deserialize)]
struct Part {
    text: Option<String>,
}

/// `prompt` / `input`: a string, strings, or token ids (each counted as one).
#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    One(String),
    Many(Vec<TextItem>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TextItem {
    Text(String),
    Token(#[allow(dead_code)] i64),
    Tokens(Vec<i64>),
}

impl Text {
    fn chars(&self) -> usize {
        match self {
            Text::One(s) => s.chars().count(),
            Text::Many(items) => items
                .iter()
                .map(|i| match i {
                    TextItem::Text(s) => s.chars().count(),
                    TextItem::Token(_) => 1,
                    TextItem::Tokens(t) => t.len(),
                })
                .sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BodyLimits = BodyLimits { max_bytes: 1000, max_prompt_chars: 20 };

    fn body(json: &str) -> RequestBody<'_> {
        RequestBody {
            bytes: json.as_bytes(),
            declared_size: Some(json.len() as u64),
            content_type: Some("application/json"),
            forwarded: true,
            truncated: false,
            chunked: false,
        }
    }

    #[test]
    fn reads_model_stream_and_prompt_length() {
        for (json, model, stream, chars) in [
            (r#"{"model":"m","messages":[{"role":"user","content":"héllo"}]}"#, Some("m"), false, 5),
            (
                r#"{"model":"m","stream":true,"messages":[{"content":[{"type":"text","text":"ab"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
                Some("m"),
                true,
                2,
            ),
            (r#"{"prompt":["ab","cd"],"stream":false}"#, None, false, 4),
            (r#"{"input":[[1,2,3],[4]],"model":"e"}"#, Some("e"), false, 4),
            (r#"{"input":"hello","messages":null,"extra":{"deep":[1,2,{"x":null}]}}"#, None, false, 5),
            (r#"  {"messages":[{"role":"assistant","tool_calls":[]}]}"#, None, false, 0),
        ] {
            let got = inspect(&body(json), LIMITS).unwrap();
            assert_eq!(got, Inspected { model: model.map(str::to_owned), stream, prompt_chars: chars }, "{json}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read_unambiguously() {
        for (json, reason) in [
            ("not json", "invalid_body"),
            ("", "invalid_body"),
            ("[1,2]", "invalid_body"),
            (r#""model""#, "invalid_body"),
            (r#"{"model":"a","model":"b"}"#, "invalid_body"),
            (r#"{"model":"a","mod\u0065l":"b"}"#, "invalid_body"),
            (r#"{"stream":"true"}"#, "invalid_body"),
            (r#"{"model":7}"#, "invalid_body"),
            (r#"{"messages":"hi"}"#, "invalid_body"),
            (r#"{"model":"a"} trailing"#, "invalid_body"),
            (r#"{"model":"a""#, "invalid_body"),
            (r#"{"prompt":"this prompt is longer than twenty"}"#, "prompt_too_long"),
            (r#"{"messages":[{"content":"0123456789"},{"content":"0123456789X"}]}"#, "prompt_too_long"),
        ] {
            let denial = inspect(&body(json), LIMITS).unwrap_err();
            assert_eq!(denial.reason(), reason, "{json}");
        }
    }

    #[test]
    fn size_media_type_and_truncation() {
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(1000));
        assert_eq!(inspect(&body(&big), LIMITS).unwrap_err().reason(), "body_too_large");
        let declared = RequestBody { declared_size: Some(5000), ..body("{}") };
        assert_eq!(inspect(&declared, LIMITS).unwrap_err().reason(), "body_too_large");
        let partial = RequestBody { truncated: true, ..body("{}") };
        assert_eq!(inspect(&partial, LIMITS).unwrap_err().reason(), "body_too_large");
        let missing = RequestBody { bytes: b"", declared_size: Some(20), forwarded: false, ..body("{}") };
        assert!(inspect(&missing, LIMITS).unwrap_err().to_string().contains("not forwarded"));
        let chunked = RequestBody { bytes: b"", declared_size: None, forwarded: false, chunked: true, ..body("{}") };
        assert!(inspect(&chunked, LIMITS).unwrap_err().to_string().contains("not forwarded"));
        let absent = RequestBody { bytes: b"", declared_size: None, forwarded: false, ..body("{}") };
        assert_eq!(inspect(&absent, LIMITS), Ok(Inspected::default()), "no body: nothing to inspect");
        let empty = RequestBody { bytes: b"", declared_size: Some(0), ..body("{}") };
        assert_eq!(inspect(&empty, LIMITS).unwrap_err().reason(), "invalid_body", "forwarded and empty: not JSON");
        for ct in ["application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"] {
            assert!(inspect(&RequestBody { content_type: Some(ct), ..body("{}") }, LIMITS).is_ok(), "{ct}");
        }
        for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
            assert_eq!(
                inspect(&RequestBody { content_type: Some(ct), ..body("{}") }, LIMITS).unwrap_err().reason(),
                "invalid_body",
                "{ct}"
            );
        }
        assert!(inspect(&RequestBody { content_type: None, ..body("{}") }, LIMITS).is_ok());
    }
}
