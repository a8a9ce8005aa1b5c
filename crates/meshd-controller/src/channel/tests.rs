//! End-to-end tests of the node channel over real QUIC on 127.0.0.1, against
//! [`InMemoryController`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshd_proto::{Identity, NetworkId, NodeId, PublicIdentity, SignedConfig};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

use meshd_channel::protocol::{self, close_code};
use meshd_channel::{ChannelClient, ChannelError, ControllerMessage, JoinStatus, NodeMessage, tls};

use super::*;
use crate::controller::{Controller, InMemoryController, WriteError};
use crate::state::{Applied, Command, ControllerState, RejectKind, Rejected};
use crate::test_support::{nwid, spec};

const WAIT: Duration = Duration::from_secs(1);

/// A controller endpoint serving `controller` on an ephemeral port.
fn start<C: Controller>(controller: C) -> (SocketAddr, quinn::Endpoint) {
    let ep = endpoint("127.0.0.1:0".parse().unwrap(), &[42; 32]).unwrap();
    let addr = ep.local_addr().unwrap();
    tokio::spawn(serve(ep.clone(), controller));
    (addr, ep)
}

async fn next(client: &mut ChannelClient) -> ControllerMessage {
    tokio::time::timeout(WAIT, client.recv())
        .await
        .expect("a message within 1 s")
        .expect("channel open")
}

async fn quiet(client: &mut ChannelClient) {
    if let Ok(msg) = tokio::time::timeout(Duration::from_millis(300), client.recv()).await {
        panic!("expected silence, got {msg:?}");
    }
}

fn status(network: NetworkId, status: JoinStatus) -> ControllerMessage {
    ControllerMessage::Status { network, status }
}

async fn authorize(c: &InMemoryController, network: NetworkId, node: NodeId) {
    c.write(Command::Authorize {
        network,
        node,
        at_ms: 10,
    })
    .await
    .unwrap();
}

/// Takes a `Config`, verifies it against the network id and returns it.
fn verified(msg: ControllerMessage, network: NetworkId) -> meshd_proto::NetworkConfig {
    let ControllerMessage::Config {
        network: n,
        revision,
        signed,
    } = msg
    else {
        panic!("expected a config, got {msg:?}")
    };
    assert_eq!(n, network);
    let cfg = SignedConfig::from_bytes(signed).verify(network).unwrap();
    assert_eq!(cfg.revision, revision);
    cfg
}

