//! The keys of controller replicas, pinned as a verified network config names them (the
//! network key vouches for those) or else at first contact (trust on first use, as SSH):
//! a replica that later answers at the same address with another key is refused, so an
//! on-path attacker cannot stand in for a replica the node already knows, hold back its
//! revocations or feed it replica addresses. Kept in `replica-keys.json` in the state
//! directory; a replica re-initialized on purpose is forgiven by removing its line there.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use meshd_proto::NetworkId;
use serde::{Deserialize, Serialize};

/// Pinned Ed25519 keys by replica address (as connected to), hex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPins {
    #[serde(default)]
    pub pinned: BTreeMap<SocketAddr, String>,
    /// The network whose config named each key pinned that way (the others were pinned at
    /// first contact).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub named_by: BTreeMap<SocketAddr, NetworkId>,
}

/// What a config naming a replica's key did to the pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vouched {
    /// Pinned now (nothing was), or the network that named it before names another key.
    Pinned,
    /// Already pinned so.
    Known,
    /// Another key is pinned there, at first contact or as another network's config named
    /// it: kept. One network's controller cannot displace another's replica that way.
    Conflict { pinned: String },
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
    /// Pins `key` for the replica at `server` because the verified config of `network`
    /// names it there: where nothing is pinned yet, or where the same network named it.
    pub fn vouch(&mut self, network: NetworkId, server: SocketAddr, key: &[u8; 32]) -> Vouched {
        let named = hex(key);
        match self.pinned.get(&server) {
            Some(pinned) if *pinned == named => Vouched::Known,
            Some(pinned) if self.named_by.get(&server) != Some(&network) => Vouched::Conflict {
                pinned: pinned.clone(),
            },
            _ => {
                self.pinned.insert(server, named);
                self.named_by.insert(server, network);
                Vouched::Pinned
            }
        }
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

    #[test]
    fn a_config_pins_only_where_nothing_or_its_own_network_pinned() {
        let mut pins = ReplicaPins::default();
        let (one, two) = (NetworkId::from_bytes([1; 8]), NetworkId::from_bytes([2; 8]));
        let (a, b): (SocketAddr, SocketAddr) = (
            "192.0.2.1:9994".parse().unwrap(),
            "192.0.2.2:9994".parse().unwrap(),
        );
        // Before any contact: pinned, then enforced at contact.
        assert_eq!(pins.vouch(one, a, &[1; 32]), Vouched::Pinned);
        assert_eq!(pins.vouch(one, a, &[1; 32]), Vouched::Known);
        assert_eq!(pins.check(a, &[1; 32]), PinVerdict::Known);
        // Another network's config cannot displace it; the same network's can (a replica
        // re-keyed through its own cluster).
        assert!(matches!(
            pins.vouch(two, a, &[9; 32]),
            Vouched::Conflict { .. }
        ));
        assert_eq!(pins.vouch(one, a, &[3; 32]), Vouched::Pinned);
        assert_eq!(pins.check(a, &[3; 32]), PinVerdict::Known);
        // A key pinned at first contact is not displaced by any config.
        assert_eq!(pins.check(b, &[5; 32]), PinVerdict::Pinned);
        assert!(matches!(
            pins.vouch(one, b, &[6; 32]),
            Vouched::Conflict { .. }
        ));
        let json = serde_json::to_string(&pins).unwrap();
        assert_eq!(serde_json::from_str::<ReplicaPins>(&json).unwrap(), pins);
    }
}
