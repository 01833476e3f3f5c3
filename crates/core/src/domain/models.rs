//! Which models a group or an API key may call.

use std::fmt;
use std::sync::Arc;

/// Model names (case-sensitive, as OpenAI-compatible servers treat them), each
/// either exact or a pattern with `*` standing for any run of characters
/// (`gpt-4o*`, `*-embedding-*`). Stored and shown comma-separated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelList(Arc<[String]>);

/// The longest model name or pattern accepted.
pub const MAX_MODEL_NAME: usize = 200;
/// The most entries one list may hold.
pub const MAX_MODELS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model list: {0}")]
pub struct InvalidModelList(String);

impl ModelList {
    /// Validates names: 1 to 200 printable ASCII characters, no spaces or commas.
    pub fn new<I, S>(items: I) -> Result<ModelList, InvalidModelList>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<String> = Vec::new();
        for item in items {
            let name = item.as_ref().trim();
            if name.is_empty() || name.len() > MAX_MODEL_NAME {
                return Err(InvalidModelList(format!("each model must be 1 to {MAX_MODEL_NAME} characters")));
            }
            if !name.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(InvalidModelList(format!("'{name}' contains a space, a comma or a non-ASCII character")));
            }
            if !list.iter().any(|m| m == name) {
                list.push(name.to_owned());
            }
        }
        if list.is_empty() {
            return Err(InvalidModelList("the list is empty (use null to allow every model)".into()));
        }
        if list.len() > MAX_MODELS {
            return Err(InvalidModelList(format!("at most {MAX_MODELS} entries")));
        }
        Ok(ModelList(list.into()))
    }

    pub fn allows(&self, model: &str) -> bool {
        self.0.iter().any(|pattern| glob(pattern.as_bytes(), model.as_bytes()))
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for ModelList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl std::str::FromStr for ModelList {
    type Err = InvalidModelList;
    fn from_str(s: &str) -> Result<ModelList, InvalidModelList> {
        ModelList::new(s.split(','))
    }
}

/// `*` matches any run of bytes (including none); everything else literally.
/// Iterative with one backtrack point, so it is linear in practice and never
/// exponential.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_matching() {
        let list: ModelList = "gpt-4o-mini,llama-*,*-embed-*".parse().unwrap();
        for (model, allowed) in [
            ("gpt-4o-mini", true),
            ("gpt-4o", false),
            ("GPT-4o-mini", false),
            ("gpt-4o-mini ", false),
            ("llama-", true),
            ("llama-3-70b", true),
            ("xllama-3", false),
            ("nomic-embed-text", true),
            ("embed", false),
            ("", false),
        ] {
            assert_eq!(list.allows(model), allowed, "{model:?}");
        }
        assert!(ModelList::new(["*"]).unwrap().allows("anything"));
    }

    #[test]
    fn invalid_lists_are_refused() {
        for bad in ["", " , ", "a b", "caf\u{e9}", &"x".repeat(201)] {
            assert!(bad.parse::<ModelList>().is_err(), "{bad:?}");
        }
        assert_eq!("a, b,a".parse::<ModelList>().unwrap().to_string(), "a,b");
    }
}
