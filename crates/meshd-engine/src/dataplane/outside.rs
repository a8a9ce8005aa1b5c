//! The outside: the one UDP socket every joined network shares, and the demultiplexer that
//! hands each datagram to the network it belongs to.
//!
//! ```text
//! message                 carries                     goes to
//! handshake initiation    network id (bytes 8..16)    that network
//! handshake response      receiver index              the tunnel that issued the index
//! cookie reply, data,     receiver index              (Tunnel::owns_index; with one network
//!   probe                                              joined, straight to it)
//! relay envelope          an inner message            whatever the inner message says
//! ```

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};

use meshd_proto::NetworkId;
use meshd_proto::tunnel::Transmit;
use meshd_proto::wire::{self, Message};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::NetworkCounters;
use crate::sys::sockopt::{self, Buffer};

/// Receive and send buffer size asked of the kernel. Drops at a full receive buffer are what
/// cost userspace tunnels most (DESIGN.md section 5).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// The shared socket and the counters of datagrams no network could take.
#[derive(Debug)]
pub(crate) struct Outside {
    pub socket: UdpSocket,
    /// `[::]` with IPV6_V6ONLY off: IPv4 peers are addressed as `::ffff:a.b.c.d`.
    dual_stack: bool,
    pub counters: SocketCounters,
}

/// Per-socket drop counters (datagrams that reached no network).
#[derive(Debug, Default)]
pub(crate) struct SocketCounters {
    pub udp_recv_error: AtomicU64,
    pub malformed: AtomicU64,
    pub unknown_network: AtomicU64,
    pub unknown_index: AtomicU64,
}

impl SocketCounters {
    pub fn list(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("udp_recv_error", get(&self.udp_recv_error)),
            ("malformed", get(&self.malformed)),
            ("unknown_network", get(&self.unknown_network)),
            ("unknown_index", get(&self.unknown_index)),
        ]
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Outside {
    /// Binds `[::]:port` dual-stack (or `0.0.0.0:port` on a host without IPv6) with large
    /// buffers. Must run inside a tokio runtime.
    pub fn bind(port: u16) -> io::Result<Outside> {
        let (socket, dual_stack) = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
        {
            Ok(s) => {
                s.set_only_v6(false)?;
                (s, true)
            }
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => (
                Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?,
                false,
            ),
            Err(e) => return Err(e),
        };
        socket.set_nonblocking(true)?;
        size_buffer(&socket, Buffer::Receive);
        size_buffer(&socket, Buffer::Send);
        let address: SocketAddr = if dual_stack {
            (Ipv6Addr::UNSPECIFIED, port).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, port).into()
        };
        socket.bind(&address.into())?;
        tracing::debug!(
            local = %address,
            recv_buffer = socket.recv_buffer_size().unwrap_or(0),
            send_buffer = socket.send_buffer_size().unwrap_or(0),
            "outside socket bound"
        );
        Ok(Outside {
            socket: UdpSocket::from_std(socket.into())?,
            dual_stack,
            counters: SocketCounters::default(),
        })
    }

    /// The address as the socket needs it: IPv4 as IPv4-mapped IPv6 on a dual-stack socket.
    pub fn to_wire(&self, destination: SocketAddr) -> SocketAddr {
        match destination {
            SocketAddr::V4(v4) if self.dual_stack => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        }
    }

    /// Sends one datagram; a failure (no route, a full queue) is counted, not returned.
    pub async fn send(&self, bytes: &[u8], destination: SocketAddr, counters: &NetworkCounters) {
        if self
            .socket
            .send_to(bytes, self.to_wire(destination))
            .await
            .is_err()
        {
            bump(&counters.udp_send_error);
        }
    }

    /// Sends and empties `transmits`.
    pub async fn send_all(&self, transmits: &mut Vec<Transmit>, counters: &NetworkCounters) {
        for t in transmits.drain(..) {
            self.send(&t.bytes, t.destination, counters).await;
        }
    }
}

/// Asks for [`SOCKET_BUFFER`]: forced past `net.core.rmem_max`/`wmem_max` when we hold
/// CAP_NET_ADMIN, else as much as those limits allow (the kernel caps silently).
fn size_buffer(socket: &Socket, buffer: Buffer) {
    if sockopt::force_buffer_size(socket.as_fd(), buffer, SOCKET_BUFFER).is_ok() {
        return;
    }
    let capped = match buffer {
        Buffer::Receive => socket.set_recv_buffer_size(SOCKET_BUFFER),
        Buffer::Send => socket.set_send_buffer_size(SOCKET_BUFFER),
    };
    if let Err(e) = capped {
        tracing::warn!(error = %e, ?buffer, "could not size the outside socket buffer");
    }
}

