//! Request-body rules for AI-gateway routes: size, JSON shape, and the
//! OpenAI fields that matter for authorization (`model`, `stream`, the prompt).
//!
//! The body is parsed once, into only the fields checked here; everything else
//! is skipped without being built. A field that appears twice is refused, so
//! Gatehouse and the upstream cannot read different values from one body.
//! Prompt text is counted while it is parsed, never copied.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::domain::Denial;

/// Limits for one route's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub max_prompt_chars: usize,
    /// Completion tokens a budget reserves on this route for a request that
    /// sets no `max_tokens` (0 for embeddings); `None`: the global default.
    pub default_max_tokens: Option<u64>,
}

/// The request body as the proxy forwarded it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestBody<'a> {
    pub bytes: &'a [u8],
    /// The size the request declared (`Content-Length`), when known.
    pub declared_size: Option<u64>,
    pub content_type: Option<&'a str>,
    /// The proxy buffered the body and sent it with the Check (Envoy adds
    /// `x-envoy-auth-partial-body` then, and only then: a request without a
    /// body, or on a route that does not buffer, has no marker).
    pub forwarded: bool,
    /// The proxy forwarded only the start of the body.
    pub truncated: bool,
    /// The request says it has a body of unknown length (`Transfer-Encoding:
    /// chunked`). Envoy does not pass this hop-by-hop header to the Check, so
    /// its absence proves nothing.
    pub chunked: bool,
}

impl RequestBody<'_> {
    /// Nothing says there is a body: none forwarded, none declared, none
    /// streaming. (Through Envoy, a chunked or HTTP/2 body on a route that
    /// does not buffer also looks like this.)
    pub fn is_absent(&self) -> bool {
        !self.arrived() && self.declared_size.unwrap_or(0) == 0 && !self.chunked
    }

    /// The body came with the Check: the proxy marked it, or bytes arrived.
    pub fn arrived(&self) -> bool {
        self.forwarded || !self.bytes.is_empty()
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

/// Methods whose requests have no body by convention (exact spelling). Any
/// other method (`POST`, `PUT`, `PATCH`, `post`, `QUERY`, ...) is taken to
/// carry one.
fn bodyless_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "DELETE" | "TRACE")
}

/// What a JSON body asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspected {
    pub model: Option<String>,
    pub stream: bool,
    /// Characters of model-visible text: messages, prompts, inputs,
    /// instructions, tool and function definitions and calls, output schemas
    /// (see [`Fields`]). Token ids count one each; images, audio and files
    /// count nothing.
    pub prompt_chars: usize,
    /// The most completion tokens the request may produce: the largest of
    /// `max_tokens`, `max_completion_tokens` and `max_output_tokens`, times
    /// the number of choices (`n`, `best_of`); `None` when it sets none.
    pub max_tokens: Option<u64>,
    /// `stream_options.include_usage: true`: a stream ends with its usage.
    pub include_usage: bool,
    /// How many `messages` (chat templates add tokens for each).
    pub messages: usize,
    /// Choices asked for (`n`, `best_of`; at least 1).
    pub choices: u64,
}

/// The most choices (`n`, `best_of`) one request may ask for.
pub const MAX_CHOICES: u64 = 128;

