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

mod count;
use count::*;

#[cfg(test)]
mod tests;
