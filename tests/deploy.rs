//! The shipped deployment files: Envoy configs pass the real Envoy's
//! validation, the Kubernetes, Istio and Envoy Gateway manifests parse and
//! agree with each other, the compose stack is complete, and `scripts/demo`
//! works end to end.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use gatehouse::policy::{Access, Policy, PolicySpec};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file, as JSON values.
fn yaml(path: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(&read(path))
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn envoy_binary() -> String {
    std::env::var("GATEHOUSE_TEST_ENVOY").expect("GATEHOUSE_TEST_ENVOY is not set: run scripts/test")
}

/// The paths of the shipped policy's `gatehouse-api` rule (Gatehouse's own
/// API), as written.
fn gatehouse_api_paths() -> BTreeSet<String> {
    let policy = Policy::compile(&PolicySpec::default(), &[]).unwrap();
    let rule = policy.rules().iter().find(|r| &*r.name == "gatehouse-api").expect("a gatehouse-api rule");
    assert_eq!(rule.access, Access::Public);
    assert!(rule.forward_credentials, "Gatehouse's own API needs the caller's Authorization");
    let paths: BTreeSet<String> = rule.paths().iter().map(|p| p.as_str().to_owned()).collect();
    assert!(paths.contains("/auth/*") && paths.contains("/api/v1/auth/*"), "{paths:?}");
    paths
}

/// Policy patterns (`/x/*`, `/x`) from a proxy's matches: `prefixes` match
/// the path and everything below it, `exact` ones only the path, where a
/// trailing slash is the same path (Gatehouse ignores it). Each exact pattern
/// must be there with and without the slash, or the variant would go elsewhere.
fn patterns(prefixes: &[String], exact: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = prefixes.iter().map(|p| format!("{}/*", p.trim_end_matches('/'))).collect();
    for e in exact {
        let base = e.trim_end_matches('/');
        if !prefixes.iter().any(|p| p.trim_end_matches('/') == base) {
            assert!(
                exact.contains(&base.to_owned()) && exact.contains(&format!("{base}/")),
                "{base} and {base}/ must both be matched"
            );
            out.insert(base.to_owned());
        }
    }
    out
}

/// Istio-style matches: a prefix `/x/` (Istio `prefix`, or `/x/*` in an
/// AuthorizationPolicy) needs the exact `/x` beside it to mean the policy's `/x/*`.
fn slash_prefix_patterns(prefixes: &[String], exact: &[String]) -> BTreeSet<String> {
    for p in prefixes {
        assert!(p.ends_with('/'), "{p}: a prefix without its '/' also matches {p}x");
        let base = p.trim_end_matches('/');
        assert!(exact.contains(&base.to_owned()), "{p} without the exact {base}");
    }
    patterns(prefixes, exact)
}

fn strings(values: impl IntoIterator<Item = Value>) -> Vec<String> {
    values.into_iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

/// An Envoy config's listener routes and the port of its `gatehouse_http` cluster.
fn envoy_routes(config: &Value) -> (Vec<Value>, u64) {
    let hcm = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_array().unwrap().clone();
    let clusters = config["static_resources"]["clusters"].as_array().unwrap();
    let http = clusters.iter().find(|c| c["name"] == "gatehouse_http").unwrap();
    let port = http["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        ["port_value"]
        .as_u64()
        .unwrap();
    (routes, port)
}

/// Every path of the policy's `gatehouse-api` rule goes to Gatehouse's HTTP
/// port, and nowhere else, in every shipped proxy config: sent to the
/// upstream, a login hands it the password.
#[test]
fn every_proxy_config_sends_gatehouse_api_paths_to_gatehouse() {
    let want = gatehouse_api_paths();
    let http_port = u64::from(gatehouse::config::Config::default().http_addr.port());
    assert_eq!(http_port, 8080);

    // Envoy (and its compose twin): the gatehouse_http routes come before any
    // other, skip ext_authz, and are exactly the rule's paths plus /healthz
    // (and /healthz/, which Gatehouse reads as /healthz).
    for file in ["envoy/envoy.yaml", "envoy/envoy.compose.yaml"] {
        let (routes, port) = envoy_routes(&yaml(file)[0]);
        assert_eq!(port, http_port, "{file}");
        let to_gatehouse = |r: &Value| r["route"]["cluster"] == "gatehouse_http";
        let first_other = routes.iter().position(|r| !to_gatehouse(r)).unwrap();
        assert!(routes[first_other..].iter().all(|r| !to_gatehouse(r)), "{file}: Gatehouse's routes come first");
        let (mut prefixes, mut exact) = (Vec::new(), Vec::new());
        for r in &routes[..first_other] {
            let m = &r["match"];
            assert_eq!(r["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"], true, "{file}: {m}");
            match (m["path_separated_prefix"].as_str(), m["path"].as_str()) {
                (Some(p), None) => prefixes.push(p.to_owned()),
                // Gatehouse's health page, in both spellings Gatehouse reads alike.
                (None, Some("/healthz" | "/healthz/")) => {}
                (None, Some(p)) => exact.push(p.to_owned()),
                _ => panic!("{file}: {m}: use path_separated_prefix or path (a plain prefix matches /authx too)"),
            }
        }
        assert_eq!(patterns(&prefixes, &exact), want, "{file}");
    }

    // Compose runs that Envoy config against the shipped policy.
    let compose = &yaml("docker-compose.yml")[0]["services"];
    let policy_file = compose["gatehouse"]["environment"]["GATEHOUSE_POLICY_FILE"].as_str().unwrap();
    assert!(
        compose["gatehouse"]["volumes"].as_array().unwrap().contains(&json!(format!("./policy.toml:{policy_file}:ro")))
    );
    let (_, compose_port) = envoy_routes(&yaml("envoy/envoy.compose.yaml")[0]);
    assert_eq!(compose_port, http_port);

    // Kubernetes: the Service's http port, which Istio and Envoy Gateway use.
    assert_eq!(read("deploy/kubernetes/policy.toml"), read("policy.toml"));
    let service = &yaml("deploy/kubernetes/service.yaml")[0];
    let http = service["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == "http").unwrap();
    assert_eq!(http["port"], http_port);
    let host = format!("{}.gatehouse.svc.cluster.local", service["metadata"]["name"].as_str().unwrap());

    // Istio: the ingress VirtualService routes them to Gatehouse first...
    let vs = &yaml("deploy/istio/virtual-service.yaml")[0];
    let routes = vs["spec"]["http"].as_array().unwrap();
    let api = &routes[0];
    assert_eq!(api["route"][0]["destination"]["host"], host.as_str());
    assert_eq!(api["route"][0]["destination"]["port"]["number"], http_port);
    let uris: Vec<&Value> = api["match"].as_array().unwrap().iter().map(|m| &m["uri"]).collect();
    let prefixes = strings(uris.iter().filter_map(|u| u.get("prefix").cloned()));
    let exact = strings(uris.iter().filter_map(|u| u.get("exact").cloned()));
    assert_eq!(prefixes.len() + exact.len(), uris.len(), "only exact and prefix matches: {uris:?}");
    assert_eq!(slash_prefix_patterns(&prefixes, &exact), want, "Istio VirtualService");
    for r in &routes[1..] {
        assert_ne!(r["route"][0]["destination"]["host"], host.as_str());
    }
    // ...and the inference workloads refuse them, should they arrive anyway.
    let policies = yaml("deploy/istio/authorization-policy.yaml");
    let deny = policies.iter().find(|p| p["spec"]["action"] == "DENY").expect("a DENY policy");
    let custom = policies.iter().find(|p| p["spec"]["action"] == "CUSTOM").unwrap();
    assert_eq!(deny["spec"]["selector"], custom["spec"]["selector"]);
    let paths = strings(deny["spec"]["rules"][0]["to"][0]["operation"]["paths"].as_array().unwrap().clone());
    let prefixes: Vec<String> = paths.iter().filter_map(|p| p.strip_suffix('*')).map(str::to_owned).collect();
    let exact: Vec<String> = paths.iter().filter(|p| !p.ends_with('*')).cloned().collect();
    assert_eq!(slash_prefix_patterns(&prefixes, &exact), want, "Istio DENY policy");

    // Envoy Gateway: an HTTPRoute of their own to the Service's http port,
    // which the SecurityPolicy does not target, and the grant to reach it.
    let route = &yaml("deploy/envoy-gateway/httproute.yaml")[0];
    assert_eq!(route["kind"], "HTTPRoute");
    let rule = &route["spec"]["rules"].as_array().unwrap()[0];
    assert_eq!(route["spec"]["rules"].as_array().unwrap().len(), 1);
    let backend = &rule["backendRefs"][0];
    assert_eq!((&backend["name"], &backend["namespace"]), (&service["metadata"]["name"], &json!("gatehouse")));
    assert_eq!(backend["port"], http_port);
    let matches = rule["matches"].as_array().unwrap();
    let of =
        |kind: &str| strings(matches.iter().filter(|m| m["path"]["type"] == kind).map(|m| m["path"]["value"].clone()));
    assert_eq!(of("PathPrefix").len() + of("Exact").len(), matches.len());
    assert_eq!(patterns(&of("PathPrefix"), &of("Exact")), want, "Envoy Gateway HTTPRoute");
    let gateway = yaml("deploy/envoy-gateway/security-policy.yaml");
    let security = gateway.iter().find(|d| d["kind"] == "SecurityPolicy").unwrap();
    assert_eq!(route["metadata"]["namespace"], security["metadata"]["namespace"]);
    let targets = security["spec"]["targetRefs"].as_array().unwrap();
    assert!(targets.iter().all(|t| t["name"] != route["metadata"]["name"]), "no ext auth on Gatehouse's API");
    let grant = gateway.iter().find(|d| d["kind"] == "ReferenceGrant").unwrap();
    assert!(
        grant["spec"]["from"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "HTTPRoute" && f["namespace"] == route["metadata"]["namespace"])
    );
}

/// Through the shipped Envoy, each of Gatehouse's API prefixes reaches
/// Gatehouse (its JSON answers), never the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatehouse_api_aliases_reach_gatehouse_through_envoy() {
    let gatehouse = common::TestServer::start(common::Backend::Sqlite).await;
    let envoy = common::Envoy::start(&gatehouse, common::spawn_echo().await).await;
    let http = reqwest::Client::new();
    let from_upstream = |v: &Value| v.get("headers").is_some() && v.get("path").is_some();
    let creds = json!({"email": "alias@example.com", "password": "correct horse battery"});
    let r = http.post(envoy.url("/api/v1/auth/register")).json(&creds).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert!(!from_upstream(&body), "{body}");

    for prefix in ["/auth", "/api/v1/auth", "/api/auth"] {
        let r = http
            .post(envoy.url(&format!("{prefix}/login")))
            .json(&json!({"email": "alias@example.com", "password": "wrong password here"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{prefix}/login with a wrong password");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["code"].is_string() && !from_upstream(&body), "{prefix}: {body}");

        let token =
            common::login(&envoy.url(&format!("{prefix}/login")), "alias@example.com", "correct horse battery").await;
        let me: Value = http
            .get(envoy.url(&format!("{prefix}/me")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["email"], "alias@example.com", "{prefix}/me: {me}");

        let r = http.post(envoy.url("/api/v1/oauth/validate")).json(&json!({"session_token": token})).send().await;
        let body: Value = r.unwrap().json().await.unwrap();
        assert!(!from_upstream(&body), "/api/v1/oauth/validate: {body}");
        assert_eq!(body["valid"], true, "{body}");
    }
    for path in ["/.well-known/jwks.json", "/.well-known/jwks.json/", "/auth", "/api/v1/oauth"] {
        let r = http.get(envoy.url(path)).send().await.unwrap();
        let text = r.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(!from_upstream(&body), "{path} reached the upstream: {text}");
    }
}

#[test]
fn envoy_configs_pass_envoy_validation() {
    for config in ["envoy/envoy.yaml", "envoy/envoy.compose.yaml"] {
        let out = std::process::Command::new(envoy_binary())
            .args(["--mode", "validate", "-c", &format!("{ROOT}/{config}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{config}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"), "{config}");
    }
}

/// The settings users get wrong, in the shipped Envoy config.
#[test]
fn envoy_config_has_the_settings_that_matter() {
    let config = &yaml("envoy/envoy.yaml")[0];
    let hcm = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let filter = &hcm["http_filters"][0];
    assert_eq!(filter["name"], "envoy.filters.http.ext_authz");
    let authz = &filter["typed_config"];
    assert_eq!(authz["failure_mode_allow"], false);
    assert_eq!(authz["status_on_error"]["code"], "ServiceUnavailable");
    assert_eq!(authz["grpc_service"]["timeout"], "0.5s");
    assert!(authz.get("with_request_body").is_none(), "bodies are buffered only on inference routes");
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_array().unwrap();
    let per_route = |r: &Value| r["typed_per_filter_config"]["envoy.filters.http.ext_authz"].clone();
    let with_body: Vec<String> = routes
        .iter()
        .filter(|r| !per_route(r)["check_settings"]["with_request_body"].is_null())
        .map(|r| r["match"]["path_separated_prefix"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(with_body, ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/v1/inference"]);
    for r in routes.iter().filter(|r| !per_route(r)["check_settings"].is_null()) {
        let body = &per_route(r)["check_settings"]["with_request_body"];
        assert_eq!(body["allow_partial_message"], false);
        assert_eq!(body["max_request_bytes"], 10_485_760, "equal to the default GATEHOUSE_MAX_REQUEST_BYTES");
    }
    // ext_authz is off exactly where Envoy routes to Gatehouse itself.
    for r in routes {
        assert_eq!(per_route(r)["disabled"] == true, r["route"]["cluster"] == "gatehouse_http", "{}", r["match"]);
    }
    // x_auth_role would reach a CGI/WSGI upstream as HTTP_X_AUTH_ROLE.
    assert_eq!(hcm["common_http_protocol_options"]["headers_with_underscores_action"], "REJECT_REQUEST");
    let format = &hcm["access_log"][0]["typed_config"]["log_format"];
    let log = format["text_format_source"]["inline_string"].as_str().unwrap();
    for field in ["decision", "reason", "route", "user_id", "group", "key_id", "model"] {
        assert!(log.contains(&format!("DYNAMIC_METADATA(envoy.filters.http.ext_authz:{field})")), "{field}");
    }
    // The path is logged without its query string, which may hold a credential.
    assert!(log.contains("%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%"), "{log}");
    assert!(!log.contains("%REQ(X-ENVOY-ORIGINAL-PATH") && !log.contains("%REQ(:PATH"), "{log}");
    assert_eq!(format["formatters"][0]["name"], "envoy.formatter.req_without_query");

    // Replicas restarting or dying cost no request: a Check that never reached
    // one is retried on another, and the health check notices a drain (its
    // no_traffic_interval: ext_authz's calls do not count as traffic) well
    // within the default drain delay.
    let retry = &authz["grpc_service"]["retry_policy"];
    let retry_on = retry["retry_on"].as_str().unwrap();
    for condition in ["connect-failure", "refused-stream", "reset"] {
        assert!(retry_on.split(',').any(|c| c == condition), "{retry_on}");
    }
    assert!(retry["num_retries"].as_u64().unwrap() >= 1);
    assert_eq!(retry["retry_host_predicate"][0]["name"], "envoy.retry_host_predicates.previous_hosts");
    let clusters = config["static_resources"]["clusters"].as_array().unwrap();
    let cluster = |name: &str| clusters.iter().find(|c| c["name"] == name).unwrap().clone();
    let grpc = cluster("gatehouse_grpc");
    assert!(grpc["circuit_breakers"]["thresholds"][0]["retry_budget"].is_object(), "the default allows 3 retries");
    for (name, check) in [("gatehouse_grpc", "grpc_health_check"), ("gatehouse_http", "http_health_check")] {
        let hc = &cluster(name)["health_checks"][0];
        assert!(hc[check].is_object(), "{name}");
        let interval = seconds(&hc["interval"]);
        assert!(seconds(&hc["no_traffic_interval"]) <= interval, "{name}: no_traffic_interval");
        let noticed = (interval + seconds(&hc["timeout"])) * hc["unhealthy_threshold"].as_f64().unwrap();
        let delay = gatehouse::config::DEFAULT_SHUTDOWN_DELAY.as_secs_f64();
        assert!(noticed < delay, "{name}: Envoy notices a drain in {noticed} s, the default delay is {delay} s");
    }
    assert_eq!(grpc["health_checks"][0]["grpc_health_check"]["service_name"], "envoy.service.auth.v3.Authorization");
    assert_eq!(cluster("gatehouse_http")["health_checks"][0]["http_health_check"]["path"], "/readyz");
    // Gatehouse's own API is retried only when the request was never sent: a
    // login or a key creation must not happen twice.
    for r in routes.iter().filter(|r| r["route"]["cluster"] == "gatehouse_http") {
        let retry_on = r["route"]["retry_policy"]["retry_on"].as_str().unwrap();
        assert!(retry_on.contains("connect-failure") && !retry_on.split(',').any(|c| c == "reset"), "{retry_on}");
    }
}

/// "0.5s" -> 0.5
fn seconds(duration: &Value) -> f64 {
    duration.as_str().and_then(|d| d.strip_suffix('s')).unwrap().parse().unwrap()
}

/// The compose variant is the shipped config with the clusters pointed at the
/// compose services, nothing else.
#[test]
fn compose_envoy_config_follows_the_shipped_one() {
    let expected = read("envoy/envoy.yaml")
        .replace("address: 127.0.0.1, port_value: 9191", "address: gatehouse, port_value: 9191")
        .replace("address: 127.0.0.1, port_value: 8080", "address: gatehouse, port_value: 8080")
        .replace("address: 127.0.0.1, port_value: 9000", "address: upstream, port_value: 9000");
    let compose = read("envoy/envoy.compose.yaml");
    let body: String = compose
        .lines()
        .skip_while(|l| l.starts_with("# Generated") || l.starts_with("# compose"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(body.trim_end(), expected.trim_end(), "regenerate envoy/envoy.compose.yaml from envoy/envoy.yaml");
}

#[test]
fn compose_stack_is_complete() {
    let compose = &yaml("docker-compose.yml")[0];
    let services = compose["services"].as_object().unwrap();
    for name in ["envoy", "gatehouse", "upstream", "postgres", "redis", "keycloak"] {
        assert!(services.contains_key(name), "{name}");
    }
    assert_eq!(services["keycloak"]["profiles"], json!(["oidc"]), "Keycloak is optional");
    let env = &services["gatehouse"]["environment"];
    assert!(env["DATABASE_URL"].as_str().unwrap().starts_with("postgres://"));
    assert!(env["REDIS_URL"].as_str().unwrap().starts_with("redis://"));
    assert_eq!(services["envoy"]["volumes"][0], "./envoy/envoy.compose.yaml:/etc/envoy/envoy.yaml:ro");
    for mounted in
        ["envoy/envoy.compose.yaml", "scripts/echo-upstream.py", "policy.toml", "deploy/compose/keycloak-realm.json"]
    {
        assert!(Path::new(ROOT).join(mounted).exists(), "{mounted}");
    }
    let realm: Value = serde_json::from_str(&read("deploy/compose/keycloak-realm.json")).unwrap();
    assert_eq!(realm["clients"][0]["clientId"], "gateway");

    let dockerfile = read("Dockerfile");
    assert!(dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")) >= 2, "multi-stage");
    assert!(dockerfile.contains("AS build"));
    let user = dockerfile.lines().rfind(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && !user.ends_with(" 0"), "runs as non-root: {user}");
}

#[test]
fn kubernetes_manifests_agree() {
    let dir = "deploy/kubernetes";
    let kustomization = &yaml(&format!("{dir}/kustomization.yaml"))[0];
    for resource in kustomization["resources"].as_array().unwrap() {
        assert!(Path::new(ROOT).join(dir).join(resource.as_str().unwrap()).exists(), "{resource}");
    }
    assert_eq!(read(&format!("{dir}/policy.toml")), read("policy.toml"), "the ConfigMap's policy is the shipped table");

    let deployment = &yaml(&format!("{dir}/deployment.yaml"))[0];
    assert_eq!(deployment["kind"], "Deployment");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["grpc"]["port"], 9191);
    assert_eq!(container["readinessProbe"]["grpc"]["service"], "envoy.service.auth.v3.Authorization");
    assert_eq!(container["livenessProbe"]["grpc"]["port"], 9191);
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    let ports: Vec<u64> =
        container["ports"].as_array().unwrap().iter().map(|p| p["containerPort"].as_u64().unwrap()).collect();
    assert_eq!(ports, [9191, 8080]);
    let env_from: Vec<&str> = container["envFrom"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["configMapRef"]["name"].as_str().or(e["secretRef"]["name"].as_str()).unwrap())
        .collect();
    assert_eq!(env_from, ["gatehouse", "gatehouse"]);
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "gatehouse-policy");
    assert_eq!(kustomization["configMapGenerator"][0]["name"], "gatehouse-policy");

    let config = &yaml(&format!("{dir}/configmap.yaml"))[0];
    assert_eq!(config["data"]["GATEHOUSE_POLICY_FILE"], "/etc/gatehouse/policy.toml");
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/gatehouse");
    let secret = &yaml(&format!("{dir}/secret.yaml"))[0];
    for key in ["DATABASE_URL", "REDIS_URL", "JWT_SECRET"] {
        assert!(secret["stringData"][key].is_string(), "{key}");
    }

    let service = &yaml(&format!("{dir}/service.yaml"))[0];
    assert_eq!(&service["spec"]["selector"], labels);
    let grpc = service["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == "grpc").unwrap();
    assert_eq!(grpc["port"], 9191);
    let pdb = &yaml(&format!("{dir}/pdb.yaml"))[0];
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);

    // Istio and Envoy Gateway point at that Service and port, and fail closed.
    let host = format!("{}.{}.svc.cluster.local", service["metadata"]["name"].as_str().unwrap(), "gatehouse");
    let istio = &yaml("deploy/istio/extension-provider.yaml")[0];
    let provider = &istio["spec"]["meshConfig"]["extensionProviders"][0];
    assert_eq!(provider["envoyExtAuthzGrpc"]["service"], host.as_str());
    assert_eq!(provider["envoyExtAuthzGrpc"]["port"], 9191);
    assert_eq!(provider["envoyExtAuthzGrpc"]["failOpen"], false);
    let policy = &yaml("deploy/istio/authorization-policy.yaml")[0];
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
    let gateway = yaml("deploy/envoy-gateway/security-policy.yaml");
    let security = gateway.iter().find(|d| d["kind"] == "SecurityPolicy").unwrap();
    let backend = &security["spec"]["extAuth"]["grpc"]["backendRefs"][0];
    assert_eq!(
        (&backend["name"], &backend["namespace"], &backend["port"]),
        (&json!("gatehouse"), &json!("gatehouse"), &json!(9191))
    );
    assert_eq!(security["spec"]["extAuth"]["failOpen"], false);
    // Envoy Gateway retries a Check that never reached a replica; Istio (which
    // cannot) ejects one that fails.
    let retry = &security["spec"]["extAuth"]["grpc"]["backendSettings"]["retry"];
    assert!(retry["retryOn"]["triggers"].as_array().unwrap().contains(&json!("connect-failure")));
    let rule = &yaml("deploy/istio/destination-rule.yaml")[0];
    assert_eq!(rule["spec"]["host"], host.as_str());
    assert!(rule["spec"]["trafficPolicy"]["outlierDetection"]["consecutiveGatewayErrors"].as_u64().is_some());
    // A drain fits in the grace period Kubernetes gives before SIGKILL.
    let delay: u64 = config["data"]["GATEHOUSE_SHUTDOWN_DELAY_SECONDS"].as_str().unwrap().parse().unwrap();
    assert!(delay + 10 <= pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    let grant = gateway.iter().find(|d| d["kind"] == "ReferenceGrant").unwrap();
    assert_eq!(grant["spec"]["from"][0]["namespace"], security["metadata"]["namespace"]);
}

/// `scripts/demo` end to end: the README walk-through against the stack it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_script_walk_through() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    // The ports are picked free, then released for the demo to bind: another
    // test's socket can take one meanwhile. A demo that exits before it is up
    // is started again on new ports, twice at most.
    let mut failures = Vec::new();
    let (mut demo, port) = loop {
        let attempt = dir.path().join(failures.len().to_string());
        match start_demo(&http, &attempt).await {
            Ok(started) => break started,
            Err(why) if failures.len() < 2 => failures.push(why),
            Err(why) => panic!("scripts/demo exited early, three times: {failures:?} {why}"),
        }
    };
    let demo = &mut demo.0;
    let g = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let creds = json!({"email": "me@example.com", "password": "correct horse battery"});
    assert_eq!(http.post(g("/auth/register")).json(&creds).send().await.unwrap().status(), 201);
    let token = common::login(&g("/auth/login"), "me@example.com", "correct horse battery").await;
    let r = http.post(g("/auth/keys")).bearer_auth(&token).json(&json!({"name": "demo"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();

    let r = http
        .post(g("/v1/chat/completions"))
        .header("x-api-key", &key)
        .json(&json!({"model": "llama-3", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["upstream"], "echo");
    assert_eq!(echo["headers"]["x-auth-email"], "me@example.com");
    assert_eq!(echo["headers"]["x-auth-method"], "api_key");
    assert!(echo["headers"].get("x-api-key").is_none(), "the key never reaches the upstream");

    // Five requests per window: the chat above was one.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(http.get(g("/v1/models")).header("x-api-key", &key).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429]);

    terminate(demo);
    let status = demo.wait().unwrap();
    assert!(status.success(), "scripts/demo stops cleanly on SIGTERM: {status}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(http.get(g("/healthz")).send().await.is_err(), "Envoy was stopped with the demo");
}

/// Starts `scripts/demo` on free ports, in `dir`, and waits until its gateway
/// answers; the demo (stopped when dropped) and its port, or why it exited
/// before (its error output).
async fn start_demo(http: &reqwest::Client, dir: &std::path::Path) -> Result<(StopOnDrop, u16), String> {
    std::fs::create_dir_all(dir).unwrap();
    let errors = dir.join("demo.stderr");
    let port = common::free_port();
    let demo = std::process::Command::new(format!("{ROOT}/scripts/demo"))
        .env("DEMO_PORT", port.to_string())
        .env("GATEHOUSE_HTTP_PORT", common::free_port().to_string())
        .env("GATEHOUSE_GRPC_PORT", common::free_port().to_string())
        .env("UPSTREAM_PORT", common::free_port().to_string())
        .env("ENVOY_ADMIN_PORT", common::free_port().to_string())
        .env("DEMO_DIR", dir)
        .env("DEMO_RATE_LIMIT", "5/60")
        .env("GATEHOUSE_BIN", env!("CARGO_BIN_EXE_gatehouse"))
        .env("ENVOY_BIN", envoy_binary())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap();
    // A failed assertion must not leave the demo's Envoy and Gatehouse running.
    let mut demo = StopOnDrop(demo);
    for _ in 0..300 {
        let url = format!("http://127.0.0.1:{port}/healthz");
        if http.get(url).send().await.is_ok_and(|r| r.status() == 200) {
            return Ok((demo, port));
        }
        if demo.0.try_wait().unwrap().is_some() {
            return Err(std::fs::read_to_string(&errors).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the demo gateway did not come up in 30 s");
}

/// Sends SIGTERM to a child still running when it goes out of scope.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().is_ok_and(|s| s.is_none()) {
            let _ = std::process::Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let _ = self.0.wait();
        }
    }
}

fn terminate(child: &mut std::process::Child) {
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}
