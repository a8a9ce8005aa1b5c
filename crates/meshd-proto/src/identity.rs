//! Node identities and network signing keys.
//!
//! A node is an X25519 key pair (data-plane Noise handshakes) plus an Ed25519 key pair
//! (control-plane TLS and signatures). Its [`NodeId`] is the last five bytes of a memory-hard
//! hash of both public keys ([`node_digest`]), and only keys whose hash starts with
//! [`WORK_BITS`] zero bits make a node id a controller accepts, so an id cannot be claimed
//! without the keys behind it. A network is an Ed25519 key pair whose public-key hash *is*
//! the [`NetworkId`].
//!
//! Why proof of work, as ZeroTier does, and not a wider id: the 40-bit id is part of every
//! member's RFC4193 and 6PLANE addresses. With a plain hash, keys for any chosen id cost
//! about 2^40 hashes (hours on a CPU), so an attacker who learned a node's id could join a
//! network under it first. Here each try costs one Argon2id pass over 2 MiB (about 0.5 ms
//! on a core, and as much memory bandwidth on a GPU) and only 1 in 2^9 keys counts, so
//! claiming a chosen id takes about 2^49 such passes: some 2^60 times the work of one plain
//! hash, thousands of core-years. Making an identity takes 2^9 tries, a fraction of a second,
//! once per node; checking one takes one pass, which a controller does once per connection.

use std::fmt;

use blake2::{Blake2s256, Digest};
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::{NetworkId, NodeId, hex};

/// Length of X25519 and Ed25519 public keys and secrets.
pub const KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The public half of a node identity, as the controller records it and configs carry it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicIdentity {
    pub x25519: [u8; KEY_LEN],
    pub ed25519: [u8; KEY_LEN],
}

/// Leading zero bits the memory-hard hash of a node's keys must have.
pub const WORK_BITS: u32 = 9;

/// Memory of one node-id hash, in KiB.
const WORK_MEMORY_KIB: u32 = 2048;

/// The memory-hard hash of a node's public keys: Argon2id over 2 MiB, one pass.
pub fn node_digest(identity: &PublicIdentity) -> [u8; 32] {
    thread_local! {
        // Reused: a fresh 2 MiB buffer per hash costs page faults worth a third of the hash.
        static MEMORY: std::cell::RefCell<Vec<argon2::Block>> = std::cell::RefCell::new(
            vec![argon2::Block::default(); WORK_MEMORY_KIB as usize],
        );
    }
    let params = argon2::Params::new(WORK_MEMORY_KIB, 1, 1, Some(32))
        .expect("constant Argon2 parameters are valid");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut input = [0u8; 2 * KEY_LEN];
    input[..KEY_LEN].copy_from_slice(&identity.x25519);
    input[KEY_LEN..].copy_from_slice(&identity.ed25519);
    let mut digest = [0u8; 32];
    MEMORY.with_borrow_mut(|memory| {
        argon
            .hash_password_into_with_memory(&input, b"meshd node id v2", &mut digest, memory)
            .expect("constant sizes are within Argon2's limits");
    });
    digest
}

/// Whether `digest` starts with [`WORK_BITS`] zero bits.
fn has_work(digest: &[u8; 32]) -> bool {
    u16::from_be_bytes([digest[0], digest[1]]) >> (16 - WORK_BITS) == 0
}

impl PublicIdentity {
    /// The node id these keys hash to, whether or not they carry the proof of work. For
    /// keys someone presents, use [`PublicIdentity::proven_node_id`].
    pub fn node_id(&self) -> Result<NodeId, crate::IdError> {
        Self::id_of(&node_digest(self))
    }

    /// The node id these keys hash to, if their hash carries the proof of work: what a
    /// controller checks before it lets keys act as a node.
    pub fn proven_node_id(&self) -> Result<NodeId, crate::IdError> {
        let digest = node_digest(self);
        if !has_work(&digest) {
            return Err(crate::IdError::NoProofOfWork);
        }
        Self::id_of(&digest)
    }

    fn id_of(digest: &[u8; 32]) -> Result<NodeId, crate::IdError> {
        let mut id = [0u8; NodeId::LEN];
        id.copy_from_slice(&digest[digest.len() - NodeId::LEN..]);
        NodeId::from_bytes(id)
    }

