//! The decision for one request, independent of how it arrived (Envoy's
//! ext_authz gRPC call, the `gatehouse check` command, a test).
//!
//! In order: normalize the path (ambiguous -> 400), find the route rule
//! (`deny` -> 403), authenticate unless the rule is public (401), check the
//! rule's roles and permissions (403), the body (413, 400, 403), and the
//! caller's rate limits (429). A rule in report-only mode decides the same
//! way; the transport lets its denials through, marked.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::authn::credentials::ExtraSources;
use crate::authn::{Authenticator, credentials};
use crate::budget::{Budgets, Estimate, Reservation};
use crate::domain::budget::Budget;
use crate::domain::{DEFAULT_GROUP, Denial, ModelList, Permission, PermissionSet, Principal};
use crate::policy::body::{self, RequestBody};
use crate::policy::{Access, Policy, normalize_host, path};
use crate::ratelimit::{LimitPolicy, Outcome};
use crate::store::cache::GroupCache;

/// The request attributes a decision depends on.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The `Host` / `:authority` as received.
    pub host: &'a str,
    /// The path as received, with its query string.
    pub path: &'a str,
    /// The client's address as the proxy saw it.
    pub client_ip: Option<&'a str>,
    /// Empty unless the proxy forwards bodies.
    pub body: RequestBody<'a>,
    /// Headers that restate the method or the host for the upstream
    /// (see [`RESTATING_HEADERS`]), as received.
    pub restated: &'a [(&'a str, &'a str)],
}

/// Headers an upstream may act on instead of the method or `Host` that
/// Gatehouse decides on: method overrides (`X-HTTP-Method-Override` and its
/// variants, honoured by many frameworks) and `X-Forwarded-Host`. A request
/// whose restatement differs is refused, so the decision and the upstream's
/// action cannot part ways.
pub const RESTATING_HEADERS: [&str; 4] =
    ["x-http-method-override", "x-method-override", "x-http-method", "x-forwarded-host"];

/// Refuses a request whose method override or forwarded host says something
/// else than what the decision is made on. The `_method` query parameter
/// counts as a method override too.
fn check_restatements(request: &RequestView<'_>, host: &str) -> Result<(), Denial> {
    let query_overrides = credentials::query_values(request.path, "_method").map(|v| ("_method", v));
    for (name, value) in request.restated.iter().copied().chain(query_overrides) {
        if name.eq_ignore_ascii_case("x-forwarded-host") {
            for forwarded in value.split(',') {
                if normalize_host(forwarded.trim()).ok().as_deref() != Some(host) {
                    return Err(Denial::InvalidRequest("X-Forwarded-Host names another host than Host"));
                }
            }
        } else if !value.trim().eq_ignore_ascii_case(request.method) {
            return Err(Denial::InvalidRequest("a method override names another method than the request's"));
        }
    }
    Ok(())
}

/// A verdict and what led to it, for the response, logs and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Result<Allow, Denial>,
    /// The rule that applied; `None` when the request was refused before a
    /// rule could be chosen (a malformed path).
    pub rule: Option<Arc<str>>,
    /// The authenticated caller, when authentication happened and succeeded.
    pub principal: Option<Principal>,
    /// The `model` the body asked for, on routes that inspect it.
    pub model: Option<String>,
    /// The rule is in report-only (shadow) mode: a denial is reported, not
    /// enforced.
    pub report_only: bool,
    /// The rule's credential places besides the headers (the transport
    /// removes a query credential before the upstream, and a cookie one).
    pub sources: Option<Arc<ExtraSources>>,
    /// What the request reserved against the caller's budgets (routes that
    /// inspect the body, authenticated callers); settled after the call.
    pub reservation: Option<Reservation>,
}

impl Decision {
    const EMPTY: Decision = Decision {
        verdict: Err(Denial::RouteDenied),
        rule: None,
        principal: None,
        model: None,
        report_only: false,
        sources: None,
        reservation: None,
    };

    pub fn is_allowed(&self) -> bool {
        self.verdict.is_ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// Whether the request's credentials are to be kept from the upstream
    /// (when credentials are stripped): one consumed here, or any sent to a
    /// public rule; never on a rule with `forward_credentials`.
    pub strip_credential: bool,
    /// The rate limit that applied, for the `X-RateLimit-*` headers.
    pub rate: Option<Outcome>,
}

pub struct Authorizer {
    authn: Authenticator,
    policy: ArcSwap<Policy>,
    limits: LimitPolicy,
    groups: GroupCache,
    require_auth: bool,
    budgets: Option<Arc<Budgets>>,
}

impl Authorizer {
    pub fn new(authn: Authenticator, policy: Policy, limits: LimitPolicy, require_auth: bool) -> Self {
        let groups = limits.groups.clone();
        Authorizer { authn, policy: ArcSwap::from_pointee(policy), limits, groups, require_auth, budgets: None }
    }

    /// Meters and budgets requests on routes that inspect the body.
    pub fn with_budgets(mut self, budgets: Arc<Budgets>) -> Self {
        self.budgets = Some(budgets);
        self
    }

    pub fn budgets(&self) -> Option<&Arc<Budgets>> {
        self.budgets.as_ref()
    }

