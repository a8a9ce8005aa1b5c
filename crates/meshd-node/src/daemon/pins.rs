//! The keys of controller replicas, pinned at first contact (trust on first use, as SSH)
//! or, better, as a verified network config names them (the network key vouches for those):
//! a replica that later answers at the same address with another key is refused, so an
//! on-path attacker cannot stand in for a replica the node already knows, hold back its
//! revocations or feed it replica addresses. Kept in `replica-keys.json` in the state
//! directory; a replica re-initialized on purpose is forgiven by removing its line there.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Pinned Ed25519 keys by replica address (as connected to), hex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPins {
    #[serde(default)]
    pub pinned: BTreeMap<SocketAddr, String>,
}

/// What a replica's key says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinVerdict {
    /// The key pinned for this address.
    Known,
    /// First contact: now pinned (save the pins).
    Pinned,
    /// Another key than the one pinned.
    Mismatch { pinned: String },
}

impl ReplicaPins {
    /// Checks (and on first contact pins) `key` for the replica at `server`.
    pub fn check(&mut self, server: SocketAddr, key: &[u8; 32]) -> PinVerdict {
        let presented = hex(key);
        match self.pinned.get(&server) {
            Some(pinned) if *pinned == presented => PinVerdict::Known,
            Some(pinned) => PinVerdict::Mismatch {
                pinned: pinned.clone(),
            },
            None => {
                self.pinned.insert(server, presented);
                PinVerdict::Pinned
            }
        }
    }
}

impl ReplicaPins {
    /// Pins `key` for the replica at `server` because a verified network config names it
    /// there: it replaces whatever was pinned at first contact. Returns whether it changed.
    pub fn vouch(&mut self, server: SocketAddr, key: &[u8; 32]) -> bool {
        let named = hex(key);
        if self.pinned.get(&server) == Some(&named) {
            return false;
        }
        self.pinned.insert(server, named);
        true
    }
}

pub fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_contact_pins_and_another_key_is_refused() {
        let mut pins = ReplicaPins::default();
        let (a, b): (SocketAddr, SocketAddr) = (
            "192.0.2.1:9994".parse().unwrap(),
            "192.0.2.2:9994".parse().unwrap(),
        );
        assert_eq!(pins.check(a, &[1; 32]), PinVerdict::Pinned);
        assert_eq!(pins.check(a, &[1; 32]), PinVerdict::Known);
        assert_eq!(
            pins.check(a, &[2; 32]),
            PinVerdict::Mismatch {
                pinned: hex(&[1; 32])
            }
        );
        assert_eq!(pins.check(b, &[2; 32]), PinVerdict::Pinned);
        let json = serde_json::to_string(&pins).unwrap();
        assert_eq!(serde_json::from_str::<ReplicaPins>(&json).unwrap(), pins);
    }
}
