//! An Envoy configuration next to the route policy: what `gatehouse doctor
//! --envoy FILE` checks, and what the suite asks of the shipped configs.
//!
//! * Every path of the policy's `gatehouse-api` rule (Gatehouse's own API:
//!   login, register, sessions, keys) reaches Gatehouse's HTTP API, and no
//!   other cluster: sent to the upstream, a login hands it the password.
//! * Every path of a `body = "json"` rule is buffered and sent with the Check
//!   (`with_request_body`, never a partial body); otherwise Gatehouse refuses
//!   its POSTs (400, "not forwarded for inspection").
//! * ext_authz fails closed (`failure_mode_allow: false`).
//! * Access logs print paths without their query strings, which may carry a
//!   credential (`credential_query`).
//!
//! Routes are read from the static listeners' inline route configurations
//! (YAML or JSON, anchors included); routes from RDS cannot be checked.

use serde_json::Value;

use super::{Finding, Status};
use crate::policy::{PathPattern, Policy};

/// The policy rule naming Gatehouse's own API.
pub const API_RULE: &str = "gatehouse-api";

/// Parses an Envoy bootstrap (YAML or JSON).
pub fn parse(text: &str) -> Result<Value, String> {
    serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
}

/// One HTTP connection manager of a static listener.
struct Manager<'a> {
    listener: String,
    hcm: &'a Value,
}

fn managers(config: &Value) -> Vec<Manager<'_>> {
    let mut out = Vec::new();
    for listener in array(&config["static_resources"]["listeners"]) {
        let name = listener["name"].as_str().unwrap_or("(unnamed listener)").to_owned();
        let chains = array(&listener["filter_chains"]).iter().chain(std::iter::once(&listener["default_filter_chain"]));
        for chain in chains {
            for filter in array(&chain["filters"]) {
                let typed = &filter["typed_config"];
                if filter["name"] == "envoy.filters.network.http_connection_manager"
                    || type_is(typed, "http_connection_manager.v3.HttpConnectionManager")
                {
                    out.push(Manager { listener: name.clone(), hcm: typed });
                }
            }
        }
    }
    out
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn type_is(typed: &Value, suffix: &str) -> bool {
    typed["@type"].as_str().is_some_and(|t| t.ends_with(suffix))
}

fn ext_authz_filter(hcm: &Value) -> Option<&Value> {
    array(&hcm["http_filters"])
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.ext_authz" || type_is(&f["typed_config"], "ext_authz.v3.ExtAuthz"))
        .map(|f| &f["typed_config"])
}

/// The per-route (or per-virtual-host) ext_authz settings.
fn per_route<'a>(route: &'a Value, vhost: &'a Value) -> &'a Value {
    let key = "envoy.filters.http.ext_authz";
    let own = &route["typed_per_filter_config"][key];
    if own.is_null() { &vhost["typed_per_filter_config"][key] } else { own }
}

/// Whether a route's match takes `path`: yes, no, or maybe (header, query or
/// regex matchers this check does not evaluate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hit {
    Yes,
    No,
    Maybe,
}

fn hits(m: &Value, path: &str) -> Hit {
    let insensitive = m["case_sensitive"] == false;
    let (p, fold) = if insensitive { (path.to_ascii_lowercase(), true) } else { (path.to_owned(), false) };
    let norm = |s: &str| if fold { s.to_ascii_lowercase() } else { s.to_owned() };
    let path_hit = if let Some(prefix) = m["prefix"].as_str() {
        p.starts_with(&norm(prefix))
    } else if let Some(exact) = m["path"].as_str() {
        p == norm(exact)
    } else if let Some(prefix) = m["path_separated_prefix"].as_str() {
        let prefix = norm(prefix);
        p == prefix || p.starts_with(&format!("{prefix}/"))
    } else {
        // safe_regex, path_match_policy, connect_matcher: not evaluated here.
        return Hit::Maybe;
    };
    if !path_hit {
        return Hit::No;
    }
    let conditional = ["headers", "query_parameters", "grpc", "runtime_fraction", "dynamic_metadata", "tls_context"]
        .iter()
        .any(|k| !m[k].is_null());
    if conditional { Hit::Maybe } else { Hit::Yes }
}

/// Where a route sends requests.
fn clusters(route: &Value) -> Vec<String> {
    let action = &route["route"];
    if let Some(c) = action["cluster"].as_str() {
        return vec![c.to_owned()];
    }
    array(&action["weighted_clusters"]["clusters"])
        .iter()
        .filter_map(|c| c["name"].as_str())
        .map(str::to_owned)
        .collect()
}

