//! Outside → inside: UDP datagrams, demultiplexed by message type. Data messages are opened
//! on their session and handed out if their source is the sending peer's; handshakes,
//! cookie replies and probes go to their own files.

use std::net::SocketAddr;
use std::time::Instant;

use super::peer::{Slot, retire};
use super::{DropReason, Event, Tunnel, Via, paths};
use crate::rate::TokenBucket;
use crate::session::{Open, Session, SessionError};
use crate::wire::{self, Message};
use crate::{NodeId, ip};

/// What came in from the outside.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A source-checked IP packet for the TUN (borrowed from the datagram buffer).
    Packet { peer: NodeId, packet: &'a [u8] },
    /// Protocol traffic (handshake, keepalive, probe); check `poll_transmit`.
    Handled,
}

/// Result of [`Tunnel::begin_outside`].
#[derive(Debug)]
pub enum Begun<'a> {
    /// A data message that passed the session's checks: [`DataJob::open`] it (no access to
    /// the tunnel needed), then hand the result to [`Tunnel::finish_data`].
    Data(DataJob),
    /// Any other message, handled in full.
    Handled(Incoming<'a>),
}

/// A data message waiting to be opened: see [`Begun::Data`].
#[derive(Debug)]
pub struct DataJob {
    open: Open,
    index: u32,
}

impl DataJob {
    /// Verifies and decrypts the datagram [`Tunnel::begin_outside`] was given, in place;
    /// returns the plaintext length.
    pub fn open(&self, datagram: &mut [u8]) -> Result<usize, SessionError> {
        self.open.open(datagram)
    }
}

