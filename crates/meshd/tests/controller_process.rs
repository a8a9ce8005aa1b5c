//! A real controller process on loopback: the CLI creates and authorizes, a node joins over
//! QUIC, and config pushes arrive.

mod common;

use std::time::{Duration, Instant};

use common::{ReplicaProcess, ok_stdout};
use meshd_channel::{ChannelClient, ControllerMessage, JoinStatus};
use meshd_controller::admin_client::AdminClient;
use meshd_proto::{Identity, NetworkConfig, NetworkId, SignedConfig, addr};

/// The next message, skipping the replica lists and relay credentials the controller sends
/// on its own.
async fn next(client: &mut ChannelClient) -> ControllerMessage {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), client.recv())
            .await
            .expect("a message within 10 s")
            .expect("the channel stays up");
        // The replicas' addresses and the relay credential come unasked.
        if !matches!(
            msg,
            ControllerMessage::Replicas { .. } | ControllerMessage::RelayCredential { .. }
        ) {
            return msg;
        }
    }
}

/// Reads messages until a config arrives; returns it verified.
async fn next_config(client: &mut ChannelClient, nwid: NetworkId) -> NetworkConfig {
    loop {
        match next(client).await {
            ControllerMessage::Config {
                network, signed, ..
            } => {
                assert_eq!(network, nwid);
                return SignedConfig::from_bytes(signed)
                    .verify(nwid)
                    .expect("the signature verifies against the network id");
            }
            ControllerMessage::Status {
                status: JoinStatus::Ok,
                ..
            } => continue,
            other => panic!("expected a config, got {other:?}"),
        }
    }
}

#[test]
fn join_authorize_and_push_through_a_real_controller() {
    let mut replica = ReplicaProcess::init();
    replica.start();
    let nwid: NetworkId = ok_stdout(&replica.cli(&["network", "create", "--name", "e2e"]))
        .parse()
        .expect("network create prints the id alone");

    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let first = Identity::generate();
        let mut a = ChannelClient::connect(replica.channel, &first, 9993, vec![])
            .await
            .expect("connects");
        a.join(nwid, 0).await.expect("join sent");
        match next(&mut a).await {
            ControllerMessage::Status { status, .. } => {
                assert_eq!(status, JoinStatus::AccessDenied)
            }
            other => panic!("expected ACCESS_DENIED, got {other:?}"),
        }
        // An unknown network is NOT_FOUND.
        let unknown: NetworkId = "0123456789abcdef".parse().expect("valid id");
        a.join(unknown, 0).await.expect("join sent");
        match next(&mut a).await {
            ControllerMessage::Status { network, status } => {
                assert_eq!((network, status), (unknown, JoinStatus::NotFound));
            }
            other => panic!("expected NOT_FOUND, got {other:?}"),
        }

        let node = first.node_id().to_string();
        ok_stdout(&replica.cli(&["member", "authorize", &nwid.to_string(), &node]));
        let cfg = next_config(&mut a, nwid).await;
        let me = cfg
            .member(first.node_id())
            .expect("the config lists the member");
        assert_eq!(me.ipv4.len(), 1, "an IPv4 address");
        let subnet = me.container_subnet.expect("a container subnet");
        assert_eq!(subnet.prefix_len(), 24);
        assert_eq!(
            cfg.sixplane_subnet(first.node_id()),
            Some(addr::sixplane_node_prefix(nwid, first.node_id()))
        );
        let addresses = cfg.interface_addresses(first.node_id());
        assert!(
            addresses.iter().any(
                |a| a.addr() == std::net::IpAddr::V6(addr::rfc4193_addr(nwid, first.node_id()))
            )
        );
        assert!(
            addresses
                .iter()
                .any(|a| a.addr() == std::net::IpAddr::V4(me.ipv4[0]))
        );
        // The member list agrees.
        let listed = ok_stdout(&replica.cli(&["member", "list", &nwid.to_string(), "--json"]));
        assert!(
            listed.contains(&node) && listed.contains(&subnet.to_string()),
            "{listed}"
        );

        // A second member joins and is authorized: the first gets the new revision by push.
        let second = Identity::generate();
        let mut b = ChannelClient::connect(replica.channel, &second, 9993, vec![])
            .await
            .expect("connects");
        b.join(nwid, 0).await.expect("join sent");
        assert!(matches!(
            next(&mut b).await,
            ControllerMessage::Status {
                status: JoinStatus::AccessDenied,
                ..
            }
        ));
        ok_stdout(&replica.cli(&[
            "member",
            "authorize",
            &nwid.to_string(),
            &second.node_id().to_string(),
        ]));
        let authorized_at = Instant::now();
        let pushed = tokio::time::timeout(Duration::from_secs(1), next_config(&mut a, nwid))
            .await
            .expect("the push reaches the first member within 1 s");
        assert!(pushed.revision > cfg.revision);
        assert!(pushed.member(second.node_id()).is_some());
        eprintln!("authorize -> push: {:?}", authorized_at.elapsed());

        // Deauthorization is pushed too.
        ok_stdout(&replica.cli(&[
            "member",
            "deauthorize",
            &nwid.to_string(),
            &second.node_id().to_string(),
        ]));
        loop {
            match next(&mut b).await {
                ControllerMessage::Status {
                    status: JoinStatus::AccessDenied,
                    ..
                } => break,
                ControllerMessage::Config { .. } | ControllerMessage::Status { .. } => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    replica.stop();
}

/// The replica's relay, for real: the channel hands out a credential; with it, an
/// authorized member's reflect request from a UDP socket is answered with that socket's
/// address, and the member is registered; before authorization, nothing is answered.
#[test]
fn the_relay_reflects_authorized_members_with_the_channels_credential() {
    use meshd_proto::reach::credential::Credential;
    use meshd_proto::reach::reflect::{ReflectRequest, Reflection};

    let mut replica = ReplicaProcess::init();
    replica.start();
    let nwid: NetworkId = ok_stdout(&replica.cli(&["network", "create", "--name", "relay"]))
        .parse()
        .expect("network create prints the id alone");
    let relay = std::net::SocketAddr::new(replica.channel.ip(), replica.channel.port() + 1);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("a timeout");
    let me = socket.local_addr().expect("bound");

    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let id = Identity::generate();
        let mut client = ChannelClient::connect(replica.channel, &id, 9993, vec![])
            .await
            .expect("connects");
        let credential = loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), client.recv())
                .await
                .expect("a message within 10 s")
                .expect("the channel stays up");
            if let ControllerMessage::RelayCredential { expires, key } = msg {
                break Credential {
                    node: id.node_id(),
                    expires,
                    key,
                };
            }
        };
        let ask = |sequence: u64| {
            let request = ReflectRequest {
                node: credential.node,
                expires: credential.expires,
                sequence,
            }
            .encode(&credential.key);
            socket.send_to(&request, relay).expect("sent");
            let mut buf = [0u8; 128];
            socket
                .recv_from(&mut buf)
                .ok()
                .map(|(n, from)| (from, buf[..n].to_vec()))
        };
        // A member of no network gets nothing.
        client.join(nwid, 0).await.expect("join sent");
        assert_eq!(ask(1), None, "answered a member that is not authorized");
        let node = id.node_id().to_string();
        ok_stdout(&replica.cli(&["member", "authorize", &nwid.to_string(), &node]));
        let mut answer = None;
        for sequence in 2..40 {
            answer = ask(sequence);
            if answer.is_some() {
                break;
            }
        }
        let (from, bytes) = answer.expect("an answer once authorized");
        assert_eq!(from, relay);
        let reflection = Reflection::open(&bytes, &credential.key).expect("authentic");
        assert_eq!(reflection.observed, me);
        // The refused request is counted, by reason, in the replica's health.
        let admin =
            AdminClient::new(format!("http://{}", replica.api), replica.token()).expect("a client");
        let mut health = serde_json::Value::Null;
        for _ in 0..50 {
            health = admin.health().await.expect("health");
            if health["relay"]["reflections"].as_u64() > Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            health["relay"]["reflections"].as_u64() > Some(0),
            "{health:#}"
        );
        assert!(
            health["relay"]["drops"]["not_member"].as_u64() >= Some(1),
            "{health:#}"
        );
    });
}

