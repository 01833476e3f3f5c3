//! Usage reported by an OpenAI-compatible upstream.

/// Tokens an upstream reported for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// A response's usage, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metered {
    Usage(Usage),
    Unmeasured(&'static str),
}
