//! What a caller may do on a route.
//!
//! Today: which paths are public (no credential needed). Paths are matched
//! after [`path::normalize`].

pub mod path;

/// A path pattern: exact (`/healthz`) or a prefix (`/auth/oidc/*`, which
/// matches `/auth/oidc` and everything below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
}

impl PathPattern {
    /// Parses a configured pattern. Patterns are normalized like request paths,
    /// so `/healthz/` and `/healthz` mean the same.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let (base, prefix) = match pattern.strip_suffix("/*") {
            Some(base) => (base, true),
            None => (pattern, false),
        };
        let base = path::normalize(if base.is_empty() { "/" } else { base })
            .map_err(|e| format!("invalid path pattern '{pattern}': {e}"))?;
        Ok(if prefix { PathPattern::Prefix(base) } else { PathPattern::Exact(base) })
    }

    pub fn matches(&self, normalized: &str) -> bool {
        match self {
            PathPattern::Exact(p) => normalized == p,
            PathPattern::Prefix(p) if p == "/" => true,
            PathPattern::Prefix(p) => {
                normalized.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    public: Vec<PathPattern>,
}

impl Policy {
    pub fn new(public: Vec<PathPattern>) -> Self {
        Policy { public }
    }

    pub fn is_public(&self, normalized_path: &str) -> bool {
        self.public.iter().any(|p| p.matches(normalized_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix_patterns() {
        let exact = PathPattern::parse("/healthz").unwrap();
        assert!(exact.matches("/healthz"));
        assert!(!exact.matches("/healthz/x"));
        assert!(!exact.matches("/healthzz"));
        let prefix = PathPattern::parse("/auth/oidc/*").unwrap();
        assert!(prefix.matches("/auth/oidc"));
        assert!(prefix.matches("/auth/oidc/callback"));
        assert!(!prefix.matches("/auth/oidcx"));
        assert!(PathPattern::parse("/*").unwrap().matches("/anything"));
        assert!(PathPattern::parse("/a%2fb").is_err());
    }

    #[test]
    fn bypass_shapes_do_not_reach_public_paths() {
        let policy = Policy::new(vec![PathPattern::parse("/healthz").unwrap()]);
        for raw in ["/healthz/../v1/chat/completions", "/healthz/x", "/healthz;/../v1"] {
            let n = path::normalize(raw).unwrap();
            assert!(!policy.is_public(&n), "{raw} -> {n}");
        }
        assert!(policy.is_public(&path::normalize("//healthz/?probe=1").unwrap()));
    }
}
