//! The work of the data plane: a TUN → UDP batch per network ([`Sender`]), a UDP → TUN
//! batch for all networks ([`Receiver`]), both run by a packet worker when their descriptor
//! is readable, and the timers of each network (a task on the node's runtime). Each owns its
//! buffers for its whole life and works in batches: one lock of the tunnel per batch, not per
//! packet. Nothing here allocates or logs per packet: drops are counted by the tunnel or in
//! the network's counters.
//!
//! Copies: inside → outside none (a packet is read into its slot and sealed there; see
//! [`super::gso`]); outside → inside one (the opened packet into the TUN write batch, which
//! coalesces it with its neighbours). The tunnel's handshake queue copies what waits for a
//! session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use meshd_proto::NetworkId;
use meshd_proto::session::{Seal, SessionError};
use meshd_proto::tunnel::{
    Begun, DataJob, Event, Incoming, Prepared, TIMER_TICK, Transmit, Tunnel,
};
use meshd_proto::wire::{self, Recipient};
use tokio::time::MissedTickBehavior;

use super::gso::{self, Sealed};
use super::networks::NetworkTable;
use super::outside::{Outside, Received, add, bump};
use super::{Network, Networks, lock, read};
use crate::tun;

/// TUN → UDP state of one network on one packet worker: the TUN queue it reads, the read
/// slots and what a batch produced.
#[derive(Debug)]
pub(super) struct Sender {
    queue: usize,
    reader: tun::Reader,
    /// Packets with a counter and header, waiting for the cipher: (slot, destination, seal,
    /// the relay envelope's header when relayed).
    prepared: Vec<(
        usize,
        SocketAddr,
        Seal,
        Option<[u8; wire::RELAY_HEADER_LEN]>,
    )>,
    sealed: Vec<Sealed>,
    transmits: Vec<Transmit>,
}

impl Sender {
    pub fn new(net: &Network, queue: usize) -> Self {
        Self {
            queue,
            reader: tun::Reader::new(wire::DATA_HEADER_LEN, wire::TAG_LEN, mtu(net)),
            prepared: Vec::with_capacity(tun::READ_SLOTS),
            sealed: Vec::with_capacity(tun::READ_SLOTS),
            transmits: Vec::new(),
        }
    }

    /// One batch: read what the TUN has queued (one read can hold a 64 KB TCP super-packet),
    /// route each packet and take its counter under one lock, seal them in place without the
    /// lock (other workers use the tunnel meanwhile), send the datagrams for each destination
    /// in segmented sends; then send whatever the tunnel queued (a handshake initiation when
    /// there was no session, a rekey). Returns the packets sealed and sent; an error is the device's: it
    /// is gone.
    pub fn run_once(&mut self, net: &Network, outside: &Outside) -> std::io::Result<u64> {
        let Self {
            queue,
            reader,
            prepared,
            sealed,
            transmits,
        } = self;
        reader.set_mtu(mtu(net));
        let read = reader.read(&net.queues[*queue])?;
        add(&net.counters.tun_malformed, read.malformed);
        if read.packets == 0 {
            return Ok(0);
        }
        {
            let mut tunnel = lock(&net.tunnel);
            let now = Instant::now();
            for (slot, (buf, len)) in reader.packets_mut().enumerate() {
                // Err: counted by the tunnel. Queued: its handshake initiation is in
                // `transmits`.
                if let Ok(Prepared::Ready {
                    destination,
                    seal,
                    envelope,
                    ..
                }) = tunnel.prepare_in_place(now, buf, len)
                {
                    prepared.push((slot, destination, seal, envelope));
                }
            }
            drain(&mut tunnel, transmits);
        }
        let slot_len = reader.slot_len();
        let slots = reader.slots_mut();
        for (slot, destination, seal, envelope) in prepared.drain(..) {
            let buf = &mut slots[slot * slot_len..][..slot_len];
            match (seal.seal(buf), envelope) {
                (Ok(len), None) => sealed.push(Sealed {
                    slot,
                    destination,
                    len,
                }),
                // Relayed: rare and rate-limited by the relay, so a copy behind the
                // envelope's header is cheaper than making room in every slot.
                (Ok(len), Some(header)) => transmits.push(Transmit {
                    destination,
                    peer: None,
                    bytes: [&header[..], &buf[..len]].concat(),
                }),
                (Err(_), _) => bump(&net.counters.seal_error),
            }
        }
        let mut rest = &sealed[..];
        while !rest.is_empty() {
            let (run, next) = rest.split_at(gso::run_len(rest, outside.max_gso_segments()));
            let at = gso::pack(slots, slot_len, run);
            outside.send_segments(&slots[at], run[0].len, run[0].destination, &net.counters);
            rest = next;
        }
        let sent = sealed.len() as u64;
        sealed.clear();
        outside.send_all(transmits, &net.counters);
        Ok(sent)
    }
}

