//! Relay credentials: what lets a node's UDP requests be checked by any replica.
//!
//! Every replica derives the same [`RelaySecret`] (from the cluster's shared secret). For a
//! node and an expiry, the credential key is a keyed BLAKE2s of both under that secret, so a
//! replica needs no per-node state to check a request: it recomputes the key from the node
//! id and expiry the request names. The node gets its key over the channel, which is
//! authenticated by the node's identity; nobody else learns it.

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};

use crate::NodeId;

/// Length of a credential key and of the relay secret.
pub const KEY_LEN: usize = 32;
/// Length of the MAC on reach messages.
pub const MAC_LEN: usize = 16;

/// The secret every replica of a controller holds, from which credentials derive.
#[derive(Clone)]
pub struct RelaySecret([u8; KEY_LEN]);

impl std::fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelaySecret(..)")
    }
}

/// A node's credential: the key its reach messages are authenticated with, valid until
/// `expires` (Unix seconds).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub node: NodeId,
    pub expires: u64,
    pub key: [u8; KEY_LEN],
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("node", &self.node)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl RelaySecret {
    /// The relay secret of a cluster whose replicas share `cluster_secret` (any length):
    /// its own derivation, so the relay secret tells nothing about the cluster secret.
    pub fn derive(cluster_secret: &[u8]) -> Self {
        let digest = Blake2s256::new()
            .chain_update(b"meshd relay secret v1")
            .chain_update((cluster_secret.len() as u64).to_le_bytes())
            .chain_update(cluster_secret)
            .finalize();
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&digest);
        RelaySecret(key)
    }

    /// The credential of `node` valid until `expires` (Unix seconds).
    pub fn issue(&self, node: NodeId, expires: u64) -> Credential {
        Credential {
            node,
            expires,
            key: self.key_for(node, expires),
        }
    }

    /// The credential key of `node` and `expires`.
    pub fn key_for(&self, node: NodeId, expires: u64) -> [u8; KEY_LEN] {
        let mut m = <Blake2sMac<blake2::digest::consts::U32> as KeyInit>::new_from_slice(&self.0)
            .expect("a 32-byte key");
        m.update(b"meshd relay credential v1");
        m.update(&node.to_bytes());
        m.update(&expires.to_le_bytes());
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&m.finalize().into_bytes());
        key
    }
}

/// The MAC of `bytes` under a credential key.
pub fn mac(key: &[u8; KEY_LEN], bytes: &[u8]) -> [u8; MAC_LEN] {
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(key).expect("a 32-byte key");
    m.update(bytes);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&m.finalize().into_bytes());
    out
}

/// Whether `tag` is the MAC of `bytes` under `key`, in constant time.
pub fn mac_valid(key: &[u8; KEY_LEN], bytes: &[u8], tag: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    tag.len() == MAC_LEN && bool::from(mac(key, bytes).ct_eq(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u64) -> NodeId {
        NodeId::new(0x10_0000_0000 + n).expect("a valid id")
    }

    #[test]
    fn keys_depend_on_secret_node_and_expiry() {
        let a = RelaySecret::derive(b"cluster a");
        let b = RelaySecret::derive(b"cluster b");
        let k = a.key_for(node(1), 100);
        assert_eq!(
            k,
            a.issue(node(1), 100).key,
            "any replica recomputes the key"
        );
        assert_ne!(k, b.key_for(node(1), 100));
        assert_ne!(k, a.key_for(node(2), 100));
        assert_ne!(k, a.key_for(node(1), 101));
    }

    #[test]
    fn macs_check_key_and_bytes() {
        let key = RelaySecret::derive(b"s").key_for(node(1), 5);
        let other = RelaySecret::derive(b"s").key_for(node(2), 5);
        let tag = mac(&key, b"hello");
        assert!(mac_valid(&key, b"hello", &tag));
        assert!(!mac_valid(&key, b"hellO", &tag));
        assert!(!mac_valid(&other, b"hello", &tag));
        assert!(!mac_valid(&key, b"hello", &tag[..15]));
    }

    #[test]
    fn debug_hides_keys() {
        let c = RelaySecret::derive(b"s").issue(node(1), 5);
        assert!(!format!("{c:?}{:?}", RelaySecret::derive(b"s")).contains("key:"));
    }
}