    /// The node id of meshd 0.2 and before (a plain hash): to recognize their identity files
    /// and replay the joins they made.
    pub fn node_id_before_proof_of_work(&self) -> Result<NodeId, crate::IdError> {
        let digest = Blake2s256::new()
            .chain_update(b"meshd node id v1")
            .chain_update(self.x25519)
            .chain_update(self.ed25519)
            .finalize();
        let mut id = [0u8; NodeId::LEN];
        id.copy_from_slice(&digest[digest.len() - NodeId::LEN..]);
        NodeId::from_bytes(id)
    }

    /// A short fingerprint of both keys, for people to compare (`member list`, `meshd
    /// status`): 64 bits of a hash other than the id's, as four groups of hex. Two
    /// identities with the same node id have different fingerprints, but for a 2^64 search.
    pub fn fingerprint(&self) -> String {
        let digest = Blake2s256::new()
            .chain_update(b"meshd key fingerprint v1")
            .chain_update(self.x25519)
            .chain_update(self.ed25519)
            .finalize();
        digest[..8]
            .chunks(2)
            .map(|pair| format!("{:02x}{:02x}", pair[0], pair[1]))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Checks an Ed25519 signature made by this node.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.ed25519)
            .verify(message, sig)
            .is_ok()
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicIdentity")
            .field("x25519", &hex::encode(&self.x25519))
            .field("ed25519", &hex::encode(&self.ed25519))
            .finish()
    }
}

/// A node's secret identity. `Debug` never prints the secrets.
pub struct Identity {
    x25519_secret: Zeroizing<[u8; KEY_LEN]>,
    ed25519_seed: Zeroizing<[u8; KEY_LEN]>,
    ed25519: Ed25519KeyPair,
    public: PublicIdentity,
    node_id: NodeId,
}

/// Why stored identity or key material was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("identity text must be `<node id>:<128 hex digits>`")]
    Malformed,
    #[error("the keys hash to node id {actual}, but the file says {claimed}")]
    NodeIdMismatch { claimed: String, actual: String },
    #[error("these keys hash to a reserved node id; generate new keys")]
    ReservedId,
    #[error(
        "this identity (node id {node}) was made by meshd 0.2 or older, whose node ids carry no \
         proof of work; controllers refuse it. Move the file away (keep it as a backup) and \
         start the daemon again to make a new identity, then authorize the new node id"
    )]
    MadeWithoutProofOfWork { node: String },
    #[error("the Ed25519 seed was rejected by the signature library")]
    BadSeed,
}

impl Identity {
    /// A fresh identity from the OS random source, carrying the proof of work (about 2^9
    /// tries, a fraction of a second): what a node runs as.
    pub fn generate() -> Self {
        loop {
            let identity = Self::generate_unproven();
            if has_work(&node_digest(&identity.public)) {
                return identity;
            }
        }
    }

    /// A fresh identity without the proof of work: a controller refuses it. For simulations,
    /// fixtures and benchmarks that never present it to one.
    pub fn generate_unproven() -> Self {
        loop {
            let mut secrets = Zeroizing::new([0u8; 2 * KEY_LEN]);
            // The OS random source failing leaves nothing sensible to do; the daemon cannot run.
            getrandom::fill(&mut secrets[..]).expect("the OS random source works");
            if let Ok(identity) = Self::from_secrets(&secrets) {
                return identity;
            }
        }
    }

