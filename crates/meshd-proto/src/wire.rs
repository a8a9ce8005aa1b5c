//! Wire messages: zero-copy views over untrusted UDP payloads.
//!
//! Every message starts with `type (1) | reserved (3, zero)`; all integers are little-endian
//! (the counter is also the AEAD nonce, as in WireGuard).
//!
//! ```text
//! 1 HandshakeInit      type|res | sender index (4) | network id (8) | noise (108) | mac1 (16) | mac2 (16)
//! 2 HandshakeResponse  type|res | sender index (4) | receiver index (4) | noise (48) | mac1 | mac2
//! 3 CookieReply        type|res | receiver index (4) | nonce (24) | sealed cookie (16 + 16)
//! 4 Data               type|res | receiver index (4) | counter (8) | ciphertext | tag (16)
//! 5 Probe              same layout as Data; the plaintext is a probe body, never an IP packet
//! 6 Relay              type|res | destination node (5) | source node (5) | inner message
//! 7 Reflect            node → replica: see [`crate::reach::reflect`]
//! 8 Reflected          replica → node: see [`crate::reach::reflect`]
//! ```
//! Parsing checks sizes, types and reserved bytes only; authenticity is checked by the layer
//! that owns the keys. A relay envelope carries exactly one non-relay message.

use crate::NodeId;

pub const TYPE_HANDSHAKE_INIT: u8 = 1;
pub const TYPE_HANDSHAKE_RESPONSE: u8 = 2;
pub const TYPE_COOKIE_REPLY: u8 = 3;
pub const TYPE_DATA: u8 = 4;
pub const TYPE_PROBE: u8 = 5;
pub const TYPE_RELAY: u8 = 6;
/// Not a tunnel message: a node's reflect request to a replica ([`crate::reach`]).
pub const TYPE_REFLECT: u8 = 7;
/// Not a tunnel message: a replica's answer to a reflect request.
pub const TYPE_REFLECTED: u8 = 8;

pub const MAC_LEN: usize = 16;
pub const TAG_LEN: usize = 16;
/// Noise IKpsk2 first message: e (32) + sealed s (32 + 16) + sealed 12-byte timestamp (12 + 16).
pub const NOISE_INIT_LEN: usize = 32 + 48 + 28;
/// Noise IKpsk2 second message: e (32) + sealed empty payload (16).
pub const NOISE_RESPONSE_LEN: usize = 32 + 16;
pub const COOKIE_NONCE_LEN: usize = 24;
pub const COOKIE_LEN: usize = 16;

pub const HANDSHAKE_INIT_LEN: usize = 4 + 4 + 8 + NOISE_INIT_LEN + 2 * MAC_LEN;
pub const HANDSHAKE_RESPONSE_LEN: usize = 4 + 4 + 4 + NOISE_RESPONSE_LEN + 2 * MAC_LEN;
pub const COOKIE_REPLY_LEN: usize = 4 + 4 + COOKIE_NONCE_LEN + COOKIE_LEN + TAG_LEN;
/// Bytes in front of a data payload.
pub const DATA_HEADER_LEN: usize = 4 + 4 + 8;
/// Everything a data message adds to the packet it carries.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;
pub const RELAY_HEADER_LEN: usize = 4 + 2 * NodeId::LEN;