    /// Replaces the route table. Checks in flight finish with the table they
    /// started with.
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub async fn decide<'a, H>(&self, request: RequestView<'a>, headers: H, now: i64) -> Decision
    where
        H: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut decision = Decision::EMPTY;
        decision.verdict = self.evaluate(request, headers, now, &mut decision).await;
        decision
    }

    pub fn authn(&self) -> &Authenticator {
        &self.authn
    }

    /// Authenticates a caller of Gatehouse's own APIs: a credential is required.
    pub async fn authenticate<'a, H>(&self, headers: H, now: i64) -> Result<Principal, Denial>
    where
        H: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let credential = credentials::extract(headers)?.ok_or(Denial::MissingCredential)?;
        let principal = self.authn.authenticate(credential, now).await?;
        // Gatehouse's own APIs manage things; a replaced secret manages nothing.
        if principal.previous_secret {
            return Err(Denial::ReplacedSecret);
        }
        Ok(principal)
    }

    async fn evaluate<'a, H>(
        &self,
        request: RequestView<'a>,
        headers: H,
        now: i64,
        decision: &mut Decision,
    ) -> Result<Allow, Denial>
    where
        H: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let policy = self.policy.load();
        decision.report_only = policy.report_only_by_default();
        let path = path::normalize(request.path).map_err(|_| Denial::InvalidRequest("ambiguous or malformed path"))?;
        let host = normalize_host(request.host).map_err(|_| Denial::InvalidRequest("malformed host"))?;
        check_restatements(&request, &host)?;
        let rule = policy.route(request.method, &host, &path);
        decision.rule = Some(rule.name.clone());
        decision.report_only = rule.report_only;
        match rule.access {
            Access::Deny => return Err(Denial::RouteDenied),
            Access::Public => {
                request.body.check_size(policy.max_request_bytes)?;
                let rate = self.limits.check(None, request.client_ip, rule).await?;
                return Ok(Allow { strip_credential: !rule.forward_credentials, rate });
            }
            Access::Authenticated => {}
        }
        decision.sources = rule.sources.clone();
        let credential = match &rule.sources {
            None => credentials::extract(headers)?,
            Some(extra) => credentials::extract_with(headers, request.path, extra)?.map(|(c, _)| c),
        };
        decision.principal = match credential {
            Some(credential) => Some(self.authn.authenticate(credential, now).await?),
            None if self.require_auth => return Err(Denial::MissingCredential),
            None => None,
        };
        let principal = decision.principal.as_ref();
        match principal {
            Some(p) => rule.admits(p)?,
            // Anonymous (REQUIRE_AUTH=false) is a caller with no role and no
            // permissions: a rule that asks for any needs a credential.
            None if !rule.roles.is_empty() || !rule.permissions.is_empty() => return Err(Denial::MissingCredential),
            None => {}
        }
        request.body.check_size(policy.max_request_bytes)?;
        let mut estimate = None;
        if let Some(limits) = rule.body {
            let inspected = body::inspect(&request.body, request.method, limits)?;
            decision.model = inspected.model;
            let streaming = PermissionSet::from_iter([Permission::UseStreaming]);
            match principal {
                Some(p) if inspected.stream && !p.permissions.contains(Permission::UseStreaming) => {
                    return Err(Denial::MissingPermissions { missing: streaming });
                }
                None if inspected.stream => return Err(Denial::MissingCredential),
                _ => {}
            }
            // Anonymous callers are held to the default group's models.
            let (group, own) = principal.map_or((DEFAULT_GROUP, None), |p| (&*p.group, p.models.as_ref()));
            let group_budget = self.check_model(group, own, decision.model.as_deref()).await?;
            estimate = Some((
                group_budget,
                Estimate {
                    prompt_chars: inspected.prompt_chars,
                    max_tokens: inspected.max_tokens,
                    stream: inspected.stream,
                    include_usage: inspected.include_usage,
                    route_max_tokens: limits.default_max_tokens,
                    messages: inspected.messages,
                    choices: inspected.choices,
                },
            ));
        }
        let rate = self.limits.check(principal, request.client_ip, rule).await?;
        // Last, so a request refused for any other reason holds nothing.
        if let (Some(budgets), Some(p), Some((group, estimate))) = (&self.budgets, principal, estimate) {
            decision.reservation = Some(budgets.reserve(p, group, decision.model.as_deref(), estimate, now).await?);
        }
        Ok(Allow { strip_credential: principal.is_some() && !rule.forward_credentials, rate })
    }

    /// The model must be allowed by the API key's list and by the group's,
    /// where they have one. The group is read through the cache; if it cannot
    /// be read, the request is refused rather than let through unchecked.
    /// Returns the group's budget, read in the same lookup.
    async fn check_model(&self, group: &str, own: Option<&ModelList>, model: Option<&str>) -> Result<Budget, Denial> {
        let group = match self.groups.get(group).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, group, "cannot read the group's models");
                return Err(Denial::BackendUnavailable);
            }
        };
        let lists = own.into_iter().chain(group.as_ref().and_then(|g| g.models.as_ref()));
        for list in lists {
            match model {
                None => {
                    return Err(Denial::InvalidBody(
                        "`model` is required: this caller may use only some models".into(),
                    ));
                }
                Some(m) if !list.allows(m) => {
                    return Err(Denial::ModelNotAllowed { model: m.chars().take(100).collect() });
                }
                Some(_) => {}
            }
        }
        Ok(group.map(|g| g.budget).unwrap_or_default())
    }
}
