//! Inside → outside: IP packets read from the TUN, routed to the peer owning their
//! destination and sealed on its session, or queued while a handshake runs; and the small
//! messages the tunnel sends of its own (keepalives, probes, queued packets).

use std::net::SocketAddr;
use std::time::Instant;

use super::peer::MAX_QUEUED;
use super::{DropReason, Tunnel, Via};
use crate::session::{self, Seal, Session};
use crate::{NodeId, ip, wire};

/// Result of [`Tunnel::prepare_in_place`].
#[derive(Debug)]
pub enum Prepared {
    /// Counter taken and header written: `seal.seal(buf)` seals the packet where it lies,
    /// and `buf[..seal.message_len()]` is then the datagram for `destination`; with an
    /// `envelope`, those bytes go after it, and `destination` is a relay.
    Ready {
        peer: NodeId,
        destination: SocketAddr,
        seal: Seal,
        envelope: Option<[u8; wire::RELAY_HEADER_LEN]>,
    },
    /// Held until the handshake with `peer` completes.
    Queued { peer: NodeId },
}

impl Tunnel {
    /// Routes an IP packet read from the TUN to the peer owning its destination. The packet
    /// already sits in `buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len]` (an engine reads the
    /// TUN at that offset) and `buf` has [`wire::TAG_LEN`] spare bytes after it. Either
    /// queues it (copied) while a handshake with the peer runs, or takes a counter on the
    /// peer's session and writes the header; the returned [`Seal`] then seals the packet
    /// where it lies, without access to the tunnel. Drops are counted here.
    pub fn prepare_in_place(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Prepared, DropReason> {
        let result = if buf.len() < len.saturating_add(wire::DATA_OVERHEAD) {
            Err(DropReason::PacketTooLarge)
        } else {
            let packet = wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + len;
            self.route(&buf[packet.clone()]).and_then(|peer| {
                if self.queues_for(now, peer)? {
                    self.queue(now, peer, &buf[packet])?;
                    Ok(Prepared::Queued { peer })
                } else {
                    let (via, seal) = self.reserve(now, peer, buf, len)?;
                    let (destination, envelope) = match via {
                        Via::Direct(to) => (to, None),
                        Via::Relay(relay) => (relay, Some(self.envelope_header(peer))),
                    };
                    Ok(Prepared::Ready {
                        peer,
                        destination,
                        seal,
                        envelope,
                    })
                }
            })
        };
        result.inspect_err(|r| self.stats.count(*r))
    }

    /// The peer owning a packet's destination.
    fn route(&self, packet: &[u8]) -> Result<NodeId, DropReason> {
        match ip::addresses(packet) {
            None => Err(DropReason::NotIp),
            Some((_, dst)) if is_multicast_or_broadcast(dst) => Err(DropReason::Multicast),
            Some((_, dst)) => match self.routes.lookup(dst) {
                None => Err(DropReason::NoRoute),
                Some(peer) if peer == self.node_id => Err(DropReason::OwnDestination),
                Some(peer) => Ok(peer),
            },
        }
    }

    /// Whether packets for `peer_id` wait for a handshake (no usable session).
    fn queues_for(&self, now: Instant, peer_id: NodeId) -> Result<bool, DropReason> {
        let peer = self.peers.get(&peer_id).ok_or(DropReason::NoRoute)?;
        Ok(!peer.usable_session(now))
    }

    /// Holds `packet` until the handshake with `peer_id` completes, starting one if none runs.
    fn queue(&mut self, now: Instant, peer_id: NodeId, packet: &[u8]) -> Result<(), DropReason> {
        let peer = self.peers.get_mut(&peer_id).ok_or(DropReason::NoRoute)?;
        if peer.queue.len() >= MAX_QUEUED {
            return Err(DropReason::QueueFull);
        }
        peer.queue.push_back(packet.to_vec());
        if peer.pending.is_none() {
            self.initiate(now, peer_id);
        }
        Ok(())
    }

    /// Takes a counter on the current session for `buf[DATA_HEADER_LEN..DATA_HEADER_LEN +
    /// len]` and writes its header; the returned [`Seal`] seals it in place.
    fn reserve(
        &mut self,
        now: Instant,
        peer_id: NodeId,
        buf: &mut [u8],
        len: usize,
    ) -> Result<(Via, Seal), DropReason> {
        let peer = self.peers.get_mut(&peer_id).ok_or(DropReason::NoRoute)?;
        let via = peer.via(&self.relays, now).ok_or(DropReason::NoEndpoint)?;
        let session = peer.current.as_mut().ok_or(DropReason::SessionExpired)?;
        let seal = session
            .reserve_seal(now, wire::TYPE_DATA, buf, len)
            .map_err(|_| DropReason::SessionExpired)?;
        let rekey = wants_rekey_on_send(session, now) && peer.pending.is_none();
        peer.tx_bytes += seal.message_len() as u64;
        peer.tx_packets += 1;
        peer.last_sent = Some(now);
        peer.unanswered_since.get_or_insert(now);
        if !via.is_relay() {
            peer.direct_unanswered_since.get_or_insert(now);
        }
        if rekey {
            self.initiate(now, peer_id);
        }
        Ok((via, seal))
    }

    /// Seals a small message on the current session and queues it for transmission.
    pub(super) fn send_control(&mut self, now: Instant, peer_id: NodeId, kind: u8, payload: &[u8]) {
        self.send_control_to(now, peer_id, None, kind, payload);
    }

    /// [`Tunnel::send_control`] the way `to` says instead of the peer's way when given.
    pub(super) fn send_control_to(
        &mut self,
        now: Instant,
        peer_id: NodeId,
        to: Option<Via>,
        kind: u8,
        payload: &[u8],
    ) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let Some(via) = to.or_else(|| peer.via(&self.relays, now)) else {
            self.stats.count(DropReason::NoEndpoint);
            return;
        };
        let Some(session) = peer.current.as_mut() else {
            return;
        };
        let mut out = vec![0u8; payload.len() + wire::DATA_OVERHEAD];
        out[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
        let Ok(n) = session.seal_in_place(now, kind, &mut out, payload.len()) else {
            self.stats.count(DropReason::SessionExpired);
            return;
        };
        let rekey = wants_rekey_on_send(session, now) && peer.pending.is_none();
        out.truncate(n);
        peer.tx_bytes += n as u64;
        peer.tx_packets += 1;
        peer.last_sent = Some(now);
        peer.unanswered_since.get_or_insert(now);
        if let Via::Direct(to) = via
            && peer.endpoint == Some(to)
        {
            peer.direct_unanswered_since.get_or_insert(now);
        }
        self.push_via(via, peer_id, out);
        if rekey {
            self.initiate(now, peer_id);
        }
    }
}

fn is_multicast_or_broadcast(dst: std::net::IpAddr) -> bool {
    dst.is_multicast() || dst == std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST)
}

