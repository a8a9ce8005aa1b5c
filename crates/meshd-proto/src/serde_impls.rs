//! serde support (feature `serde`): ids and keys are hex text in human-readable formats such
//! as JSON, and compact integers or bytes in binary ones such as postcard.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

use crate::identity::{KEY_LEN, PublicIdentity};
use crate::{NetworkId, NodeId, hex};

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.as_u64())
        }
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(de::Error::custom)
        } else {
            NodeId::new(u64::deserialize(d)?).map_err(de::Error::custom)
        }
    }
}

impl Serialize for NetworkId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.as_u64())
        }
    }
}

impl<'de> Deserialize<'de> for NetworkId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(de::Error::custom)
        } else {
            Ok(NetworkId::from_u64(u64::deserialize(d)?))
        }
    }
}

/// A 32-byte key: hex in text formats, a fixed tuple of bytes otherwise.
#[derive(Clone, Copy)]
struct Key([u8; KEY_LEN]);

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(&self.0))
        } else {
            let mut t = s.serialize_tuple(KEY_LEN)?;
            for b in &self.0 {
                t.serialize_element(b)?;
            }
            t.end()
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            hex::decode::<KEY_LEN>(&s)
                .map(Key)
                .ok_or_else(|| de::Error::custom("a key is 64 lowercase hex digits"))
        } else {
            struct Bytes;
            impl<'de> Visitor<'de> for Bytes {
                type Value = Key;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("32 key bytes")
                }
                fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Key, A::Error> {
                    let mut k = [0u8; KEY_LEN];
                    for (i, b) in k.iter_mut().enumerate() {
                        *b = seq
                            .next_element()?
                            .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                    }
                    Ok(Key(k))
                }
            }
            d.deserialize_tuple(KEY_LEN, Bytes)
        }
    }
}

#[derive(Serialize, Deserialize)]
struct PublicIdentityRepr {
    x25519: Key,
    ed25519: Key,
}

impl Serialize for PublicIdentity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PublicIdentityRepr {
            x25519: Key(self.x25519),
            ed25519: Key(self.ed25519),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PublicIdentity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = PublicIdentityRepr::deserialize(d)?;
        Ok(PublicIdentity {
            x25519: r.x25519.0,
            ed25519: r.ed25519.0,
        })
    }
}

/// `"off"` or `"nat66"` in every format: the words the CLI and the API take.
impl Serialize for crate::config::Ipv6Egress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for crate::config::Ipv6Egress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}