#[tokio::test]
async fn join_authorize_push_deauthorize() {
    let ctl = InMemoryController::default();
    ctl.write(Command::CreateNetwork(spec(1))).await.unwrap();
    let network = nwid(1);
    let (addr, _ep) = start(ctl.clone());

    let a = Identity::generate();
    let lan: SocketAddr = "192.168.1.5:9993".parse().unwrap();
    let mut ca = ChannelClient::connect(addr, &a, 9993, vec![lan])
        .await
        .unwrap();
    assert_eq!(ca.remote_address(), addr);

    // Unknown network.
    ca.join(nwid(2), 0).await.unwrap();
    assert_eq!(next(&mut ca).await, status(nwid(2), JoinStatus::NotFound));

    // Real network: recorded, unauthorized, with where it was seen from.
    ca.join(network, 0).await.unwrap();
    assert_eq!(
        next(&mut ca).await,
        status(network, JoinStatus::AccessDenied)
    );
    let member = ctl.read(|s| s.networks[&network].members[&a.node_id()].clone());
    assert!(!member.authorized);
    assert_eq!(member.identity, *a.public());
    assert_eq!(member.local, vec![lan]);
    // The connection's address with the data-plane port, not the QUIC socket's port.
    assert_eq!(member.physical, Some(SocketAddr::new(addr.ip(), 9993)));

    // Authorized by an admin: pushed.
    authorize(&ctl, network, a.node_id()).await;
    assert_eq!(next(&mut ca).await, status(network, JoinStatus::Ok));
    let cfg = verified(next(&mut ca).await, network);
    let mc = cfg.member(a.node_id()).unwrap();
    let member = ctl.read(|s| s.networks[&network].members[&a.node_id()].clone());
    assert_eq!(mc.ipv4, member.ipv4);
    assert_eq!(mc.ipv4.len(), 1);
    assert!(
        "10.147.17.0/24"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&mc.ipv4[0])
    );
    assert_eq!(mc.container_subnet, Some("172.28.0.0/24".parse().unwrap()));
    assert!(mc.endpoints.contains(&lan));
    let rev_a = cfg.revision;

    // A second node joins and is authorized: the first one learns within a second.
    let b = Identity::generate();
    let mut cb = ChannelClient::connect(addr, &b, 9993, vec![])
        .await
        .unwrap();
    cb.join(network, 0).await.unwrap();
    assert_eq!(
        next(&mut cb).await,
        status(network, JoinStatus::AccessDenied)
    );
    authorize(&ctl, network, b.node_id()).await;
    assert_eq!(next(&mut cb).await, status(network, JoinStatus::Ok));
    let cfg_b = verified(next(&mut cb).await, network);
    assert!(cfg_b.member(a.node_id()).is_some());
    let cfg = verified(next(&mut ca).await, network);
    assert!(cfg.revision > rev_a);
    assert_eq!(cfg.revision, cfg_b.revision);
    assert!(cfg.member(b.node_id()).is_some());

    // Deauthorized: pushed to a; b gets the config without a.
    ctl.write(Command::Deauthorize {
        network,
        node: a.node_id(),
        at_ms: 20,
    })
    .await
    .unwrap();
    assert_eq!(
        next(&mut ca).await,
        status(network, JoinStatus::AccessDenied)
    );
    let cfg_b = verified(next(&mut cb).await, network);
    assert!(cfg_b.member(a.node_id()).is_none());
    quiet(&mut ca).await;

    // b leaves: no more pushes to it, while a still hears about its own state.
    cb.leave(network).await.unwrap();
    // The Leave and the next write race; let the Leave land first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    authorize(&ctl, network, a.node_id()).await;
    assert_eq!(next(&mut ca).await, status(network, JoinStatus::Ok));
    verified(next(&mut ca).await, network);
    quiet(&mut cb).await;

    // The network is deleted: followers are told.
    ctl.write(Command::DeleteNetwork { network }).await.unwrap();
    assert_eq!(next(&mut ca).await, status(network, JoinStatus::NotFound));
    quiet(&mut cb).await;
}

#[tokio::test]
async fn rejoin_with_current_revision_gets_no_config() {
    let ctl = InMemoryController::default();
    ctl.write(Command::CreateNetwork(spec(3))).await.unwrap();
    let network = nwid(3);
    let (addr, _ep) = start(ctl.clone());
    let a = Identity::generate();
    let mut ca = ChannelClient::connect(addr, &a, 9993, vec![])
        .await
        .unwrap();
    ca.join(network, 0).await.unwrap();
    assert_eq!(
        next(&mut ca).await,
        status(network, JoinStatus::AccessDenied)
    );
    authorize(&ctl, network, a.node_id()).await;
    assert_eq!(next(&mut ca).await, status(network, JoinStatus::Ok));
    let rev = verified(next(&mut ca).await, network).revision;
    // Re-joining on the same connection (same endpoints: no revision bump) with the revision
    // in hand: the status again, no config.
    ca.join(network, rev).await.unwrap();
    assert_eq!(next(&mut ca).await, status(network, JoinStatus::Ok));
    quiet(&mut ca).await;
}

/// A controller whose every `MemberJoin` finds another identity on record. Two identities
/// cannot share a node id, so the conflict is simulated at the controller seam.
#[derive(Debug, Clone, Default)]
struct IdentityConflict(InMemoryController);

