//! What a caller may do on a route: an ordered table of rules, first match
//! wins, a default for everything else.
//!
//! A rule matches on method(s), host(s) and path patterns, all against the
//! request as [`path::normalize`] and [`normalize_host`] see it, and says who
//! may pass: anyone (`public`), any authenticated caller, callers holding
//! permissions and/or one of some roles, or no one (`deny`). It may carry a
//! rate limit of its own and ask for the JSON body to be inspected
//! ([`body`]).

pub mod body;
pub mod path;
pub mod spec;

use std::borrow::Cow;
use std::sync::Arc;

use crate::domain::Limit;
use crate::domain::{Denial, PermissionSet, Principal, Role};

pub use body::BodyLimits;

use crate::authn::credentials::ExtraSources;
pub use spec::{PolicySpec, RouteSpec};

/// One path segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param,
}

/// A path pattern: exact (`/healthz`), a template (`/v1/models/{id}`), or
/// either followed by `/*`, which matches the path itself and everything
/// below it (`/admin/*` matches `/admin` and `/admin/users/1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
    prefix: bool,
}

impl PathPattern {
    /// Parses a configured pattern. Literal parts are normalized like request
    /// paths, so `/healthz/` and `/healthz` mean the same.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.trim();
        let (base, prefix) = match pattern.strip_suffix("/*") {
            Some(base) => (base, true),
            None => (pattern, false),
        };
        let base = path::normalize(if base.is_empty() { "/" } else { base })
            .map_err(|e| format!("invalid path pattern '{pattern}': {e}"))?;
        let mut segments = Vec::new();
        for segment in base.split('/').filter(|s| !s.is_empty()) {
            segments.push(match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                    Segment::Param
                }
                _ if segment.contains(['{', '}', '*']) => {
                    return Err(format!(
                        "invalid path pattern '{pattern}': use {{name}} for a whole segment, and '*' only as a final \
                         '/*'"
                    ));
                }
                _ => Segment::Literal(segment.to_owned()),
            });
        }
        Ok(PathPattern { source: pattern.to_owned(), segments, prefix })
    }

    /// Whether a normalized path (see [`path::normalize`]) matches.
    pub fn matches(&self, normalized: &str) -> bool {
        let mut parts = normalized.split('/').filter(|s| !s.is_empty());
        for segment in &self.segments {
            match (segment, parts.next()) {
                (Segment::Literal(want), Some(got)) if want == got => {}
                (Segment::Param, Some(_)) => {}
                _ => return false,
            }
        }
        self.prefix || parts.next().is_none()
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// A host pattern: `api.example.com`, or `*.example.com` for any subdomain
/// (not the bare domain). Compared case-insensitively, without port or
/// trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower-case; for a wildcard, the suffix including its leading dot.
    host: String,
    wildcard: bool,
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let (rest, wildcard) = match pattern.trim().strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (pattern.trim(), false),
        };
        let host = match normalize_host(rest) {
            Ok(host) if !(host.is_empty() || wildcard && host.starts_with('[')) => host,
            _ => return Err(format!("invalid host pattern '{pattern}'")),
        };
        Ok(HostPattern { host: if wildcard { format!(".{host}") } else { host.into_owned() }, wildcard })
    }

    /// Whether a host, as [`normalize_host`] returns it, matches.
    pub fn matches(&self, host: &str) -> bool {
        if self.wildcard { host.len() > self.host.len() && host.ends_with(&self.host) } else { host == self.host }
    }
}

/// A `Host` / `:authority` that no reader can be trusted to read the same
/// way, so host rules cannot be judged on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed host")]
pub struct HostError;

/// The host a rule is matched against: `API.Example.com.:8443` ->
/// `api.example.com`; `[::1]:80` -> `[::1]`; empty stays empty (HTTP/1.0).
///
/// Anything else than a DNS name (letters, digits, `-`, `_`, non-empty
/// labels, one optional trailing dot, not ending in a number), a
/// dotted-decimal IPv4 address or a bracketed IPv6 address, optionally followed by `:` and a port (1-5 digits, at most 65535),
/// is refused: userinfo (`user@host`), a second colon, an empty or
/// non-numeric port, brackets around something else than an IPv6 address,
/// whitespace, control, non-ASCII or percent-encoded characters. Upstreams
/// and virtual-host routers read such values each their own way (the part
/// after `@`, the text before the first colon, the bracket contents), so no
/// host rule could say which host they name.
///
/// Borrows from `host` unless it has upper-case letters or is an IPv6
/// address (put in its canonical form).
pub fn normalize_host(host: &str) -> Result<Cow<'_, str>, HostError> {
    if host.is_empty() {
        return Ok(Cow::Borrowed(""));
    }
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']').ok_or(HostError)?;
            let addr: std::net::Ipv6Addr = inside.parse().map_err(|_| HostError)?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(HostError)?),
            };
            check_port(port)?;
            return Ok(Cow::Owned(format!("[{addr}]")));
        }
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    check_port(port)?;
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name.split('.').all(label_ok) {
        return Err(HostError);
    }
    // A name ending in a number is an IPv4 address to URL parsers, which
    // also read `127.1`, `0x7f.1` or `2130706433` as 127.0.0.1: only the
    // dotted-decimal form is accepted.
    let last = name.rsplit('.').next().unwrap_or(name);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
            && last.bytes().skip(2).all(|b| b.is_ascii_hexdigit());
    if numeric && name.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(HostError);
    }
    Ok(if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    })
}

