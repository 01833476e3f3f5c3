//! Envoy `envoy.service.auth.v3.Authorization/Check`: translate the request
//! into a [`RequestView`] and headers, ask the [`Authorizer`], translate the
//! [`Decision`] back. No policy lives here.
//!
//! The gRPC call itself always succeeds: the verdict travels inside the
//! `CheckResponse` (`status` plus an OK or denied HTTP response), which is what
//! Envoy acts on. A transport-level error would make Envoy apply its own
//! `status_on_error`, losing our status code and JSON body.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use crate::authn::credentials;
use crate::authz::{Allow, Authorizer, Decision, RESTATING_HEADERS, RequestView};
use crate::domain::{Denial, Principal};
use crate::policy::body::RequestBody;
use crate::ratelimit::{Outcome, ceil_secs};
use crate::render;

/// Headers Gatehouse sets for the upstream. Any client-sent header in the
/// `x-auth-` namespace is removed, so none of these can be spoofed; so is one
/// spelled with underscores (`x_auth_role`), which CGI/WSGI upstreams read as
/// the same `HTTP_X_AUTH_ROLE`.
pub const IDENTITY_PREFIX: &str = "x-auth-";

#[derive(Clone)]
pub struct ExtAuthz {
    authorizer: Arc<Authorizer>,
    strip_credentials: bool,
    clock: crate::clock::SharedClock,
}

impl ExtAuthz {
    pub fn new(authorizer: Arc<Authorizer>, strip_credentials: bool, clock: crate::clock::SharedClock) -> Self {
        ExtAuthz { authorizer, strip_credentials, clock }
    }

    /// The route table's body limit now (it can change on reload).
    pub fn max_request_bytes(&self) -> usize {
        self.authorizer.policy().max_request_bytes
    }

    /// Decides one request; used by the gRPC service and by in-process callers.
    pub async fn check(&self, request: &CheckRequest) -> CheckResponse {
        let Some(http) = request.attributes.as_ref().and_then(|a| a.request.as_ref()).and_then(|r| r.http.as_ref())
        else {
            return deny(&Denial::InvalidRequest("no HTTP request attributes"));
        };
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let restated: Vec<(&str, &str)> =
            headers(http).filter(|(k, _)| RESTATING_HEADERS.iter().any(|r| k.eq_ignore_ascii_case(r))).collect();
        let view = RequestView {
            method: &http.method,
            host: &http.host,
            path: &http.path,
            client_ip: client_ip(request),
            body: request_body(http),
            restated: &restated,
        };
        let decision = self.authorizer.decide(view, headers(http), now).await;
        log_decision(http, &decision);
        record(&decision, started);
        self.respond(http, &decision)
    }

    /// The CheckResponse for a decision: identity headers and header removals
    /// on allow, status, headers and JSON body on deny, metadata on both.
    pub fn respond(&self, http: &HttpRequest, decision: &Decision) -> CheckResponse {
        let metadata = decision_metadata(decision);
        match &decision.verdict {
            Ok(allow) => self.allow(http, decision, allow, metadata, None),
            // Report-only: let it through, marked, with the credential left
            // in place (it was not accepted, so it is not consumed).
            Err(denial) if decision.report_only => {
                let pass = Allow { strip_credential: false, rate: None };
                self.allow(http, decision, &pass, metadata, Some(denial))
            }
            Err(denial) => deny_with(denial, metadata),
        }
    }

