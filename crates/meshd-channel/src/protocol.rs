//! The node channel's messages and their framing.
//!
//! The node opens one bidirectional QUIC stream and both sides write frames on it: a u32
//! big-endian body length, then the postcard-encoded message. Postcard is compact and has no
//! schema negotiation; the ALPN id (`meshd-ctl/1`) versions the protocol as a whole.

use std::net::SocketAddr;

use meshd_proto::{NetworkId, NodeId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame body either side accepts. A signed config of a very large network fits with
/// room to spare; anything bigger is a bug or an attack.
pub const MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// Application close codes of the node channel's QUIC connection.
pub mod close_code {
    /// The node or controller is done (a normal close).
    pub const DONE: u32 = 0;
    /// The peer broke the protocol (bad frame, message out of order).
    pub const PROTOCOL: u32 = 1;
    /// The node presented another identity than the one on record for its node id.
    pub const FORBIDDEN: u32 = 2;
    /// The controller is shutting down; connect to another replica.
    pub const SHUTDOWN: u32 = 3;
}

/// What a node sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeMessage {
    /// First message on the stream. The Ed25519 half of the identity comes from the TLS
    /// handshake; the X25519 half is sent here, and the node id is the hash of both.
    Hello {
        x25519: [u8; 32],
        /// Software version, for logs and the admin view.
        version: String,
        /// The node's data-plane UDP port: with the address the connection comes from, it
        /// is where peers outside the node's LAN reach it. 0 when it has none.
        data_port: u16,
        /// Addresses the node is reachable at on its own networks (LAN endpoints).
        local_endpoints: Vec<SocketAddr>,
    },
    /// Join (or re-join after reconnecting) a network; `have_revision` is the revision of the
    /// config the node holds (0 for none), so it is not sent again.
    Join {
        network: NetworkId,
        have_revision: u64,
    },
    /// Stop receiving updates for a network on this connection. The member record stays.
    Leave { network: NetworkId },
    /// How the node is reached, when it learned or changed it.
    Reach(Reach),
    /// The answer to a `Challenge`: [`meshd_proto::possession::prove`] of the challenge key.
    Proof { tag: [u8; 32] },
    /// How the node sees a network it joined: its host name and how it reaches each peer.
    /// Sent after `Join`, when a path changes and every [`REPORT_INTERVAL`]; the controller
    /// keeps it for the admin's view (names, the picture of the mesh).
    ///
    /// The last variant, so the encodings of the others stay what they were.
    Report(Report),
}

/// How often a node repeats its [`Report`] when nothing changed. The controller counts a
/// member online while its last report is at most three intervals old.
pub const REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Most peers one [`Report`] may name; a longer one is a protocol error.
pub const MAX_REPORT_PEERS: usize = 4096;

/// Most bytes of the host name in a [`Report`]; a longer one is cut.
pub const MAX_HOSTNAME_LEN: usize = 64;

/// A node's view of one network (see [`NodeMessage::Report`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub network: NetworkId,
    /// The node's host name (`meshd daemon --hostname`, else the system's): the member's
    /// name until an admin gives it another.
    pub hostname: String,
    /// At most [`MAX_REPORT_PEERS`].
    pub peers: Vec<PeerPathReport>,
    /// The global IPv6 prefix delegated to the node's host (`meshd daemon --ipv6-prefix`),
    /// which the member's container /80 comes from; the controller records it when it
    /// changes.
    pub delegated_prefix: Option<ipnet::Ipv6Net>,
}

/// How a node reaches one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerPathReport {
    pub peer: NodeId,
    pub path: PathKind,
    /// The path's round-trip time in microseconds, when measured.
    pub rtt_us: Option<u32>,
}

/// Which way traffic to a peer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PathKind {
    /// No session.
    None,
    /// Through a relay (a replica's or a member's).
    Relay,
    /// Direct to one of the peer's own addresses on its LAN.
    Lan,
    /// Direct to the peer's public endpoint.
    Public,
    /// Direct, found by probing from both sides while relayed.
    Punched,
    /// Direct to a port mapping the peer's router holds.
    PortMapped,
}

