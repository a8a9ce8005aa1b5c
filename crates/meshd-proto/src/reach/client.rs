//! A node's side of reach, sans-IO: for one controller (one credential), the relays it
//! registers with from its data-plane socket, what they answer, which of them are alive, and
//! what the answers say about the node's public endpoint and NAT.
//!
//! Each relay gets a reflect request every [`REQUEST_INTERVAL`]: that keeps the node's
//! registration (and the NAT mapping towards the relay, well within any router's UDP
//! timeout) fresh, and tells within [`RELAY_DEAD`] that a relay stopped answering, so traffic
//! relayed through it moves to another within the five seconds a dead replica may cost.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::credential::Credential;
use super::drop::ReachDrop;
use super::nat::{NatBehaviour, classify};
use super::reflect::{REFLECT_LEN, ReflectRequest, Reflection};

/// Time between two reflect requests to one relay.
pub const REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// A relay that answered nothing for this long is taken for dead.
pub const RELAY_DEAD: Duration = Duration::from_millis(2_500);

/// What the node knows of one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayView {
    pub address: SocketAddr,
    /// The node's data-plane socket as this relay saw it last.
    pub observed: Option<SocketAddr>,
    /// Round-trip time of the last answer.
    pub rtt: Option<Duration>,
    pub last_answer: Option<Instant>,
}

#[derive(Debug)]
struct Relay {
    view: RelayView,
    last_request: Option<Instant>,
    /// Requests sent and not answered yet: (sequence, when). Bounded by the dead time.
    outstanding: Vec<(u64, Instant)>,
}

/// The reach state of one node towards one controller's relays.
#[derive(Debug)]
pub struct ReachClient {
    credential: Option<Credential>,
    relays: Vec<Relay>,
    next_sequence: u64,
}

impl ReachClient {
    /// A client whose first request carries `first_sequence`. Replicas refuse sequences not
    /// above the last they saw from the node, also across restarts of the node: start from
    /// the wall clock in microseconds.
    pub fn new(first_sequence: u64) -> Self {
        ReachClient {
            credential: None,
            relays: Vec::new(),
            next_sequence: first_sequence,
        }
    }

    /// The credential the controller handed out; requests go out only with one.
    pub fn set_credential(&mut self, credential: Credential) {
        self.credential = Some(credential);
    }

    /// The relays to register with; what is known of relays that stay is kept.
    pub fn set_relays(&mut self, addresses: &[SocketAddr]) {
        self.relays.retain(|r| addresses.contains(&r.view.address));
        for a in addresses {
            if !self.relays.iter().any(|r| r.view.address == *a) {
                self.relays.push(Relay {
                    view: RelayView {
                        address: *a,
                        observed: None,
                        rtt: None,
                        last_answer: None,
                    },
                    last_request: None,
                    outstanding: Vec::new(),
                });
            }
        }
    }

    /// The requests due now, each to its relay.
    pub fn poll_requests(&mut self, now: Instant) -> Vec<(SocketAddr, [u8; REFLECT_LEN])> {
        let Some(credential) = &self.credential else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for relay in &mut self.relays {
            let due = relay
                .last_request
                .is_none_or(|t| now.saturating_duration_since(t) >= REQUEST_INTERVAL);
            if !due {
                continue;
            }
            let sequence = self.next_sequence;
            self.next_sequence += 1;
            let request = ReflectRequest {
                node: credential.node,
                expires: credential.expires,
                sequence,
            };
            relay.last_request = Some(now);
            relay
                .outstanding
                .retain(|(_, sent)| now.saturating_duration_since(*sent) < RELAY_DEAD);
            relay.outstanding.push((sequence, now));
            out.push((relay.view.address, request.encode(&credential.key)));
        }
        out
    }

    /// Takes an answer that came from `from`. Refused: anything not from a relay of this
    /// client, not under its credential, or not answering a request it has outstanding.
    pub fn handle_answer(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), ReachDrop> {
        let credential = self.credential.as_ref().ok_or(ReachDrop::BadMac)?;
        let relay = self
            .relays
            .iter_mut()
            .find(|r| r.view.address == from)
            .ok_or(ReachDrop::SourceNotRegistered)?;
        let answer = Reflection::open(bytes, &credential.key)?;
        let at = relay
            .outstanding
            .iter()
            .position(|(s, _)| *s == answer.sequence)
            .ok_or(ReachDrop::Replayed)?;
        let (_, sent) = relay.outstanding.remove(at);
        // Older requests can no longer be answered usefully.
        relay.outstanding.retain(|(s, _)| *s > answer.sequence);
        relay.view.observed = Some(answer.observed);
        relay.view.rtt = Some(now.saturating_duration_since(sent));
        relay.view.last_answer = Some(now);
        Ok(())
    }

    /// Whether `from` is one of this client's relays (an answer for it).
    pub fn is_relay(&self, from: SocketAddr) -> bool {
        self.relays.iter().any(|r| r.view.address == from)
    }

    /// What the node knows of every relay, in the order they were given.
    pub fn relays(&self) -> Vec<RelayView> {
        self.relays.iter().map(|r| r.view.clone()).collect()
    }

