//! Signed configs, made once per network revision and handed to every connection.
//!
//! Signing a config costs its canonical encoding and an Ed25519 signature, and a change to
//! a network reaches every member that follows it. When each connection signed for itself,
//! N connected members cost N signatures per change, all taken while holding the state lock
//! that Raft's apply needs. Here one task per node-channel server ([`run`]) signs each new
//! revision once: it copies the configs whose revision is not signed yet under the lock
//! ([`SignedConfigs::stale`]), signs them without it ([`SignedConfigs::sign`]), and tells
//! the connections, which send the same bytes to every node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use meshd_proto::{NetworkConfig, NetworkId, NetworkKey, SignedConfig};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::controller::Controller;
use crate::state::ControllerState;

/// The newest signed config of every network.
#[derive(Debug)]
pub(crate) struct SignedConfigs {
    configs: RwLock<HashMap<NetworkId, Signed>>,
    /// Bumped after every signing pass that signed something: connections look again.
    signed: watch::Sender<u64>,
    /// Signatures made since start.
    signatures: AtomicU64,
}

#[derive(Debug, Clone)]
struct Signed {
    revision: u64,
    bytes: Arc<[u8]>,
    /// When the signer found the revision unsigned: soon after the change was applied.
    noticed: Instant,
}

/// A config to sign, copied out of the state.
#[derive(Debug)]
pub(crate) struct Unsigned {
    network: NetworkId,
    key_seed: [u8; 32],
    config: NetworkConfig,
    noticed: Instant,
}

impl Default for SignedConfigs {
    fn default() -> Self {
        Self {
            configs: RwLock::default(),
            signed: watch::Sender::new(0),
            signatures: AtomicU64::new(0),
        }
    }
}

impl SignedConfigs {
    /// The signed config of `network` at exactly `revision`, when it is signed already.
    pub(crate) fn get(&self, network: NetworkId, revision: u64) -> Option<Arc<[u8]>> {
        let configs = self.configs.read().unwrap_or_else(PoisonError::into_inner);
        configs
            .get(&network)
            .filter(|s| s.revision == revision)
            .map(|s| Arc::clone(&s.bytes))
    }

    /// When the change behind `network`'s `revision` was noticed, if that is the newest
    /// signed revision: the start of its push latency.
    pub(crate) fn noticed(&self, network: NetworkId, revision: u64) -> Option<Instant> {
        let configs = self.configs.read().unwrap_or_else(PoisonError::into_inner);
        configs
            .get(&network)
            .filter(|s| s.revision == revision)
            .map(|s| s.noticed)
    }

    /// Changes after each signing pass that signed something.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.signed.subscribe()
    }

    /// How many configs were signed since start.
    #[cfg(test)]
    pub(crate) fn signatures(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }

    /// The configs of `state` whose revision is not signed yet; forgets deleted networks.
    /// Runs under the state lock, so it only copies.
    pub(crate) fn stale(&self, state: &ControllerState) -> Vec<Unsigned> {
        let mut configs = self.configs.write().unwrap_or_else(PoisonError::into_inner);
        configs.retain(|id, _| state.networks.contains_key(id));
        let noticed = Instant::now();
        state
            .networks
            .values()
            .filter(|net| {
                configs
                    .get(&net.id)
                    .is_none_or(|s| s.revision != net.revision)
            })
            .map(|net| Unsigned {
                network: net.id,
                key_seed: net.key_seed,
                config: state.network_config(net),
                noticed,
            })
            .collect()
    }

    /// Signs what [`Self::stale`] copied and publishes it. A config that cannot be signed
    /// (one past the protocol's bounds) is logged and left out: its members keep the
    /// revision they have.
    pub(crate) fn sign(&self, unsigned: Vec<Unsigned>) {
        if unsigned.is_empty() {
            return;
        }
        let mut fresh = Vec::with_capacity(unsigned.len());
        for u in unsigned {
            let signed = NetworkKey::from_seed(&u.key_seed)
                .map_err(|e| e.to_string())
                .and_then(|key| SignedConfig::sign(&key, &u.config).map_err(|e| e.to_string()));
            let signatures = self.signatures.fetch_add(1, Ordering::Relaxed) + 1;
            match signed {
                Ok(signed) => {
                    debug!(
                        network = %u.network,
                        revision = u.config.revision,
                        signatures,
                        "config signed"
                    );
                    fresh.push((
                        u.network,
                        Signed {
                            revision: u.config.revision,
                            bytes: Arc::from(signed.as_bytes()),
                            noticed: u.noticed,
                        },
                    ));
                }
                Err(e) => warn!(
                    network = %u.network,
                    revision = u.config.revision,
                    error = %e,
                    "cannot sign the network's config; its members keep the revision they have"
                ),
            }
        }
        // One signer per `SignedConfigs` ([`run`]), so nothing newer was signed meanwhile.
        self.configs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(fresh);
        self.signed.send_modify(|n| *n += 1);
    }
}

/// Signs every new revision of `controller`'s networks until the controller goes away.
pub(crate) async fn run<C: Controller>(controller: C, configs: Arc<SignedConfigs>) {
    let mut applied = controller.applied();
    loop {
        applied.borrow_and_update();
        let unsigned = controller.read(|state| configs.stale(state));
        configs.sign(unsigned);
        if applied.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use meshd_proto::Identity;

    use super::*;
    use crate::state::Command;
    use crate::test_support::{authorized_member, nwid, spec};

    #[test]
    fn each_revision_is_signed_once_and_verifies() {
        let mut state = ControllerState::default();
        let network = nwid(3);
        state.apply(&Command::CreateNetwork(spec(3))).unwrap();
        let configs = SignedConfigs::default();
        let mut signed = configs.subscribe();
        signed.borrow_and_update();

        configs.sign(configs.stale(&state));
        assert_eq!(configs.signatures(), 1);
        assert!(signed.has_changed().unwrap());
        let revision = state.networks[&network].revision;
        let bytes = configs.get(network, revision).expect("signed");
        let cfg = SignedConfig::from_bytes(bytes.to_vec())
            .verify(network)
            .unwrap();
        assert_eq!(cfg, state.networks[&network].config());
        // Nothing changed: nothing to sign, however often asked.
        assert!(configs.stale(&state).is_empty());
        configs.sign(configs.stale(&state));
        assert_eq!(configs.signatures(), 1);

        // A new revision: the old one is no longer handed out, the new one is, once.
        authorized_member(&mut state, network, &Identity::generate_unproven());
        let newer = state.networks[&network].revision;
        assert!(newer > revision);
        assert!(configs.get(network, newer).is_none(), "not signed yet");
        configs.sign(configs.stale(&state));
        assert_eq!(configs.signatures(), 2);
        assert!(configs.get(network, revision).is_none());
        assert!(configs.get(network, newer).is_some());

        // A deleted network is forgotten.
        state.apply(&Command::DeleteNetwork { network }).unwrap();
        assert!(configs.stale(&state).is_empty());
        assert!(configs.get(network, newer).is_none());
    }
}