    /// Rebuilds an identity from its 64 secret bytes (X25519 secret, then Ed25519 seed).
    pub fn from_secrets(secrets: &[u8; 2 * KEY_LEN]) -> Result<Self, KeyError> {
        let mut x25519_secret = Zeroizing::new([0u8; KEY_LEN]);
        let mut ed25519_seed = Zeroizing::new([0u8; KEY_LEN]);
        x25519_secret.copy_from_slice(&secrets[..KEY_LEN]);
        ed25519_seed.copy_from_slice(&secrets[KEY_LEN..]);
        let x25519_public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*x25519_secret));
        let ed25519 = Ed25519KeyPair::from_seed_unchecked(&ed25519_seed[..])
            .map_err(|_| KeyError::BadSeed)?;
        let mut ed_public = [0u8; KEY_LEN];
        ed_public.copy_from_slice(ed25519.public_key().as_ref());
        let public = PublicIdentity {
            x25519: x25519_public.to_bytes(),
            ed25519: ed_public,
        };
        let node_id = public.node_id().map_err(|_| KeyError::ReservedId)?;
        Ok(Self {
            x25519_secret,
            ed25519_seed,
            ed25519,
            public,
            node_id,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn public(&self) -> &PublicIdentity {
        &self.public
    }

    /// The X25519 secret, for the Noise handshake.
    pub fn x25519_secret(&self) -> &[u8; KEY_LEN] {
        &self.x25519_secret
    }

    /// The Ed25519 seed, for building the control-plane TLS key.
    pub fn ed25519_seed(&self) -> &[u8; KEY_LEN] {
        &self.ed25519_seed
    }

    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.ed25519.sign(message).as_ref());
        out
    }

    /// The secret file's text: `<node id>:<x25519 secret><ed25519 seed>` in hex.
    pub fn to_secret_text(&self) -> Zeroizing<String> {
        let mut secrets = Zeroizing::new([0u8; 2 * KEY_LEN]);
        secrets[..KEY_LEN].copy_from_slice(&self.x25519_secret[..]);
        secrets[KEY_LEN..].copy_from_slice(&self.ed25519_seed[..]);
        Zeroizing::new(format!("{}:{}", self.node_id, hex::encode(&secrets[..])))
    }

    /// Parses [`Identity::to_secret_text`]; the node id must match the keys.
    pub fn from_secret_text(text: &str) -> Result<Self, KeyError> {
        let (claimed, secrets) = text.trim().split_once(':').ok_or(KeyError::Malformed)?;
        let secrets =
            Zeroizing::new(hex::decode::<{ 2 * KEY_LEN }>(secrets).ok_or(KeyError::Malformed)?);
        let identity = Self::from_secrets(&secrets)?;
        if let Some(legacy) = identity.public.node_id_before_proof_of_work().ok()
            && legacy.to_string() == claimed
        {
            return Err(KeyError::MadeWithoutProofOfWork {
                node: legacy.to_string(),
            });
        }
        if identity.node_id.to_string() != claimed {
            return Err(KeyError::NodeIdMismatch {
                claimed: claimed.chars().take(16).collect(),
                actual: identity.node_id.to_string(),
            });
        }
        Ok(identity)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("secrets", &"<redacted>")
            .finish()
    }
}

/// The network id an Ed25519 network public key hashes to.
pub fn network_id_for(public_key: &[u8; KEY_LEN]) -> NetworkId {
    let digest = Blake2s256::new()
        .chain_update(b"meshd network id v1")
        .chain_update(public_key)
        .finalize();
    let mut id = [0u8; NetworkId::LEN];
    id.copy_from_slice(&digest[..NetworkId::LEN]);
    NetworkId::from_bytes(id)
}

/// A network's signing key. Replicated controller state: every replica signs with it, and
/// every node checks against the public key that hashes to the network id.
pub struct NetworkKey {
    seed: Zeroizing<[u8; KEY_LEN]>,
    pair: Ed25519KeyPair,
    public: [u8; KEY_LEN],
}

impl NetworkKey {
    pub fn generate() -> Self {
        let mut seed = [0u8; KEY_LEN];
        getrandom::fill(&mut seed).expect("the OS random source works");
        // A uniformly random 32-byte seed is always a valid Ed25519 seed.
        Self::from_seed(&seed).expect("any 32-byte seed is valid")
    }

