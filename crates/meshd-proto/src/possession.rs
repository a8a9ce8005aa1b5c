//! Proof that a node holds the X25519 secret of the identity it claims. The node channel's
//! TLS handshake proves the Ed25519 half; the X25519 half (what peers encrypt to, and half of
//! what the node id hashes) would otherwise be any key the node names, someone else's
//! included. The replica sends a fresh X25519 public key; the node answers with a MAC under
//! their Diffie-Hellman secret over both halves of its identity, which only the holder of
//! the X25519 secret can compute.

use blake2::Blake2sMac256;
use blake2::digest::{KeyInit, Mac};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::identity::{Identity, KEY_LEN, PublicIdentity};

/// Length of a proof.
pub const PROOF_LEN: usize = 32;
const LABEL: &[u8] = b"meshd x25519 possession v1";

/// The replica's side: a fresh key pair, and the check of the node's answer.
pub struct Challenge {
    secret: StaticSecret,
    public: [u8; KEY_LEN],
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("public", &crate::hex::encode(&self.public))
            .finish_non_exhaustive()
    }
}

impl Challenge {
    /// A challenge with a key pair from the OS random source.
    pub fn new() -> Self {
        let mut seed = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(seed.as_mut()).expect("the OS random source works");
        let secret = StaticSecret::from(*seed);
        let public = PublicKey::from(&secret).to_bytes();
        Challenge { secret, public }
    }

    /// What goes to the node.
    pub fn public(&self) -> [u8; KEY_LEN] {
        self.public
    }

    /// Whether `proof` shows that the node claiming `identity` holds its X25519 secret.
    pub fn verify(&self, identity: &PublicIdentity, proof: &[u8; PROOF_LEN]) -> bool {
        let shared = self
            .secret
            .diffie_hellman(&PublicKey::from(identity.x25519));
        // A low-order key gives an all-zero secret anyone can compute.
        if !shared.was_contributory() {
            return false;
        }
        mac(shared.as_bytes(), &self.public, identity)
            .verify_slice(proof)
            .is_ok()
    }
}

impl Default for Challenge {
    fn default() -> Self {
        Self::new()
    }
}

/// The node's answer to a replica's challenge key.
pub fn prove(identity: &Identity, challenge: &[u8; KEY_LEN]) -> [u8; PROOF_LEN] {
    Prover::of(identity).prove(challenge)
}

/// What a node keeps to answer challenges: its X25519 secret and public identity.
pub struct Prover {
    secret: Zeroizing<[u8; KEY_LEN]>,
    public: PublicIdentity,
}

impl std::fmt::Debug for Prover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prover")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Prover {
    pub fn of(identity: &Identity) -> Self {
        Prover {
            secret: Zeroizing::new(*identity.x25519_secret()),
            public: *identity.public(),
        }
    }

    /// The answer to the replica's challenge key.
    pub fn prove(&self, challenge: &[u8; KEY_LEN]) -> [u8; PROOF_LEN] {
        let secret = StaticSecret::from(*self.secret);
        let shared = secret.diffie_hellman(&PublicKey::from(*challenge));
        mac(shared.as_bytes(), challenge, &self.public)
            .finalize()
            .into_bytes()
            .into()
    }
}

fn mac(shared: &[u8; 32], challenge: &[u8; KEY_LEN], identity: &PublicIdentity) -> Blake2sMac256 {
    let mut m = <Blake2sMac256 as KeyInit>::new_from_slice(shared).expect("a 32-byte key");
    m.update(LABEL);
    m.update(challenge);
    m.update(&identity.x25519);
    m.update(&identity.ed25519);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_holder_of_the_x25519_secret_proves() {
        let node = Identity::generate_unproven();
        let challenge = Challenge::new();
        let proof = prove(&node, &challenge.public());
        assert!(challenge.verify(node.public(), &proof));
        // Another challenge, another identity, a flipped bit: no.
        assert!(!Challenge::new().verify(node.public(), &proof));
        let other = Identity::generate_unproven();
        assert!(!challenge.verify(other.public(), &proof));
        let mut bad = proof;
        bad[0] ^= 1;
        assert!(!challenge.verify(node.public(), &bad));
        // Someone else's X25519 key with one's own Ed25519 key: the proof of one's own
        // X25519 secret does not carry over.
        let claimed = PublicIdentity {
            x25519: node.public().x25519,
            ed25519: other.public().ed25519,
        };
        let attempt = prove(&other, &challenge.public());
        assert!(!challenge.verify(&claimed, &attempt));
        // A low-order point as the X25519 key proves nothing.
        let zero = PublicIdentity {
            x25519: [0; 32],
            ed25519: other.public().ed25519,
        };
        assert!(!challenge.verify(&zero, &[0; 32]));
    }
}