impl Tunnel {
    /// Handles one UDP datagram, decrypting in place: a packet handed out borrows `datagram`.
    /// A data message that came directly (not relayed) is only checked against its session
    /// here and returned as a [`DataJob`] to open, so that the cipher work needs no access
    /// to the tunnel; anything else is handled in full. Drops are counted here.
    pub fn begin_outside<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
    ) -> Result<Begun<'a>, DropReason> {
        if datagram.first() == Some(&wire::TYPE_DATA)
            && let Ok(Message::Data(d)) = wire::parse(datagram)
        {
            let (index, counter) = (d.receiver_index, d.counter);
            let job = self.session_of(index).and_then(|(peer_id, slot)| {
                let session = self.session(peer_id, slot)?;
                let open = session
                    .check_open(now, datagram, counter)
                    .map_err(session_drop)?;
                Ok(DataJob { open, index })
            });
            return job.map(Begun::Data).inspect_err(|r| self.stats.count(*r));
        }
        let result = self.handle_message(now, from, datagram, None);
        result
            .map(Begun::Handled)
            .inspect_err(|r| self.stats.count(*r))
    }

    /// The last part of [`Tunnel::begin_outside`] for a [`Begun::Data`]: `opened` is what
    /// [`DataJob::open`] returned for `datagram`. Records the counter (a copy accepted in the
    /// meantime makes this one a replay) and goes on as for any data message. Drops are
    /// counted here.
    pub fn finish_data<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
        job: DataJob,
        opened: Result<usize, SessionError>,
    ) -> Result<Incoming<'a>, DropReason> {
        let result = opened.map_err(session_drop).and_then(|len| {
            // The session may have been retired while the message was opened.
            let (peer_id, slot) = self.session_of(job.index)?;
            self.session_mut(peer_id, slot)?
                .accept(job.open.counter())
                .map_err(session_drop)?;
            self.opened(now, from, datagram, peer_id, slot, len, None)
        });
        result.inspect_err(|r| self.stats.count(*r))
    }

    fn handle_message<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
        relayed: Option<NodeId>,
    ) -> Result<Incoming<'a>, DropReason> {
        let msg = wire::parse(datagram).map_err(|_| DropReason::Malformed)?;
        match msg {
            Message::HandshakeInit(init) => self.on_initiation(now, from, &init, relayed),
            Message::HandshakeResponse(resp) => self.on_response(now, from, &resp, relayed),
            Message::CookieReply(reply) => self.on_cookie_reply(now, &reply),
            Message::Data(d) | Message::Probe(d) => {
                let (index, counter) = (d.receiver_index, d.counter);
                self.on_data(now, from, datagram, index, counter, relayed)
            }
            Message::Relay(r) => {
                if r.destination != self.node_id {
                    let (source, destination) = (r.source, r.destination);
                    return self.forward(now, from, datagram, source, destination, relayed);
                }
                let source = Some(r.source);
                self.handle_message(now, from, &mut datagram[wire::RELAY_HEADER_LEN..], source)
            }
        }
    }

    /// Relays an envelope from `source` to `destination` when this node is a relay: only
    /// from the address `source`'s session traffic comes from (its registration, so to say),
    /// only to a peer we reach directly, within `source`'s rate limit, never nested.
    fn forward<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        source: NodeId,
        destination: NodeId,
        relayed: Option<NodeId>,
    ) -> Result<Incoming<'a>, DropReason> {
        if !self.relaying || relayed.is_some() {
            return Err(DropReason::RelayNotForUs);
        }
        let registered = self.peers.get(&source).is_some_and(|p| {
            p.endpoint == Some(from) && p.usable_session(now) && p.direct_alive(now)
        });
        if !registered {
            return Err(DropReason::RelayWrongSource);
        }
        let to = self
            .peers
            .get(&destination)
            .filter(|p| p.direct_alive(now))
            .and_then(|p| p.endpoint)
            .ok_or(DropReason::RelayNoPath)?;
        let rate = self.settings.relay_limits.rate();
        let tokens = self
            .peers
            .get_mut(&source)
            .map(|p| {
                p.relay_tokens
                    .get_or_insert_with(|| TokenBucket::full(rate, now))
            })
            .ok_or(DropReason::RelayWrongSource)?;
        if !tokens.take(rate, now, datagram.len() as f64) {
            return Err(DropReason::RelayRateLimited);
        }
        self.stats.relayed_packets += 1;
        self.stats.relayed_bytes += datagram.len() as u64;
        self.transmits.push_back(super::Transmit {
            destination: to,
            peer: Some(destination),
            bytes: datagram.to_vec(),
        });
        Ok(Incoming::Handled)
    }

    /// Whether this node relays envelopes between `source` and `destination`: it relays and
    /// both are its peers. An engine with several networks on one socket asks each network
    /// in turn for an envelope that is not for this node.
    pub fn relays_between(&self, source: NodeId, destination: NodeId) -> bool {
        self.relaying && self.peers.contains_key(&source) && self.peers.contains_key(&destination)
    }

    fn on_data<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
        index: u32,
        counter: u64,
        relayed: Option<NodeId>,
    ) -> Result<Incoming<'a>, DropReason> {
        let (peer_id, slot) = self.session_of(index)?;
        let len = self
            .session_mut(peer_id, slot)?
            .open_in_place(now, datagram, counter)
            .map_err(session_drop)?;
        self.opened(now, from, datagram, peer_id, slot, len, relayed)
    }

    /// The peer and slot of the session with local index `index`.
    fn session_of(&self, index: u32) -> Result<(NodeId, Slot), DropReason> {
        let peer_id = *self.by_index.get(&index).ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers.get(&peer_id).ok_or(DropReason::UnknownIndex)?;
        let slot = peer.slot_of(index).ok_or(DropReason::UnknownIndex)?;
        Ok((peer_id, slot))
    }

    fn session(&self, peer_id: NodeId, slot: Slot) -> Result<&Session, DropReason> {
        self.peers
            .get(&peer_id)
            .and_then(|p| p.session(slot))
            .ok_or(DropReason::UnknownIndex)
    }

    fn session_mut(&mut self, peer_id: NodeId, slot: Slot) -> Result<&mut Session, DropReason> {
        self.peers
            .get_mut(&peer_id)
            .and_then(|p| p.session_mut(slot))
            .ok_or(DropReason::UnknownIndex)
    }

    /// A data or probe message that opened on `peer_id`'s session in `slot`: confirms a new
    /// session, updates the peer, and hands out the packet if it is one and its source is
    /// the peer's.
    #[allow(clippy::too_many_arguments)]
    fn opened<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
        peer_id: NodeId,
        slot: Slot,
        len: usize,
        relayed: Option<NodeId>,
    ) -> Result<Incoming<'a>, DropReason> {
        if relayed.is_some_and(|source| source != peer_id) {
            return Err(DropReason::RelaySourceMismatch);
        }
        let peer = self
            .peers
            .get_mut(&peer_id)
            .ok_or(DropReason::UnknownIndex)?;
        let confirmed = slot == Slot::Next;
        if confirmed {
            // The initiator used the session we answered: it is confirmed, make it current.
            let next = peer.next.take();
            let old = std::mem::replace(&mut peer.current, next);
            retire(
                &mut self.by_index,
                std::mem::replace(&mut peer.previous, old),
            );
            self.events.push_back(Event::SessionEstablished(peer_id));
        }
        let peer = self
            .peers
            .get_mut(&peer_id)
            .ok_or(DropReason::UnknownIndex)?;
        let kind = datagram[0];
        let plaintext = &datagram[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + len];
        // A path probe measures one path; it must not move the endpoint onto it.
        let path_probe = kind == wire::TYPE_PROBE
            && matches!(
                plaintext.first(),
                Some(&paths::PATH_REQUEST | &paths::PATH_REPLY)
            );
        match relayed {
            Some(_) => peer.relay = Some(from),
            None if !path_probe => peer.roam(from, now),
            // A path probe's address is still one the peer is reachable at.
            None => peer.discover(from),
        }
        peer.last_received = Some(now);
        peer.unanswered_since = None;
        peer.rx_bytes += datagram.len() as u64;
        peer.rx_packets += 1;
        if confirmed {
            self.flush_queue(now, peer_id, false);
            self.start_path_scan(now, peer_id);
        }
        if kind == wire::TYPE_PROBE {
            self.on_probe(now, Via::back(from, relayed.is_some()), peer_id, plaintext)?;
            return Ok(Incoming::Handled);
        }
        if plaintext.is_empty() {
            return Ok(Incoming::Handled); // keepalive
        }
        let (src, dst) = ip::addresses(plaintext).ok_or(DropReason::NotIp)?;
        if !self.routes.accepts_source(peer_id, src) {
            return Err(DropReason::SpoofedSource);
        }
        // Only what this member owns or routes: a peer may not use it as a router into its
        // LAN or the internet.
        if self.routes.lookup(dst) != Some(self.node_id) {
            return Err(DropReason::ForeignDestination);
        }
        Ok(Incoming::Packet {
            peer: peer_id,
            packet: plaintext,
        })
    }
}

