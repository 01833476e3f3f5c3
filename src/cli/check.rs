//! `gatehouse check`: one Check against a running server, as Envoy would send it.

use super::*;

/// What `gatehouse check` prints.
#[derive(Debug, Serialize)]
pub(super) struct CheckReport {
    decision: &'static str,
    grpc_code: i32,
    http_status: Option<i32>,
    /// Set for the upstream on allow.
    upstream_headers: std::collections::BTreeMap<String, String>,
    removed_headers: Vec<String>,
    /// Added to the client's response (allow) or sent with the denial.
    response_headers: std::collections::BTreeMap<String, String>,
    body: Option<serde_json::Value>,
}

/// Sends one Check; `Ok(true)` when allowed.
pub async fn run_check(json: bool, args: CheckArgs) -> anyhow::Result<bool> {
    use envoy_types::ext_authz::v3::pb::{HeaderValueOption, HttpResponse};
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, attribute_context};

    let mut headers = std::collections::HashMap::new();
    for h in &args.headers {
        let (name, value) = h.split_once(':').ok_or_else(|| anyhow::anyhow!("header {h:?} is not 'name: value'"))?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let body = match args.body.as_deref() {
        Some(b) => match b.strip_prefix('@') {
            Some(file) => std::fs::read(file).map_err(|e| anyhow::anyhow!("--body {b}: {e}"))?,
            None => b.as_bytes().to_vec(),
        },
        None => Vec::new(),
    };
    let http = attribute_context::HttpRequest {
        method: args.method.to_uppercase(),
        path: args.path.clone(),
        host: args.host.clone(),
        headers,
        size: if args.body.is_some() { i64::try_from(body.len())? } else { -1 },
        raw_body: body,
        ..Default::default()
    };
    let source = args.client_ip.map(|ip| attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress { address: ip, ..Default::default() })),
        }),
        ..Default::default()
    });
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            source,
            request: Some(attribute_context::Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    };
    let mut client = AuthorizationClient::connect(args.addr.clone()).await?;
    let response = client.check(request).await?.into_inner();
    let grpc_code = response.status.as_ref().map_or(-1, |s| s.code);
    let pairs = |hs: &[HeaderValueOption]| {
        hs.iter().filter_map(|h| h.header.as_ref()).map(|h| (h.key.clone(), h.value.clone())).collect()
    };
    let report = match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) if grpc_code == 0 => CheckReport {
            decision: "allow",
            grpc_code,
            http_status: None,
            upstream_headers: pairs(&ok.headers),
            removed_headers: ok.headers_to_remove.clone(),
            response_headers: pairs(&ok.response_headers_to_add),
            body: None,
        },
        Some(HttpResponse::DeniedResponse(d)) => CheckReport {
            decision: "deny",
            grpc_code,
            http_status: d.status.as_ref().map(|s| s.code),
            upstream_headers: Default::default(),
            removed_headers: Vec::new(),
            response_headers: pairs(&d.headers),
            body: serde_json::from_str(&d.body).ok(),
        },
        _ => CheckReport {
            decision: "deny",
            grpc_code,
            http_status: None,
            upstream_headers: Default::default(),
            removed_headers: Vec::new(),
            response_headers: Default::default(),
            body: None,
        },
    };
    let allowed = report.decision == "allow";
    print(json, &report, || {
        let mut lines = vec![match report.http_status {
            Some(status) => format!("{} ({status})", report.decision),
            None => report.decision.to_owned(),
        }];
        lines.extend(report.upstream_headers.iter().map(|(k, v)| format!("  upstream {k}: {v}")));
        lines.extend(report.removed_headers.iter().map(|k| format!("  removed  {k}")));
        lines.extend(report.response_headers.iter().map(|(k, v)| format!("  response {k}: {v}")));
        if let Some(body) = &report.body {
            lines.push(format!("  body {body}"));
        }
        lines.join("\n")
    })?;
    Ok(allowed)
}
