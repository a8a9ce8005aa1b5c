//! A replica's relay, sans-IO: reflect requests register a member at the address they come
//! from, and relay envelopes from a registered member go to the registered address of their
//! destination, when both are authorized members of a common network.
//!
//! It is not an open reflector: it answers only requests under a valid credential, forwards
//! only envelopes that come from the address their source registered (a spoofer must also
//! spoof that address, and then only reaches members of its own network, who drop what their
//! sessions cannot open), and never sends more than one reply per request, no larger than the
//! request's own size plus five bytes. Each source member has a token bucket of bytes per
//! second. Every drop has a reason, counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::credential::RelaySecret;
use super::drop::ReachDrop;
use super::reflect::{REFLECTED_LEN, ReflectRequest, Reflection};
use crate::rate::{Rate, TokenBucket};
use crate::wire::{self, Message, TYPE_REFLECT, TYPE_RELAY, WireError};
use crate::{NetworkId, NodeId};

/// The relay's limits.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Bytes per second one source member may have relayed.
    pub bytes_per_second: u64,
    /// Bytes a source may send at once above its rate.
    pub burst: u64,
    /// A registration not refreshed for this long is gone: the node has moved or left.
    pub registration_ttl: Duration,
}

impl RelayLimits {
    /// The per-member byte rate.
    pub fn rate(&self) -> Rate {
        Rate {
            per_second: self.bytes_per_second as f64,
            burst: self.burst as f64,
        }
    }
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            // 100 Mbit/s per member: enough for a relayed bulk transfer, not for flooding.
            bytes_per_second: 12_500_000,
            burst: 2_000_000,
            registration_ttl: Duration::from_secs(60),
        }
    }
}

/// What to do with a datagram the relay accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayAction<'a> {
    /// Answer a reflect request.
    Reply {
        to: SocketAddr,
        bytes: [u8; REFLECTED_LEN],
    },
    /// Send the envelope on, unchanged.
    Forward { to: SocketAddr, bytes: &'a [u8] },
}

/// What the relay counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayCounters {
    pub reflections: u64,
    pub relayed_packets: u64,
    pub relayed_bytes: u64,
    pub drops: HashMap<&'static str, u64>,
}

#[derive(Debug)]
struct Registration {
    address: SocketAddr,
    sequence: u64,
    refreshed: Instant,
    tokens: TokenBucket,
}

/// The relay of one replica.
#[derive(Debug)]
pub struct RelayServer {
    secret: RelaySecret,
    limits: RelayLimits,
    /// The networks each member is authorized in, sorted.
    networks: HashMap<NodeId, Vec<NetworkId>>,
    registrations: HashMap<NodeId, Registration>,
    counters: RelayCounters,
}

impl RelayServer {
    pub fn new(secret: RelaySecret, limits: RelayLimits) -> Self {
        RelayServer {
            secret,
            limits,
            networks: HashMap::new(),
            registrations: HashMap::new(),
            counters: RelayCounters::default(),
        }
    }

    /// Replaces who is an authorized member of which network. Registrations of nodes that
    /// are no longer members of any network end now.
    pub fn set_members(&mut self, members: impl IntoIterator<Item = (NetworkId, NodeId)>) {
        let mut networks: HashMap<NodeId, Vec<NetworkId>> = HashMap::new();
        for (network, node) in members {
            networks.entry(node).or_default().push(network);
        }
        for list in networks.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        self.registrations.retain(|n, _| networks.contains_key(n));
        self.networks = networks;
    }

    /// Handles one datagram that came from `from`, at `now` (`now_unix` in Unix seconds for
    /// credential expiry). Drops are counted.
    pub fn handle<'a>(
        &mut self,
        now: Instant,
        now_unix: u64,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Result<RelayAction<'a>, ReachDrop> {
        let result = match bytes.first() {
            Some(&TYPE_REFLECT) => self.reflect(now, now_unix, from, bytes),
            Some(&TYPE_RELAY) => self.relay(now, from, bytes),
            Some(_) => Err(ReachDrop::UnexpectedType),
            None => Err(ReachDrop::Malformed(WireError::Empty)),
        };
        match &result {
            Ok(RelayAction::Reply { .. }) => self.counters.reflections += 1,
            Ok(RelayAction::Forward { bytes, .. }) => {
                self.counters.relayed_packets += 1;
                self.counters.relayed_bytes += bytes.len() as u64;
            }
            Err(reason) => *self.counters.drops.entry(reason.as_str()).or_default() += 1,
        }
        result
    }

    fn reflect(
        &mut self,
        now: Instant,
        now_unix: u64,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<RelayAction<'static>, ReachDrop> {
        let (request, key) = ReflectRequest::verify(bytes, &self.secret, now_unix)?;
        if !self.networks.contains_key(&request.node) {
            return Err(ReachDrop::NotMember);
        }
        let full = TokenBucket::full(self.limits.rate(), now);
        match self.registrations.get_mut(&request.node) {
            Some(r) if request.sequence <= r.sequence => return Err(ReachDrop::Replayed),
            Some(r) => {
                r.address = from;
                r.sequence = request.sequence;
                r.refreshed = now;
            }
            None => {
                self.registrations.insert(
                    request.node,
                    Registration {
                        address: from,
                        sequence: request.sequence,
                        refreshed: now,
                        tokens: full,
                    },
                );
            }
        }
        let answer = Reflection {
            sequence: request.sequence,
            observed: from,
        };
        Ok(RelayAction::Reply {
            to: from,
            bytes: answer.encode(&key),
        })
    }

    fn relay<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Result<RelayAction<'a>, ReachDrop> {
        let Message::Relay(envelope) = wire::parse(bytes).map_err(ReachDrop::Malformed)? else {
            return Err(ReachDrop::UnexpectedType);
        };
        let ttl = self.limits.registration_ttl;
        let fresh = |r: &Registration| now.saturating_duration_since(r.refreshed) <= ttl;
        let source = self
            .registrations
            .get(&envelope.source)
            .filter(|r| fresh(r))
            .ok_or(ReachDrop::SourceNotRegistered)?;
        if source.address != from {
            return Err(ReachDrop::WrongSource);
        }
        if !self.share_a_network(envelope.source, envelope.destination) {
            return Err(ReachDrop::NotTogether);
        }
        let to = self
            .registrations
            .get(&envelope.destination)
            .filter(|r| fresh(r))
            .ok_or(ReachDrop::DestinationNotRegistered)?
            .address;
        let limits = self.limits;
        let source = self
            .registrations
            .get_mut(&envelope.source)
            .ok_or(ReachDrop::SourceNotRegistered)?;
        if !source.tokens.take(limits.rate(), now, bytes.len() as f64) {
            return Err(ReachDrop::RateLimited);
        }
        Ok(RelayAction::Forward { to, bytes })
    }

    fn share_a_network(&self, a: NodeId, b: NodeId) -> bool {
        match (self.networks.get(&a), self.networks.get(&b)) {
            (Some(x), Some(y)) => x.iter().any(|n| y.binary_search(n).is_ok()),
            _ => false,
        }
    }

    /// Forgets registrations not refreshed within the registration lifetime.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.limits.registration_ttl;
        self.registrations
            .retain(|_, r| now.saturating_duration_since(r.refreshed) <= ttl);
    }

    /// The registered address of `node`, if any.
    pub fn registered(&self, node: NodeId) -> Option<SocketAddr> {
        self.registrations.get(&node).map(|r| r.address)
    }

    /// Members registered now.
    pub fn registrations(&self) -> usize {
        self.registrations.len()
    }

    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests;
