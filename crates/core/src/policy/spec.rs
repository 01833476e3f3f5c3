//! The route table as written in TOML (`[policy]` and `[[routes]]`), before
//! it is compiled into a [`Policy`](super::Policy).

use std::sync::Arc;

use serde::Deserialize;

use super::{Access, BodyLimits, HostPattern, Mode, PathPattern, Rule};
use crate::authn::credentials::ExtraSources;
use crate::domain::limit::parse_limit;
use crate::domain::{PermissionSet, Role};

/// The table shipped with Gatehouse for an OpenAI-compatible gateway; also the
/// default when no table is configured.
pub const SHIPPED: &str = include_str!("../../../../policy.toml");

/// `[policy]` and `[[routes]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub default: Access,
    /// Rules without their own `mode` take this one.
    pub mode: Mode,
    pub max_request_bytes: usize,
    pub max_prompt_chars: usize,
    pub routes: Vec<RouteSpec>,
}

impl Default for PolicySpec {
    fn default() -> Self {
        #[allow(clippy::expect_used)]
        PolicySpec::from_toml(SHIPPED).expect("the shipped policy.toml is valid (tested)")
    }
}

/// The file shape: a policy file, or the policy parts of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    pub policy: Option<PolicySettings>,
    pub routes: Option<Vec<RouteSpec>>,
}

/// `[policy]`: settings that apply to the whole table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// What applies to requests no rule matches.
    pub default: Option<Access>,
    /// `enforce` (the default) or `report_only` for every rule without its own.
    pub mode: Option<Mode>,
    /// `true`: the same as `mode = "report_only"`.
    pub report_only: Option<bool>,
    /// The largest request body accepted on any route.
    pub max_request_bytes: Option<usize>,
    /// The largest prompt (characters) on routes that inspect the body.
    pub max_prompt_chars: Option<usize>,
    /// Read the route table from this file instead (config file only).
    pub file: Option<std::path::PathBuf>,
    /// How often the policy source is checked for changes; 0: only on
    /// SIGHUP (config file only).
    pub reload_seconds: Option<u64>,
}

impl PolicySpec {
    /// Starts from the built-in values, without routes.
    fn base() -> PolicySpec {
        PolicySpec {
            default: Access::Deny,
            mode: Mode::Enforce,
            max_request_bytes: 10 * 1024 * 1024,
            max_prompt_chars: 10_000,
            routes: vec![],
        }
    }

    /// Parses a standalone policy document (no `file` key).
    pub fn from_toml(text: &str) -> Result<PolicySpec, String> {
        let doc: PolicyDocument = toml::from_str(text).map_err(|e| e.to_string())?;
        if doc.policy.as_ref().is_some_and(|p| p.file.is_some()) {
            return Err("policy.file is only allowed in the main configuration file".into());
        }
        let mut spec = PolicySpec::base();
        spec.apply(doc);
        Ok(spec)
    }

    /// Applies a document over this one: settings one by one, routes as a
    /// whole table.
    pub fn apply(&mut self, doc: PolicyDocument) {
        if let Some(p) = doc.policy {
            self.default = p.default.unwrap_or(self.default);
            self.mode = Mode::chosen(p.mode, p.report_only).unwrap_or(self.mode);
            self.max_request_bytes = p.max_request_bytes.unwrap_or(self.max_request_bytes);
            self.max_prompt_chars = p.max_prompt_chars.unwrap_or(self.max_prompt_chars);
        }
        if let Some(routes) = doc.routes {
            self.routes = routes;
        }
    }
}

impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "public" => Ok(Access::Public),
            "authenticated" => Ok(Access::Authenticated),
            "deny" => Ok(Access::Deny),
            _ => Err(serde::de::Error::custom(format!("unknown access '{s}': expected public, authenticated or deny"))),
        }
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    pub host: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `public`, `authenticated` (the default) or `deny`.
    pub access: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// `REQUESTS/SECONDS[/BURST]`, per caller, on this rule.
    pub limit: Option<String>,
    /// `"json"`: the body must be a JSON object; its OpenAI fields (`model`,
    /// `stream`, `messages`, `prompt`, `input`) are checked.
    pub body: Option<String>,
    pub max_request_bytes: Option<usize>,
    pub max_prompt_chars: Option<usize>,
    /// Completion tokens a token or spend budget reserves for a request that
    /// sets no `max_tokens` (`0` on embeddings routes); default:
    /// `GATEHOUSE_BUDGET_DEFAULT_MAX_TOKENS`.
    pub default_max_tokens: Option<u64>,
    /// `enforce` or `report_only`; default: the table's `mode`.
    pub mode: Option<Mode>,
    /// `true`: the same as `mode = "report_only"` (`false`: `"enforce"`).
    pub report_only: Option<bool>,
    /// Also accept the credential from this query parameter (removed before
    /// the request goes upstream). Off unless set.
    pub credential_query: Option<String>,
    /// Also accept the credential from this cookie. Off unless set.
    pub credential_cookie: Option<String>,
    /// `true`: the upstream receives the request's credentials even when
    /// they are stripped (`GATEHOUSE_STRIP_CREDENTIALS`); for upstreams that
    /// authenticate callers themselves. Default `false`.
    pub forward_credentials: Option<bool>,
}

