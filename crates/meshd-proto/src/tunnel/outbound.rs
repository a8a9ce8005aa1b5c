//! Inside → outside: IP packets read from the TUN, routed to the peer owning their
//! destination and sealed on its session, or queued while a handshake runs; and the small
//! messages the tunnel sends of its own (keepalives, probes, queued packets).

use std::net::SocketAddr;
use std::time::Instant;

use super::peer::MAX_QUEUED;
use super::{DropReason, Transmit, Tunnel};
use crate::session::{self, Seal, Session};
use crate::{NodeId, ip, wire};

/// Result of [`Tunnel::prepare_in_place`].
#[derive(Debug)]
pub enum Prepared {
    /// Counter taken and header written: `seal.seal(buf)` seals the packet where it lies,
    /// and `buf[..seal.message_len()]` is then the datagram for `destination`.
    Ready {
        peer: NodeId,
        destination: SocketAddr,
        seal: Seal,
    },
    /// Held until the handshake with `peer` completes.
    Queued { peer: NodeId },
}

/// Result of [`Tunnel::encapsulate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulated {
    /// `out[..len]` is ready to send to `destination`.
    Ready {
        peer: NodeId,
        destination: SocketAddr,
        len: usize,
    },
    /// Held until the handshake with `peer` completes.
    Queued { peer: NodeId },
}

