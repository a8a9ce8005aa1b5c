//! The three loops of the data plane. Each owns its buffers for its whole life; a packet is
//! never copied except into the tunnel's own queue while a handshake runs. Nothing here logs
//! per packet: drops are counted by the tunnel or in the network's counters.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use meshd_proto::NetworkId;
use meshd_proto::tunnel::{Encapsulated, Event, Incoming, TIMER_TICK, Transmit, Tunnel};
use meshd_proto::wire;
use tokio::time::MissedTickBehavior;

use super::outside::{Outside, Owner, bump, from_wire, owner};
use super::{Network, Networks, lock, read};

/// Largest IP packet a TUN read can return (the IPv4 total-length limit; without offloads
/// reads are at most the MTU, but the MTU can change under a running task).
const MAX_PACKET: usize = 65_535;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// TUN → UDP for one network: read a packet, seal it, send it; then send whatever the tunnel
/// queued (a handshake initiation when there was no session, a rekey).
pub(super) async fn inside_to_outside(net: Arc<Network>, outside: Arc<Outside>) {
    let mut packet = vec![0u8; MAX_PACKET];
    let mut sealed = vec![0u8; MAX_PACKET + wire::DATA_OVERHEAD];
    let mut transmits: Vec<Transmit> = Vec::new();
    loop {
        let n = match net.tun.recv(&mut packet).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // The link was deleted under us, or the descriptor broke: nothing to read ever
                // again. Said once, not per packet.
                bump(&net.counters.tun_read_error);
                tracing::warn!(network = %net.id, interface = %net.interface, error = %e,
                    "TUN read failed; this network stops sending");
                return;
            }
        };
        let result = {
            let mut tunnel = lock(&net.tunnel);
            let result = tunnel.encapsulate(Instant::now(), &packet[..n], &mut sealed);
            drain(&mut tunnel, &mut transmits);
            result
        };
        // Err: counted by the tunnel. Queued: its handshake initiation is in `transmits`.
        if let Ok(Encapsulated::Ready {
            destination, len, ..
        }) = result
        {
            outside
                .send(&sealed[..len], destination, &net.counters)
                .await;
        }
        outside.send_all(&mut transmits, &net.counters).await;
    }
}

/// UDP → TUN for every network: receive a datagram, find its network, open it in place,
/// write the packet to that network's TUN, send whatever the tunnel answered.
pub(super) async fn outside_to_inside(outside: Arc<Outside>, networks: Networks) {
    let mut datagram = vec![0u8; MAX_DATAGRAM];
    let mut transmits: Vec<Transmit> = Vec::new();
    loop {
        let (n, from) = match outside.socket.recv_from(&mut datagram).await {
            Ok(r) => r,
            Err(_) => {
                bump(&outside.counters.udp_recv_error);
                continue;
            }
        };
        let Some(net) = demux(&outside, &networks, &datagram[..n]) else {
            continue;
        };
        let result = {
            let mut tunnel = lock(&net.tunnel);
            let result = tunnel.handle_outside(Instant::now(), from_wire(from), &mut datagram[..n]);
            drain(&mut tunnel, &mut transmits);
            result
        };
        // Err: counted by the tunnel. Handled: any answer is in `transmits`.
        if let Ok(Incoming::Packet { packet, .. }) = result
            && net.tun.send(packet).await.is_err()
        {
            bump(&net.counters.tun_write_error);
        }
        outside.send_all(&mut transmits, &net.counters).await;
    }
}

/// The network a datagram belongs to (see [`super::outside`]); counts what belongs nowhere.
fn demux(outside: &Outside, networks: &Networks, datagram: &[u8]) -> Option<Arc<Network>> {
    let Some(owner) = owner(datagram) else {
        bump(&outside.counters.malformed);
        return None;
    };
    let networks = read(networks);
    let found = match owner {
        Owner::Network(id) => networks.get(&id),
        // One network: its tunnel judges (and counts) the index itself.
        Owner::Index(_) if networks.len() == 1 => networks.values().next(),
        Owner::Index(index) => networks
            .values()
            .find(|net| lock(&net.tunnel).owns_index(index)),
    };
    if found.is_none() {
        bump(match owner {
            Owner::Network(_) => &outside.counters.unknown_network,
            Owner::Index(_) => &outside.counters.unknown_index,
        });
    }
    found.cloned()
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
        outside.send_all(&mut transmits, &net.counters).await;
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
