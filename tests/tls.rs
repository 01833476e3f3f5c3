//! TLS on both listeners and mTLS from Envoy: a real `gatehouse serve` with
//! the test CA's certificates, the REST API over HTTPS, and Check reached by
//! a real Envoy presenting a client certificate (and refused to one that
//! presents a certificate the CA did not sign).

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod common;

use common::{Envoy, Process, fixture, free_port, post_json};
use serde_json::json;
use tokio_rustls::rustls::pki_types::CertificateDer;

/// Envoy on `port`, answering every request itself after ext_authz (over
/// TLS to `grpc_port`, presenting `client` as its certificate).
fn envoy_config(port: u16, grpc_port: u16, client: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: tls
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ path: "/healthz" }}
                direct_response: {{ status: 200, body: {{ inline_string: "up" }} }}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "reached the upstream" }} }}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: {{ code: ServiceUnavailable }}
              grpc_service: {{ envoy_grpc: {{ cluster_name: gatehouse }}, timeout: 2s }}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: gatehouse
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: gatehouse
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {grpc_port} }} }} }} }}] }}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          alpn_protocols: ["h2"]
          tls_certificates:
          - certificate_chain: {{ filename: "{cert}" }}
            private_key: {{ filename: "{key}" }}
          validation_context:
            trusted_ca: {{ filename: "{ca}" }}
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: {{ exact: localhost }}
"#,
        cert = fixture(&format!("{client}.pem")),
        key = fixture(&format!("{client}.key")),
        ca = fixture("tls-ca.pem"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_api_and_mtls_from_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("g.db").display());
    let (cert, key, ca) = (fixture("tls-server.pem"), fixture("tls-server.key"), fixture("tls-ca.pem"));
    let p = Process::start_env(&[
        ("DATABASE_URL", &db),
        ("GATEHOUSE_TLS_CERT_FILE", &cert),
        ("GATEHOUSE_TLS_KEY_FILE", &key),
        ("GATEHOUSE_TLS_CLIENT_CA_FILE", &ca),
    ])
    .await;

    // The REST API speaks HTTPS (certificate checked against the test CA)...
    let https = p.http_client();
    let r = https.get(p.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // ... and nothing else.
    let plain = format!("http://127.0.0.1:{}/healthz", p.http);
    assert!(reqwest::get(&plain).await.is_err_and(|e| !e.is_status()));

    let body = json!({"email": "tls@example.com", "password": "a sound password"});
    assert_eq!(post_json(&https, &p.url("/auth/register"), None, &body).await.0, 201);
    let (_, login) = post_json(&https, &p.url("/auth/login"), None, &body).await;
    let token = login["access_token"].as_str().unwrap();
    let (status, created) = post_json(&https, &p.url("/auth/keys"), Some(token), &json!({"name": "over tls"})).await;
    assert_eq!(status, 201);
    let api_key = created["key"].as_str().unwrap();

    // Envoy with a client certificate from the CA: Checks work.
    let port = free_port();
    let envoy = Envoy::run(port, &envoy_config(port, p.grpc, "tls-client")).await;
    let client = reqwest::Client::new();
    let allowed = client.get(envoy.url("/v1/models")).header("x-api-key", api_key).send().await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.text().await.unwrap(), "reached the upstream");
    let denied = client.get(envoy.url("/v1/models")).send().await.unwrap();
    assert_eq!(denied.status(), 401, "Gatehouse's own answer, through mTLS");

    // Envoy with a certificate the CA did not sign: no Check, fail closed.
    let port = free_port();
    let stranger = Envoy::run(port, &envoy_config(port, p.grpc, "tls-stranger")).await;
    let refused = client.get(stranger.url("/v1/models")).header("x-api-key", api_key).send().await.unwrap();
    assert_eq!(refused.status(), 503);
}

#[tokio::test]
async fn bad_tls_files_stop_start_up() {
    let cases = [
        (vec![("GATEHOUSE_TLS_CERT_FILE", fixture("tls-server.pem"))], "GATEHOUSE_TLS_KEY_FILE"),
        (
            vec![
                ("GATEHOUSE_TLS_CERT_FILE", fixture("missing.pem")),
                ("GATEHOUSE_TLS_KEY_FILE", fixture("tls-server.key")),
            ],
            "missing.pem",
        ),
        (
            vec![
                ("GATEHOUSE_TLS_CERT_FILE", fixture("tls-server.pem")),
                ("GATEHOUSE_TLS_KEY_FILE", fixture("tls-client.key")),
            ],
            "GATEHOUSE_TLS_CERT_FILE",
        ),
    ];
    for (env, expected) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .env("DATABASE_URL", "sqlite::memory:")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {env:?}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
    }
}

/// Accepts any server certificate: the test looks at which one was served.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &tokio_rustls::rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<tokio_rustls::rustls::client::danger::HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<tokio_rustls::rustls::client::danger::HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate a TLS handshake with 127.0.0.1:`port` is answered with
/// (presenting the test client certificate, which the gRPC listener requires).
async fn served_certificate(port: u16) -> Vec<u8> {
    use tokio_rustls::rustls::{ClientConfig, pki_types::PrivateKeyDer, pki_types::pem::PemObject};
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client_certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(fixture("tls-client.pem")).unwrap().map(Result::unwrap).collect();
    let client_key = PrivateKeyDer::from_pem_file(fixture("tls-client.key")).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
        .with_client_auth_cert(client_certs, client_key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn certificate(name: &str) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(fixture(name)).unwrap().to_vec()
}

/// Waits (up to 10 s) until both listeners serve `expected`.
async fn until_served(p: &Process, expected: &[u8]) {
    for _ in 0..100 {
        if served_certificate(p.http).await == expected && served_certificate(p.grpc).await == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the new certificate was not served within 10 s: {}", p.logs());
}

/// A certificate and key replaced on disk (as cert-manager or a Kubernetes
/// Secret update does) are served on both listeners without a restart; files
/// that do not load (half-written, or not a certificate) are refused and the
/// running certificate stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_replaced_on_disk_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("g.db").display());
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let install = |name: &str| {
        // Not atomically, and the key first: for a moment the pair does not match.
        std::fs::copy(fixture(&format!("{name}.key")), &key).unwrap();
        std::fs::copy(fixture(&format!("{name}.pem")), &cert).unwrap();
    };
    install("tls-server");
    let p = Process::start_env(&[
        ("DATABASE_URL", &db),
        ("GATEHOUSE_TLS_CERT_FILE", cert.to_str().unwrap()),
        ("GATEHOUSE_TLS_KEY_FILE", key.to_str().unwrap()),
        ("GATEHOUSE_TLS_CLIENT_CA_FILE", &fixture("tls-ca.pem")),
    ])
    .await;
    let original = certificate("tls-server.pem");
    assert_eq!(served_certificate(p.http).await, original);
    assert_eq!(served_certificate(p.grpc).await, original);

    install("tls-stranger");
    until_served(&p, &certificate("tls-stranger.pem")).await;

    // Not a certificate: refused, the running one stays.
    let rejections = || p.logs().matches("TLS files rejected").count();
    let before = rejections();
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n").unwrap();
    for _ in 0..100 {
        if rejections() > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(rejections() > before, "{}", p.logs());
    assert_eq!(served_certificate(p.http).await, certificate("tls-stranger.pem"));
    assert_eq!(served_certificate(p.grpc).await, certificate("tls-stranger.pem"));

    // Back to the CA's certificate: a client that verifies it is served again.
    install("tls-server");
    until_served(&p, &original).await;
    let r = p.http_client().get(p.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