    /// The relays that answered within [`RELAY_DEAD`], fastest first.
    pub fn live_relays(&self, now: Instant) -> Vec<SocketAddr> {
        let mut live: Vec<&RelayView> = self
            .relays
            .iter()
            .map(|r| &r.view)
            .filter(|v| {
                v.last_answer
                    .is_some_and(|t| now.saturating_duration_since(t) < RELAY_DEAD)
            })
            .collect();
        live.sort_by_key(|v| (v.rtt, v.address));
        live.into_iter().map(|v| v.address).collect()
    }

    /// The node's public endpoint: what the fastest live relay saw.
    pub fn reflexive(&self, now: Instant) -> Option<SocketAddr> {
        let best = *self.live_relays(now).first()?;
        self.relays
            .iter()
            .find(|r| r.view.address == best)
            .and_then(|r| r.view.observed)
    }

    /// The node's NAT, from what the live relays saw; `local` are the socket's own addresses.
    pub fn nat(&self, now: Instant, local: &[SocketAddr]) -> NatBehaviour {
        let live = self.live_relays(now);
        let seen: Vec<(SocketAddr, SocketAddr)> = self
            .relays
            .iter()
            .filter(|r| live.contains(&r.view.address))
            .filter_map(|r| Some((r.view.address, r.view.observed?)))
            .collect();
        classify(local, &seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;
    use crate::reach::credential::RelaySecret;
    use crate::reach::relay::{RelayAction, RelayLimits, RelayServer};

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    /// Two relays of one cluster, the node behind a cone NAT (both see one mapping).
    #[test]
    fn registers_learns_its_endpoint_and_notices_a_dead_relay() {
        let secret = RelaySecret::derive(b"cluster");
        let node = NodeId::new(0x00a1_b2c3).expect("valid");
        let nwid = crate::NetworkId::from_bytes([1; 8]);
        let relays = [a("198.51.100.1:9995"), a("198.51.100.2:9995")];
        let mapped = a("203.0.113.5:40000");
        let mut servers: Vec<RelayServer> = relays
            .iter()
            .map(|_| {
                let mut s = RelayServer::new(secret.clone(), RelayLimits::default());
                s.set_members([(nwid, node)]);
                s
            })
            .collect();
        let mut client = ReachClient::new(100);
        let t0 = Instant::now();
        assert!(client.poll_requests(t0).is_empty(), "no credential yet");
        client.set_credential(secret.issue(node, u64::MAX));
        client.set_relays(&relays);
        let exchange =
            |client: &mut ReachClient, servers: &mut [RelayServer], now, alive: [bool; 2]| {
                for (to, request) in client.poll_requests(now) {
                    let i = relays.iter().position(|r| *r == to).expect("a relay");
                    if !alive[i] {
                        continue;
                    }
                    let Ok(RelayAction::Reply { bytes, .. }) =
                        servers[i].handle(now, 0, mapped, &request)
                    else {
                        panic!("an answer")
                    };
                    let later = now + Duration::from_millis(10 * (i as u64 + 1));
                    client.handle_answer(later, to, &bytes).expect("accepted");
                }
            };
        exchange(&mut client, &mut servers, t0, [true, true]);
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!(client.live_relays(t1), relays.to_vec(), "fastest first");
        assert_eq!(client.reflexive(t1), Some(mapped));
        assert_eq!(
            client.nat(t1, &[a("192.168.1.2:9993")]),
            NatBehaviour::EndpointIndependent
        );
        assert!(client.poll_requests(t1).is_empty(), "not due yet");
        // The first relay stops answering: within RELAY_DEAD it is no longer live.
        let mut now = t1;
        while now < t1 + RELAY_DEAD {
            now += REQUEST_INTERVAL;
            exchange(&mut client, &mut servers, now, [false, true]);
        }
        assert_eq!(client.live_relays(now), vec![relays[1]]);
        assert_eq!(client.reflexive(now), Some(mapped));
        assert_eq!(
            client.nat(now, &[]),
            NatBehaviour::Unknown,
            "one relay tells nothing"
        );
    }

    #[test]
    fn answers_must_be_authentic_expected_and_from_the_relay() {
        let secret = RelaySecret::derive(b"cluster");
        let node = NodeId::new(0x00a1_b2c3).expect("valid");
        let cred = secret.issue(node, u64::MAX);
        let relay = a("198.51.100.1:9995");
        let mut client = ReachClient::new(1);
        client.set_credential(cred.clone());
        client.set_relays(&[relay]);
        let now = Instant::now();
        let requests = client.poll_requests(now);
        assert_eq!(requests.len(), 1);
        let answer = |sequence| {
            Reflection {
                sequence,
                observed: a("203.0.113.5:1"),
            }
            .encode(&cred.key)
        };
        assert_eq!(
            client.handle_answer(now, a("198.51.100.9:9995"), &answer(1)),
            Err(ReachDrop::SourceNotRegistered)
        );
        assert_eq!(
            client.handle_answer(now, relay, &answer(7)),
            Err(ReachDrop::Replayed)
        );
        let forged = Reflection {
            sequence: 1,
            observed: a("203.0.113.5:1"),
        }
        .encode(&secret.key_for(node, 5));
        assert_eq!(
            client.handle_answer(now, relay, &forged),
            Err(ReachDrop::BadMac)
        );
        assert_eq!(client.handle_answer(now, relay, &answer(1)), Ok(()));
        assert_eq!(
            client.handle_answer(now, relay, &answer(1)),
            Err(ReachDrop::Replayed)
        );
    }
}