impl Controller for IdentityConflict {
    fn write(&self, cmd: Command) -> impl Future<Output = Result<Applied, WriteError>> + Send {
        let forbidden = matches!(cmd, Command::MemberJoin { .. });
        let inner = self.0.write(cmd);
        async move {
            if forbidden {
                return Err(WriteError::Rejected(Rejected::new(
                    RejectKind::Forbidden,
                    "node is on record with another identity; refusing",
                )));
            }
            inner.await
        }
    }

    fn read<T>(&self, f: impl FnOnce(&ControllerState) -> T) -> T {
        self.0.read(f)
    }

    fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.applied()
    }
}

#[tokio::test]
async fn identity_conflict_gets_an_error_and_the_connection_closed() {
    let ctl = IdentityConflict::default();
    ctl.write(Command::CreateNetwork(spec(4))).await.unwrap();
    let (addr, _ep) = start(ctl);
    let a = Identity::generate();
    let mut ca = ChannelClient::connect(addr, &a, 9993, vec![])
        .await
        .unwrap();
    ca.join(nwid(4), 0).await.unwrap();
    let ControllerMessage::Error { message } = next(&mut ca).await else {
        panic!("expected an error")
    };
    assert!(message.contains("another identity"), "{message}");
    let err = tokio::time::timeout(WAIT, ca.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, ChannelError::ClosedByController { code, .. } if code == u64::from(close_code::FORBIDDEN)),
        "{err:?}"
    );
}

/// A controller that knows its replicas' addresses, which a test may change.
#[derive(Debug, Clone, Default)]
struct WithReplicas {
    inner: InMemoryController,
    replicas: Arc<std::sync::Mutex<Vec<String>>>,
}

impl WithReplicas {
    fn set(&self, replicas: &[&str]) {
        *self.replicas.lock().unwrap() = replicas.iter().map(|r| (*r).to_owned()).collect();
    }
}

impl Controller for WithReplicas {
    fn write(&self, cmd: Command) -> impl Future<Output = Result<Applied, WriteError>> + Send {
        self.inner.write(cmd)
    }

    fn read<T>(&self, f: impl FnOnce(&ControllerState) -> T) -> T {
        self.inner.read(f)
    }

    fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.applied()
    }

    fn replica_addresses(&self) -> Vec<String> {
        self.replicas.lock().unwrap().clone()
    }
}

fn replicas(addresses: &[&str]) -> ControllerMessage {
    ControllerMessage::Replicas {
        addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
    }
}

#[tokio::test]
async fn a_controller_without_replicas_sends_no_replica_list() {
    let ctl = InMemoryController::default();
    ctl.write(Command::CreateNetwork(spec(7))).await.unwrap();
    let (addr, _ep) = start(ctl);
    let mut ca = ChannelClient::connect(addr, &Identity::generate(), 9993, vec![])
        .await
        .unwrap();
    quiet(&mut ca).await;
    ca.join(nwid(7), 0).await.unwrap();
    assert_eq!(
        next(&mut ca).await,
        status(nwid(7), JoinStatus::AccessDenied)
    );
    quiet(&mut ca).await;
}