#[test]
fn joins_to_unknown_networks_never_reach_the_log_and_joins_are_rate_limited() {
    let mut replica = ReplicaProcess::init();
    replica.start();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let admin = AdminClient::new(replica.url(), replica.token()).expect("a client");
    let log_index = |rt: &tokio::runtime::Runtime| {
        rt.block_on(admin.health()).expect("health")["last_log_index"]
            .as_u64()
            .expect("last_log_index")
    };
    let before = log_index(&rt);
    rt.block_on(async {
        let id = Identity::generate();
        let mut client = ChannelClient::connect(replica.channel, &id, 9993, vec![])
            .await
            .expect("connects");
        for i in 0..1000u64 {
            let unknown = NetworkId::from_bytes((0xdead_0000_0000_0000 + i).to_be_bytes());
            client.join(unknown, 0).await.expect("join sent");
            loop {
                match next(&mut client).await {
                    ControllerMessage::Status { network, status } => {
                        assert_eq!(network, unknown);
                        assert_eq!(status, JoinStatus::NotFound);
                        break;
                    }
                    ControllerMessage::Error { message } => panic!("join {i}: {message}"),
                    _ => {}
                }
            }
        }
    });
    assert_eq!(
        log_index(&rt),
        before,
        "joins to unknown networks were written"
    );

    // Joins that do write (new members of a real network) are limited per source address.
    let nwid: NetworkId = ok_stdout(&replica.cli(&["network", "create", "--name", "busy"]))
        .parse()
        .expect("an id");
    // 80 fresh identities, each with its proof of work: made on two threads.
    let fresh: Vec<Identity> = std::thread::scope(|s| {
        let makers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| (0..40).map(|_| Identity::generate()).collect::<Vec<_>>()))
            .collect();
        makers
            .into_iter()
            .flat_map(|m| m.join().expect("identities made"))
            .collect()
    });
    let refused = rt.block_on(async {
        let mut refused = 0;
        for id in &fresh {
            let mut client = ChannelClient::connect(replica.channel, id, 9993, vec![])
                .await
                .expect("connects");
            client.join(nwid, 0).await.expect("join sent");
            loop {
                match next(&mut client).await {
                    ControllerMessage::Status { .. } => break,
                    ControllerMessage::Error { message } => {
                        assert!(message.contains("too many joins"), "{message}");
                        refused += 1;
                        break;
                    }
                    _ => {}
                }
            }
        }
        refused
    });
    assert!(
        (1..=20).contains(&refused),
        "{refused} of 80 fresh members refused"
    );
}
