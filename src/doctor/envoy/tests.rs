use super::*;
use crate::policy::PolicySpec;

fn shipped() -> Value {
    parse(include_str!("../../../envoy/envoy.yaml")).unwrap()
}

fn policy() -> Policy {
    Policy::compile(&PolicySpec::default(), &[]).unwrap()
}

fn status(findings: &[Finding], name: &str) -> Status {
    findings.iter().find(|f| f.check == name).unwrap_or_else(|| panic!("{name}: {findings:?}")).status
}

#[test]
fn the_shipped_config_passes() {
    let findings = check(&shipped(), &policy(), 8080);
    assert!(findings.iter().all(|f| f.status == Status::Ok), "{findings:#?}");
    assert_eq!(findings.len(), 4);
}

#[test]
fn matches_as_envoy_does() {
    let m = |v: Value| v;
    assert_eq!(hits(&m(serde_json::json!({"path_separated_prefix": "/auth"})), "/auth/login"), Hit::Yes);
    assert_eq!(hits(&m(serde_json::json!({"path_separated_prefix": "/auth"})), "/auth"), Hit::Yes);
    assert_eq!(hits(&m(serde_json::json!({"path_separated_prefix": "/auth"})), "/authx"), Hit::No);
    assert_eq!(hits(&m(serde_json::json!({"prefix": "/auth"})), "/authx"), Hit::Yes);
    assert_eq!(hits(&m(serde_json::json!({"path": "/a", "case_sensitive": false})), "/A"), Hit::Yes);
    assert_eq!(hits(&m(serde_json::json!({"safe_regex": {"regex": ".*"}})), "/a"), Hit::Maybe);
    let with_header = serde_json::json!({"prefix": "/", "headers": [{"name": "x", "present_match": true}]});
    assert_eq!(hits(&with_header, "/a"), Hit::Maybe);
    let templated = PathPattern::parse("/v1/threads/{id}/runs/*").unwrap();
    assert_eq!(probes(&templated), ["/v1/threads/x/runs", "/v1/threads/x/runs/login"]);
}

#[test]
fn an_api_path_sent_upstream_fails() {
    let mut config = shipped();
    let routes = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"]
        .as_array_mut()
        .unwrap();
    routes.remove(1); // /api/v1/auth
    let findings = check(&config, &policy(), 8080);
    assert_eq!(status(&findings, "envoy Gatehouse API"), Status::Fail);
    let f = findings.iter().find(|f| f.check == "envoy Gatehouse API").unwrap();
    assert!(f.message.contains("/api/v1/auth: gateway sends it to upstream"), "{}", f.message);
}