/// Why bytes are not a message. Counted per variant by the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty datagram")]
    Empty,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("reserved bytes are not zero")]
    ReservedNotZero,
    #[error("message type {kind} must be {expected} bytes, got {got}")]
    BadLength {
        kind: u8,
        expected: usize,
        got: usize,
    },
    #[error("message type {kind} needs at least {min} bytes, got {got}")]
    TooShort { kind: u8, min: usize, got: usize },
    #[error("relay envelope names an invalid node id")]
    BadRelayNode,
    #[error("relay envelopes do not nest")]
    NestedRelay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    HandshakeInit(HandshakeInit<'a>),
    HandshakeResponse(HandshakeResponse<'a>),
    CookieReply(CookieReply<'a>),
    Data(Data<'a>),
    Probe(Data<'a>),
    Relay(Relay<'a>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeInit<'a> {
    pub sender_index: u32,
    pub network_id: [u8; 8],
    pub noise: &'a [u8],
    /// The message up to (not including) mac1: what mac1 covers.
    pub before_mac1: &'a [u8],
    pub mac1: &'a [u8],
    /// The message up to mac2: what mac2 covers.
    pub before_mac2: &'a [u8],
    pub mac2: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeResponse<'a> {
    pub sender_index: u32,
    pub receiver_index: u32,
    pub noise: &'a [u8],
    pub before_mac1: &'a [u8],
    pub mac1: &'a [u8],
    pub before_mac2: &'a [u8],
    pub mac2: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieReply<'a> {
    pub receiver_index: u32,
    pub nonce: &'a [u8],
    pub sealed_cookie: &'a [u8],
}

/// A data or probe message: header fields plus the sealed payload (ciphertext + tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    pub receiver_index: u32,
    pub counter: u64,
    /// Type and reserved bytes: authenticated as associated data, so a data message cannot be
    /// replayed as a probe or the other way round.
    pub aad: &'a [u8],
    pub sealed: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay<'a> {
    pub destination: NodeId,
    pub source: NodeId,
    pub inner: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn exact(b: &[u8], kind: u8, expected: usize) -> Result<(), WireError> {
    if b.len() != expected {
        return Err(WireError::BadLength {
            kind,
            expected,
            got: b.len(),
        });
    }
    Ok(())
}

/// Parses one message. Never panics; never reads past `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Message<'_>, WireError> {
    let kind = *bytes.first().ok_or(WireError::Empty)?;
    if !(TYPE_HANDSHAKE_INIT..=TYPE_RELAY).contains(&kind) {
        return Err(WireError::UnknownType(kind));
    }
    if bytes.len() < 4 {
        return Err(WireError::TooShort {
            kind,
            min: 4,
            got: bytes.len(),
        });
    }
    if bytes[1..4] != [0, 0, 0] {
        return Err(WireError::ReservedNotZero);
    }
    match kind {
        TYPE_HANDSHAKE_INIT => {
            exact(bytes, kind, HANDSHAKE_INIT_LEN)?;
            let mac1_at = HANDSHAKE_INIT_LEN - 2 * MAC_LEN;
            let mut network_id = [0u8; 8];
            network_id.copy_from_slice(&bytes[8..16]);
            Ok(Message::HandshakeInit(HandshakeInit {
                sender_index: u32_at(bytes, 4),
                network_id,
                noise: &bytes[16..mac1_at],
                before_mac1: &bytes[..mac1_at],
                mac1: &bytes[mac1_at..mac1_at + MAC_LEN],
                before_mac2: &bytes[..mac1_at + MAC_LEN],
                mac2: &bytes[mac1_at + MAC_LEN..],
            }))
        }
        TYPE_HANDSHAKE_RESPONSE => {
            exact(bytes, kind, HANDSHAKE_RESPONSE_LEN)?;
            let mac1_at = HANDSHAKE_RESPONSE_LEN - 2 * MAC_LEN;
            Ok(Message::HandshakeResponse(HandshakeResponse {
                sender_index: u32_at(bytes, 4),
                receiver_index: u32_at(bytes, 8),
                noise: &bytes[12..mac1_at],
                before_mac1: &bytes[..mac1_at],
                mac1: &bytes[mac1_at..mac1_at + MAC_LEN],
                before_mac2: &bytes[..mac1_at + MAC_LEN],
                mac2: &bytes[mac1_at + MAC_LEN..],
            }))
        }
        TYPE_COOKIE_REPLY => {
            exact(bytes, kind, COOKIE_REPLY_LEN)?;
            Ok(Message::CookieReply(CookieReply {
                receiver_index: u32_at(bytes, 4),
                nonce: &bytes[8..8 + COOKIE_NONCE_LEN],
                sealed_cookie: &bytes[8 + COOKIE_NONCE_LEN..],
            }))
        }
        TYPE_DATA | TYPE_PROBE => {
            if bytes.len() < DATA_OVERHEAD {
                return Err(WireError::TooShort {
                    kind,
                    min: DATA_OVERHEAD,
                    got: bytes.len(),
                });
            }
            let data = Data {
                receiver_index: u32_at(bytes, 4),
                counter: u64_at(bytes, 8),
                aad: &bytes[..4],
                sealed: &bytes[DATA_HEADER_LEN..],
            };
            Ok(if kind == TYPE_DATA {
                Message::Data(data)
            } else {
                Message::Probe(data)
            })
        }
        _ => {
            // TYPE_RELAY: the inner message must itself parse, and must not be a relay.
            if bytes.len() < RELAY_HEADER_LEN + 1 {
                return Err(WireError::TooShort {
                    kind,
                    min: RELAY_HEADER_LEN + 1,
                    got: bytes.len(),
                });
            }
            let node = |at: usize| {
                let mut id = [0u8; NodeId::LEN];
                id.copy_from_slice(&bytes[at..at + NodeId::LEN]);
                NodeId::from_bytes(id).map_err(|_| WireError::BadRelayNode)
            };
            let inner = &bytes[RELAY_HEADER_LEN..];
            if inner[0] == TYPE_RELAY {
                return Err(WireError::NestedRelay);
            }
            parse(inner)?;
            Ok(Message::Relay(Relay {
                destination: node(4)?,
                source: node(4 + NodeId::LEN)?,
                inner,
            }))
        }
    }
}

/// Whom a message is for on a node that runs several networks over one socket: the network
/// an initiation names, or the receiver index every other message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    Network([u8; 8]),
    Index(u32),
}

/// Reads a message's [`Recipient`] from its header alone, with the checks of [`parse`] on
/// type, reserved bytes and length, so that the data plane can hand the datagram to its
/// network and that network's tunnel parses it, once. A relay envelope's recipient is its
/// inner message's.
pub fn recipient(bytes: &[u8]) -> Result<Recipient, WireError> {
    let kind = *bytes.first().ok_or(WireError::Empty)?;
    if !(TYPE_HANDSHAKE_INIT..=TYPE_RELAY).contains(&kind) {
        return Err(WireError::UnknownType(kind));
    }
    let too_short = |min: usize| WireError::TooShort {
        kind,
        min,
        got: bytes.len(),
    };
    if bytes.len() < 4 {
        return Err(too_short(4));
    }
    if bytes[1..4] != [0, 0, 0] {
        return Err(WireError::ReservedNotZero);
    }
    match kind {
        TYPE_HANDSHAKE_INIT => {
            exact(bytes, kind, HANDSHAKE_INIT_LEN)?;
            let mut network_id = [0u8; 8];
            network_id.copy_from_slice(&bytes[8..16]);
            Ok(Recipient::Network(network_id))
        }
        TYPE_HANDSHAKE_RESPONSE => {
            exact(bytes, kind, HANDSHAKE_RESPONSE_LEN)?;
            Ok(Recipient::Index(u32_at(bytes, 8)))
        }
        TYPE_COOKIE_REPLY => {
            exact(bytes, kind, COOKIE_REPLY_LEN)?;
            Ok(Recipient::Index(u32_at(bytes, 4)))
        }
        TYPE_DATA | TYPE_PROBE => {
            if bytes.len() < DATA_OVERHEAD {
                return Err(too_short(DATA_OVERHEAD));
            }
            Ok(Recipient::Index(u32_at(bytes, 4)))
        }
        _ => {
            if bytes.len() < RELAY_HEADER_LEN + 1 {
                return Err(too_short(RELAY_HEADER_LEN + 1));
            }
            let inner = &bytes[RELAY_HEADER_LEN..];
            if inner[0] == TYPE_RELAY {
                return Err(WireError::NestedRelay);
            }
            recipient(inner)
        }
    }
}

/// Writes the 4-byte `type | reserved` prefix.
pub fn put_type(out: &mut [u8], kind: u8) {
    out[..4].copy_from_slice(&[kind, 0, 0, 0]);
}

/// Writes a data or probe header into `out[..DATA_HEADER_LEN]`.
pub fn put_data_header(out: &mut [u8], kind: u8, receiver_index: u32, counter: u64) {
    put_type(out, kind);
    out[4..8].copy_from_slice(&receiver_index.to_le_bytes());
    out[8..16].copy_from_slice(&counter.to_le_bytes());
}

/// Wraps `inner` for a relay to forward to `destination`.
pub fn relay_envelope(destination: NodeId, source: NodeId, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; RELAY_HEADER_LEN + inner.len()];
    put_type(&mut out, TYPE_RELAY);
    out[4..9].copy_from_slice(&destination.to_bytes());
    out[9..14].copy_from_slice(&source.to_bytes());
    out[RELAY_HEADER_LEN..].copy_from_slice(inner);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn samples() -> Vec<Vec<u8>> {
        let mut init = vec![7u8; HANDSHAKE_INIT_LEN];
        put_type(&mut init, TYPE_HANDSHAKE_INIT);
        let mut resp = vec![7u8; HANDSHAKE_RESPONSE_LEN];
        put_type(&mut resp, TYPE_HANDSHAKE_RESPONSE);
        let mut cookie = vec![7u8; COOKIE_REPLY_LEN];
        put_type(&mut cookie, TYPE_COOKIE_REPLY);
        let mut data = vec![7u8; DATA_OVERHEAD + 40];
        put_data_header(&mut data, TYPE_DATA, 9, 1);
        let mut keepalive = vec![7u8; DATA_OVERHEAD];
        put_data_header(&mut keepalive, TYPE_PROBE, 9, 2);
        let a = NodeId::new(0x89e92ceee5).unwrap();
        let b = NodeId::new(0xabcdef0123).unwrap();
        let relay = relay_envelope(a, b, &init);
        vec![init, resp, cookie, data, keepalive, relay]
    }

    #[test]
    fn known_bytes_parse_to_fields() {
        let bytes =
            hex_bytes("04000000 2a000000 0100000000000000 00112233445566778899aabbccddeeff");
        let Ok(Message::Data(d)) = parse(&bytes) else {
            panic!("not data")
        };
        assert_eq!(d.receiver_index, 42);
        assert_eq!(d.counter, 1);
        assert_eq!(d.sealed.len(), TAG_LEN);

        let relay = hex_bytes(
            "06000000 89e92ceee5 abcdef0123 04000000 2a000000 0100000000000000 00112233445566778899aabbccddeeff",
        );
        let Ok(Message::Relay(r)) = parse(&relay) else {
            panic!("not relay")
        };
        assert_eq!(r.destination.to_string(), "89e92ceee5");
        assert_eq!(r.source.to_string(), "abcdef0123");
        assert_eq!(r.inner, &bytes[..]);
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        s.as_bytes()
            .chunks(2)
            .map(|p| (crate::hex::nibble(p[0]).unwrap() << 4) | crate::hex::nibble(p[1]).unwrap())
            .collect()
    }

    #[test]
    fn sizes_are_as_documented() {
        assert_eq!(HANDSHAKE_INIT_LEN, 156);
        assert_eq!(HANDSHAKE_RESPONSE_LEN, 92);
        assert_eq!(COOKIE_REPLY_LEN, 64);
        assert_eq!(DATA_OVERHEAD, 32);
    }

    #[test]
    fn every_sample_parses_and_every_fixed_size_prefix_fails() {
        for s in samples() {
            parse(&s).unwrap();
            let fixed = !matches!(s[0], TYPE_DATA | TYPE_PROBE | TYPE_RELAY);
            for len in 0..s.len() {
                let r = parse(&s[..len]);
                if fixed || len < DATA_OVERHEAD {
                    assert!(r.is_err(), "type {} prefix {len} accepted", s[0]);
                }
            }
        }
    }

    #[test]
    fn relay_rules() {
        let a = NodeId::new(0x89e92ceee5).unwrap();
        let inner = samples().remove(3);
        let relay = relay_envelope(a, a, &inner);
        let nested = relay_envelope(a, a, &relay);
        assert_eq!(parse(&nested), Err(WireError::NestedRelay));
        let mut zero_dest = relay.clone();
        zero_dest[4..9].fill(0);
        assert_eq!(parse(&zero_dest), Err(WireError::BadRelayNode));
        let mut bad_reserved = relay;
        bad_reserved[2] = 1;
        assert_eq!(parse(&bad_reserved), Err(WireError::ReservedNotZero));
    }

    /// The recipient [`parse`] implies for a message it accepts.
    fn recipient_of(msg: &Message<'_>) -> Recipient {
        match msg {
            Message::HandshakeInit(m) => Recipient::Network(m.network_id),
            Message::HandshakeResponse(m) => Recipient::Index(m.receiver_index),
            Message::CookieReply(m) => Recipient::Index(m.receiver_index),
            Message::Data(m) | Message::Probe(m) => Recipient::Index(m.receiver_index),
            Message::Relay(r) => recipient_of(&parse(r.inner).expect("parse checked the inner")),
        }
    }

    #[test]
    fn every_message_type_has_its_recipient_and_prefixes_have_none() {
        let mut init = vec![0u8; HANDSHAKE_INIT_LEN];
        put_type(&mut init, TYPE_HANDSHAKE_INIT);
        init[8..16].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut response = vec![0u8; HANDSHAKE_RESPONSE_LEN];
        put_type(&mut response, TYPE_HANDSHAKE_RESPONSE);
        response[8..12].copy_from_slice(&7u32.to_le_bytes());
        let mut cookie = vec![0u8; COOKIE_REPLY_LEN];
        put_type(&mut cookie, TYPE_COOKIE_REPLY);
        cookie[4..8].copy_from_slice(&8u32.to_le_bytes());
        let mut data = vec![0u8; DATA_OVERHEAD + 20];
        put_data_header(&mut data, TYPE_DATA, 9, 1);
        let node = |b: u8| NodeId::from_bytes([b, 2, 3, 4, 5]).unwrap();
        let relayed = relay_envelope(node(1), node(2), &data);
        for (bytes, want) in [
            (&init, Recipient::Network([1, 2, 3, 4, 5, 6, 7, 8])),
            (&response, Recipient::Index(7)),
            (&cookie, Recipient::Index(8)),
            (&data, Recipient::Index(9)),
            (&relayed, Recipient::Index(9)),
        ] {
            assert_eq!(recipient(bytes), Ok(want));
            assert_eq!(recipient_of(&parse(bytes).unwrap()), want);
            for len in 0..bytes.len().min(DATA_OVERHEAD) {
                assert!(recipient(&bytes[..len]).is_err(), "{len} bytes of {want:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn the_recipient_is_what_parse_implies(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            match parse(&bytes) {
                Ok(msg) => prop_assert_eq!(recipient(&bytes), Ok(recipient_of(&msg))),
                // Only a relay's node ids are beyond the header checks.
                Err(WireError::BadRelayNode) => prop_assert!(recipient(&bytes).is_ok()),
                Err(e) => prop_assert_eq!(recipient(&bytes), Err(e)),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn typed_garbage_never_panics(kind in 0u8..8, len in 0usize..300, fill: u8) {
            let mut bytes = vec![fill; len];
            if len > 0 { bytes[0] = kind; }
            if len > 3 { bytes[1..4].fill(0); }
            let _ = parse(&bytes);
        }
    }
}