impl PathKind {
    pub fn is_direct(self) -> bool {
        !matches!(self, PathKind::None | PathKind::Relay)
    }

    /// `none`, `relay`, `lan`, `public`, `punched`, `port-mapped`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::None => "none",
            PathKind::Relay => "relay",
            PathKind::Lan => "lan",
            PathKind::Public => "public",
            PathKind::Punched => "punched",
            PathKind::PortMapped => "port-mapped",
        }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Report {
    /// The report with the host name cut to [`MAX_HOSTNAME_LEN`] bytes (at a character
    /// boundary) and the peers to [`MAX_REPORT_PEERS`].
    pub fn bounded(network: NetworkId, hostname: &str, mut peers: Vec<PeerPathReport>) -> Self {
        peers.truncate(MAX_REPORT_PEERS);
        Report {
            network,
            hostname: cut(hostname, MAX_HOSTNAME_LEN).to_owned(),
            peers,
            delegated_prefix: None,
        }
    }

    /// Whether `other` tells the same as this report in what the admin's picture shows:
    /// the same host name and peers, each on the same kind of path (round-trip times aside).
    pub fn same_paths(&self, other: &Report) -> bool {
        self.hostname == other.hostname
            && self.delegated_prefix == other.delegated_prefix
            && self.peers.len() == other.peers.len()
            && self
                .peers
                .iter()
                .zip(&other.peers)
                .all(|(a, b)| (a.peer, a.path) == (b.peer, b.path))
    }
}

/// How a node is reached. Peers get `public` as the node's public endpoint in place of the
/// guess from the channel's own source address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    /// Where the node's data-plane socket is reached from outside: what the replicas' relays
    /// saw (its server-reflexive address), or the port mapping its router holds.
    pub public: Option<SocketAddr>,
    /// `public` is a port mapping the node's router holds.
    pub port_mapped: bool,
    /// The node relays for other members (`meshd daemon --relay`).
    pub relay: bool,
}

/// What a controller sends, as answers and as pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerMessage {
    /// The node's standing in a network, sent after each `Join` and whenever it changes.
    Status {
        network: NetworkId,
        status: JoinStatus,
    },
    /// A signed network config newer than what the node has. `signed` is the
    /// [`meshd_proto::SignedConfig`] bytes; the node verifies them against `network`.
    Config {
        network: NetworkId,
        revision: u64,
        signed: Vec<u8>,
    },
    /// A request failed; the message says why and what to do.
    Error { message: String },
    /// The node-channel addresses (`HOST:PORT`) of every replica of the controller, sorted:
    /// sent right after the node's `Hello` and again whenever the set changes, so the node
    /// can fail over to any of them. At most [`MAX_REPLICAS`] addresses of at most
    /// [`MAX_REPLICA_ADDR_LEN`] bytes each; a longer list is a protocol error. Build it with
    /// [`ControllerMessage::replicas`], which keeps to those bounds.
    ///
    /// The last variant, so the encodings of the others stay what they were.
    Replicas {
        #[serde(deserialize_with = "replica_list::deserialize")]
        addresses: Vec<String>,
    },
    /// The node's relay credential (see `meshd_proto::reach::credential`): sent after
    /// `Hello` and again before it expires. Every replica's relay, at UDP port
    /// [`relay_port`] of its node-channel address, checks the node's reflect requests with
    /// it. Sent only by controllers that relay.
    RelayCredential {
        /// Unix seconds.
        expires: u64,
        key: [u8; 32],
    },
    /// The first message after `Hello` to a node that can answer it ([`knows_key_proofs`]):
    /// a fresh X25519 key, to be answered with a `Proof` before anything else, which shows
    /// that the node holds the X25519 secret its `Hello` names.
    Challenge { key: [u8; 32] },
}