/// A source address as the tunnels know it: IPv4-mapped IPv6 back to IPv4, so endpoints
/// compare equal to the IPv4 endpoints configs carry.
pub(crate) fn from_wire(source: SocketAddr) -> SocketAddr {
    match source {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => source,
        },
        v4 => v4,
    }
}

/// Which network a datagram is for, as far as its cleartext says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Network(NetworkId),
    /// The receiver index of the tunnel that issued it.
    Index(u32),
}

/// Reads the owner of a datagram; `None` if it does not parse as a message.
pub(crate) fn owner(datagram: &[u8]) -> Option<Owner> {
    Some(match wire::parse(datagram).ok()? {
        Message::HandshakeInit(m) => Owner::Network(NetworkId::from_bytes(m.network_id)),
        Message::HandshakeResponse(m) => Owner::Index(m.receiver_index),
        Message::CookieReply(m) => Owner::Index(m.receiver_index),
        Message::Data(m) | Message::Probe(m) => Owner::Index(m.receiver_index),
        // `parse` checked that the inner message parses and is not itself a relay.
        Message::Relay(r) => return owner(r.inner),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshd_proto::sim::{LinkModel, Simulation};

    use super::*;

    #[test]
    fn every_message_names_its_owner() {
        let mut sim = Simulation::new(2, LinkModel::default(), 3);
        sim.recorded = Some(Vec::new());
        sim.send(0, 1, b"hello").unwrap();
        sim.run_for(Duration::from_millis(100));
        let nwid = sim.config.network_id;
        let mut seen = [false; 3];
        for d in sim.recorded.take().unwrap() {
            let receiver = sim.nodes.iter().position(|n| n.address == d.to).unwrap();
            match (d.bytes[0], owner(&d.bytes).unwrap()) {
                (wire::TYPE_HANDSHAKE_INIT, Owner::Network(id)) => {
                    assert_eq!(id, nwid);
                    seen[0] = true;
                }
                (wire::TYPE_HANDSHAKE_RESPONSE, Owner::Index(i)) => {
                    assert!(sim.nodes[receiver].tunnel.owns_index(i));
                    seen[1] = true;
                }
                (wire::TYPE_DATA | wire::TYPE_PROBE, Owner::Index(i)) => {
                    assert!(sim.nodes[receiver].tunnel.owns_index(i));
                    let relayed = wire::relay_envelope(
                        sim.node_id(receiver),
                        sim.node_id(1 - receiver),
                        &d.bytes,
                    );
                    assert_eq!(owner(&relayed), Some(Owner::Index(i)));
                    seen[2] = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn garbage_has_no_owner() {
        assert_eq!(owner(&[]), None);
        assert_eq!(owner(&[wire::TYPE_DATA, 0, 0, 0, 1, 2]), None);
        assert_eq!(owner(&[0xff; 64]), None);
        let init = [wire::TYPE_HANDSHAKE_INIT, 0, 0, 0];
        assert_eq!(owner(&init), None);
    }

    #[tokio::test]
    async fn one_dual_stack_socket_with_large_buffers() {
        let outside = Outside::bind(0).unwrap();
        let local = outside.socket.local_addr().unwrap();
        assert!(local.ip().is_unspecified() && local.port() != 0);
        let sock = socket2::SockRef::from(&outside.socket);
        // The kernel reports twice what it was asked for (bookkeeping overhead).
        assert!(
            sock.recv_buffer_size().unwrap() >= SOCKET_BUFFER,
            "root forces the size"
        );
        assert!(sock.send_buffer_size().unwrap() >= SOCKET_BUFFER);

        // An IPv4 peer reaches it, and its address comes back as plain IPv4.
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"hi", ("127.0.0.1", local.port())).unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = outside.socket.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(from_wire(from), peer.local_addr().unwrap());
        let back = outside.to_wire(peer.local_addr().unwrap());
        assert!(back.is_ipv6());
        outside.socket.send_to(b"yo", back).await.unwrap();
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"yo");
    }

    #[test]
    fn ipv4_peers_are_mapped_both_ways() {
        let v4: SocketAddr = "10.99.1.2:9993".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.99.1.2]:9993".parse().unwrap();
        assert_eq!(from_wire(mapped), v4);
        assert_eq!(from_wire(v4), v4);
        let v6: SocketAddr = "[fd00::1]:9993".parse().unwrap();
        assert_eq!(from_wire(v6), v6);
    }
}
