//! gRPC transport: Envoy's ext_authz and ext_proc services and
//! `grpc.health.v1.Health`.

pub mod admin;
pub mod ext_authz;
pub mod ext_proc;

use std::future::Future;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use admin::AdminService;
pub use ext_authz::ExtAuthz;
pub use ext_proc::ExtProc;

/// The service names health is reported for: the whole server ("") and Check.
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for service in ["", AUTHORIZATION_SERVICE] {
        reporter.set_service_status(service, status).await;
    }
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight
/// Checks finish. With `tls`, connections are TLS (mTLS when the config
/// verifies clients). Check (with metering, ext_proc, beside it), the admin
/// API or both (health always).
pub async fn serve(
    listener: TcpListener,
    tls: Option<crate::tls::SharedConfig>,
    ext_authz: Option<ExtAuthz>,
    ext_proc: Option<ExtProc>,
    admin: Option<AdminService>,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let check = ext_authz.map(|e| {
        let max_check_bytes = max_check_message_bytes(e.max_request_bytes());
        AuthorizationServer::new(e).max_decoding_message_size(max_check_bytes)
    });
    let router = tonic::transport::Server::builder()
        .add_service(health)
        .add_optional_service(check)
        .add_optional_service(ext_proc.map(ExtProc::into_server))
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

/// Headroom over the body in a Check: headers (Envoy allows 60 KiB by
/// default), the peer certificate, addresses and metadata.
const CHECK_HEADROOM_BYTES: usize = 1 << 20;

/// Body limits a reload may set without a restart, at least.
const MIN_BODY_BOUND_BYTES: usize = 32 << 20;

/// The largest Check message decoded. A Check carries the body Envoy buffered
/// (at most its `max_request_bytes`, which is kept equal to the policy's) plus
/// the request's headers. Under tonic's default of 4 MiB, a body between 4 MiB
/// and `max_request_bytes` would fail the call itself, and Envoy would answer
/// 503 instead of Gatehouse's decision. The limit is fixed when the server
/// starts, while a reload can change `max_request_bytes`, so it covers the
/// larger of the policy at start and 32 MiB, plus 1 MiB of headroom: a reload
/// up to that needs no restart; beyond it, a larger body fails closed (503)
/// until restart. Anything larger than the policy allows is refused anyway
/// (413), so the bound only caps the memory one Check can take.
fn max_check_message_bytes(max_request_bytes: usize) -> usize {
    max_request_bytes.max(MIN_BODY_BOUND_BYTES).saturating_add(CHECK_HEADROOM_BYTES)
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

    #[test]
    fn check_messages_fit_the_largest_body_plus_headers() {
        assert_eq!(max_check_message_bytes(10 << 20), (32 << 20) + (1 << 20));
        assert_eq!(max_check_message_bytes(100 << 20), (101 << 20));
        assert_eq!(max_check_message_bytes(usize::MAX), usize::MAX);
    }

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