fn describe(route: &Value) -> String {
    let m = &route["match"];
    for k in ["path_separated_prefix", "prefix", "path"] {
        if let Some(v) = m[k].as_str() {
            return format!("{k}: {v}");
        }
    }
    serde_json::to_string(m).unwrap_or_default()
}

/// The clusters that reach Gatehouse's HTTP API: named `gatehouse_http`, or
/// with an endpoint on its port, other than ext_authz's own gRPC cluster.
fn gatehouse_http_clusters(config: &Value, http_port: u16, grpc_clusters: &[String]) -> Vec<String> {
    array(&config["static_resources"]["clusters"])
        .iter()
        .filter(|c| {
            let name = c["name"].as_str().unwrap_or("");
            if grpc_clusters.iter().any(|g| g == name) {
                return false;
            }
            let ports = array(&c["load_assignment"]["endpoints"])
                .iter()
                .flat_map(|e| array(&e["lb_endpoints"]))
                .filter_map(|e| e["endpoint"]["address"]["socket_address"]["port_value"].as_u64());
            name == "gatehouse_http" || ports.into_iter().any(|p| p == u64::from(http_port))
        })
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Concrete paths a policy pattern covers, to try against the routes.
fn probes(pattern: &PathPattern) -> Vec<String> {
    let source = pattern.as_str();
    let (base, prefix) = match source.strip_suffix("/*") {
        Some(base) => (base, true),
        None => (source, false),
    };
    let filled: String = base
        .split('/')
        .map(|s| if s.starts_with('{') && s.ends_with('}') { "x" } else { s })
        .collect::<Vec<_>>()
        .join("/");
    let base = if filled.is_empty() { "/".to_owned() } else { filled };
    let below = format!("{}/login", base.trim_end_matches('/'));
    if prefix { vec![base, below] } else { vec![base.clone(), format!("{}/", base.trim_end_matches('/'))] }
}

/// The route each virtual host of `hcm` picks for `path`, with the routes
/// that might take it first (conditional matchers).
struct Routed<'a> {
    vhost: &'a Value,
    route: Option<&'a Value>,
    maybe_before: Vec<&'a Value>,
}

fn route_for<'a>(hcm: &'a Value, path: &str) -> Vec<Routed<'a>> {
    array(&hcm["route_config"]["virtual_hosts"])
        .iter()
        .map(|vhost| {
            let mut maybe_before = Vec::new();
            let mut route = None;
            for r in array(&vhost["routes"]) {
                match hits(&r["match"], path) {
                    Hit::Yes => {
                        route = Some(r);
                        break;
                    }
                    Hit::Maybe => maybe_before.push(r),
                    Hit::No => {}
                }
            }
            Routed { vhost, route, maybe_before }
        })
        .collect()
}

/// Every Envoy check, one finding each.
pub fn check(config: &Value, policy: &Policy, http_port: u16) -> Vec<Finding> {
    let managers = managers(config);
    if managers.is_empty() {
        return vec![Finding::new(
            "envoy",
            Status::Fail,
            "no HTTP connection manager in static_resources.listeners",
            Some("give --envoy the bootstrap file Envoy runs (-c)"),
        )];
    }
    let mut findings = Vec::new();
    let rds: Vec<&str> =
        managers.iter().filter(|m| m.hcm["route_config"].is_null()).map(|m| m.listener.as_str()).collect();
    if !rds.is_empty() {
        findings.push(Finding::new(
            "envoy routes",
            Status::Warn,
            format!("listener {} takes its routes from RDS: not checked", rds.join(", ")),
            Some("check the route configuration your control plane serves"),
        ));
    }
    findings.push(fails_closed(&managers));
    let grpc_clusters: Vec<String> = managers
        .iter()
        .filter_map(|m| ext_authz_filter(m.hcm))
        .filter_map(|f| f["grpc_service"]["envoy_grpc"]["cluster_name"].as_str())
        .map(str::to_owned)
        .collect();
    let gatehouse = gatehouse_http_clusters(config, http_port, &grpc_clusters);
    findings.push(api_routes(&managers, policy, &gatehouse, http_port));
    findings.push(json_bodies(&managers, policy, &gatehouse));
    findings.push(access_logs(config, &managers));
    findings
}