#[tokio::test]
async fn replicas_are_sent_after_hello_and_whenever_they_change() {
    let ctl = WithReplicas::default();
    ctl.set(&["10.0.0.1:9994", "10.0.0.2:9994"]);
    ctl.write(Command::CreateNetwork(spec(8))).await.unwrap();
    let (addr, _ep) = start(ctl.clone());
    let a = Identity::generate();
    let mut ca = ChannelClient::connect(addr, &a, 9993, vec![])
        .await
        .unwrap();
    // The Join goes out at once, but the list comes first.
    ca.join(nwid(8), 0).await.unwrap();
    assert_eq!(
        next(&mut ca).await,
        replicas(&["10.0.0.1:9994", "10.0.0.2:9994"])
    );
    assert_eq!(
        next(&mut ca).await,
        status(nwid(8), JoinStatus::AccessDenied)
    );
    quiet(&mut ca).await;

    // A replica joins: the new list follows within a poll.
    ctl.set(&["10.0.0.1:9994", "10.0.0.2:9994", "10.0.0.3:9994"]);
    assert_eq!(
        next(&mut ca).await,
        replicas(&["10.0.0.1:9994", "10.0.0.2:9994", "10.0.0.3:9994"])
    );
    quiet(&mut ca).await;

    // Changes unrelated to the replicas do not repeat the list.
    authorize(&ctl.inner, nwid(8), a.node_id()).await;
    assert_eq!(next(&mut ca).await, status(nwid(8), JoinStatus::Ok));
    verified(next(&mut ca).await, nwid(8));
    quiet(&mut ca).await;

    // A list longer than a node accepts is cut, never sent whole.
    let many: Vec<String> = (0..40).map(|i| format!("10.0.1.{i}:9994")).collect();
    ctl.set(&many.iter().map(String::as_str).collect::<Vec<_>>());
    let ControllerMessage::Replicas { addresses } = next(&mut ca).await else {
        panic!("expected a replica list")
    };
    assert_eq!(addresses, many[..protocol::MAX_REPLICAS]);

    // Another node connecting now gets the current list first.
    let mut cb = ChannelClient::connect(addr, &Identity::generate(), 9993, vec![])
        .await
        .unwrap();
    assert!(
        matches!(next(&mut cb).await, ControllerMessage::Replicas { addresses } if addresses.len() == protocol::MAX_REPLICAS)
    );
    quiet(&mut cb).await;
}

/// Connects with a hand-made rustls client config and tries a Hello/Join round trip.
async fn raw_attempt(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    x25519: [u8; 32],
) -> Result<(), String> {
    let config = tls::client_config_from(tls).unwrap();
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = ep
        .connect_with(config, addr, tls::SERVER_NAME)
        .unwrap()
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = NodeMessage::Hello {
        x25519,
        version: "test".into(),
        data_port: 9993,
        local_endpoints: vec![],
    };
    let join = NodeMessage::Join {
        network: nwid(5),
        have_revision: 0,
    };
    let io = async {
        protocol::write_frame(&mut send, &hello).await?;
        protocol::write_frame(&mut send, &join).await?;
        protocol::read_frame::<_, ControllerMessage>(&mut recv).await
    };
    match tokio::time::timeout(WAIT, io).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err("stream closed".into()),
        Ok(Err(e)) => Err(conn.close_reason().map_or(e.to_string(), |r| r.to_string())),
        Err(_) => Err("no answer".into()),
    }
}

fn tls_builder() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(tls::any_ed25519_server())
}

/// A P-256 key as an RFC 7250 raw public key.
fn p256_key() -> Arc<rustls::sign::CertifiedKey> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
            pkcs8.as_ref().to_vec().into(),
        ))
        .unwrap();
    Arc::new(rustls::sign::CertifiedKey::new(vec![spki.into()], key))
}

#[tokio::test]
async fn clients_without_an_ed25519_key_are_refused_in_the_handshake() {
    let ctl = InMemoryController::default();
    ctl.write(Command::CreateNetwork(spec(5))).await.unwrap();
    let (addr, _ep) = start(ctl.clone());

    // Control: the same path with a proper node key gets an answer.
    let node = Identity::generate();
    let good = tls::rustls_client_config(&node).unwrap();
    raw_attempt(addr, good, node.public().x25519).await.unwrap();

    let alpn = |mut c: rustls::ClientConfig| {
        c.alpn_protocols = vec![tls::ALPN.to_vec()];
        c
    };
    // No client key at all.
    let none = alpn(tls_builder().with_no_client_auth());
    let err = raw_attempt(addr, none, [1; 32]).await.unwrap_err();
    assert!(err.contains("cryptographic handshake failed"), "{err}");

    // A P-256 raw public key.
    let p256 = alpn(tls_builder().with_client_cert_resolver(Arc::new(
        rustls::client::AlwaysResolvesClientRawPublicKeys::new(p256_key()),
    )));
    let err = raw_attempt(addr, p256, [1; 32]).await.unwrap_err();
    assert!(err.contains("cryptographic handshake failed"), "{err}");

    // Only the good client got as far as a member record.
    assert_eq!(ctl.read(|s| s.networks[&nwid(5)].members.len()), 1);

    // And the verifier itself refuses a P-256 key outright.
    use rustls::server::danger::ClientCertVerifier;
    let verifier = tls::any_ed25519_server();
    let p256 = p256_key();
    assert!(
        verifier
            .verify_client_cert(&p256.cert[0], &[], rustls::pki_types::UnixTime::now())
            .is_err()
    );
}

