//! The signed envelope a controller sends and a node caches.
//!
//! ```text
//! "MSHS" | version 1 | network public key (32) | signature (64) | config (canonical encoding)
//! signature = Ed25519(network key, "meshd netconf v1" | config)
//! ```
//! A node that knows only the network id accepts the envelope when the public key hashes to
//! that id, the signature verifies and the config inside names the same network.

use ring::signature;

use super::NetworkConfig;
use super::codec::{self, DecodeError, EncodeError};
use crate::NetworkId;
use crate::identity::{KEY_LEN, NetworkKey, SIGNATURE_LEN, network_id_for};

const MAGIC: &[u8; 4] = b"MSHS";
const VERSION: u8 = 1;
const CONTEXT: &[u8] = b"meshd netconf v1";
const HEADER_LEN: usize = 4 + 1 + KEY_LEN + SIGNATURE_LEN;

/// A config with its network's signature, as bytes. Cheap to store, forward and re-verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedConfig {
    bytes: Vec<u8>,
}

/// Why a signed config was refused. A node keeps running on the config it has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signed config is truncated")]
    Truncated,
    #[error("not a meshd signed config (bad magic or version)")]
    BadEnvelope,
    #[error("signing key belongs to network {actual}, not {expected}")]
    WrongNetworkKey {
        expected: NetworkId,
        actual: NetworkId,
    },
    #[error("signature does not verify")]
    BadSignature,
    #[error("config inside names network {actual}, not {expected}")]
    WrongNetwork {
        expected: NetworkId,
        actual: NetworkId,
    },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl SignedConfig {
    /// Encodes and signs `cfg`. The key must be the network's own.
    pub fn sign(key: &NetworkKey, cfg: &NetworkConfig) -> Result<Self, EncodeError> {
        let body = codec::encode(cfg)?;
        let mut message = Vec::with_capacity(CONTEXT.len() + body.len());
        message.extend_from_slice(CONTEXT);
        message.extend_from_slice(&body);
        let sig = key.sign(&message);
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
        bytes.extend_from_slice(MAGIC);
        bytes.push(VERSION);
        bytes.extend_from_slice(key.public_key());
        bytes.extend_from_slice(&sig);
        bytes.extend_from_slice(&body);
        Ok(Self { bytes })
    }

    /// Wraps received bytes; nothing is trusted until [`SignedConfig::verify`].
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Checks the envelope against `expected` and decodes the config inside.
    pub fn verify(&self, expected: NetworkId) -> Result<NetworkConfig, VerifyError> {
        if self.bytes.len() < HEADER_LEN {
            return Err(VerifyError::Truncated);
        }
        let (header, body) = self.bytes.split_at(HEADER_LEN);
        if &header[..4] != MAGIC || header[4] != VERSION {
            return Err(VerifyError::BadEnvelope);
        }
        let mut public = [0u8; KEY_LEN];
        public.copy_from_slice(&header[5..5 + KEY_LEN]);
        let sig = &header[5 + KEY_LEN..];
        let actual = network_id_for(&public);
        if actual != expected {
            return Err(VerifyError::WrongNetworkKey { expected, actual });
        }
        let mut message = Vec::with_capacity(CONTEXT.len() + body.len());
        message.extend_from_slice(CONTEXT);
        message.extend_from_slice(body);
        signature::UnparsedPublicKey::new(&signature::ED25519, &public)
            .verify(&message, sig)
            .map_err(|_| VerifyError::BadSignature)?;
        let cfg = codec::decode(body)?;
        if cfg.network_id != expected {
            return Err(VerifyError::WrongNetwork {
                expected,
                actual: cfg.network_id,
            });
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample;

    fn signed() -> (NetworkKey, NetworkConfig, SignedConfig) {
        let key = NetworkKey::from_seed(&[1; 32]).unwrap();
        let (cfg, _) = sample(2);
        assert_eq!(cfg.network_id, key.network_id());
        let s = SignedConfig::sign(&key, &cfg).unwrap();
        (key, cfg, s)
    }

    #[test]
    fn verifies_against_network_id() {
        let (key, cfg, s) = signed();
        assert_eq!(s.verify(key.network_id()).unwrap(), cfg);
    }

    #[test]
    fn rejects_other_network_and_tampering() {
        let (key, _, s) = signed();
        let other = NetworkKey::from_seed(&[2; 32]).unwrap().network_id();
        assert!(matches!(
            s.verify(other),
            Err(VerifyError::WrongNetworkKey { .. })
        ));
        let mut bytes = s.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            SignedConfig::from_bytes(bytes).verify(key.network_id()),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn a_key_cannot_sign_for_another_network() {
        // A config naming network A, signed by network B's key, fails for both ids.
        let (_, cfg, _) = signed();
        let other = NetworkKey::from_seed(&[2; 32]).unwrap();
        let s = SignedConfig::sign(&other, &cfg).unwrap();
        assert!(matches!(
            s.verify(cfg.network_id),
            Err(VerifyError::WrongNetworkKey { .. })
        ));
        assert!(matches!(
            s.verify(other.network_id()),
            Err(VerifyError::WrongNetwork { .. })
        ));
    }

    #[test]
    fn every_truncated_prefix_is_rejected() {
        let (key, _, s) = signed();
        for len in 0..s.as_bytes().len() {
            let cut = SignedConfig::from_bytes(s.as_bytes()[..len].to_vec());
            assert!(
                cut.verify(key.network_id()).is_err(),
                "prefix {len} accepted"
            );
        }
    }
}