    fn allow(
        &self,
        http: &HttpRequest,
        decision: &Decision,
        allow: &Allow,
        metadata: Struct,
        shadow: Option<&Denial>,
    ) -> CheckResponse {
        let mut identity = identity_headers(decision.principal.as_ref());
        if let Some(denial) = shadow {
            identity.push(("x-auth-shadow-decision", "deny".to_owned()));
            identity.push(("x-auth-shadow-reason", denial.reason().to_owned()));
            identity.push(("x-auth-shadow-status", render::http_status(denial.kind()).to_string()));
        }
        let strip_credential = allow.strip_credential && self.strip_credentials;
        // Client-sent identity headers not overwritten below (any spelling
        // but the exact name set), and the credential.
        let mut remove: Vec<String> = headers(http)
            .map(|(name, _)| name)
            .filter(|name| {
                (is_identity_header(name) && !identity.iter().any(|(set, _)| name.eq_ignore_ascii_case(set)))
                    || (strip_credential
                        && (name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("x-api-key")))
            })
            .map(str::to_ascii_lowercase)
            .collect();
        let mut set: Vec<HeaderValueOption> =
            identity.into_iter().map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd)).collect();
        let mut query_parameters_to_remove = Vec::new();
        if let Some(sources) = &decision.sources {
            // A credential in the URL never reaches the upstream (or Envoy's
            // access log), accepted or not.
            if let Some(name) = &sources.query
                && credentials::query_values(&http.path, name).next().is_some()
            {
                query_parameters_to_remove.push(name.to_string());
            }
            if let Some(name) = sources.cookie.as_deref().filter(|_| strip_credential) {
                let cookies: Vec<&str> =
                    headers(http).filter(|(k, _)| k.eq_ignore_ascii_case("cookie")).map(|(_, v)| v).collect();
                if !credentials::cookie_values(&cookies, name).is_empty() {
                    match credentials::without_cookie(&cookies, name) {
                        Some(rest) => set.push(header("cookie", rest, HeaderAppendAction::OverwriteIfExistsOrAdd)),
                        None => remove.push("cookie".to_owned()),
                    }
                }
            }
        }
        let ok = OkHttpResponse {
            headers: set,
            headers_to_remove: remove,
            query_parameters_to_remove,
            response_headers_to_add: allow
                .rate
                .map(rate_headers)
                .unwrap_or_default()
                .into_iter()
                .chain(decision.reservation.as_ref().and_then(|r| r.tokens).map(token_headers).into_iter().flatten())
                .collect(),
            ..Default::default()
        };
        CheckResponse {
            status: Some(rpc::Status { code: tonic::Code::Ok as i32, ..Default::default() }),
            dynamic_metadata: Some(metadata),
            http_response: Some(HttpResponse::OkResponse(ok)),
        }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        #[cfg(feature = "otel")]
        if crate::telemetry::otel::exporting() {
            use tracing::Instrument;
            let span = crate::telemetry::otel::check_span(request.get_ref());
            let response = ExtAuthz::check(self, request.get_ref()).instrument(span.clone()).await;
            let allowed = matches!(response.http_response, Some(HttpResponse::OkResponse(_)));
            let status = match &response.http_response {
                Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map_or(403, |s| s.code),
                _ => 200,
            };
            crate::telemetry::otel::record_check(&span, allowed, status);
            return Ok(Response::new(response));
        }
        Ok(Response::new(ExtAuthz::check(self, request.get_ref()).await))
    }
}

/// The request's headers, from the `headers` map or, when Envoy is set to
/// `encode_raw_headers`, from `header_map`. A raw value that is not UTF-8 is
/// passed on as a string no credential can match.
fn headers(http: &HttpRequest) -> impl Iterator<Item = (&str, &str)> + '_ {
    let map = http.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let raw = http.header_map.iter().flat_map(|m| m.headers.iter()).map(|h| {
        let value = if h.raw_value.is_empty() {
            h.value.as_str()
        } else {
            std::str::from_utf8(&h.raw_value).unwrap_or("\u{0}")
        };
        (h.key.as_str(), value)
    });
    map.chain(raw)
}

/// In the `x-auth-` namespace, with `_` read as `-` and case ignored.
fn is_identity_header(name: &str) -> bool {
    name.len() >= IDENTITY_PREFIX.len()
        && name.bytes().zip(IDENTITY_PREFIX.bytes()).all(|(got, want)| {
            let got = if got == b'_' { b'-' } else { got.to_ascii_lowercase() };
            got == want
        })
}

fn identity_headers(principal: Option<&Principal>) -> Vec<(&'static str, String)> {
    let Some(p) = principal else {
        return vec![("x-auth-method", "anonymous".to_owned())];
    };
    let mut out = vec![
        ("x-auth-user-id", p.user_id.to_string()),
        ("x-auth-group", p.group.to_string()),
        ("x-auth-method", p.method.as_str().to_owned()),
        ("x-auth-permissions", p.permissions.to_string()),
    ];
    // Emails are checked when stored; one stored before that rule (or by
    // hand) that an upstream could split or misread is not forwarded.
    if crate::accounts::is_plain_email(&p.email) {
        out.push(("x-auth-email", p.email.to_string()));
    }
    // A key narrowed below every role carries none: no header, so no
    // client-sent one survives either.
    if let Some(role) = p.role {
        out.push(("x-auth-role", role.as_str().to_owned()));
    }
    if let Some(key_id) = &p.key_id {
        out.push(("x-auth-key-id", key_id.to_string()));
    }
    out
}