fn fails_closed(managers: &[Manager<'_>]) -> Finding {
    let mut problems = Vec::new();
    for m in managers {
        match ext_authz_filter(m.hcm) {
            None => problems.push(format!("listener {} has no ext_authz filter", m.listener)),
            Some(f) if f["failure_mode_allow"] == true => {
                problems.push(format!("listener {}: failure_mode_allow is true", m.listener));
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Finding::new("envoy fail closed", Status::Ok, "ext_authz on every listener, failure_mode_allow: false", None)
    } else {
        Finding::new(
            "envoy fail closed",
            Status::Fail,
            problems.join("; "),
            Some("set failure_mode_allow: false (and status_on_error: 503) on the ext_authz filter of every listener"),
        )
    }
}

fn api_routes(managers: &[Manager<'_>], policy: &Policy, gatehouse: &[String], http_port: u16) -> Finding {
    const NAME: &str = "envoy Gatehouse API";
    let Some(rule) = policy.rules().iter().find(|r| &*r.name == API_RULE) else {
        return Finding::new(NAME, Status::Skip, format!("the policy has no `{API_RULE}` rule"), None);
    };
    if gatehouse.is_empty() {
        return Finding::new(
            NAME,
            Status::Fail,
            format!("no cluster reaches Gatehouse's HTTP port ({http_port})"),
            Some("add a cluster for Gatehouse's HTTP API (gatehouse_http in envoy/envoy.yaml) and route the API to it"),
        );
    }
    let mut problems = Vec::new();
    for pattern in rule.paths() {
        for path in probes(pattern) {
            let mut reached = false;
            for m in managers {
                for routed in route_for(m.hcm, &path) {
                    let vhost = routed.vhost["name"].as_str().unwrap_or("?");
                    for maybe in &routed.maybe_before {
                        if clusters(maybe).iter().any(|c| !gatehouse.contains(c)) {
                            problems.push(format!("{path}: route ({}) of {vhost} may take it first", describe(maybe)));
                        }
                    }
                    let Some(route) = routed.route else { continue };
                    let to = clusters(route);
                    if to.is_empty() {
                        problems.push(format!("{path}: {vhost} answers it without Gatehouse ({})", describe(route)));
                    } else if let Some(other) = to.iter().find(|c| !gatehouse.contains(c)) {
                        problems.push(format!("{path}: {vhost} sends it to {other} ({})", describe(route)));
                    } else {
                        reached = true;
                    }
                }
            }
            if !reached && !problems.iter().any(|p| p.starts_with(&format!("{path}: "))) {
                problems.push(format!("{path}: no route sends it to Gatehouse"));
            }
        }
    }
    problems.dedup();
    if problems.is_empty() {
        let paths: Vec<&str> = rule.paths().iter().map(PathPattern::as_str).collect();
        Finding::new(NAME, Status::Ok, format!("{} reach {} only", paths.join(" "), gatehouse.join(", ")), None)
    } else {
        let shown: Vec<String> = problems.iter().take(4).cloned().collect();
        let more = if problems.len() > 4 { format!(" (and {} more)", problems.len() - 4) } else { String::new() };
        Finding::new(
            NAME,
            Status::Fail,
            format!("{}{more}", shown.join("; ")),
            Some(
                "route every path of the policy's gatehouse-api rule to Gatehouse's HTTP cluster, before any other \
                 route (path_separated_prefix for /x/*, path for exact paths); anywhere else, a login hands the \
                 password to the upstream",
            ),
        )
    }
}

fn json_bodies(managers: &[Manager<'_>], policy: &Policy, gatehouse: &[String]) -> Finding {
    const NAME: &str = "envoy JSON bodies";
    let json_rules: Vec<_> = policy.rules().iter().filter(|r| r.body.is_some()).collect();
    if json_rules.is_empty() {
        return Finding::new(NAME, Status::Skip, "the policy has no body = \"json\" rule", None);
    }
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    for rule in &json_rules {
        for pattern in rule.paths() {
            // One finding per pattern is enough.
            let before = problems.len();
            for path in probes(pattern) {
                if problems.len() > before {
                    break;
                }
                for m in managers {
                    let Some(filter) = ext_authz_filter(m.hcm) else { continue };
                    for routed in route_for(m.hcm, &path) {
                        let Some(route) = routed.route else { continue };
                        if clusters(route).iter().all(|c| gatehouse.contains(c)) {
                            continue;
                        }
                        let settings = per_route(route, routed.vhost);
                        let where_ = format!("{path} ({}, rule {})", describe(route), rule.name);
                        if settings["disabled"] == true {
                            problems.push(format!("{where_}: ext_authz is disabled"));
                            continue;
                        }
                        let own = &settings["check_settings"]["with_request_body"];
                        let body = if own.is_null() { &filter["with_request_body"] } else { own };
                        if body.is_null() || settings["check_settings"]["disable_request_body_buffering"] == true {
                            problems.push(format!("{where_}: the body is not sent with the Check"));
                        } else if body["allow_partial_message"] == true {
                            problems.push(format!("{where_}: allow_partial_message is true"));
                        } else if let Some(max) = body["max_request_bytes"].as_u64()
                            && max != policy.max_request_bytes as u64
                        {
                            notes.push(format!(
                                "{path}: Envoy buffers up to {max} bytes, the policy allows {}",
                                policy.max_request_bytes
                            ));
                        }
                    }
                }
            }
        }
    }
    problems.dedup();
    notes.dedup();
    if !problems.is_empty() {
        let more = if problems.len() > 4 { format!(" (and {} more)", problems.len() - 4) } else { String::new() };
        return Finding::new(
            NAME,
            Status::Fail,
            format!("{}{more}", problems.into_iter().take(4).collect::<Vec<_>>().join("; ")),
            Some(
                "on every route of a body = \"json\" rule set ext_authz check_settings.with_request_body \
                 {max_request_bytes: GATEHOUSE_MAX_REQUEST_BYTES, allow_partial_message: false, pack_as_bytes: true}; \
                 without it Gatehouse refuses their POSTs (400)",
            ),
        );
    }
    if !notes.is_empty() {
        return Finding::new(
            NAME,
            Status::Warn,
            notes.into_iter().take(2).collect::<Vec<_>>().join("; "),
            Some("keep with_request_body.max_request_bytes equal to GATEHOUSE_MAX_REQUEST_BYTES"),
        );
    }
    let names: Vec<&str> = json_rules.iter().map(|r| &*r.name).collect();
    Finding::new(NAME, Status::Ok, format!("buffered whole on every route of {}", names.join(", ")), None)
}

/// Command operators that print the path with its query string.
fn logs_query(format: &str) -> Option<&'static str> {
    let upper = format.to_ascii_uppercase();
    if upper.contains("%REQ(:PATH") || upper.contains("%REQ(X-ENVOY-ORIGINAL-PATH") {
        return Some("%REQ(:PATH)%");
    }
    if let Some(at) = upper.find("%PATH") {
        let rest = &upper[at + 5..];
        if !(rest.starts_with("(NQ") || rest.starts_with("(NQ:")) {
            return Some("%PATH%");
        }
    }
    None
}

fn access_logs(config: &Value, managers: &[Manager<'_>]) -> Finding {
    const NAME: &str = "envoy access log";
    let mut logs: Vec<(String, &Value)> = Vec::new();
    for m in managers {
        logs.extend(array(&m.hcm["access_log"]).iter().map(|l| (format!("listener {}", m.listener), l)));
    }
    for listener in array(&config["static_resources"]["listeners"]) {
        let name = listener["name"].as_str().unwrap_or("?");
        logs.extend(array(&listener["access_log"]).iter().map(|l| (format!("listener {name} (connections)"), l)));
    }
    let mut problems = Vec::new();
    for (whose, log) in &logs {
        let typed = &log["typed_config"];
        let format = &typed["log_format"];
        let file_like = ["stream.v3.StdoutAccessLog", "stream.v3.StderrAccessLog", "file.v3.FileAccessLog"]
            .iter()
            .any(|t| type_is(typed, t));
        if !file_like {
            problems.push(format!("{whose}: a {} logger, which may record query strings", typed["@type"]));
            continue;
        }
        let text = [
            typed["format"].as_str(),
            format["text_format"].as_str(),
            format["text_format_source"]["inline_string"].as_str(),
        ]
        .into_iter()
        .flatten()
        .map(str::to_owned)
        .chain(format["json_format"].as_object().map(|o| serde_json::to_string(o).unwrap_or_default()))
        .collect::<Vec<_>>();
        if text.is_empty() {
            problems.push(format!("{whose}: Envoy's default format, which prints the path with its query string"));
        }
        for t in &text {
            if let Some(op) = logs_query(t) {
                problems.push(format!("{whose}: {op} prints the query string"));
            }
        }
    }
    if problems.is_empty() {
        let what = if logs.is_empty() { "no access log" } else { "paths logged without query strings" };
        Finding::new(NAME, Status::Ok, what, None)
    } else {
        Finding::new(
            NAME,
            Status::Fail,
            problems.join("; "),
            Some(
                "log %REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)% (formatter envoy.formatter.req_without_query) \
                 or %PATH(NQ)%: a query string may carry an API key",
            ),
        )
    }
}

#[cfg(test)]
mod tests;