fn check_port(port: Option<&str>) -> Result<(), HostError> {
    match port {
        None => Ok(()),
        Some(p)
            if (1..=5).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u32>().is_ok_and(|n| n <= 65535) =>
        {
            Ok(())
        }
        Some(_) => Err(HostError),
    }
}

/// Who may pass a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; a credential is neither required nor checked.
    Public,
    /// An authenticated caller who meets the rule's requirements.
    Authenticated,
    /// No one.
    Deny,
}

/// Whether a rule's denials are enforced, or only reported (shadow mode:
/// the decision is computed, logged, counted and put in the metadata, but
/// the request goes through, marked `x-auth-shadow-decision: deny`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    ReportOnly,
}

impl Mode {
    /// `report_only = true|false`.
    pub const fn from_flag(report_only: bool) -> Mode {
        if report_only { Mode::ReportOnly } else { Mode::Enforce }
    }

    /// The mode a `mode = "..."` and a `report_only = ...` setting name, if
    /// either is set; `mode` wins.
    pub fn chosen(mode: Option<Mode>, report_only: Option<bool>) -> Option<Mode> {
        mode.or(report_only.map(Mode::from_flag))
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "report_only" => Ok(Mode::ReportOnly),
            _ => Err(format!("unknown mode '{s}': expected enforce or report_only")),
        }
    }
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Shown in dynamic metadata and logs; names a rule's rate-limit bucket.
    pub name: Arc<str>,
    /// Upper-case; empty: every method.
    methods: Vec<String>,
    /// Empty: every host.
    hosts: Vec<HostPattern>,
    paths: Vec<PathPattern>,
    pub access: Access,
    /// All of these are required.
    pub permissions: PermissionSet,
    /// One of these is required; empty: any role.
    pub roles: Vec<Role>,
    /// A budget per caller on this rule, on top of the caller's own.
    pub limit: Option<Limit>,
    /// Inspect the request body as JSON, within these limits.
    pub body: Option<BodyLimits>,
    /// Denials on this rule are only reported.
    pub report_only: bool,
    /// Where, besides the headers, this rule accepts a credential.
    pub sources: Option<Arc<ExtraSources>>,
    /// The upstream receives the request's `authorization` and `x-api-key`
    /// (and credential cookie) even when credentials are stripped: for
    /// upstreams that authenticate callers themselves, like Gatehouse's own API.
    pub forward_credentials: bool,
}

impl Rule {
    fn matches(&self, method: &str, host: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host)))
            && self.paths.iter().any(|p| p.matches(path))
    }

    /// The rule's path patterns, as configured.
    pub fn paths(&self) -> &[PathPattern] {
        &self.paths
    }

    /// Whether an authenticated caller meets the rule's role and permission
    /// requirements.
    pub fn admits(&self, principal: &Principal) -> Result<(), Denial> {
        if !self.roles.is_empty() && !principal.role.is_some_and(|r| self.roles.contains(&r)) {
            return Err(Denial::RoleRequired { roles: self.roles.iter().map(|r| r.as_str()).collect() });
        }
        let missing = self.permissions.difference(principal.permissions);
        if !missing.is_empty() {
            return Err(Denial::MissingPermissions { missing });
        }
        Ok(())
    }
}

/// The route table: rules in order, then the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
    /// What applies when no rule matches.
    default: Rule,
    /// Body limits for every route: bodies larger than this are refused even
    /// where the JSON is not inspected.
    pub max_request_bytes: usize,
}

impl Policy {
    /// The rule for a request (method as sent, host as [`normalize_host`]
    /// returns it, path as [`path::normalize`] returns it).
    pub fn route(&self, method: &str, host: &str, path: &str) -> &Rule {
        self.rules.iter().find(|r| r.matches(method, host, path)).unwrap_or(&self.default)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether denials made before any rule applies (a malformed path) are
    /// only reported: the table's default mode.
    pub fn report_only_by_default(&self) -> bool {
        self.default.report_only
    }

    /// Compiles a specification; `public_paths` come first, as public rules
    /// for every method and host.
    pub fn compile(spec: &PolicySpec, public_paths: &[PathPattern]) -> Result<Policy, String> {
        let mut rules: Vec<Rule> = public_paths
            .iter()
            .map(|p| Rule {
                name: Arc::from(format!("public {}", p.as_str())),
                methods: Vec::new(),
                hosts: Vec::new(),
                paths: vec![p.clone()],
                access: Access::Public,
                permissions: PermissionSet::EMPTY,
                roles: Vec::new(),
                limit: None,
                body: None,
                report_only: spec.mode == Mode::ReportOnly,
                sources: None,
                forward_credentials: false,
            })
            .collect();
        let defaults = BodyLimits {
            max_bytes: spec.max_request_bytes,
            max_prompt_chars: spec.max_prompt_chars,
            default_max_tokens: None,
        };
        for (i, route) in spec.routes.iter().enumerate() {
            let rule = route.compile(defaults, spec.mode).map_err(|e| format!("routes[{i}]: {e}"))?;
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(format!("routes[{i}]: another rule is named '{}'", rule.name));
            }
            rules.push(rule);
        }
        let default = Rule {
            name: Arc::from("default"),
            methods: Vec::new(),
            hosts: Vec::new(),
            paths: Vec::new(),
            access: spec.default,
            permissions: PermissionSet::EMPTY,
            roles: Vec::new(),
            limit: None,
            body: None,
            report_only: spec.mode == Mode::ReportOnly,
            sources: None,
            forward_credentials: false,
        };
        Ok(Policy { rules, default, max_request_bytes: spec.max_request_bytes })
    }
}

#[cfg(test)]
mod tests;
