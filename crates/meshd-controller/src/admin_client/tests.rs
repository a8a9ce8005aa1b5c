//! The client against the real API over TCP on 127.0.0.1.

use std::net::SocketAddr;

use meshd_proto::Identity;

use super::*;
use crate::controller::{Controller, InMemoryController};
use crate::state::Command;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Serves the API for a fresh controller; returns it and the base URL.
async fn serve() -> (InMemoryController, String) {
    let controller = InMemoryController::default();
    let app = crate::api::router(controller.clone(), TOKEN.to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (controller, format!("http://{addr}"))
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn typed_calls_round_trip() {
    let (controller, base) = serve().await;
    let client = AdminClient::new(format!("{base}/"), TOKEN).unwrap();
    assert_eq!(client.base(), base);
    assert_eq!(client.health().await.unwrap()["status"], "ok");

    let net = client
        .create_network(&CreateNetwork {
            name: "prod".into(),
            v4_pools: Some(vec!["10.77.0.0/16".into()]),
            ..CreateNetwork::default()
        })
        .await
        .unwrap();
    assert_eq!(net.name, "prod");
    assert_eq!(client.networks().await.unwrap(), vec![net.clone()]);
    assert_eq!(client.network(net.id).await.unwrap(), net);
    let renamed = client
        .update_network(
            net.id,
            &UpdateNetwork {
                name: Some("production".into()),
                mtu: None,
                ipv6_egress: Some(meshd_proto::config::Ipv6Egress::Nat66),
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "production");
    assert_eq!(renamed.ipv6_egress, meshd_proto::config::Ipv6Egress::Nat66);

    let id = Identity::generate_unproven();
    controller
        .write(Command::MemberJoin {
            network: net.id,
            node: id.node_id(),
            identity: *id.public(),
            physical: None,
            local: vec![SocketAddr::from(([10, 0, 0, 1], 9993))],
            at_ms: 1,
        })
        .await
        .unwrap();
    let node = id.node_id();
    let m = client.authorize(net.id, node).await.unwrap();
    assert!(m.authorized);
    assert_eq!(client.members(net.id).await.unwrap(), vec![m.clone()]);
    let m = client
        .update_member(
            net.id,
            node,
            &UpdateMember {
                name: Some("web-1".into()),
                authorized: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(client.member(net.id, node).await.unwrap(), m);

    let target: IpNet = "fd42::/64".parse().unwrap();
    let route = client
        .add_route(net.id, target, &[RouteVia::Gateway(m.ipv4[0].into())])
        .await
        .unwrap();
    assert_eq!(route.via, node);
    assert_eq!(client.routes(net.id).await.unwrap(), vec![route.clone()]);
    assert_eq!(client.remove_route(net.id, target).await.unwrap(), route);
    assert!(!client.deauthorize(net.id, node).await.unwrap().authorized);
    assert_eq!(
        client.delete_member(net.id, node).await.unwrap().name,
        "web-1"
    );
    assert_eq!(
        client.delete_network(net.id).await.unwrap().name,
        "production"
    );
    assert!(client.networks().await.unwrap().is_empty());
}

#[tokio::test]
async fn api_errors_carry_the_servers_text_and_status() {
    let (_controller, base) = serve().await;
    let client = AdminClient::new(&base, TOKEN).unwrap();
    let missing = NetworkId::from_u64(0x8056_c2e2_1c00_0001);
    let e = client.network(missing).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(
        e.to_string(),
        "no network 8056c2e21c000001; `meshd controller network list` shows the networks"
    );

    let wrong = AdminClient::new(&base, "00").unwrap();
    let e = wrong.networks().await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(
        e.to_string().starts_with("missing or wrong bearer token"),
        "{e}"
    );

    let e = client
        .create_network(&CreateNetwork {
            name: "x".into(),
            v4_pools: Some(vec!["10.1.0.0/33".into()]),
            ..CreateNetwork::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
    assert!(e.to_string().contains("is not a CIDR"), "{e}");
}

#[tokio::test]
async fn an_unreachable_api_says_what_to_check() {
    let base = format!("http://127.0.0.1:{}", closed_port().await);
    let client = AdminClient::new(&base, TOKEN).unwrap();
    let e = client.networks().await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("cannot reach the controller API at {base}: ")),
        "{e}"
    );
    assert!(e.ends_with("; is `meshd controller run` running?"), "{e}");
}

#[tokio::test]
async fn a_foreign_server_is_reported_as_such() {
    // Something that answers HTTP, but not with our error shape.
    let app = axum::Router::new()
        .fallback(|| async { (StatusCode::BAD_GATEWAY, "<html>bad gateway</html>") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = AdminClient::new(format!("http://{addr}"), TOKEN).unwrap();
    let e = client.networks().await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_GATEWAY));
    assert!(
        e.to_string()
            .contains("answered 502 Bad Gateway: <html>bad gateway</html>"),
        "{e}"
    );
}

#[test]
fn base_urls_are_checked() {
    for (url, needle) in [
        ("ftp://ctl:9995", "must start with http:// or https://"),
        ("ctl:9995", "must start with http://"),
        ("http://", "bad controller API URL \"http://\""),
        ("http://ctl:9995/?x=1", "must not have a query"),
    ] {
        let e = AdminClient::new(url, TOKEN).unwrap_err().to_string();
        assert!(e.contains(needle), "{url}: {e}");
    }
    let t = parse_base("http://[::1]:9995/proxy/").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("::1", 9995));
    assert_eq!(t.authority, "[::1]:9995");
    assert_eq!(t.prefix, "/proxy");
    let t = parse_base("http://ctl.example.com").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.prefix.as_str()),
        ("ctl.example.com", 80, "")
    );
    let t = parse_base("https://ctl.example.com").unwrap();
    assert_eq!((t.port, t.https), (443, true));
}

#[test]
fn debug_output_hides_the_token() {
    let client = AdminClient::new("http://127.0.0.1:9995", TOKEN).unwrap();
    assert!(!format!("{client:?}").contains(TOKEN));
}

#[tokio::test]
async fn https_trusts_exactly_the_pinned_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let fingerprint = crate::api_tls::ensure_certificate(dir.path(), &[]).unwrap();
    let tls = crate::api_tls::server_config(dir.path()).unwrap();
    let controller = InMemoryController::default();
    let app = crate::api::router(controller, TOKEN.to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = crate::tls_listener::TlsListener::new(listener, acceptor, "test").unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("https://{addr}");

    let pinned = AdminClient::new(&base, TOKEN).unwrap().pinned(fingerprint);
    assert!(pinned.networks().await.unwrap().is_empty());

    let unpinned = AdminClient::new(&base, TOKEN).unwrap();
    let err = unpinned.networks().await.unwrap_err();
    assert!(matches!(err, ClientError::NoFingerprint { .. }), "{err}");
    assert!(err.to_string().contains("--fingerprint"), "{err}");

    let other = ApiFingerprint([7; 32]);
    let wrong = AdminClient::new(&base, TOKEN).unwrap().pinned(other);
    let err = wrong.networks().await.unwrap_err();
    assert!(matches!(err, ClientError::Untrusted { .. }), "{err}");

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = AdminClient::new(format!("http://{addr}"), TOKEN).unwrap();
    let err = plain.networks().await.unwrap_err();
    assert!(err.status().is_none(), "{err}");
}
