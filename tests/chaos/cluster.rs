//! The replicas (started, killed, drained, restarted in place), the shipped
//! Envoy config in front of them over mTLS, and direct TLS clients for the
//! probes and the gRPC admin API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use gatehouse::grpc::admin::pb::key_admin_client::KeyAdminClient;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tonic::transport::{Channel, Endpoint};

use crate::common::{Envoy, Process, free_port};
use crate::services::Certs;
use crate::world::World;

pub const REPLICAS: usize = 3;

pub struct Replicas {
    pub ports: Vec<(u16, u16)>,
    procs: Vec<Option<Process>>,
    env: Vec<(String, String)>,
    /// The logs of replica processes that are gone.
    past: Vec<String>,
}

impl Replicas {
    pub fn new(env: Vec<(String, String)>) -> Replicas {
        Replicas {
            ports: (0..REPLICAS).map(|_| (free_port(), free_port())).collect(),
            procs: (0..REPLICAS).map(|_| None).collect(),
            env,
            past: Vec::new(),
        }
    }

    /// Starts replica `i`, retrying while it cannot start (its database is
    /// down, say) for up to `patience`.
    pub async fn start(&mut self, i: usize, world: &World, patience: Duration) {
        let (grpc, http) = self.ports[i];
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let started = std::time::Instant::now();
        loop {
            match Process::try_start_at(grpc, http, &env).await {
                Ok(p) => {
                    self.procs[i] = Some(p);
                    world.replica_up(i);
                    return;
                }
                Err(e) if started.elapsed() < patience => {
                    world.note(format!("replica {i} did not start, trying again: {}", first_line(&e)));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => panic!("replica {i} did not start: {e}"),
            }
        }
    }

    pub fn kill(&mut self, i: usize, world: &World) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill();
            world.replica_down(i);
            self.past.push(format!("--- replica {i}, killed at {:.1} s\n{}", world.now(), p.logs()));
        }
    }

    /// SIGTERM and the drain; whether it exited 0.
    pub async fn terminate(&mut self, i: usize, world: &World) -> bool {
        let Some(mut p) = self.procs[i].take() else { return true };
        let status = p.terminate().await;
        world.replica_down(i);
        self.past.push(format!("--- replica {i}, stopped at {:.1} s ({status})\n{}", world.now(), p.logs()));
        if !status.success() {
            world.note(format!("replica {i} exited with {status} after SIGTERM: {}", p.logs()));
        }
        status.success()
    }

    /// Every replica process's log, the gone ones first.
    pub fn logs(&self) -> String {
        let running = self
            .procs
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some(format!("--- replica {i}, running\n{}", p.as_ref()?.logs())));
        self.past.iter().cloned().chain(running).collect::<Vec<_>>().join("\n")
    }
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s)
}

/// The shipped Envoy config in front of the replicas, with both Gatehouse
/// clusters speaking TLS to them (mTLS for Checks), trusting the run's CA.
pub async fn envoy(replicas: &Replicas, upstream: SocketAddr, certs: &Certs) -> Envoy {
    let grpc: Vec<u16> = replicas.ports.iter().map(|p| p.0).collect();
    let http: Vec<u16> = replicas.ports.iter().map(|p| p.1).collect();
    let (port, config) = Envoy::replicas_config(&grpc, &http, upstream);
    let tls = |alpn: &str| {
        format!(
            r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          {alpn}
          tls_certificates:
          - certificate_chain: {{ filename: "{cert}" }}
            private_key: {{ filename: "{key}" }}
          validation_context:
            trusted_ca: {{ filename: "{ca}" }}
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: {{ exact: localhost }}
"#,
            cert = certs.path("client.pem"),
            key = certs.path("client.key"),
            ca = certs.path("ca.pem"),
        )
    };
    let mut out = String::new();
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        match line.trim() {
            "- name: gatehouse_grpc" => out.push_str(&tls(r#"alpn_protocols: ["h2"]"#)),
            "- name: gatehouse_http" => out.push_str(&tls(r#"alpn_protocols: ["http/1.1"]"#)),
            _ => {}
        }
    }
    assert!(out.matches("UpstreamTlsContext").count() == 2, "both Gatehouse clusters found");
    Envoy::run(port, &out).await
}

/// A TLS client trusting the run's CA, presenting Envoy's client certificate.
pub fn client_tls(certs: &Certs, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.path("client.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(certs.path("client.key")).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

async fn tls_connect(port: u16, tls: Arc<ClientConfig>) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(("127.0.0.1", port))).await??;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(Duration::from_secs(2), TlsConnector::from(tls).connect(name, tcp)).await?
}

/// The certificate the listener on `port` serves now (verified against the CA).
pub async fn served_certificate(port: u16, tls: Arc<ClientConfig>) -> Option<Vec<u8>> {
    let stream = tls_connect(port, tls).await.ok()?;
    Some(stream.get_ref().1.peer_certificates()?.first()?.to_vec())
}

/// A gRPC channel to a replica's Check port over mTLS.
pub async fn grpc_channel(port: u16, tls: Arc<ClientConfig>) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let tls = tls.clone();
        async move { tls_connect(port, tls).await.map(hyper_util::rt::TokioIo::new) }
    });
    Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
}

pub async fn admin_client(port: u16, tls: Arc<ClientConfig>) -> Option<KeyAdminClient<Channel>> {
    Some(KeyAdminClient::new(grpc_channel(port, tls).await.ok()?))
}

pub async fn check_client(port: u16, tls: Arc<ClientConfig>) -> Option<AuthorizationClient<Channel>> {
    Some(AuthorizationClient::new(grpc_channel(port, tls).await.ok()?))
}
