//! gRPC transport: Envoy's ext_authz service and `grpc.health.v1.Health`.

pub mod admin;
pub mod ext_authz;

use std::future::Future;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use admin::AdminService;
pub use ext_authz::ExtAuthz;

/// The service names health is reported for: the whole server ("") and Check.
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for service in ["", AUTHORIZATION_SERVICE] {
        reporter.set_service_status(service, status).await;
    }
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight
/// Checks finish. With `tls`, connections are TLS (mTLS when the config
/// verifies clients).
pub async fn serve(
    listener: TcpListener,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    ext_authz: Option<ExtAuthz>,
    admin: Option<AdminService>,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let router = tonic::transport::Server::builder()
        .add_service(health)
        .add_optional_service(ext_authz.map(AuthorizationServer::new))
        .add_optional_service(admin.map(AdminService::into_server));
    match tls {
        None => router.serve_with_incoming_shutdown(incoming(listener), shutdown).await,
        Some(config) => {
            use tokio_stream::StreamExt;
            let connections = tokio_stream::wrappers::ReceiverStream::new(crate::tls::accept(listener, config))
                .map(|(stream, _)| Ok::<_, std::io::Error>(stream));
            router.serve_with_incoming_shutdown(connections, shutdown).await
        }
    }
}

/// Accepted connections with `TCP_NODELAY`. (`Server::tcp_nodelay` applies only
/// to listeners tonic binds itself.) Without it, a small response waits for
/// the client's delayed ACK: ~40 ms per Check instead of microseconds.
fn incoming(listener: TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_delayed_acks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server_side = accepted.next().await.unwrap().unwrap();
        assert!(server_side.nodelay().unwrap());
    }
}
