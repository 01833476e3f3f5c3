//! The shipped deployment files: Envoy configs pass the real Envoy's
//! validation, the Kubernetes, Istio and Envoy Gateway manifests parse and
//! agree with each other, the compose stack is complete, and `scripts/demo`
//! works end to end.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use std::path::Path;
use std::time::Duration;

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
    let disabled: Vec<&Value> =
        routes.iter().filter(|r| per_route(r)["disabled"] == true).map(|r| &r["match"]).collect();
    assert_eq!(disabled, [&json!({"prefix": "/auth/"}), &json!({"path": "/healthz"})]);
    let log =
        hcm["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"].as_str().unwrap();
    for field in ["decision", "reason", "route", "user_id", "group", "key_id", "model"] {
        assert!(log.contains(&format!("DYNAMIC_METADATA(envoy.filters.http.ext_authz:{field})")), "{field}");
    }
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
    let grant = gateway.iter().find(|d| d["kind"] == "ReferenceGrant").unwrap();
    assert_eq!(grant["spec"]["from"][0]["namespace"], security["metadata"]["namespace"]);
}

/// `scripts/demo` end to end: the README walk-through against the stack it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_script_walk_through() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut demo = std::process::Command::new(format!("{ROOT}/scripts/demo"))
        .env("DEMO_PORT", port.to_string())
        .env("GATEHOUSE_HTTP_PORT", common::free_port().to_string())
        .env("GATEHOUSE_GRPC_PORT", common::free_port().to_string())
        .env("UPSTREAM_PORT", common::free_port().to_string())
        .env("ENVOY_ADMIN_PORT", common::free_port().to_string())
        .env("DEMO_DIR", dir.path())
        .env("DEMO_RATE_LIMIT", "5/60")
        .env("GATEHOUSE_BIN", env!("CARGO_BIN_EXE_gatehouse"))
        .env("ENVOY_BIN", envoy_binary())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let g = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..300 {
        if http.get(g("/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        assert!(demo.try_wait().unwrap().is_none(), "scripts/demo exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the demo gateway did not come up in 30 s");

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

    terminate(&mut demo);
    let status = demo.wait().unwrap();
    assert!(status.success(), "scripts/demo stops cleanly on SIGTERM: {status}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(http.get(g("/healthz")).send().await.is_err(), "Envoy was stopped with the demo");
}

fn terminate(child: &mut std::process::Child) {
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}
