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
/// Checks finish.
pub async fn serve(
    listener: TcpListener,
    ext_authz: ExtAuthz,
    admin: AdminService,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(AuthorizationServer::new(ext_authz))
        .add_service(admin.into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