impl RouteSpec {
    pub(super) fn compile(&self, defaults: BodyLimits, mode: Mode) -> Result<Rule, String> {
        let paths: Vec<PathPattern> =
            self.path.iter().chain(&self.paths).map(|p| PathPattern::parse(p)).collect::<Result<_, _>>()?;
        if paths.is_empty() {
            return Err("a rule needs `path` or `paths`".into());
        }
        let hosts: Vec<HostPattern> =
            self.host.iter().chain(&self.hosts).map(|h| HostPattern::parse(h)).collect::<Result<_, _>>()?;
        let methods: Vec<String> = self.methods.iter().map(|m| m.trim().to_ascii_uppercase()).collect();
        if let Some(bad) = methods.iter().find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic())) {
            return Err(format!("invalid method '{bad}'"));
        }
        let access = match self.access.as_deref() {
            None | Some("authenticated") => Access::Authenticated,
            Some("public") => Access::Public,
            Some("deny") => Access::Deny,
            Some(other) => return Err(format!("unknown access '{other}': expected public, authenticated or deny")),
        };
        let permissions = PermissionSet::from_names(&self.permissions).map_err(|e| e.to_string())?;
        let roles: Vec<Role> =
            self.roles.iter().map(|r| r.parse().map_err(|e| format!("{e}"))).collect::<Result<_, _>>()?;
        if access != Access::Authenticated && (!permissions.is_empty() || !roles.is_empty()) {
            return Err("permissions and roles only apply to authenticated rules".into());
        }
        let limit =
            self.limit.as_deref().map(|l| parse_limit(l).map_err(|e| format!("limit '{l}': {e}"))).transpose()?;
        let body = match self.body.as_deref() {
            None | Some("none") => None,
            Some("json") => Some(BodyLimits {
                max_bytes: self.max_request_bytes.unwrap_or(defaults.max_bytes).min(defaults.max_bytes),
                max_prompt_chars: self.max_prompt_chars.unwrap_or(defaults.max_prompt_chars),
                default_max_tokens: self.default_max_tokens,
            }),
            Some(other) => return Err(format!("unknown body '{other}': expected json or none")),
        };
        let name = match &self.name {
            Some(n) if !n.trim().is_empty() => n.trim().to_owned(),
            _ => default_name(&methods, &paths),
        };
        if let (Some(m), Some(flag)) = (self.mode, self.report_only)
            && m != Mode::from_flag(flag)
        {
            return Err("`mode` and `report_only` disagree".into());
        }
        let report_only = Mode::chosen(self.mode, self.report_only).unwrap_or(mode) == Mode::ReportOnly;
        let source_name = |field: &str, name: &Option<String>| -> Result<Option<Arc<str>>, String> {
            match name.as_deref().map(str::trim) {
                None => Ok(None),
                Some(n)
                    if !n.is_empty()
                        && n.len() <= 64
                        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) =>
                {
                    Ok(Some(Arc::from(n)))
                }
                Some(n) => Err(format!("{field} '{n}': use 1-64 letters, digits, '_', '-' or '.'")),
            }
        };
        let extra = ExtraSources {
            query: source_name("credential_query", &self.credential_query)?,
            cookie: source_name("credential_cookie", &self.credential_cookie)?,
        };
        if access != Access::Authenticated && extra != ExtraSources::default() {
            return Err("credential_query and credential_cookie only apply to authenticated rules".into());
        }
        let sources = (extra != ExtraSources::default()).then(|| Arc::new(extra));
        Ok(Rule {
            name: Arc::from(name),
            methods,
            hosts,
            paths,
            access,
            permissions,
            roles,
            limit,
            body,
            report_only,
            sources,
            forward_credentials: self.forward_credentials.unwrap_or(false),
        })
    }
}

/// `GET,POST /v1/models` from the rule's first path.
fn default_name(methods: &[String], paths: &[PathPattern]) -> String {
    let path = paths.first().map_or("/", PathPattern::as_str);
    if methods.is_empty() { path.to_owned() } else { format!("{} {path}", methods.join(",")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_and_compiles() {
        let spec = PolicySpec::from_toml(SHIPPED).unwrap();
        assert_eq!(spec.default, Access::Deny);
        assert_eq!(spec.max_prompt_chars, 10_000);
        super::super::Policy::compile(&spec, &[]).unwrap();
    }

    #[test]
    fn documents_apply_setting_by_setting() {
        let mut spec = PolicySpec::default();
        let doc: PolicyDocument = toml::from_str("[policy]\nmax_prompt_chars = 5\n").unwrap();
        spec.apply(doc);
        assert_eq!(spec.max_prompt_chars, 5);
        assert_eq!(spec.default, Access::Deny);
        assert!(!spec.routes.is_empty(), "routes are kept when the document has none");
        assert!(PolicySpec::from_toml("[policy]\nfile = \"x.toml\"\n").is_err());
        assert!(PolicySpec::from_toml("[policy]\ndefault = \"maybe\"\n").is_err());
        assert!(PolicySpec::from_toml("[[routes]]\npaht = \"/x\"\n").is_err());
    }
}