/// A QUIC connection to `addr` as `identity`, and its stream, with no message sent.
async fn raw_stream(
    addr: SocketAddr,
    identity: &Identity,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let config = tls::client_config(identity).unwrap();
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = ep
        .connect_with(config, addr, tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    (ep, conn, send, recv)
}

/// The next frame on a raw stream, within [`WAIT`].
async fn read_one(recv: &mut quinn::RecvStream) -> Option<ControllerMessage> {
    tokio::time::timeout(WAIT, protocol::read_frame::<_, ControllerMessage>(recv))
        .await
        .unwrap()
        .unwrap()
}

/// Waits for the controller to close `conn` with `code`.
async fn closed_with(conn: &quinn::Connection, code: u32) {
    let closed = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == code.into()),
        "{closed:?}"
    );
}

#[tokio::test]
async fn first_message_must_be_hello() {
    let ctl = InMemoryController::default();
    let (addr, _ep) = start(ctl);
    let (_client_ep, conn, mut send, mut recv) = raw_stream(addr, &Identity::generate()).await;
    let join = NodeMessage::Join {
        network: nwid(6),
        have_revision: 0,
    };
    protocol::write_frame(&mut send, &join).await.unwrap();
    let msg = read_one(&mut recv).await;
    assert!(
        matches!(&msg, Some(ControllerMessage::Error { message }) if message.contains("Hello")),
        "{msg:?}"
    );
    closed_with(&conn, close_code::PROTOCOL).await;
}

/// A Hello that names someone else's X25519 key (with one's own Ed25519 key, which TLS
/// proves) cannot answer the Challenge: the node is refused and nothing is written. An
/// honest client gets in.
#[tokio::test]
async fn a_hello_naming_an_x25519_key_the_node_does_not_hold_is_refused() {
    let ctl = InMemoryController::default();
    ctl.write(Command::CreateNetwork(spec(7))).await.unwrap();
    let (addr, _ep) = start(ctl.clone());
    let victim = Identity::generate();
    // The attacker even finds an Ed25519 key that makes a proven id with the victim's X25519
    // key (2^9 tries): only the challenge stands in its way.
    let attacker = std::iter::repeat_with(Identity::generate_unproven)
        .find(|a| {
            let claimed = PublicIdentity {
                x25519: victim.public().x25519,
                ed25519: a.public().ed25519,
            };
            claimed.proven_node_id().is_ok()
        })
        .expect("one in 2^9 keys");
    let (_client_ep, conn, mut send, mut recv) = raw_stream(addr, &attacker).await;
    let hello = NodeMessage::Hello {
        x25519: victim.public().x25519,
        version: "0.2.0".into(),
        data_port: 9993,
        local_endpoints: vec![],
    };
    protocol::write_frame(&mut send, &hello).await.unwrap();
    let msg = read_one(&mut recv).await;
    let Some(ControllerMessage::Challenge { key }) = msg else {
        panic!("expected a Challenge first, got {msg:?}")
    };
    // The best the attacker can do: prove its own X25519 key. A join sent early waits.
    let join = NodeMessage::Join {
        network: nwid(7),
        have_revision: 0,
    };
    protocol::write_frame(&mut send, &join).await.unwrap();
    let tag = meshd_proto::possession::prove(&attacker, &key);
    protocol::write_frame(&mut send, &NodeMessage::Proof { tag })
        .await
        .unwrap();
    closed_with(&conn, close_code::FORBIDDEN).await;
    assert!(
        ctl.read(|s| s.network(nwid(7)).unwrap().members.is_empty()),
        "the refused node's early join was written"
    );
    // An honest client answers the challenge by itself and joins.
    let mut honest = ChannelClient::connect(addr, &victim, 9993, vec![])
        .await
        .unwrap();
    honest.join(nwid(7), 0).await.unwrap();
    assert_eq!(
        next(&mut honest).await,
        status(nwid(7), JoinStatus::AccessDenied)
    );
}