/// The first node version (`Hello`'s `version`) that knows `RelayCredential`: older nodes
/// cannot decode it, so a controller sends it only to nodes at or past this. A node sends
/// `Reach` only to a controller that sent it a credential (older controllers cannot
/// decode that either).
pub const RELAYING_SINCE: (u64, u64, u64) = (0, 2, 0);

/// The first node version that answers a `Challenge`. Older nodes are let in without
/// proving their X25519 key (they cannot decode the message); the replica logs it.
pub const PROVING_SINCE: (u64, u64, u64) = (0, 2, 0);

/// Whether a node of `version` (`MAJOR.MINOR.PATCH`, anything after it ignored) knows
/// `RelayCredential`.
pub fn knows_relaying(version: &str) -> bool {
    at_least(version, RELAYING_SINCE)
}

/// Whether a node of `version` answers a `Challenge`.
pub fn knows_key_proofs(version: &str) -> bool {
    at_least(version, PROVING_SINCE)
}

fn at_least(version: &str, since: (u64, u64, u64)) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().ok());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c))) => (a, b, c) >= since,
        _ => false,
    }
}

/// The UDP port of a replica's relay, whose node channel is at `channel_port`: the next one
/// (9994 → 9995; the admin API's 9995 is TCP).
pub fn relay_port(channel_port: u16) -> Option<u16> {
    channel_port.checked_add(1)
}

/// Most addresses a [`ControllerMessage::Replicas`] may carry.
pub const MAX_REPLICAS: usize = 16;
/// Most bytes of one address in a [`ControllerMessage::Replicas`].
pub const MAX_REPLICA_ADDR_LEN: usize = 255;

impl ControllerMessage {
    /// A [`ControllerMessage::Replicas`] within the bounds the node accepts: empty and
    /// over-long addresses are left out, and the list is cut at [`MAX_REPLICAS`].
    pub fn replicas(addresses: impl IntoIterator<Item = String>) -> Self {
        let addresses = addresses
            .into_iter()
            .filter(|a| !a.is_empty() && a.len() <= MAX_REPLICA_ADDR_LEN)
            .take(MAX_REPLICAS)
            .collect();
        ControllerMessage::Replicas { addresses }
    }
}

/// Decoding of the replica list with its bounds checked before anything is allocated.
mod replica_list {
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};

    use super::{MAX_REPLICA_ADDR_LEN, MAX_REPLICAS};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(List)
    }

    struct List;

    impl<'de> Visitor<'de> for List {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "at most {MAX_REPLICAS} replica addresses")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            if let Some(n) = seq.size_hint().filter(|n| *n > MAX_REPLICAS) {
                return Err(A::Error::invalid_length(n, &self));
            }
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(Addr(a)) = seq.next_element()? {
                if out.len() == MAX_REPLICAS {
                    return Err(A::Error::invalid_length(MAX_REPLICAS + 1, &self));
                }
                out.push(a);
            }
            Ok(out)
        }
    }

    /// One address, refused when longer than [`MAX_REPLICA_ADDR_LEN`].
    struct Addr(String);

    impl<'de> Deserialize<'de> for Addr {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Addr;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    write!(f, "an address of at most {MAX_REPLICA_ADDR_LEN} bytes")
                }

                fn visit_str<E: Error>(self, v: &str) -> Result<Addr, E> {
                    if v.len() > MAX_REPLICA_ADDR_LEN {
                        return Err(E::invalid_length(v.len(), &self));
                    }
                    Ok(Addr(v.to_owned()))
                }
            }
            d.deserialize_str(V)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinStatus {
    /// The node is a member but not authorized: an admin must authorize it.
    AccessDenied,
    /// No such network on this controller.
    NotFound,
    /// Authorized; configs follow.
    Ok,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN} bytes")]
    TooLarge { len: u64 },
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    #[error("malformed message: {0}")]
    Decode(postcard::Error),
    #[error("message could not be encoded: {0}")]
    Encode(postcard::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A message as one frame: length prefix and body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = postcard::to_extend(msg, vec![0u8; 4]).map_err(FrameError::Encode)?;
    let len = frame.len() - 4;
    let len32 = u32::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_FRAME_LEN)
        .ok_or(FrameError::TooLarge { len: len as u64 })?;
    frame[..4].copy_from_slice(&len32.to_be_bytes());
    Ok(frame)
}