/// The drop a session's refusal counts as.
fn session_drop(e: SessionError) -> DropReason {
    match e {
        SessionError::Replayed => DropReason::Replayed,
        SessionError::Expired => DropReason::SessionExpired,
        SessionError::Unauthentic | SessionError::BufferTooSmall => DropReason::Unauthentic,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Begun, DropReason, Incoming};
    use crate::sim::{self, LinkModel, Simulation};
    use crate::wire;

    /// Two nodes with a session from 0 to 1, and a sealed data message from 0 to 1.
    fn established(seed: u64) -> (Simulation, Vec<u8>, Vec<u8>) {
        let mut sim = Simulation::new(2, LinkModel::default(), seed);
        sim.send(0, 1, b"first").unwrap();
        sim.run_for(Duration::from_millis(100));
        let packet = sim::ipv4_packet(sim.nodes[0].ipv4, sim.nodes[1].ipv4, &[0xa5; 200]);
        let Ok(Some((_, datagram))) = sim.seal_packet(0, &packet) else {
            panic!("an established session seals");
        };
        (sim, datagram, packet)
    }

    /// begin_outside, DataJob::open and finish_data, as an engine runs them.
    fn receive_in_parts(
        sim: &mut Simulation,
        datagram: &mut [u8],
    ) -> Result<Option<Vec<u8>>, DropReason> {
        let (now, from) = (sim.now, sim.nodes[0].address);
        let tunnel = &mut sim.nodes[1].tunnel;
        match tunnel.begin_outside(now, from, datagram)? {
            Begun::Handled(_) => panic!("a data message is a job"),
            Begun::Data(job) => {
                let opened = job.open(datagram);
                match tunnel.finish_data(now, from, datagram, job, opened)? {
                    Incoming::Packet { packet, .. } => Ok(Some(packet.to_vec())),
                    Incoming::Handled => Ok(None),
                }
            }
        }
    }

    #[test]
    fn sealing_and_opening_in_parts_round_trip_once() {
        let (mut sim, datagram, packet) = established(5);
        // What the simulator delivers, the parts open the same.
        let (from, to) = (sim.nodes[0].address, sim.nodes[1].address);
        let bytes = datagram.clone();
        match sim.inject(sim::Datagram { from, to, bytes }) {
            Some(Ok(true)) => assert_eq!(sim.nodes[1].received.last().unwrap().1, packet),
            other => panic!("{other:?}"),
        }
        let (mut sim, datagram, packet) = established(5);
        let opened = receive_in_parts(&mut sim, &mut datagram.clone()).unwrap();
        assert_eq!(opened.as_deref(), Some(&packet[..]));

        // Once accepted, a copy is a replay; a tampered copy does not authenticate. Both
        // counted, neither a packet.
        assert_eq!(
            receive_in_parts(&mut sim, &mut datagram.clone()),
            Err(DropReason::Replayed)
        );
        let (mut sim, datagram, _) = established(6);
        let mut tampered = datagram.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            receive_in_parts(&mut sim, &mut tampered),
            Err(DropReason::Unauthentic)
        );
        let stats = sim.nodes[1].tunnel.stats();
        assert_eq!(stats.dropped(DropReason::Unauthentic), 1);
        // The tampered copy recorded nothing: the original still opens.
        assert!(receive_in_parts(&mut sim, &mut datagram.clone()).is_ok());
    }

    #[test]
    fn a_copy_accepted_while_another_was_opened_is_a_replay() {
        let (mut sim, datagram, _) = established(7);
        let (now, from) = (sim.now, sim.nodes[0].address);
        let tunnel = &mut sim.nodes[1].tunnel;
        // Two workers check the same message before either records it: both may open it,
        // only the first to finish hands it out.
        let (mut first, mut second) = (datagram.clone(), datagram.clone());
        let Ok(Begun::Data(job1)) = tunnel.begin_outside(now, from, &mut first) else {
            panic!("a job");
        };
        let Ok(Begun::Data(job2)) = tunnel.begin_outside(now, from, &mut second) else {
            panic!("a job");
        };
        let (opened1, opened2) = (job1.open(&mut first), job2.open(&mut second));
        assert!(opened1.is_ok() && opened2.is_ok());
        let done = tunnel.finish_data(now, from, &mut first, job1, opened1);
        assert!(matches!(done, Ok(Incoming::Packet { .. })), "{done:?}");
        let again = tunnel.finish_data(now, from, &mut second, job2, opened2);
        assert!(matches!(again, Err(DropReason::Replayed)), "{again:?}");
        assert_eq!(tunnel.stats().dropped(DropReason::Replayed), 1);
    }

    #[test]
    fn a_session_gone_while_its_message_was_opened_drops_it() {
        let (mut sim, datagram, _) = established(8);
        let (now, from) = (sim.now, sim.nodes[0].address);
        let mut alone = sim.config.clone();
        let sender = sim.node_id(0);
        alone.members.retain(|m| m.node_id != sender);
        alone.revision += 1;
        let mut d = datagram.clone();
        let tunnel = &mut sim.nodes[1].tunnel;
        let Ok(Begun::Data(job)) = tunnel.begin_outside(now, from, &mut d) else {
            panic!("a job");
        };
        let opened = job.open(&mut d);
        tunnel.apply_config(&alone); // the sender is no longer a member
        let r = tunnel.finish_data(now, from, &mut d, job, opened);
        assert!(matches!(r, Err(DropReason::UnknownIndex)), "{r:?}");
    }

    #[test]
    fn begin_outside_handles_everything_but_direct_data() {
        // A relayed data message is handled in full, packet and all.
        let (mut sim, datagram, packet) = established(9);
        let (now, from) = (sim.now, sim.nodes[0].address);
        let mut relayed = wire::relay_envelope(sim.node_id(1), sim.node_id(0), &datagram);
        match sim.nodes[1].tunnel.begin_outside(now, from, &mut relayed) {
            Ok(Begun::Handled(Incoming::Packet { packet: p, .. })) => assert_eq!(p, &packet[..]),
            other => panic!("{other:?}"),
        }
        // Garbage is counted as malformed, whatever its first byte.
        for junk in [vec![wire::TYPE_DATA, 0, 0], vec![0xff; 40], vec![]] {
            let mut junk = junk;
            let r = sim.nodes[1].tunnel.begin_outside(now, from, &mut junk);
            assert!(r.is_err(), "{r:?}");
        }
        assert_eq!(
            sim.nodes[1].tunnel.stats().dropped(DropReason::Malformed),
            3
        );
    }
}