fn header(key: &str, value: String, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.to_owned(), value, raw_value: Vec::new() }),
        append_action: action as i32,
        ..Default::default()
    }
}

/// Set by Envoy on the Check request when it forwarded only part of the body.
const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

/// The body and what the request says about it.
///
/// Envoy adds the partial-body marker (`false` or `true`) only when it
/// buffered the body for this Check, and drops one sent by the client. A
/// request without a body, or on a route that does not buffer, has none; and
/// `transfer-encoding` is hop-by-hop, so a chunked (or HTTP/2, length-less)
/// body that was never buffered leaves no trace here at all. `inspect` refuses
/// such requests on JSON routes. Any marker but `false` is taken as a partial
/// body.
fn request_body(http: &HttpRequest) -> RequestBody<'_> {
    let partial = header_value(http, PARTIAL_BODY_HEADER);
    let content_length = header_value(http, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    RequestBody {
        bytes: if http.raw_body.is_empty() { http.body.as_bytes() } else { &http.raw_body },
        declared_size: u64::try_from(http.size).ok().max(content_length),
        content_type: header_value(http, "content-type"),
        forwarded: partial.is_some(),
        truncated: partial.is_some_and(|v| !v.trim().eq_ignore_ascii_case("false")),
        chunked: header_value(http, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")),
    }
}

fn header_value<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    headers(http).find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// The refusal Envoy sends to the client: status, JSON body, challenge.
pub fn deny(denial: &Denial) -> CheckResponse {
    deny_with(denial, metadata(&[("decision", "deny"), ("reason", denial.reason())]))
}

fn deny_with(denial: &Denial, metadata: Struct) -> CheckResponse {
    let kind = denial.kind();
    let mut headers = vec![
        header("content-type", "application/json".to_owned(), HeaderAppendAction::OverwriteIfExistsOrAdd),
        header("cache-control", "no-store".to_owned(), HeaderAppendAction::OverwriteIfExistsOrAdd),
    ];
    if let Some(challenge) = render::challenge(denial) {
        headers.push(header("www-authenticate", challenge, HeaderAppendAction::OverwriteIfExistsOrAdd));
    }
    let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd;
    if let Denial::RateLimited { limit, retry_after_seconds, reset_seconds, .. } = denial {
        headers.push(header("retry-after", retry_after_seconds.to_string(), overwrite));
        for (name, value) in render::rate_limit_headers(*limit, 0, *reset_seconds) {
            headers.push(header(name, value, overwrite));
        }
    }
    if let Denial::QuotaExceeded { retry_after_seconds, tokens, .. } = denial {
        if let Some(seconds) = retry_after_seconds {
            headers.push(header("retry-after", seconds.to_string(), overwrite));
        }
        headers.extend(tokens.map(token_headers).into_iter().flatten());
    }
    let denied = DeniedHttpResponse {
        status: Some(HttpStatus { code: i32::from(render::http_status(kind)) }),
        headers,
        body: render::denial_body(denial),
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: render::grpc_code(kind) as i32,
            message: denial.reason().to_owned(),
            details: vec![],
        }),
        dynamic_metadata: Some(metadata),
        http_response: Some(HttpResponse::DeniedResponse(denied)),
    }
}