/// A message from one frame body. Trailing bytes are an error: they would mean the two sides
/// disagree about the message layout.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(FrameError::Decode)?;
    if rest.is_empty() {
        Ok(msg)
    } else {
        Err(FrameError::Decode(postcard::Error::DeserializeBadEncoding))
    }
}

/// Writes one frame.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize,
{
    // One buffer, one write: QUIC packs it into as few packets as possible.
    w.write_all(&encode(msg)?).await?;
    Ok(())
}

/// Reads one frame. `Ok(None)` when the stream ends cleanly between frames.
///
/// Not cancel-safe (a partly read frame is lost): call it from a task of its own, not in a
/// `select!` branch that may be dropped.
pub async fn read_frame<R, T>(r: &mut R) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
    T: DeserializeOwned,
{
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        match r.read(&mut header[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated),
            n => filled += n,
        }
    }
    let len = u32::from_be_bytes(header);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
        });
    }
    // The buffer grows with the bytes that actually arrive, so a peer announcing 16 MiB and
    // sending nothing costs nothing.
    let mut body = Vec::with_capacity((len as usize).min(64 * 1024));
    let got = r.take(u64::from(len)).read_to_end(&mut body).await?;
    if got != len as usize {
        return Err(FrameError::Truncated);
    }
    decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    fn network() -> impl Strategy<Value = NetworkId> {
        any::<u64>().prop_map(NetworkId::from_u64)
    }

    fn node_message() -> impl Strategy<Value = NodeMessage> {
        prop_oneof![
            (
                any::<[u8; 32]>(),
                ".{0,20}",
                prop::collection::vec(socket_addr(), 0..10)
            )
                .prop_map(|(x25519, version, local_endpoints)| NodeMessage::Hello {
                    x25519,
                    version,
                    data_port: 9993,
                    local_endpoints
                }),
            (network(), any::<u64>()).prop_map(|(network, have_revision)| NodeMessage::Join {
                network,
                have_revision
            }),
            network().prop_map(|network| NodeMessage::Leave { network }),
            (
                proptest::option::of(socket_addr()),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(public, port_mapped, relay)| NodeMessage::Reach(Reach {
                    public,
                    port_mapped,
                    relay
                })),
            any::<[u8; 32]>().prop_map(|tag| NodeMessage::Proof { tag }),
            (
                network(),
                ".{0,80}",
                prop::collection::vec(peer_path(), 0..20)
            )
                .prop_map(|(network, hostname, peers)| NodeMessage::Report(
                    Report::bounded(network, &hostname, peers)
                )),
        ]
    }

    fn peer_path() -> impl Strategy<Value = PeerPathReport> {
        let kind = prop_oneof![
            Just(PathKind::None),
            Just(PathKind::Relay),
            Just(PathKind::Lan),
            Just(PathKind::Public),
            Just(PathKind::Punched),
            Just(PathKind::PortMapped),
        ];
        (1u64..(1 << 32), kind, proptest::option::of(any::<u32>())).prop_map(
            |(id, path, rtt_us)| PeerPathReport {
                peer: NodeId::new(id).expect("below the reserved range"),
                path,
                rtt_us,
            },
        )
    }

    fn controller_message() -> impl Strategy<Value = ControllerMessage> {
        let status = prop_oneof![
            Just(JoinStatus::AccessDenied),
            Just(JoinStatus::NotFound),
            Just(JoinStatus::Ok)
        ];
        prop_oneof![
            (network(), status)
                .prop_map(|(network, status)| ControllerMessage::Status { network, status }),
            (
                network(),
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(network, revision, signed)| ControllerMessage::Config {
                    network,
                    revision,
                    signed
                }),
            ".{0,40}".prop_map(|message| ControllerMessage::Error { message }),
            prop::collection::vec("[a-z0-9.:\\[\\]-]{1,40}", 0..=MAX_REPLICAS)
                .prop_map(|addresses| ControllerMessage::Replicas { addresses }),
            (any::<u64>(), any::<[u8; 32]>())
                .prop_map(|(expires, key)| ControllerMessage::RelayCredential { expires, key }),
            any::<[u8; 32]>().prop_map(|key| ControllerMessage::Challenge { key }),
        ]
    }

    #[test]
    fn only_a_changed_path_is_news() {
        let net = NetworkId::from_u64(1);
        let peer = |path, rtt| PeerPathReport {
            peer: NodeId::new(0x12_3456_7890).unwrap(),
            path,
            rtt_us: Some(rtt),
        };
        let a = Report::bounded(net, "h", vec![peer(PathKind::Relay, 900)]);
        let slower = Report::bounded(net, "h", vec![peer(PathKind::Relay, 1900)]);
        let direct = Report::bounded(net, "h", vec![peer(PathKind::Lan, 300)]);
        assert!(a.same_paths(&slower));
        assert!(!a.same_paths(&direct));
        assert!(!a.same_paths(&Report::bounded(net, "h", vec![])));
        assert!(!a.same_paths(&Report::bounded(net, "g", vec![peer(PathKind::Relay, 900)])));
    }

    #[test]
    fn relaying_is_known_from_0_2_0() {
        for old in ["0.1.0", "0.1.9", "garbage", "", "1"] {
            assert!(!knows_relaying(old), "{old}");
        }
        for new in ["0.2.0", "0.2.1-dev", "0.10.0", "1.0.0"] {
            assert!(knows_relaying(new), "{new}");
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    proptest! {
        #[test]
        fn node_messages_round_trip(msgs in prop::collection::vec(node_message(), 1..5)) {
            let mut wire = Vec::new();
            for m in &msgs {
                wire.extend(encode(m).unwrap());
            }
            let back = block_on(async {
                let mut r = &wire[..];
                let mut out = Vec::new();
                while let Some(m) = read_frame::<_, NodeMessage>(&mut r).await.unwrap() {
                    out.push(m);
                }
                out
            });
            prop_assert_eq!(back, msgs);
        }

        #[test]
        fn reports_are_cut_to_their_bounds(hostname in ".{0,100}", n in 0usize..3) {
            let peers = vec![
                PeerPathReport {
                    peer: NodeId::new(7).unwrap(),
                    path: PathKind::Lan,
                    rtt_us: None
                };
                n * MAX_REPORT_PEERS
            ];
            let r = Report::bounded(NetworkId::from_u64(1), &hostname, peers);
            prop_assert!(r.hostname.len() <= MAX_HOSTNAME_LEN);
            prop_assert!(hostname.starts_with(&r.hostname));
            prop_assert_eq!(r.peers.len(), n.min(1) * MAX_REPORT_PEERS);
        }

        #[test]
        fn controller_messages_round_trip(m in controller_message()) {
            let frame = encode(&m).unwrap();
            prop_assert_eq!(decode::<ControllerMessage>(&frame[4..]).unwrap(), m);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode::<NodeMessage>(&bytes);
            let _ = decode::<ControllerMessage>(&bytes);
            // And as a stream: any prefix, any claimed length.
            block_on(async {
                let mut r = &bytes[..];
                while let Ok(Some(_)) = read_frame::<_, NodeMessage>(&mut r).await {}
                let mut r = &bytes[..];
                while let Ok(Some(_)) = read_frame::<_, ControllerMessage>(&mut r).await {}
            });
        }
    }

    #[test]
    fn replica_lists_are_bounded() {
        let at_most = ControllerMessage::Replicas {
            addresses: (0..MAX_REPLICAS)
                .map(|i| format!("10.0.0.{i}:9994"))
                .chain(std::iter::once("x".repeat(MAX_REPLICA_ADDR_LEN)))
                .skip(1)
                .collect(),
        };
        let frame = encode(&at_most).unwrap();
        assert_eq!(decode::<ControllerMessage>(&frame[4..]).unwrap(), at_most);

        // One address too many, or one byte too long: a decoding error, not a panic.
        let too_many = ControllerMessage::Replicas {
            addresses: (0..=MAX_REPLICAS).map(|i| format!("r{i}:1")).collect(),
        };
        let frame = encode(&too_many).unwrap();
        assert!(matches!(
            decode::<ControllerMessage>(&frame[4..]),
            Err(FrameError::Decode(_))
        ));
        let too_long = ControllerMessage::Replicas {
            addresses: vec!["x".repeat(MAX_REPLICA_ADDR_LEN + 1)],
        };
        let frame = encode(&too_long).unwrap();
        assert!(matches!(
            decode::<ControllerMessage>(&frame[4..]),
            Err(FrameError::Decode(_))
        ));
        // A huge claimed count with nothing behind it.
        let mut forged = encode(&ControllerMessage::Replicas { addresses: vec![] }).unwrap();
        forged.truncate(forged.len() - 1);
        forged.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode::<ControllerMessage>(&forged[4..]).is_err());

        // The constructor keeps to the bounds.
        let built = ControllerMessage::replicas(
            std::iter::once("x".repeat(MAX_REPLICA_ADDR_LEN + 1))
                .chain(std::iter::once(String::new()))
                .chain((0..40).map(|i| format!("r{i}:1"))),
        );
        let ControllerMessage::Replicas { addresses } = &built else {
            unreachable!()
        };
        assert_eq!(addresses.len(), MAX_REPLICAS);
        assert_eq!(addresses[0], "r0:1");
        let frame = encode(&built).unwrap();
        assert_eq!(decode::<ControllerMessage>(&frame[4..]).unwrap(), built);
    }

    #[test]
    fn earlier_variants_keep_their_encoding() {
        // Appending `Replicas` must not renumber the others: nodes and controllers of the
        // previous version still understand each other's `Status`, `Config` and `Error`.
        let error = ControllerMessage::Error {
            message: "x".into(),
        };
        assert_eq!(encode(&error).unwrap()[4..], [2, 1, b'x']);
        let replicas = ControllerMessage::Replicas {
            addresses: vec!["a:1".into()],
        };
        assert_eq!(encode(&replicas).unwrap()[4..], [3, 1, 3, b'a', b':', b'1']);
    }

    #[test]
    fn oversized_and_truncated_frames_are_refused() {
        block_on(async {
            let mut huge = &(MAX_FRAME_LEN + 1).to_be_bytes()[..];
            assert!(matches!(
                read_frame::<_, NodeMessage>(&mut huge).await,
                Err(FrameError::TooLarge { .. })
            ));
            let frame = encode(&NodeMessage::Leave {
                network: NetworkId::from_u64(1),
            })
            .unwrap();
            let mut cut = &frame[..frame.len() - 1];
            assert!(matches!(
                read_frame::<_, NodeMessage>(&mut cut).await,
                Err(FrameError::Truncated)
            ));
            let mut header_only = &frame[..2];
            assert!(matches!(
                read_frame::<_, NodeMessage>(&mut header_only).await,
                Err(FrameError::Truncated)
            ));
            let mut empty: &[u8] = &[];
            assert!(
                read_frame::<_, NodeMessage>(&mut empty)
                    .await
                    .unwrap()
                    .is_none()
            );
        });
        let mut padded = encode(&NodeMessage::Leave {
            network: NetworkId::from_u64(1),
        })
        .unwrap();
        padded.push(0);
        assert!(matches!(
            decode::<NodeMessage>(&padded[4..]),
            Err(FrameError::Decode(_))
        ));
        let big = ControllerMessage::Config {
            network: NetworkId::from_u64(1),
            revision: 1,
            signed: vec![0; MAX_FRAME_LEN as usize],
        };
        assert!(matches!(encode(&big), Err(FrameError::TooLarge { .. })));
    }
}