/// The MTU the kernel last gave the network's TUN.
fn mtu(net: &Network) -> u16 {
    lock(&net.plan).mtu
}

/// A datagram of a receive batch and the network it goes to.
#[derive(Debug)]
struct Routed {
    from: SocketAddr,
    at: std::ops::Range<usize>,
    /// Index into the batch's networks.
    network: usize,
}

/// UDP → TUN state of one packet worker for every network: the receive buffers, the TUN
/// write batch, and which queue of each TUN it writes to.
#[derive(Default)]
pub(super) struct Receiver {
    queue: usize,
    rx: Received,
    routed: Vec<Routed>,
    /// The networks of the current batch (usually one), each cloned out of the map once.
    batch_networks: Vec<Arc<Network>>,
    /// Data messages between their check and their acceptance: (index into `routed`, job,
    /// what opening it gave).
    jobs: Vec<(usize, DataJob, Result<usize, SessionError>)>,
    writer: tun::Writer,
    transmits: Vec<Transmit>,
}

impl Receiver {
    /// Writes to queue `queue` of each TUN: the kernel then sends the replies of what it
    /// writes back to the same queue, and so to the same worker.
    pub fn new(queue: usize) -> Self {
        Self {
            queue,
            ..Self::default()
        }
    }

    /// One batch: receive what the socket has queued (GRO batches split at their stride) and
    /// find each datagram's network; then per network, check the datagrams against their
    /// sessions under one lock of its tunnel, open the data messages without it (other
    /// workers use the tunnel meanwhile), accept them under a second lock, and write the
    /// packets to its TUN in one batch; send whatever the tunnel answered. Returns the
    /// packets handed to the TUNs.
    pub fn run_once(&mut self, outside: &Outside, networks: &Networks) -> u64 {
        let Self {
            queue,
            rx,
            routed,
            batch_networks,
            jobs,
            writer,
            transmits,
        } = self;
        match outside.recv(rx) {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(_) => {
                bump(&outside.counters.udp_recv_error);
                return 0;
            }
        }
        {
            let networks = read(networks);
            for (from, at) in rx.datagrams() {
                let datagram = rx.bytes(at.clone());
                if datagram.first() == Some(&wire::TYPE_REFLECTED) {
                    outside.reach.deliver(from, datagram);
                    continue;
                }
                let Some(net) = demux(outside, &networks, datagram) else {
                    continue;
                };
                let network = match batch_networks.iter().position(|n| Arc::ptr_eq(n, net)) {
                    Some(i) => i,
                    None => {
                        batch_networks.push(Arc::clone(net));
                        batch_networks.len() - 1
                    }
                };
                routed.push(Routed { from, at, network });
            }
        }
        let mut opened = 0;
        let mut start = 0;
        while let Some(first) = routed.get(start) {
            let net = &batch_networks[first.network];
            // At most one TUN write batch per pass: every datagram may become a packet.
            let end = start
                + routed[start..]
                    .iter()
                    .take(tun::WRITE_BATCH)
                    .take_while(|d| d.network == first.network)
                    .count();
            let now = Instant::now();
            {
                let mut tunnel = lock(&net.tunnel);
                for (k, d) in routed.iter().enumerate().take(end).skip(start) {
                    // Err: counted by the tunnel. Handled: any answer is in `transmits`.
                    match tunnel.begin_outside(now, d.from, rx.bytes_mut(d.at.clone())) {
                        Ok(Begun::Data(job)) => jobs.push((k, job, Ok(0))),
                        Ok(Begun::Handled(Incoming::Packet { packet, .. })) => {
                            writer.push(packet);
                            opened += 1;
                        }
                        Ok(Begun::Handled(Incoming::Handled)) | Err(_) => {}
                    }
                }
                drain(&mut tunnel, transmits);
            }
            for (k, job, result) in jobs.iter_mut() {
                *result = job.open(rx.bytes_mut(routed[*k].at.clone()));
            }
            if !jobs.is_empty() {
                let mut tunnel = lock(&net.tunnel);
                for (k, job, result) in jobs.drain(..) {
                    let d = &routed[k];
                    let datagram = rx.bytes_mut(d.at.clone());
                    // Err: counted by the tunnel.
                    if let Ok(Incoming::Packet { packet, .. }) =
                        tunnel.finish_data(now, d.from, datagram, job, result)
                    {
                        writer.push(packet);
                        opened += 1;
                    }
                }
                drain(&mut tunnel, transmits);
            }
            start = end;
            if writer.flush(&net.queues[*queue]).is_err() {
                bump(&net.counters.tun_write_error);
            }
            outside.send_all(transmits, &net.counters);
        }
        routed.clear();
        batch_networks.clear();
        opened
    }
}