impl Tunnel {
    /// Routes an IP packet read from the TUN: seals it into `out` for the peer owning its
    /// destination, or queues it while a handshake runs.
    pub fn encapsulate(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<Encapsulated, DropReason> {
        let result = self
            .route(packet)
            .and_then(|peer| self.encapsulate_to(now, peer, packet, out));
        result.inspect_err(|r| self.stats.count(*r))
    }

    /// [`Tunnel::encapsulate`] without the copy: the packet already sits in
    /// `buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len]` (an engine reads the TUN at that offset)
    /// and `buf` has [`wire::TAG_LEN`] spare bytes after it. Seals it there, so `buf[..len]`
    /// of the returned [`Encapsulated::Ready`] is the datagram; a packet queued behind a
    /// handshake is copied into the queue.
    pub fn encapsulate_in_place(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Encapsulated, DropReason> {
        match self.prepare_in_place(now, buf, len)? {
            Prepared::Queued { peer } => Ok(Encapsulated::Queued { peer }),
            Prepared::Ready {
                peer,
                destination,
                seal,
            } => {
                let len = sealed(seal, buf).inspect_err(|r| self.stats.count(*r))?;
                Ok(Encapsulated::Ready {
                    peer,
                    destination,
                    len,
                })
            }
        }
    }

    /// The first part of [`Tunnel::encapsulate_in_place`]: routes the packet, and either
    /// queues it or takes a counter on the peer's session and writes the header; the
    /// returned [`Seal`] does the cipher work. Drops are counted here.
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
                    let (destination, seal) = self.reserve(now, peer, buf, len)?;
                    Ok(Prepared::Ready {
                        peer,
                        destination,
                        seal,
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

    /// Seals `packet` for `peer` into `out` (which needs [`wire::DATA_OVERHEAD`] spare bytes).
    pub fn encapsulate_to(
        &mut self,
        now: Instant,
        peer_id: NodeId,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<Encapsulated, DropReason> {
        let len = packet.len();
        if out.len() < len + wire::DATA_OVERHEAD {
            return Err(DropReason::PacketTooLarge);
        }
        if self.queues_for(now, peer_id)? {
            return self.queue(now, peer_id, packet);
        }
        out[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + len].copy_from_slice(packet);
        let (destination, seal) = self.reserve(now, peer_id, out, len)?;
        let len = sealed(seal, out)?;
        Ok(Encapsulated::Ready {
            peer: peer_id,
            destination,
            len,
        })
    }

    /// Whether packets for `peer_id` wait for a handshake (no usable session).
    fn queues_for(&self, now: Instant, peer_id: NodeId) -> Result<bool, DropReason> {
        let peer = self.peers.get(&peer_id).ok_or(DropReason::NoRoute)?;
        Ok(!peer.usable_session(now))
    }

    /// Holds `packet` until the handshake with `peer_id` completes, starting one if none runs.
    fn queue(
        &mut self,
        now: Instant,
        peer_id: NodeId,
        packet: &[u8],
    ) -> Result<Encapsulated, DropReason> {
        let peer = self.peers.get_mut(&peer_id).ok_or(DropReason::NoRoute)?;
        if peer.queue.len() >= MAX_QUEUED {
            return Err(DropReason::QueueFull);
        }
        peer.queue.push_back(packet.to_vec());
        if peer.pending.is_none() {
            self.initiate(now, peer_id);
        }
        Ok(Encapsulated::Queued { peer: peer_id })
    }

    /// Takes a counter on the current session for `buf[DATA_HEADER_LEN..DATA_HEADER_LEN +
    /// len]` and writes its header; the returned [`Seal`] seals it in place.
    fn reserve(
        &mut self,
        now: Instant,
        peer_id: NodeId,
        buf: &mut [u8],
        len: usize,
    ) -> Result<(SocketAddr, Seal), DropReason> {
        let peer = self.peers.get_mut(&peer_id).ok_or(DropReason::NoRoute)?;
        let destination = peer.destination().ok_or(DropReason::NoEndpoint)?;
        let session = peer.current.as_mut().ok_or(DropReason::SessionExpired)?;
        let seal = session
            .reserve_seal(now, wire::TYPE_DATA, buf, len)
            .map_err(|_| DropReason::SessionExpired)?;
        let rekey = wants_rekey_on_send(session, now) && peer.pending.is_none();
        peer.tx_bytes += seal.message_len() as u64;
        peer.last_sent = Some(now);
        peer.unanswered_since.get_or_insert(now);
        if rekey {
            self.initiate(now, peer_id);
        }
        Ok((destination, seal))
    }

    /// Convenience for callers without their own buffers (the simulator, control traffic):
    /// routes and seals `packet` and queues the datagram for [`Tunnel::poll_transmit`].
    pub fn send(&mut self, now: Instant, packet: &[u8]) -> Result<(), DropReason> {
        let mut out = vec![0u8; packet.len() + wire::DATA_OVERHEAD];
        if let Encapsulated::Ready {
            peer,
            destination,
            len,
        } = self.encapsulate(now, packet, &mut out)?
        {
            out.truncate(len);
            self.transmits.push_back(Transmit {
                destination,
                peer: Some(peer),
                bytes: out,
            });
        }
        Ok(())
    }

    /// Seals a small message on the current session and queues it for transmission.
    pub(super) fn send_control(&mut self, now: Instant, peer_id: NodeId, kind: u8, payload: &[u8]) {
        self.send_control_to(now, peer_id, None, kind, payload);
    }

    /// [`Tunnel::send_control`] to `to` instead of the peer's endpoint when given.
    pub(super) fn send_control_to(
        &mut self,
        now: Instant,
        peer_id: NodeId,
        to: Option<SocketAddr>,
        kind: u8,
        payload: &[u8],
    ) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let Some(destination) = to.or_else(|| peer.destination()) else {
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
        peer.last_sent = Some(now);
        peer.unanswered_since.get_or_insert(now);
        self.transmits.push_back(Transmit {
            destination,
            peer: Some(peer_id),
            bytes: out,
        });
        if rekey {
            self.initiate(now, peer_id);
        }
    }
}

fn is_multicast_or_broadcast(dst: std::net::IpAddr) -> bool {
    dst.is_multicast() || dst == std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST)
}

/// Seals what [`Tunnel::reserve`] set up; the cipher refusing the buffer is the session's
/// drop, as when sealing was one call.
fn sealed(seal: Seal, buf: &mut [u8]) -> Result<usize, DropReason> {
    seal.seal(buf).map_err(|_| DropReason::SessionExpired)
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

    use super::{DropReason, Encapsulated};
    use crate::sim::{self, LinkModel, Simulation};
    use crate::tunnel::Incoming;
    use crate::wire;

    #[test]
    fn encapsulate_in_place_seals_where_the_packet_lies() {
        let mut sim = Simulation::new(2, LinkModel::default(), 11);
        let packet = sim::ipv4_packet(sim.nodes[0].ipv4, sim.nodes[1].ipv4, &[0x5a; 100]);
        let mut buf = vec![0u8; wire::DATA_OVERHEAD + packet.len()];
        buf[wire::DATA_HEADER_LEN..][..packet.len()].copy_from_slice(&packet);

        // No session yet: the packet is queued (copied) and a handshake starts.
        let now = sim.now;
        let queued = sim.nodes[0]
            .tunnel
            .encapsulate_in_place(now, &mut buf.clone(), packet.len());
        assert!(
            matches!(queued, Ok(Encapsulated::Queued { .. })),
            "{queued:?}"
        );
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
        let Ok(Encapsulated::Ready { len, .. }) =
            sim.nodes[0]
                .tunnel
                .encapsulate_in_place(now, &mut buf, packet.len())
        else {
            panic!("an established session seals");
        };
        assert_eq!(len, buf.len());
        let from = sim.nodes[0].address;
        match sim.nodes[1]
            .tunnel
            .handle_outside(now, from, &mut buf[..len])
        {
            Ok(Incoming::Packet { packet: opened, .. }) => assert_eq!(opened, &packet[..]),
            other => panic!("{other:?}"),
        }

        // Too little room for the tag, or a length past the buffer: counted, never a panic.
        let short = &mut vec![0u8; wire::DATA_OVERHEAD + packet.len() - 1];
        for (buf, len) in [(short, packet.len()), (&mut vec![0u8; 8], usize::MAX)] {
            let r = sim.nodes[0].tunnel.encapsulate_in_place(now, buf, len);
            assert_eq!(r, Err(DropReason::PacketTooLarge));
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
