//! `NodeId` and `NetworkId`: the two identifiers users type and see.
//!
//! Both print as fixed-width lowercase hex (10 and 16 digits, as ZeroTier users know them) and
//! parse only from exactly that form, so a typo is an error instead of a different id.

use std::fmt;
use std::str::FromStr;

use crate::hex;

/// A node's 40-bit address: the last five bytes of a hash of its public keys.
///
/// Ids that are zero or start with `ff` are reserved (ZeroTier's rule); [`crate::Identity`]
/// never produces them and [`NodeId::new`] refuses them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u64);

impl NodeId {
    /// Number of bytes in the wire form.
    pub const LEN: usize = 5;
    const MASK: u64 = (1 << 40) - 1;

    /// Validates a 40-bit value.
    pub fn new(value: u64) -> Result<Self, IdError> {
        if value > Self::MASK {
            return Err(IdError::NodeIdTooWide(value));
        }
        let id = Self(value);
        if id.is_reserved() {
            return Err(IdError::ReservedNodeId(id.to_string()));
        }
        Ok(id)
    }

    /// The low 40 bits of `value`, with no reservation check: for ids read out of address bits,
    /// which are looked up afterwards and so never trusted by themselves.
    pub(crate) fn from_bits(value: u64) -> Self {
        Self(value & Self::MASK)
    }

    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Result<Self, IdError> {
        let mut wide = [0u8; 8];
        wide[3..].copy_from_slice(&bytes);
        Self::new(u64::from_be_bytes(wide))
    }

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let wide = self.0.to_be_bytes();
        let mut out = [0u8; Self::LEN];
        out.copy_from_slice(&wide[3..]);
        out
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    fn is_reserved(self) -> bool {
        self.0 == 0 || self.0 >> 32 == 0xff
    }
}

/// A network's 64-bit id: the first eight bytes of a hash of the network's Ed25519 public key,
/// so any replica's signature over a config can be checked by a node that knows only the id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId(u64);

impl NetworkId {
    pub const LEN: usize = 8;

    pub const fn from_u64(value: u64) -> Self {
        Self(value)
    }

    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(u64::from_be_bytes(bytes))
    }

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        self.0.to_be_bytes()
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// Why a string or number is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be exactly {expected} lowercase hex digits (0-9, a-f), got {got:?}")]
    BadText {
        kind: &'static str,
        expected: usize,
        got: String,
    },
    #[error("node id {0:#x} does not fit in 40 bits")]
    NodeIdTooWide(u64),
    #[error("node id {0} is reserved (zero or starting with ff)")]
    ReservedNodeId(String),
    #[error(
        "these keys carry no proof of work (made by meshd 0.2 or older?): move the node's \
         identity.secret away and start the daemon again for a new identity, then authorize \
         its node id"
    )]
    NoProofOfWork,
}

fn parse_hex<const N: usize>(s: &str, kind: &'static str) -> Result<[u8; N], IdError> {
    hex::decode::<N>(s).ok_or_else(|| IdError::BadText {
        kind,
        expected: 2 * N,
        got: s.chars().take(40).collect(),
    })
}

impl FromStr for NodeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(parse_hex::<{ NodeId::LEN }>(s, "a node id")?)
    }
}

impl FromStr for NetworkId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::from_bytes(parse_hex::<{ NetworkId::LEN }>(
            s,
            "a network id",
        )?))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so callers' width and alignment (`{:<12}`) apply.
        f.pad(&format!("{:010x}", self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{:016x}", self.0))
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkId({self})")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn node_id_text_form() {
        let id: NodeId = "89e92ceee5".parse().unwrap();
        assert_eq!(id.as_u64(), 0x89e92ceee5);
        assert_eq!(id.to_string(), "89e92ceee5");
        assert_eq!(id.to_bytes(), [0x89, 0xe9, 0x2c, 0xee, 0xe5]);
        let small = NodeId::new(0x123).unwrap();
        assert_eq!(small.to_string(), "0000000123");
        assert_eq!(format!("{small:<12}|"), "0000000123  |");
    }

    #[test]
    fn node_id_rejects() {
        for bad in [
            "89e92ceee",
            "89e92ceee55",
            "89E92CEEE5",
            "89e92ceeg5",
            "",
            " 89e92ceee5",
        ] {
            let err = bad.parse::<NodeId>().unwrap_err();
            assert!(err.to_string().contains("10 lowercase hex digits"), "{err}");
        }
        assert!(matches!(
            "0000000000".parse::<NodeId>(),
            Err(IdError::ReservedNodeId(_))
        ));
        assert!(matches!(
            "ff00000001".parse::<NodeId>(),
            Err(IdError::ReservedNodeId(_))
        ));
        assert!(matches!(
            NodeId::new(1 << 40),
            Err(IdError::NodeIdTooWide(_))
        ));
    }

    #[test]
    fn network_id_text_form() {
        let id: NetworkId = "8056c2e21c000001".parse().unwrap();
        assert_eq!(id.as_u64(), 0x8056c2e21c000001);
        assert_eq!(id.to_string(), "8056c2e21c000001");
        assert_eq!(NetworkId::from_u64(1).to_string(), "0000000000000001");
        for bad in [
            "8056c2e21c00000",
            "8056c2e21c0000011",
            "8056C2E21C000001",
            "xyz",
        ] {
            let err = bad.parse::<NetworkId>().unwrap_err();
            assert!(err.to_string().contains("16 lowercase hex digits"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn node_id_round_trips(v in 1u64..(0xff << 32)) {
            let id = NodeId::new(v).unwrap();
            prop_assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
            prop_assert_eq!(NodeId::from_bytes(id.to_bytes()).unwrap(), id);
        }

        #[test]
        fn network_id_round_trips(v: u64) {
            let id = NetworkId::from_u64(v);
            prop_assert_eq!(id.to_string().parse::<NetworkId>().unwrap(), id);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,24}") {
            let _ = s.parse::<NodeId>();
            let _ = s.parse::<NetworkId>();
        }
    }
}
