//! The joined networks, by id and by the receiver-index prefix of their tunnels.
//!
//! Every network's tunnel issues its receiver indices under a prefix of its own
//! ([`Settings::index_prefix`](meshd_proto::tunnel::Settings::index_prefix)), so the packet
//! workers find the network of a response, cookie reply or data message from its receiver
//! index in one lookup, without asking (and locking) each network's tunnel in turn.

use std::sync::Arc;

use meshd_proto::NetworkId;
use meshd_proto::tunnel::index_prefix;
use rustc_hash::FxHashMap;

use super::Network;

/// How many networks one node can be joined to at once: one per index prefix.
pub const MAX_NETWORKS: usize = 1 << u8::BITS;

#[derive(Default)]
pub(super) struct NetworkTable {
    by_id: FxHashMap<NetworkId, Arc<Network>>,
    /// Index prefix → network; `MAX_NETWORKS` long once the first network is in.
    by_prefix: Vec<Option<Arc<Network>>>,
}

impl NetworkTable {
    pub fn get(&self, id: &NetworkId) -> Option<&Arc<Network>> {
        self.by_id.get(id)
    }

    pub fn contains(&self, id: &NetworkId) -> bool {
        self.by_id.contains_key(id)
    }

    /// The network whose tunnel issued receiver index `index`, if it is still joined.
    pub fn by_index(&self, index: u32) -> Option<&Arc<Network>> {
        self.by_prefix
            .get(usize::from(index_prefix(index)))?
            .as_ref()
    }

    /// An index prefix no joined network uses; `None` with [`MAX_NETWORKS`] joined.
    pub fn free_prefix(&self) -> Option<u8> {
        (0..=u8::MAX).find(|&p| {
            self.by_prefix
                .get(usize::from(p))
                .is_none_or(Option::is_none)
        })
    }

    /// Adds `net` under its id and its prefix (which [`Self::free_prefix`] gave).
    pub fn insert(&mut self, net: Arc<Network>) {
        if self.by_prefix.is_empty() {
            self.by_prefix.resize(MAX_NETWORKS, None);
        }
        self.by_prefix[usize::from(net.index_prefix)] = Some(Arc::clone(&net));
        self.by_id.insert(net.id, net);
    }

    pub fn remove(&mut self, id: &NetworkId) -> Option<Arc<Network>> {
        let net = self.by_id.remove(id)?;
        self.by_prefix[usize::from(net.index_prefix)] = None;
        Some(net)
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<Network>> {
        self.by_id.values()
    }

    pub fn ids(&self) -> impl Iterator<Item = NetworkId> + '_ {
        self.by_id.keys().copied()
    }
}