/// The network a datagram belongs to, from its header alone (the network's tunnel parses
/// it); counts what belongs nowhere.
fn demux<'a>(
    outside: &Outside,
    networks: &'a NetworkTable,
    datagram: &[u8],
) -> Option<&'a Arc<Network>> {
    let Ok(recipient) = wire::recipient(datagram) else {
        bump(&outside.counters.malformed);
        return None;
    };
    if datagram[0] == wire::TYPE_RELAY
        && let Ok(wire::Message::Relay(envelope)) = wire::parse(datagram)
        && networks
            .values()
            .next()
            .is_some_and(|n| n.me != envelope.destination)
    {
        // For another node: a network that relays between the two takes it.
        let found = networks
            .values()
            .find(|n| lock(&n.tunnel).relays_between(envelope.source, envelope.destination));
        if found.is_none() {
            bump(&outside.counters.relay_not_for_us);
        }
        return found;
    }
    let found = match recipient {
        Recipient::Network(id) => networks.get(&NetworkId::from_bytes(id)),
        Recipient::Index(index) => networks.by_index(index),
    };
    if found.is_none() {
        bump(match recipient {
            Recipient::Network(_) => &outside.counters.unknown_network,
            Recipient::Index(_) => &outside.counters.unknown_index,
        });
    }
    found
}

/// Timers for one network: every [`TIMER_TICK`], `handle_timeout` (handshake retries and
/// give-ups, session expiry, keepalives, probes), then send its datagrams and log its events.
pub(super) async fn timers(net: Arc<Network>, outside: Arc<Outside>) {
    let mut tick = tokio::time::interval(TIMER_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut transmits: Vec<Transmit> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    loop {
        tick.tick().await;
        {
            let mut tunnel = lock(&net.tunnel);
            tunnel.handle_timeout(Instant::now());
            drain(&mut tunnel, &mut transmits);
            events.extend(std::iter::from_fn(|| tunnel.poll_event()));
        }
        for event in events.drain(..) {
            log_event(net.id, event);
        }
        outside.send_all(&mut transmits, &net.counters);
    }
}

fn drain(tunnel: &mut Tunnel, out: &mut Vec<Transmit>) {
    out.extend(std::iter::from_fn(|| tunnel.poll_transmit()));
}

/// Events are per peer and per session (minutes apart), not per packet.
fn log_event(network: NetworkId, event: Event) {
    match event {
        Event::SessionEstablished(peer) => {
            tracing::debug!(network = %network, peer = %peer, "session established");
        }
        Event::SessionExpired(peer) => {
            tracing::debug!(network = %network, peer = %peer, "session expired");
        }
        Event::PeerRemoved(peer) => {
            tracing::info!(network = %network, peer = %peer, "peer removed");
        }
        Event::HandshakeGaveUp(peer) => {
            tracing::debug!(network = %network, peer = %peer, "handshake gave up");
        }
    }
}