    pub fn from_seed(seed: &[u8; KEY_LEN]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| KeyError::BadSeed)?;
        let mut public = [0u8; KEY_LEN];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Self {
            seed: Zeroizing::new(*seed),
            pair,
            public,
        })
    }

    pub fn seed(&self) -> &[u8; KEY_LEN] {
        &self.seed
    }

    pub fn public_key(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    pub fn network_id(&self) -> NetworkId {
        network_id_for(&self.public)
    }

    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkKey")
            .field("network_id", &self.network_id())
            .field("seed", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_short_stable_and_tell_keys_apart() {
        let a = Identity::generate();
        let f = a.public().fingerprint();
        assert_eq!(f.len(), 19);
        assert_eq!(f.matches(':').count(), 3);
        assert_eq!(f, a.public().fingerprint());
        assert_ne!(f, Identity::generate().public().fingerprint());
        let mut other = *a.public();
        other.x25519[0] ^= 1;
        assert_ne!(f, other.fingerprint());
    }

    #[test]
    fn identity_round_trips_through_secret_text() {
        let id = Identity::generate();
        let text = id.to_secret_text();
        let back = Identity::from_secret_text(&text).unwrap();
        assert_eq!(back.node_id(), id.node_id());
        assert_eq!(back.public(), id.public());
        assert_eq!(id.public().node_id().unwrap(), id.node_id());
    }

    #[test]
    fn generated_identities_carry_the_proof_of_work_and_unproven_ones_are_refused() {
        let id = Identity::generate();
        assert!(has_work(&node_digest(id.public())));
        assert_eq!(id.public().proven_node_id(), Ok(id.node_id()));
        // The id comes from the memory-hard hash, not from the old plain one.
        assert_ne!(
            id.public().node_id_before_proof_of_work().ok(),
            Some(id.node_id())
        );

        // Without the work (2^9 - 1 keys in 2^9), the id is computed but not accepted.
        let unproven = std::iter::repeat_with(Identity::generate_unproven)
            .find(|id| !has_work(&node_digest(id.public())))
            .expect("most keys carry no work");
        assert_eq!(unproven.public().node_id(), Ok(unproven.node_id()));
        assert_eq!(
            unproven.public().proven_node_id(),
            Err(crate::IdError::NoProofOfWork)
        );
        let mut tampered = *id.public();
        tampered.ed25519[5] ^= 1;
        assert_ne!(tampered.node_id().ok(), Some(id.node_id()));
    }

    #[test]
    fn identity_files_from_before_proof_of_work_are_named_as_such() {
        let id = Identity::generate_unproven();
        let text = id.to_secret_text();
        let (_, secrets) = text.split_once(':').unwrap();
        let legacy = id.public().node_id_before_proof_of_work().ok().unwrap();
        let err = Identity::from_secret_text(&format!("{legacy}:{secrets}")).unwrap_err();
        assert_eq!(
            err,
            KeyError::MadeWithoutProofOfWork {
                node: legacy.to_string()
            }
        );
        assert!(err.to_string().contains("Move the file away"), "{err}");
    }

    #[test]
    fn secret_text_is_checked() {
        let id = Identity::generate();
        let text = id.to_secret_text();
        let (_, secrets) = text.split_once(':').unwrap();
        let wrong = format!("0000000001:{secrets}");
        assert!(matches!(
            Identity::from_secret_text(&wrong),
            Err(KeyError::NodeIdMismatch { .. })
        ));
        assert_eq!(
            Identity::from_secret_text("nonsense").unwrap_err(),
            KeyError::Malformed
        );
        let short = &text[..text.len() - 2];
        assert_eq!(
            Identity::from_secret_text(short).unwrap_err(),
            KeyError::Malformed
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let id = Identity::generate();
        let shown = format!("{id:?}");
        let secret_hex = hex::encode(id.x25519_secret());
        assert!(!shown.contains(&secret_hex));
        assert!(shown.contains("redacted"));
        let key = NetworkKey::generate();
        assert!(!format!("{key:?}").contains(&hex::encode(key.seed())));
    }

    #[test]
    fn signatures_verify_only_for_their_message() {
        let id = Identity::generate();
        let sig = id.sign(b"hello");
        assert!(id.public().verify(b"hello", &sig));
        assert!(!id.public().verify(b"hellp", &sig));
    }

    #[test]
    fn network_key_is_deterministic_in_its_seed() {
        let a = NetworkKey::from_seed(&[7; 32]).unwrap();
        let b = NetworkKey::from_seed(&[7; 32]).unwrap();
        assert_eq!(a.network_id(), b.network_id());
        assert_eq!(a.network_id(), network_id_for(a.public_key()));
        assert_ne!(
            a.network_id(),
            NetworkKey::from_seed(&[8; 32]).unwrap().network_id()
        );
    }
}
