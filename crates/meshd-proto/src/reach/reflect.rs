//! The reflect request and its answer.
//!
//! ```text
//! 7 Reflect    type|res | node (5) | expires (8) | sequence (8) | mac (16)                 41 bytes
//! 8 Reflected  type|res | sequence (8) | port (2) | address (16) | mac (16)                46 bytes
//! ```
//! Integers are little-endian; the address is IPv6, IPv4 as `::ffff:a.b.c.d`. Both MACs are
//! keyed with the node's credential key ([`super::credential`]) over every byte before
//! them: the replica knows the request comes from the node (and names an unexpired
//! credential), the node knows the answer comes from a replica of its controller and
//! answers its own request. The sequence grows with every request a node sends, so a
//! replica takes a replayed request for what it is.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::credential::{KEY_LEN, MAC_LEN, RelaySecret, mac, mac_valid};
use super::drop::ReachDrop;
use crate::NodeId;
use crate::wire::{TYPE_REFLECT, TYPE_REFLECTED, WireError, put_type};

pub const REFLECT_LEN: usize = 4 + NodeId::LEN + 8 + 8 + MAC_LEN;
pub const REFLECTED_LEN: usize = 4 + 8 + 2 + 16 + MAC_LEN;

/// A node's request to be told its address, and registered there for relaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReflectRequest {
    pub node: NodeId,
    /// The credential's expiry (Unix seconds): names the key the MAC is under.
    pub expires: u64,
    pub sequence: u64,
}

/// A replica's answer: the address and port the request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reflection {
    pub sequence: u64,
    pub observed: SocketAddr,
}

