//! Criterion benches for meshd live in `benches/*.rs`; this crate holds what several of
//! them share.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshd_proto::sim::{self, LinkModel, Simulation};
use meshd_proto::tunnel::Tunnel;

/// Two tunnels of one network with an established session, node 0 → node 1.
#[derive(Debug)]
pub struct TunnelPair {
    pub now: Instant,
    pub sender: Tunnel,
    pub receiver: Tunnel,
    /// Where the receiver knows the sender's datagrams to come from.
    pub sender_address: SocketAddr,
    sender_ip: std::net::Ipv4Addr,
    receiver_ip: std::net::Ipv4Addr,
}

impl TunnelPair {
    /// Establishes the session through the simulator (a real handshake), then leaves the
    /// tunnels to the caller.
    pub fn new() -> Self {
        let mut sim = Simulation::new(2, LinkModel::default(), 1);
        sim.send(0, 1, b"hello")
            .expect("a packet to a member queues behind the handshake");
        sim.run_for(Duration::from_secs(1));
        assert_eq!(
            sim.nodes[1].received.len(),
            1,
            "the simulator established a session and delivered the queued packet"
        );
        let now = sim.now;
        let mut nodes = std::mem::take(&mut sim.nodes).into_iter();
        let (Some(sender), Some(receiver)) = (nodes.next(), nodes.next()) else {
            panic!("the simulation has two nodes");
        };
        Self {
            now,
            sender_address: sender.address,
            sender_ip: sender.ipv4,
            receiver_ip: receiver.ipv4,
            sender: sender.tunnel,
            receiver: receiver.tunnel,
        }
    }

    /// An IPv4 packet of `len` bytes from the sender's to the receiver's mesh address.
    pub fn packet(&self, len: usize) -> Vec<u8> {
        let packet = sim::ipv4_packet(self.sender_ip, self.receiver_ip, &vec![0x5a; len - 20]);
        assert_eq!(packet.len(), len);
        packet
    }
}

impl Default for TunnelPair {
    fn default() -> Self {
        Self::new()
    }
}