/// `X-RateLimit-*` for the client's response (seed 003): the limit, what is
/// left, and when (Unix seconds) the bucket is full again.
fn rate_headers(rate: Outcome) -> Vec<HeaderValueOption> {
    render::rate_limit_headers(rate.limit, rate.remaining, ceil_secs(rate.reset_after))
        .into_iter()
        .map(|(name, value)| header(name, value, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect()
}

/// OpenAI's `x-ratelimit-*-tokens` for the token budget with the least left.
fn token_headers(tokens: crate::domain::budget::TokenHeaders) -> Vec<HeaderValueOption> {
    render::token_limit_headers(tokens)
        .into_iter()
        .map(|(name, value)| header(name, value, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect()
}

/// The downstream client's address, as Envoy reports it.
fn client_ip(request: &CheckRequest) -> Option<&str> {
    use envoy_types::pb::envoy::config::core::v3::address::Address;
    let address = request.attributes.as_ref()?.source.as_ref()?.address.as_ref()?.address.as_ref()?;
    match address {
        Address::SocketAddress(s) if !s.address.is_empty() => Some(s.address.as_str()),
        _ => None,
    }
}

/// Dynamic metadata (namespace `envoy.filters.http.ext_authz` in Envoy), for
/// access logs and later filters (Envoy's rate limit filter can key on it):
/// the decision, the deny reason, the route rule, who called and how, and the
/// model asked for. Empty values are left out.
fn decision_metadata(decision: &Decision) -> Struct {
    let p = decision.principal.as_ref();
    let (verdict, reason) = match &decision.verdict {
        Ok(_) => ("allow", ""),
        Err(d) => ("deny", d.reason()),
    };
    let mode = if decision.report_only { "report_only" } else { "" };
    let method = match (p, &decision.verdict) {
        (Some(p), _) => p.method.as_str(),
        (None, Ok(_)) => "anonymous",
        (None, Err(_)) => "",
    };
    let reservation = decision.reservation.as_ref();
    let budgets = reservation.map(|r| r.budgets.join(",")).unwrap_or_default();
    let reserved = reservation.map(|r| (r.prompt.to_string(), r.completion.to_string())).unwrap_or_default();
    metadata(&[
        ("reservation", reservation.map_or("", |r| &r.id)),
        ("budgets", &budgets),
        ("reserved_prompt", &reserved.0),
        ("reserved_completion", &reserved.1),
        ("decision", verdict),
        ("reason", reason),
        ("route", decision.rule.as_deref().unwrap_or("")),
        ("method", method),
        ("user_id", p.map_or("", |p| &p.user_id)),
        ("role", p.map_or("", Principal::role_name)),
        ("group", p.map_or("", |p| &p.group)),
        ("key_id", p.and_then(|p| p.key_id.as_deref()).unwrap_or("")),
        ("model", decision.model.as_deref().unwrap_or("")),
        ("mode", mode),
    ])
}

fn metadata(fields: &[(&str, &str)]) -> Struct {
    let mut map = std::collections::HashMap::with_capacity(fields.len());
    for (k, v) in fields.iter().filter(|(_, v)| !v.is_empty()) {
        map.insert((*k).to_owned(), Value { kind: Some(Kind::StringValue((*v).to_owned())) });
    }
    Struct { fields: map }
}

/// Decision counter labels: outcome, deny reason, authentication method.
type DecisionLabels = (&'static str, &'static str, &'static str);

thread_local! {
    /// Metric handles per label set, so the hot path does not look them up in
    /// the recorder's registry (hashing and locking) on every Check.
    static DECISIONS: std::cell::RefCell<std::collections::HashMap<DecisionLabels, metrics::Counter>> =
        std::cell::RefCell::default();
    static DURATION: metrics::Histogram = metrics::histogram!("gatehouse_check_duration_seconds");
}

fn record(decision: &Decision, started: std::time::Instant) {
    let labels: DecisionLabels = match &decision.verdict {
        Ok(_) => ("allow", "", decision.principal.as_ref().map_or("anonymous", |p| p.method.as_str())),
        Err(d) if decision.report_only => ("shadow_deny", d.reason(), ""),
        Err(d) => ("deny", d.reason(), ""),
    };
    DECISIONS.with_borrow_mut(|counters| {
        counters
            .entry(labels)
            .or_insert_with(|| {
                let (decision, reason, method) = labels;
                metrics::counter!(
                    "gatehouse_check_decisions_total", "decision" => decision, "reason" => reason, "method" => method
                )
            })
            .increment(1);
    });
    DURATION.with(|h| h.record(started.elapsed().as_secs_f64()));
}

fn log_decision(http: &HttpRequest, decision: &Decision) {
    use crate::telemetry::{VALUE_CAP, escape};
    if decision.verdict.is_ok() && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    // What the client sent is logged escaped and capped (the path without
    // its query string, which may carry secrets, and emails redacted).
    let path = crate::telemetry::path(&http.path);
    let path = path.as_str();
    let (request_id, method) = (escape(&http.id, VALUE_CAP), escape(&http.method, VALUE_CAP));
    let rule = decision.rule.as_deref();
    let user_id = decision.principal.as_ref().map(|p| &*p.user_id);
    let key_id = decision.principal.as_ref().and_then(|p| p.key_id.as_deref());
    match &decision.verdict {
        Ok(_) => tracing::debug!(request_id = %request_id, method = %method, path, rule, user_id, key_id, "allow"),
        Err(d) => tracing::info!(
            request_id = %request_id,
            method = %method,
            path,
            rule,
            user_id,
            key_id,
            reason = d.reason(),
            report_only = decision.report_only,
            "{}",
            if decision.report_only { "deny (report only: allowed)" } else { "deny" }
        ),
    }
}
