//! Attacks: whoever reaches the Check port directly. The admin API can be
//! moved off it, and client addresses are bucketed so one client cannot spend
//! another's anonymous budget by spelling its address differently, nor escape
//! the limit by leaving the address out.

use gatehouse::grpc::admin::pb;
use gatehouse::grpc::admin::pb::key_admin_client::KeyAdminClient;
use gatehouse::ratelimit::Limit;

use crate::common::{Backend, TestServer, check_request, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_can_listen_apart_from_check() {
    let admin_port = free_port();
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.admin_grpc_addr = Some(format!("127.0.0.1:{admin_port}").parse().unwrap());
    })
    .await;
    let (_, key) = s.user_with_key("root@example.com", gatehouse::domain::Role::Admin, None).await;
    let list = || {
        let mut r = tonic::Request::new(pb::ListKeysRequest::default());
        r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        r
    };
    // Not on the Check port...
    let mut on_check = KeyAdminClient::connect(format!("http://{}", s.grpc)).await.unwrap();
    assert_eq!(on_check.list_keys(list()).await.unwrap_err().code(), tonic::Code::Unimplemented);
    // ...but on its own.
    let mut apart = None;
    for _ in 0..100 {
        if let Ok(c) = KeyAdminClient::connect(format!("http://127.0.0.1:{admin_port}")).await {
            apart = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let keys = apart.unwrap().list_keys(list()).await.unwrap().into_inner();
    assert_eq!(keys.keys.len(), 1);
    // Check still answers on the Check port.
    assert!(s.check("GET", "/healthz", &[]).await.allowed());
    s.finish().await;
}

fn from(address: Option<&str>) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
    let mut request = check_request("POST", "/auth/login", &[]);
    let attributes = request.attributes.as_mut().unwrap();
    let peer = attributes.source.get_or_insert_with(Default::default);
    peer.address = address.map(|a| Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: a.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(4000)),
            ..Default::default()
        })),
    });
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_budgets_follow_the_address_not_its_spelling() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.anonymous_limit = Some(Limit::from_parts(Some(2), Some(3600), None).unwrap());
    })
    .await;
    let client = s.client().await;
    let status = |request| {
        let mut client = client.clone();
        async move { client.check(request).await.unwrap().into_inner() }
    };
    let allowed = |r: &envoy_types::ext_authz::v3::pb::CheckResponse| {
        matches!(r.http_response, Some(envoy_types::ext_authz::v3::pb::HttpResponse::OkResponse(_)))
    };
    // Two spellings of one IPv4 address, and two addresses of one IPv6 /64.
    for (a, b) in [("192.0.2.7", "::ffff:192.0.2.7"), ("2001:db8:1:2::1", "2001:db8:1:2::ffff")] {
        assert!(allowed(&status(from(Some(a))).await), "{a}");
        assert!(allowed(&status(from(Some(b))).await), "{b}");
        assert!(!allowed(&status(from(Some(a))).await), "{a} and {b} share one budget");
        assert!(!allowed(&status(from(Some(b))).await), "{b}");
    }
    // No address is not "no limit".
    assert!(allowed(&status(from(None)).await));
    assert!(allowed(&status(from(None)).await));
    assert!(!allowed(&status(from(None)).await), "callers without an address share a budget");
    s.finish().await;
}