/// Checks size, media type and JSON shape, and reads the OpenAI fields.
///
/// A request that cannot carry a body (`GET`, `HEAD`, ...) and has none
/// passes with no model and no prompt (a caller held to a model list is then
/// refused for naming no model). Any other request must have its body here:
/// if the proxy did not forward it (it does not buffer this route, or the body
/// was chunked or HTTP/2 without a length and never reached the Check), it is
/// refused rather than let through unread. A body that did not arrive whole
/// is refused too.
pub fn inspect(body: &RequestBody<'_>, method: &str, limits: BodyLimits) -> Result<Inspected, Denial> {
    body.check_size(limits.max_bytes)?;
    if !body.arrived() {
        if body.is_absent() && bodyless_method(method) {
            return Ok(Inspected::default());
        }
        return Err(Denial::InvalidBody(
            "the request body was not forwarded for inspection: this route requires a JSON body, \
             and the proxy must send it with the authorization check"
                .into(),
        ));
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
    let prompt_chars = fields.count();
    if prompt_chars > limits.max_prompt_chars {
        return Err(Denial::PromptTooLong { chars: prompt_chars, max_chars: limits.max_prompt_chars });
    }
    if let Some(model) = &fields.model {
        check_model_name(model)?;
    }
    let choices = fields.n.unwrap_or(1).max(fields.best_of.unwrap_or(1)).max(1);
    if choices > MAX_CHOICES {
        return Err(Denial::InvalidBody(format!("`n` and `best_of` may be at most {MAX_CHOICES}")));
    }
    // The largest ceiling any spelling names; none (or only 0, or a
    // "no ceiling" -1, which some servers read as unlimited) leaves the
    // route's default ceiling to apply.
    let signed = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    let max_tokens = [
        fields.max_tokens,
        fields.max_completion_tokens,
        fields.max_output_tokens,
        fields.max_tokens_to_sample,
        signed(fields.n_predict),
        signed(fields.options.as_ref().and_then(|o| o.num_predict)),
    ]
    .into_iter()
    .flatten()
    .max()
    .filter(|m| *m > 0)
    .map(|m| m.saturating_mul(choices));
    let unbounded =
        [fields.n_predict, fields.options.as_ref().and_then(|o| o.num_predict)].into_iter().flatten().any(|v| v < 0);
    let max_tokens = if unbounded { None } else { max_tokens };
    Ok(Inspected {
        model: fields.model,
        stream: fields.stream.unwrap_or(false),
        prompt_chars,
        max_tokens,
        include_usage: fields.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
        messages: fields.messages.as_ref().map_or(0, |m| m.items),
        choices,
    })
}

/// `application/json`, `application/<x>+json`, with any parameters.
fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The longest model name accepted.
pub const MAX_MODEL_NAME: usize = 256;

/// A model name the upstream cannot read as another: printable, no
/// whitespace, no `..` or empty path segment, no `\` or `%` (an upstream that
/// routes by model name, or joins it into a path, must see the name the
/// model lists matched). `gpt-4o`, `meta-llama/Llama-3-8B`, `ft:gpt-4o:org::x`
/// and `llama3:8b` pass; `llama-3\u{0}gpt-4` and `llama-3/../gpt-4` do not.
fn check_model_name(model: &str) -> Result<(), Denial> {
    let printable = model.chars().all(|c| !c.is_control() && !c.is_whitespace() && c != '\\' && c != '%');
    let segments_ok = model.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
    if model.is_empty() || model.chars().count() > MAX_MODEL_NAME || !printable || !segments_ok {
        return Err(Denial::InvalidBody(
            "`model` must be a plain model name: printable, without spaces, `\\`, `%` or empty, `.` or `..` path \
             segments"
                .into(),
        ));
    }
    Ok(())
}

/// Something whose model-visible characters can be counted.
trait Count {
    fn count(&self) -> usize;
}

impl<T: Count> Count for Option<T> {
    fn count(&self) -> usize {
        self.as_ref().map_or(0, T::count)
    }
}

/// The fields read; all others are skipped. Serde refuses a duplicate of any
/// of these, and of every field read in the structs below.
///
/// Prompt text is everywhere OpenAI-style APIs (chat completions, legacy
/// completions, embeddings, responses, and the `system` of Anthropic-style
/// bodies) carry text the model reads.
#[derive(Deserialize)]
struct Fields {
    model: Option<String>,
    stream: Option<bool>,
    messages: Option<Messages>,
    /// Completions: a string, strings or token ids. Responses: a prompt
    /// template (`{id, variables}`).
    prompt: Option<Text>,
    suffix: Option<Chars>,
    /// Embeddings: a string, strings or token ids. Responses: a string or items.
    input: Option<Text>,
    instructions: Option<Text>,
    system: Option<Content>,
    tools: Option<List<Tool>>,
    /// Chat completions' legacy function definitions.
    functions: Option<List<ToolDef>>,
    response_format: Option<ResponseFormat>,
    /// Responses: `text.format` holds the output schema.
    text: Option<TextConfig>,
    /// Predicted output (`{type: "content", content}`).
    prediction: Option<Item>,
    /// Retrieval documents and a custom chat template (vLLM and others
    /// render them into the prompt): every string counts.
    documents: Option<Strings>,
    chat_template: Option<Chars>,
    chat_template_kwargs: Option<Strings>,
    /// Completion ceilings (chat, completions; newer chat; Responses; and
    /// the spellings of Anthropic-style, llama.cpp and Ollama servers, which
    /// an upstream may honour instead).
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    max_tokens_to_sample: Option<u64>,
    /// llama.cpp: `-1` means "until the context is full" (no ceiling).
    n_predict: Option<i64>,
    /// Ollama's `options.num_predict` (`-1`: no ceiling).
    options: Option<GenerationOptions>,
    /// Choices per request: each may use the ceiling.
    n: Option<u64>,
    best_of: Option<u64>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct GenerationOptions {
    num_predict: Option<i64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

impl Count for Fields {
    fn count(&self) -> usize {
        self.messages.count()
            + self.prompt.count()
            + self.suffix.count()
            + self.input.count()
            + self.instructions.count()
            + self.system.count()
            + self.tools.count()
            + self.functions.count()
            + self.response_format.count()
            + self.text.count()
            + self.prediction.count()
            + self.documents.count()
            + self.chat_template.count()
            + self.chat_template_kwargs.count()
    }
}

/// A chat message, a Responses input item, a content part or a prompt
/// template: the fields of any of them that carry model-visible text. Image,
/// audio and file payloads (`image_url`, `input_audio`, `file_data`, ...) are
/// not read.
#[derive(Deserialize)]
struct Item {
    /// A message's or item's content: a string or parts.
    content: Option<Content>,
    /// Rendered into the prompt by chat templates: a custom role counts
    /// (the standard ones are template tokens, counted per message).
    role: Option<RoleName>,
    tool_call_id: Option<Chars>,
    /// A text part (`text`, `input_text`, `output_text`, `summary_text`).
    text: Option<Chars>,
    name: Option<Chars>,
    refusal: Option<Chars>,
    tool_calls: Option<List<ToolCall>>,
    function_call: Option<Call>,
    /// Responses `function_call` / `mcp_call` items.
    arguments: Option<Strings>,
    /// `custom_tool_call` items; `tool_use` parts.
    input: Option<Strings>,
    /// `*_call_output` items.
    output: Option<Content>,
    /// `reasoning` items.
    summary: Option<Content>,
    thinking: Option<Chars>,
    code: Option<Chars>,
    /// A prompt template's variables: strings or parts.
    variables: Option<Variables>,
}

impl Count for Item {
    fn count(&self) -> usize {
        self.content.count()
            + self.role.count()
            + self.tool_call_id.count()
            + self.text.count()
            + self.name.count()
            + self.refusal.count()
            + self.tool_calls.count()
            + self.function_call.count()
            + self.arguments.count()
            + self.input.count()
            + self.output.count()
            + self.summary.count()
            + self.thinking.count()
            + self.code.count()
            + self.variables.count()
    }
}

/// `tools[]`: `{type: "function", function: {...}}` (chat completions), the
/// same fields flat (Responses, Anthropic-style), or a custom tool.
#[derive(Deserialize)]
struct Tool {
    function: Option<ToolDef>,
    custom: Option<ToolDef>,
    name: Option<Chars>,
    description: Option<Chars>,
    parameters: Option<Strings>,
    input_schema: Option<Strings>,
    format: Option<Strings>,
    server_description: Option<Chars>,
}

impl Count for Tool {
    fn count(&self) -> usize {
        self.function.count()
            + self.custom.count()
            + self.name.count()
            + self.description.count()
            + self.parameters.count()
            + self.input_schema.count()
            + self.format.count()
            + self.server_description.count()
    }
}

/// A function or custom tool definition. `parameters` (a JSON Schema) and a
/// custom tool's grammar `format` count every string in them, keys included.
#[derive(Deserialize)]
struct ToolDef {
    name: Option<Chars>,
    description: Option<Chars>,
    parameters: Option<Strings>,
    format: Option<Strings>,
}

impl Count for ToolDef {
    fn count(&self) -> usize {
        self.name.count() + self.description.count() + self.parameters.count() + self.format.count()
    }
}

/// `tool_calls[]`: `{function: {name, arguments}}` or `{custom: {name, input}}`.
#[derive(Deserialize)]
struct ToolCall {
    function: Option<Call>,
    custom: Option<Call>,
}

impl Count for ToolCall {
    fn count(&self) -> usize {
        self.function.count() + self.custom.count()
    }
}

#[derive(Deserialize)]
struct Call {
    name: Option<Chars>,
    arguments: Option<Strings>,
    input: Option<Strings>,
}

impl Count for Call {
    fn count(&self) -> usize {
        self.name.count() + self.arguments.count() + self.input.count()
    }
}

/// `response_format: {type: "json_schema", json_schema: {...}}`: every string
/// of the schema definition counts.
#[derive(Deserialize)]
struct ResponseFormat {
    json_schema: Option<Strings>,
}

impl Count for ResponseFormat {
    fn count(&self) -> usize {
        self.json_schema.count()
    }
}

/// Responses' `text: {format: {type: "json_schema", name, description, schema}}`.
#[derive(Deserialize)]
struct TextConfig {
    format: Option<SchemaFormat>,
}

impl Count for TextConfig {
    fn count(&self) -> usize {
        self.format.count()
    }
}

#[derive(Deserialize)]
struct SchemaFormat {
    name: Option<Chars>,
    description: Option<Chars>,
    schema: Option<Strings>,
}

impl Count for SchemaFormat {
    fn count(&self) -> usize {
        self.name.count() + self.description.count() + self.schema.count()
    }
}

/// The characters of a string (which must be one), counted without copying it.
struct Chars(usize);

impl Count for Chars {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Chars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Chars;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Chars, E> {
                Ok(Chars(s.chars().count()))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Any JSON: the characters of every string in it, object keys included
/// (a JSON Schema the model reads, tool-call arguments).
struct Strings(usize);

impl Count for Strings {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Strings, E> {
                Ok(Strings(s.chars().count()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Strings, E> {
                Ok(Strings(0))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Strings, E> {
                Ok(Strings(0))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Strings, E> {
                Ok(Strings(0))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Strings, E> {
                Ok(Strings(0))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Strings, E> {
                Ok(Strings(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut n = 0;
                while let Some(Strings(m)) = seq.next_element()? {
                    n += m;
                }
                Ok(Strings(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strings, A::Error> {
                let mut n = 0;
                while let Some(Chars(k)) = map.next_key()? {
                    n += k + map.next_value::<Strings>()?.0;
                }
                Ok(Strings(n))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Content: a string, parts (items), or a single part.
struct Content(usize);

impl Count for Content {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or content parts")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Content, E> {
                Ok(Content(s.chars().count()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Content, E> {
                Ok(Content(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Content, A::Error> {
                sum_seq::<Item, _>(seq).map(Content)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Content, A::Error> {
                Item::deserialize(MapAccessDeserializer::new(map)).map(|i| Content(i.count()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `prompt` / `input` / `instructions`: a string, token ids (one each), an
/// array of any of these or of token arrays, or items (Responses input items,
/// a prompt template).
struct Text(usize);

impl Count for Text {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, token ids, or input items")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Text, E> {
                Ok(Text(s.chars().count()))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Text, E> {
                Ok(Text(1))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Text, E> {
                Ok(Text(1))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text, A::Error> {
                sum_seq::<Text, _>(seq).map(Text)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text, A::Error> {
                Item::deserialize(MapAccessDeserializer::new(map)).map(|i| Text(i.count()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A prompt template's `variables`: names (not counted) to strings or parts.
struct Variables(usize);

impl Count for Variables {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Variables {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Variables;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of template variables")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Variables, A::Error> {
                let mut n = 0;
                while map.next_key::<IgnoredAny>()?.is_some() {
                    n += map.next_value::<Content>()?.0;
                }
                Ok(Variables(n))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// An array of `T`, counted element by element and not kept.
struct List<T>(usize, PhantomData<T>);

/// A message's `role`: nothing for OpenAI's own, its characters otherwise.
struct RoleName(usize);

impl Count for RoleName {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let role = std::borrow::Cow::<str>::deserialize(deserializer)?;
        const STANDARD: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];
        Ok(RoleName(if STANDARD.contains(&&*role) { 0 } else { role.chars().count() }))
    }
}

/// `messages`: their characters, and how many there are (each costs a few
/// template tokens of its own).
struct Messages {
    chars: usize,
    items: usize,
}

impl Count for Messages {
    fn count(&self) -> usize {
        self.chars
    }
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Messages;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let (mut chars, mut items) = (0usize, 0usize);
                while let Some(item) = seq.next_element::<Item>()? {
                    chars = chars.saturating_add(item.count());
                    items += 1;
                }
                Ok(Messages { chars, items })
            }
        }
        deserializer.deserialize_seq(V)
    }
}

impl<T> Count for List<T> {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de, T: Deserialize<'de> + Count> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Count> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<List<T>, A::Error> {
                sum_seq::<T, _>(seq).map(|n| List(n, PhantomData))
            }
        }
        deserializer.deserialize_seq(V(PhantomData))
    }
}

fn sum_seq<'de, T: Deserialize<'de> + Count, A: SeqAccess<'de>>(mut seq: A) -> Result<usize, A::Error> {
    let mut n = 0usize;
    while let Some(item) = seq.next_element::<T>()? {
        n = n.saturating_add(item.count());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BodyLimits = BodyLimits { max_bytes: 1000, max_prompt_chars: 20, default_max_tokens: None };

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

    fn post(json: &str) -> Result<Inspected, Denial> {
        inspect(&body(json), "POST", LIMITS)
    }

    #[test]
    fn model_names_cannot_disguise_another() {
        for bad in
            ["", "llama-3\u{0}gpt-4", "llama-3/../gpt-4", "a//b", "/gpt-4", "gpt 4", "gpt-4\n", "a\\b", "a%2Fb", "./x"]
        {
            let json = serde_json::json!({ "model": bad }).to_string();
            assert_eq!(inspect(&body(&json), "POST", LIMITS).unwrap_err().reason(), "invalid_body", "{bad:?}");
        }
        for good in ["gpt-4o", "meta-llama/Llama-3-8B", "ft:gpt-4o:org::x", "llama3:8b", "mistral-7b@v1"] {
            let json = serde_json::json!({ "model": good }).to_string();
            assert_eq!(inspect(&body(&json), "POST", LIMITS).unwrap().model.as_deref(), Some(good));
        }
    }

    #[test]
    fn reads_completion_ceilings_and_stream_usage() {
        for (json, max, usage) in [
            (r#"{"max_tokens":10}"#, Some(10), false),
            (r#"{"max_tokens":10,"max_completion_tokens":30}"#, Some(30), false),
            (r#"{"max_output_tokens":7,"n":3}"#, Some(21), false),
            (r#"{"max_tokens":5,"best_of":4,"n":2}"#, Some(20), false),
            (r#"{"max_tokens":null,"stream":true,"stream_options":{"include_usage":true}}"#, None, true),
            (r#"{"stream":true,"stream_options":{"include_usage":false}}"#, None, false),
            // Other servers' spellings count; 0 and "no ceiling" leave the default.
            (r#"{"max_tokens":10,"max_tokens_to_sample":500}"#, Some(500), false),
            (r#"{"max_tokens":10,"n_predict":300}"#, Some(300), false),
            (r#"{"max_tokens":10,"options":{"num_predict":700}}"#, Some(700), false),
            (r#"{"max_tokens":10,"n_predict":-1}"#, None, false),
            (r#"{"max_tokens":0}"#, None, false),
        ] {
            let got = post(json).unwrap();
            assert_eq!((got.max_tokens, got.include_usage), (max, usage), "{json}");
        }
        // What two readers could read differently is refused.
        for bad in [
            r#"{"max_tokens":-1}"#,
            r#"{"max_tokens":"10"}"#,
            r#"{"max_tokens":10.5}"#,
            r#"{"max_tokens":1,"max_tokens":100000}"#,
            r#"{"n":129}"#,
            r#"{"stream_options":{"include_usage":"yes"}}"#,
        ] {
            assert_eq!(post(bad).unwrap_err().reason(), "invalid_body", "{bad}");
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
            (r#"{"prompt":[1,2,3]}"#, None, false, 3),
            (r#"{"input":"hello","messages":null,"extra":{"deep":[1,2,{"x":null}]}}"#, None, false, 5),
            (r#"  {"messages":[{"role":"assistant","tool_calls":[]}]}"#, None, false, 0),
            (
                r#"{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}"#,
                None,
                false,
                3,
            ),
        ] {
            let got = post(json).unwrap();
            assert_eq!((got.model.as_deref(), got.stream, got.prompt_chars), (model, stream, chars), "{json}");
        }
    }

    /// Every place an OpenAI-style request carries text the model reads counts
    /// toward the prompt: each of these pushes a body of 21+ characters over
    /// the limit of 20 although no `content`, `prompt` or `input` is long.
    #[test]
    fn every_prompt_bearing_field_counts() {
        let long = "x".repeat(21);
        let schema = r#"{"type":"object","properties":{"city":{"type":"string"}}}"#;
        for json in [
            format!(r#"{{"messages":[{{"role":"user","content":"hi","name":"{long}"}}]}}"#),
            format!(r#"{{"messages":[{{"role":"assistant","refusal":"{long}"}}]}}"#),
            format!(r#"{{"messages":[{{"content":[{{"type":"refusal","refusal":"{long}"}}]}}]}}"#),
            format!(r#"{{"messages":[{{"tool_calls":[{{"function":{{"name":"{long}","arguments":"{{}}"}}}}]}}]}}"#),
            format!(
                r#"{{"messages":[{{"tool_calls":[{{"function":{{"name":"f","arguments":"{{\"q\":\"{long}\"}}"}}}}]}}]}}"#
            ),
            format!(
                r#"{{"messages":[{{"tool_calls":[{{"type":"custom","custom":{{"name":"f","input":"{long}"}}}}]}}]}}"#
            ),
            format!(r#"{{"messages":[{{"function_call":{{"name":"f","arguments":"{long}"}}}}]}}"#),
            format!(r#"{{"messages":[{{"function_call":{{"name":"{long}"}}}}]}}"#),
            format!(r#"{{"tools":[{{"type":"function","function":{{"name":"f","description":"{long}"}}}}]}}"#),
            format!(r#"{{"tools":[{{"type":"function","function":{{"name":"{long}"}}}}]}}"#),
            format!(r#"{{"tools":[{{"type":"function","function":{{"name":"f","parameters":{schema}}}}}]}}"#),
            format!(r#"{{"tools":[{{"type":"function","name":"f","description":"{long}"}}]}}"#),
            format!(r#"{{"tools":[{{"type":"function","name":"f","parameters":{schema}}}]}}"#),
            format!(r#"{{"tools":[{{"type":"custom","custom":{{"name":"f","description":"{long}"}}}}]}}"#),
            format!(r#"{{"tools":[{{"name":"f","input_schema":{schema}}}]}}"#),
            format!(r#"{{"functions":[{{"name":"f","description":"{long}"}}]}}"#),
            format!(r#"{{"functions":[{{"name":"f","parameters":{schema}}}]}}"#),
            format!(r#"{{"prompt":"hi","suffix":"{long}"}}"#),
            r#"{"prompt":[[1,2,3,4,5,6,7,8,9,10,11],[1,2,3,4,5,6,7,8,9,10]]}"#.to_owned(),
            format!(r#"{{"prompt":{{"id":"pmpt_1","variables":{{"city":"{long}"}}}}}}"#),
            format!(r#"{{"prompt":{{"id":"pmpt_1","variables":{{"doc":{{"type":"input_text","text":"{long}"}}}}}}}}"#),
            format!(r#"{{"input":["a","{long}"]}}"#),
            format!(r#"{{"input":[{{"role":"user","content":[{{"type":"input_text","text":"{long}"}}]}}]}}"#),
            format!(r#"{{"input":[{{"type":"function_call","call_id":"c","name":"f","arguments":"{long}"}}]}}"#),
            format!(r#"{{"input":[{{"type":"function_call_output","call_id":"c","output":"{long}"}}]}}"#),
            format!(r#"{{"input":[{{"type":"reasoning","summary":[{{"type":"summary_text","text":"{long}"}}]}}]}}"#),
            format!(r#"{{"input":"hi","instructions":"{long}"}}"#),
            format!(r#"{{"system":"{long}","messages":[]}}"#),
            format!(r#"{{"system":[{{"type":"text","text":"{long}"}}]}}"#),
            format!(r#"{{"response_format":{{"type":"json_schema","json_schema":{{"name":"w","schema":{schema}}}}}}}"#),
            format!(
                r#"{{"response_format":{{"type":"json_schema","json_schema":{{"name":"w","description":"{long}"}}}}}}"#
            ),
            format!(r#"{{"text":{{"format":{{"type":"json_schema","name":"w","schema":{schema}}}}}}}"#),
            format!(r#"{{"prediction":{{"type":"content","content":"{long}"}}}}"#),
            r#"{"messages":[{"content":"0123456789"},{"content":"0123456789X"}]}"#.to_owned(),
        ] {
            let denial = post(&json).unwrap_err();
            assert_eq!(denial.reason(), "prompt_too_long", "{json}");
        }
    }

    #[test]
    fn images_audio_and_files_are_not_prompt_characters() {
        let data = "A".repeat(500);
        let json = format!(
            r#"{{"messages":[{{"role":"user","content":[
                {{"type":"text","text":"describe"}},
                {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{data}","detail":"high"}}}},
                {{"type":"input_audio","input_audio":{{"data":"{data}","format":"wav"}}}},
                {{"type":"file","file":{{"file_data":"{data}"}}}}
            ]}}],
            "input":[{{"role":"user","content":[{{"type":"input_image","image_url":"data:image/png;base64,{data}"}}]}}]}}"#
        );
        let limits = BodyLimits { max_bytes: 10_000, ..LIMITS };
        assert_eq!(inspect(&body(&json), "POST", limits).unwrap().prompt_chars, 8);
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
            (r#"{"prompt":1.5}"#, "invalid_body"),
            (r#"{"messages":[{"content":5}]}"#, "invalid_body"),
            (r#"{"tools":{"function":{}}}"#, "invalid_body"),
            (r#"{"tools":[{"function":{"description":7}}]}"#, "invalid_body"),
            // Duplicates of a read field are refused at any depth, however spelled.
            (r#"{"messages":[{"content":"a","content":"b"}]}"#, "invalid_body"),
            (r#"{"tools":[{"function":{"description":"a","description":"b"}}]}"#, "invalid_body"),
            (r#"{"tools":[{"function":{"description":"a","descr\u0069ption":"b"}}]}"#, "invalid_body"),
            (r#"{"input":[{"type":"function_call","arguments":"a","arguments":"b"}]}"#, "invalid_body"),
            (r#"{"instructions":"a","instructions":"b"}"#, "invalid_body"),
            (r#"{"prompt":"this prompt is longer than twenty"}"#, "prompt_too_long"),
            (r#"{"messages":[{"content":"0123456789"},{"content":"0123456789X"}]}"#, "prompt_too_long"),
        ] {
            let denial = post(json).unwrap_err();
            assert_eq!(denial.reason(), reason, "{json}");
        }
    }

    #[test]
    fn size_media_type_and_truncation() {
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(1000));
        assert_eq!(post(&big).unwrap_err().reason(), "body_too_large");
        let declared = RequestBody { declared_size: Some(5000), ..body("{}") };
        assert_eq!(inspect(&declared, "POST", LIMITS).unwrap_err().reason(), "body_too_large");
        let partial = RequestBody { truncated: true, ..body("{}") };
        assert_eq!(inspect(&partial, "POST", LIMITS).unwrap_err().reason(), "body_too_large");
        let missing = RequestBody { bytes: b"", declared_size: Some(20), forwarded: false, ..body("{}") };
        assert!(inspect(&missing, "POST", LIMITS).unwrap_err().to_string().contains("not forwarded"));
        let chunked = RequestBody { bytes: b"", declared_size: None, forwarded: false, chunked: true, ..body("{}") };
        assert!(inspect(&chunked, "POST", LIMITS).unwrap_err().to_string().contains("not forwarded"));
        let empty = RequestBody { bytes: b"", declared_size: Some(0), ..body("{}") };
        assert_eq!(
            inspect(&empty, "POST", LIMITS).unwrap_err().reason(),
            "invalid_body",
            "forwarded and empty: not JSON"
        );
        for ct in ["application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"] {
            assert!(inspect(&RequestBody { content_type: Some(ct), ..body("{}") }, "POST", LIMITS).is_ok(), "{ct}");
        }
        for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
            assert_eq!(
                inspect(&RequestBody { content_type: Some(ct), ..body("{}") }, "POST", LIMITS).unwrap_err().reason(),
                "invalid_body",
                "{ct}"
            );
        }
        assert!(inspect(&RequestBody { content_type: None, ..body("{}") }, "POST", LIMITS).is_ok());
    }

    /// Through Envoy, a chunked or HTTP/2 body on a route that does not buffer
    /// reaches the Check as nothing at all: no marker, no bytes, no length.
    /// A method that carries a body must have it forwarded.
    #[test]
    fn a_body_never_forwarded_is_refused_not_taken_for_none() {
        let nothing = RequestBody { bytes: b"", declared_size: None, forwarded: false, ..body("{}") };
        for method in ["POST", "PUT", "PATCH", "post", "Post", "QUERY", "PROPFIND", ""] {
            let denial = inspect(&nothing, method, LIMITS).unwrap_err();
            assert_eq!(denial.reason(), "invalid_body", "{method}");
            let message = denial.to_string();
            assert!(message.contains("not forwarded") && message.contains("JSON body"), "{method}: {message}");
        }
        let zero = RequestBody { declared_size: Some(0), ..nothing };
        assert_eq!(inspect(&zero, "POST", LIMITS).unwrap_err().reason(), "invalid_body", "empty POST");
        for method in ["GET", "HEAD", "OPTIONS", "DELETE", "TRACE"] {
            assert_eq!(inspect(&nothing, method, LIMITS), Ok(Inspected::default()), "{method}: no body to inspect");
            assert_eq!(inspect(&zero, method, LIMITS), Ok(Inspected::default()), "{method}");
        }
        // Bytes without the marker (another caller of Check) count as forwarded.
        let unmarked = RequestBody { forwarded: false, ..body(r#"{"model":"m"}"#) };
        assert_eq!(inspect(&unmarked, "POST", LIMITS).unwrap().model.as_deref(), Some("m"));
    }
}