fn header(bytes: &[u8], kind: u8, len: usize) -> Result<(), WireError> {
    let first = *bytes.first().ok_or(WireError::Empty)?;
    if first != kind {
        return Err(WireError::UnknownType(first));
    }
    if bytes.len() != len {
        return Err(WireError::BadLength {
            kind,
            expected: len,
            got: bytes.len(),
        });
    }
    if bytes[1..4] != [0, 0, 0] {
        return Err(WireError::ReservedNotZero);
    }
    Ok(())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl ReflectRequest {
    /// The request, MAC'd with the node's credential key.
    pub fn encode(&self, key: &[u8; KEY_LEN]) -> [u8; REFLECT_LEN] {
        let mut out = [0u8; REFLECT_LEN];
        put_type(&mut out, TYPE_REFLECT);
        out[4..9].copy_from_slice(&self.node.to_bytes());
        out[9..17].copy_from_slice(&self.expires.to_le_bytes());
        out[17..25].copy_from_slice(&self.sequence.to_le_bytes());
        let tag = mac(key, &out[..25]);
        out[25..].copy_from_slice(&tag);
        out
    }

    /// The request's fields, unauthenticated: sizes, type and reserved bytes checked.
    pub fn parse(bytes: &[u8]) -> Result<ReflectRequest, WireError> {
        header(bytes, TYPE_REFLECT, REFLECT_LEN)?;
        let mut node = [0u8; NodeId::LEN];
        node.copy_from_slice(&bytes[4..9]);
        Ok(ReflectRequest {
            node: NodeId::from_bytes(node).map_err(|_| WireError::BadRelayNode)?,
            expires: u64_at(bytes, 9),
            sequence: u64_at(bytes, 17),
        })
    }

    /// Parses and authenticates a request at `now_unix` (seconds): its credential must not
    /// have expired and its MAC must be under that credential's key. The key comes back
    /// for the answer.
    pub fn verify(
        bytes: &[u8],
        secret: &RelaySecret,
        now_unix: u64,
    ) -> Result<(ReflectRequest, [u8; KEY_LEN]), ReachDrop> {
        let request = ReflectRequest::parse(bytes).map_err(ReachDrop::Malformed)?;
        if request.expires < now_unix {
            return Err(ReachDrop::Expired);
        }
        let key = secret.key_for(request.node, request.expires);
        if !mac_valid(&key, &bytes[..25], &bytes[25..]) {
            return Err(ReachDrop::BadMac);
        }
        Ok((request, key))
    }
}

impl Reflection {
    /// The answer, MAC'd with the requesting node's credential key.
    pub fn encode(&self, key: &[u8; KEY_LEN]) -> [u8; REFLECTED_LEN] {
        let mut out = [0u8; REFLECTED_LEN];
        put_type(&mut out, TYPE_REFLECTED);
        out[4..12].copy_from_slice(&self.sequence.to_le_bytes());
        out[12..14].copy_from_slice(&self.observed.port().to_le_bytes());
        let ip = match self.observed.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        out[14..30].copy_from_slice(&ip.octets());
        let tag = mac(key, &out[..30]);
        out[30..].copy_from_slice(&tag);
        out
    }

    /// Parses and authenticates an answer with the node's own credential key.
    pub fn open(bytes: &[u8], key: &[u8; KEY_LEN]) -> Result<Reflection, ReachDrop> {
        header(bytes, TYPE_REFLECTED, REFLECTED_LEN).map_err(ReachDrop::Malformed)?;
        if !mac_valid(key, &bytes[..30], &bytes[30..]) {
            return Err(ReachDrop::BadMac);
        }
        let mut port = [0u8; 2];
        port.copy_from_slice(&bytes[12..14]);
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&bytes[14..30]);
        let ip = Ipv6Addr::from(ip);
        let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
        Ok(Reflection {
            sequence: u64_at(bytes, 4),
            observed: SocketAddr::new(ip, u16::from_le_bytes(port)),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secret() -> RelaySecret {
        RelaySecret::derive(b"cluster")
    }

    fn node() -> NodeId {
        NodeId::new(0x0089_e92c_eee5).expect("valid")
    }

    #[test]
    fn request_round_trip_and_checks() {
        let cred = secret().issue(node(), 1_000);
        let req = ReflectRequest {
            node: node(),
            expires: 1_000,
            sequence: 7,
        };
        let bytes = req.encode(&cred.key);
        let (got, key) = ReflectRequest::verify(&bytes, &secret(), 999).expect("valid");
        assert_eq!((got, key), (req, cred.key));
        assert_eq!(
            ReflectRequest::verify(&bytes, &secret(), 1_001),
            Err(ReachDrop::Expired)
        );
        assert_eq!(
            ReflectRequest::verify(&bytes, &RelaySecret::derive(b"other"), 999),
            Err(ReachDrop::BadMac)
        );
        // Moving the expiry changes the key the replica derives: the MAC no longer holds.
        let mut later = bytes;
        later[9] ^= 1;
        assert_eq!(
            ReflectRequest::verify(&later, &secret(), 0),
            Err(ReachDrop::BadMac)
        );
        assert!(matches!(
            ReflectRequest::verify(&bytes[..40], &secret(), 0),
            Err(ReachDrop::Malformed(WireError::BadLength { .. }))
        ));
    }

    #[test]
    fn reflection_round_trip_both_families() {
        let key = secret().key_for(node(), 5);
        for observed in ["203.0.113.7:40001", "[2001:db8::1]:9993"] {
            let r = Reflection {
                sequence: 3,
                observed: observed.parse().expect("addr"),
            };
            assert_eq!(Reflection::open(&r.encode(&key), &key), Ok(r));
            let mut forged = r.encode(&key);
            forged[13] ^= 0x80;
            assert_eq!(Reflection::open(&forged, &key), Err(ReachDrop::BadMac));
            let other = secret().key_for(node(), 6);
            assert_eq!(
                Reflection::open(&r.encode(&key), &other),
                Err(ReachDrop::BadMac)
            );
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ReflectRequest::verify(&bytes, &secret(), 0);
            let _ = Reflection::open(&bytes, &[7; KEY_LEN]);
        }

        #[test]
        fn one_flipped_bit_is_refused(bit in 0usize..REFLECT_LEN * 8, seq in any::<u64>()) {
            let cred = secret().issue(node(), u64::MAX);
            let req = ReflectRequest { node: node(), expires: u64::MAX, sequence: seq };
            let mut bytes = req.encode(&cred.key);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(ReflectRequest::verify(&bytes, &secret(), 0).is_err());
        }
    }
}