/// Four members follow a network; one change reaches all four as the same bytes, for one
/// signature (each connection used to sign for itself, under the state lock).
#[tokio::test]
async fn a_change_is_signed_once_for_every_connection() {
    let ctl = InMemoryController::default();
    ctl.write(Command::CreateNetwork(spec(8))).await.unwrap();
    let network = nwid(8);
    let ep = endpoint("127.0.0.1:0".parse().unwrap(), &[42; 32]).unwrap();
    let addr = ep.local_addr().unwrap();
    let configs = Arc::new(signed::SignedConfigs::default());
    tokio::spawn(server::serve_signed(
        ep.clone(),
        ctl.clone(),
        Arc::clone(&configs),
        None,
        ChannelStats::default(),
    ));

    let mut clients = Vec::new();
    for _ in 0..4 {
        let id = Identity::generate();
        let mut c = ChannelClient::connect(addr, &id, 9993, vec![])
            .await
            .unwrap();
        c.join(network, 0).await.unwrap();
        assert_eq!(
            next(&mut c).await,
            status(network, JoinStatus::AccessDenied)
        );
        authorize(&ctl, network, id.node_id()).await;
        clients.push((id, c));
    }
    // Everyone catches up with the newest revision.
    let newest = ctl.read(|s| s.networks[&network].revision);
    for (_, c) in &mut clients {
        loop {
            if let ControllerMessage::Config { revision, .. } = next(c).await
                && revision == newest
            {
                break;
            }
        }
    }
    let before = configs.signatures();

    let renamed = clients[0].0.node_id();
    ctl.write(Command::RenameMember {
        network,
        node: renamed,
        name: "renamed".into(),
    })
    .await
    .unwrap();
    let mut pushed = Vec::new();
    for (_, c) in &mut clients {
        let msg = next(c).await;
        let cfg = verified(msg.clone(), network);
        assert_eq!(cfg.member(renamed).unwrap().name, "renamed");
        pushed.push(msg);
    }
    assert!(
        pushed.windows(2).all(|w| w[0] == w[1]),
        "the same bytes for all"
    );
    assert_eq!(
        configs.signatures(),
        before + 1,
        "one signature for four connections"
    );
}

/// Keys without the proof of work behind their node id never become a node: claiming a
/// chosen id would otherwise take 2^40 plain hashes.
#[tokio::test]
async fn a_hello_with_keys_that_carry_no_proof_of_work_is_refused() {
    let ctl = InMemoryController::default();
    ctl.write(Command::CreateNetwork(spec(8))).await.unwrap();
    let (addr, _ep) = start(ctl.clone());
    let unproven = std::iter::repeat_with(Identity::generate_unproven)
        .find(|id| id.public().proven_node_id().is_err())
        .expect("most keys carry no work");
    let (_client_ep, conn, mut send, mut recv) = raw_stream(addr, &unproven).await;
    let hello = NodeMessage::Hello {
        x25519: unproven.public().x25519,
        version: "0.3.0".into(),
        data_port: 9993,
        local_endpoints: vec![],
    };
    protocol::write_frame(&mut send, &hello).await.unwrap();
    let join = NodeMessage::Join {
        network: nwid(8),
        have_revision: 0,
    };
    let _ = protocol::write_frame(&mut send, &join).await;
    let msg = read_one(&mut recv).await;
    assert!(
        matches!(&msg, Some(ControllerMessage::Error { message }) if message.contains("proof of work")),
        "{msg:?}"
    );
    closed_with(&conn, close_code::PROTOCOL).await;
    assert!(ctl.read(|s| s.networks[&nwid(8)].members.is_empty()));
}