/// WireGuard's rule: the initiator rekeys when the session is old; the responder waits a
/// little longer so both sides do not start handshakes at once.
fn wants_rekey_on_send(s: &Session, now: Instant) -> bool {
    if s.is_initiator() {
        s.wants_rekey(now)
    } else {
        s.age(now)
            >= session::REKEY_AFTER_TIME + session::REKEY_TIMEOUT + session::KEEPALIVE_TIMEOUT
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{DropReason, Prepared};
    use crate::sim::{self, LinkModel, Simulation};
    use crate::wire;

    #[test]
    fn prepare_in_place_and_seal_work_where_the_packet_lies() {
        let mut sim = Simulation::new(2, LinkModel::default(), 11);
        let packet = sim::ipv4_packet(sim.nodes[0].ipv4, sim.nodes[1].ipv4, &[0x5a; 100]);
        let mut buf = vec![0u8; wire::DATA_OVERHEAD + packet.len()];
        buf[wire::DATA_HEADER_LEN..][..packet.len()].copy_from_slice(&packet);

        // No session yet: the packet is queued (copied) and a handshake starts.
        let now = sim.now;
        let queued = sim.nodes[0]
            .tunnel
            .prepare_in_place(now, &mut buf.clone(), packet.len());
        assert!(matches!(queued, Ok(Prepared::Queued { .. })), "{queued:?}");
        while let Some(t) = sim.nodes[0].tunnel.poll_transmit() {
            sim.put_on_wire(sim::Datagram {
                from: sim.nodes[0].address,
                to: t.destination,
                bytes: t.bytes,
            });
        }
        sim.run_for(Duration::from_millis(100));
        assert_eq!(sim.nodes[1].received.len(), 1, "the queued packet arrived");

        // With a session: sealed in place, and node 1 opens exactly the packet.
        let now = sim.now;
        let Ok(Prepared::Ready { seal, .. }) =
            sim.nodes[0]
                .tunnel
                .prepare_in_place(now, &mut buf, packet.len())
        else {
            panic!("an established session seals");
        };
        let len = seal.seal(&mut buf).unwrap();
        assert_eq!(len, buf.len());
        let (from, to) = (sim.nodes[0].address, sim.nodes[1].address);
        let bytes = buf[..len].to_vec();
        match sim.inject(sim::Datagram { from, to, bytes }) {
            Some(Ok(true)) => assert_eq!(sim.nodes[1].received.last().unwrap().1, packet),
            other => panic!("{other:?}"),
        }

        // Too little room for the tag, or a length past the buffer: counted, never a panic.
        let short = &mut vec![0u8; wire::DATA_OVERHEAD + packet.len() - 1];
        for (buf, len) in [(short, packet.len()), (&mut vec![0u8; 8], usize::MAX)] {
            let r = sim.nodes[0].tunnel.prepare_in_place(now, buf, len);
            assert!(matches!(r, Err(DropReason::PacketTooLarge)), "{r:?}");
        }
        assert_eq!(
            sim.nodes[0]
                .tunnel
                .stats()
                .dropped(DropReason::PacketTooLarge),
            2
        );
    }
}
