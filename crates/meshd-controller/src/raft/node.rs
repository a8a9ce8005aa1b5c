//! A replica as the cluster membership records it: where the others reach it, and the key
//! its replication handshakes must prove.
//!
//! Kept in the log and snapshots as one string, `"host:port"` or `"host:port KEY"` (KEY:
//! 64 hex digits), which encodes exactly as openraft's `BasicNode { addr }` did: stores
//! written before keys were pinned read as replicas without a recorded key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A replica's Ed25519 public key: its identity in replication and on the node channel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaKey(pub [u8; 32]);

impl fmt::Display for ReplicaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ReplicaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplicaKey({self})")
    }
}

impl FromStr for ReplicaKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bytes = text.trim().as_bytes();
        if bytes.len() != 64 || !bytes.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!(
                "{text:?} is not a replica key (64 hex digits, as `meshd controller init` \
                 prints it)"
            ));
        }
        let mut key = [0u8; 32];
        for (b, pair) in key.iter_mut().zip(bytes.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            *b = digit(pair[0]) << 4 | digit(pair[1]);
        }
        Ok(ReplicaKey(key))
    }
}

impl Serialize for ReplicaKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReplicaKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One replica in the cluster membership.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ReplicaNode {
    /// `host:port` of its replication listener (the TCP side of `--listen`).
    pub addr: String,
    /// The key it proves in replication handshakes; `None` only for replicas recorded before
    /// keys were pinned.
    pub key: Option<ReplicaKey>,
}

impl ReplicaNode {
    pub fn new(addr: impl Into<String>, key: Option<ReplicaKey>) -> Self {
        Self {
            addr: addr.into(),
            key,
        }
    }

    fn encode(&self) -> String {
        match &self.key {
            Some(key) => format!("{} {key}", self.addr),
            None => self.addr.clone(),
        }
    }

    /// The key is the last word, and only when it is 64 hex digits: an address recorded
    /// with a space in it before keys were pinned still reads as that address.
    fn decode(text: &str) -> Self {
        match text.rsplit_once(' ') {
            Some((addr, key)) => match key.parse() {
                Ok(key) => Self::new(addr, Some(key)),
                Err(_) => Self::new(text, None),
            },
            None => Self::new(text, None),
        }
    }
}

impl fmt::Display for ReplicaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

impl fmt::Debug for ReplicaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.encode())
    }
}

impl Serialize for ReplicaNode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for ReplicaNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Self::decode(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_written_with_basic_nodes_still_read() {
        let old = postcard::to_allocvec(&openraft::BasicNode::new("10.0.0.1:9994")).unwrap();
        let node: ReplicaNode = postcard::from_bytes(&old).unwrap();
        assert_eq!(node, ReplicaNode::new("10.0.0.1:9994", None));
        assert_eq!(postcard::to_allocvec(&node).unwrap(), old);
    }

    #[test]
    fn keys_round_trip_and_bad_ones_are_refused() {
        let node = ReplicaNode::new("ctl.example.com:9994", Some(ReplicaKey([0xab; 32])));
        let bytes = postcard::to_allocvec(&node).unwrap();
        assert_eq!(postcard::from_bytes::<ReplicaNode>(&bytes).unwrap(), node);
        assert_eq!(node.to_string(), "ctl.example.com:9994");

        // Whatever came before keys reads as an address.
        let odd = postcard::to_allocvec(&"ctl one:9994 nothex").unwrap();
        assert_eq!(
            postcard::from_bytes::<ReplicaNode>(&odd).unwrap(),
            ReplicaNode::new("ctl one:9994 nothex", None)
        );
        let err = "abc".parse::<ReplicaKey>().unwrap_err();
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
