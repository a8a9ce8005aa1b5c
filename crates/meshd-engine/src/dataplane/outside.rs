//! The outside: the UDP sockets every joined network shares (one per packet worker, all on
//! the node's port), and the demultiplexer that hands each datagram to the network it
//! belongs to.
//!
//! ```text
//! message                 carries                     goes to
//! handshake initiation    network id (bytes 8..16)    that network
//! handshake response      receiver index              the tunnel that issued the index
//! cookie reply, data,     receiver index              (Tunnel::owns_index; with one network
//!   probe                                              joined, straight to it)
//! relay envelope          an inner message            whatever the inner message says
//! ```
//!
//! The socket goes through quinn-udp: `recvmmsg` with UDP GRO (one receive returns up to
//! [`RECV_BATCH`] reads, each one datagram or up to 64 coalesced ones of one sender), and
//! `sendmsg` with UDP GSO (up to 64 datagrams to one destination in one call). When the
//! kernel refuses a segmented send (EIO/EINVAL: a device without checksum offload on the
//! path), quinn-udp turns segmentation off for good and [`Outside::send_segments`] resends
//! that batch one datagram at a time, counted and logged once.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::ops::Range;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use meshd_proto::addr::unmapped;
use meshd_proto::tunnel::Transmit;

use quinn_udp::{RecvMeta, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

use super::NetworkCounters;
use super::reach::ReachInbox;
use crate::sys::poll;
use crate::sys::sockopt::{self, Buffer};

/// Receive and send buffer size asked of the kernel. Drops at a full receive buffer are what
/// cost userspace tunnels most (DESIGN.md section 5).
pub const SOCKET_BUFFER: usize = 4 << 20;
/// Reads per receive (quinn-udp's `recvmmsg` batch).
pub(crate) const RECV_BATCH: usize = quinn_udp::BATCH_SIZE;
/// How long a send waits for room in a full socket buffer before its datagrams are dropped
/// (and counted): the packet worker stops reading its TUN for that long, which is the
/// backpressure a full link should give. A timers task sending then holds its runtime thread
/// as long; its few datagrams per tick rarely meet a full buffer.
const SEND_WAIT_MS: i32 = 5;
/// Bytes per read: a GRO batch stays below 64 KB (the kernel's `gro_max_size`), and so does
/// any one datagram.
const RECV_BUF: usize = 1 << 16;
/// Options quinn-udp sets for QUIC that meshd puts back to what they were before:
/// - QUIC's own path-MTU discovery (don't fragment, ignore the learned path MTU). meshd has
///   none, and the kernel's defaults fragment a datagram larger than the path MTU instead of
///   losing it.
/// - Per-datagram ancillary data meshd never reads: the destination address, the ECN bits
///   and a receive timestamp. Each costs the kernel a control message per datagram, and
///   timestamps switch on time-stamping of every packet the host receives.
const RESTORED_OPTIONS: [(libc::c_int, libc::c_int); 8] = [
    (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
    (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
    (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG),
    (libc::IPPROTO_IP, libc::IP_PKTINFO),
    (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    (libc::IPPROTO_IP, libc::IP_RECVTOS),
    (libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS),
    (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS),
];

/// One packet worker's socket and the counters of datagrams no network could take.
#[derive(Debug)]
pub(crate) struct Outside {
    pub socket: UdpSocket,
    state: UdpSocketState,
    /// `[::]` with IPV6_V6ONLY off: IPv4 peers are addressed as `::ffff:a.b.c.d`.
    dual_stack: bool,
    pub counters: SocketCounters,
    /// Segmented sends the kernel refused (then resent one datagram at a time).
    pub gso_refused: AtomicU64,
    /// Where answers from controller relays go (shared by every worker's socket).
    pub reach: Arc<ReachInbox>,
}

/// Per-socket drop counters (datagrams that reached no network).
#[derive(Debug, Default)]
pub(crate) struct SocketCounters {
    pub udp_recv_error: AtomicU64,
    pub malformed: AtomicU64,
    pub unknown_network: AtomicU64,
    pub unknown_index: AtomicU64,
    /// Relay envelopes for another node that no network relays.
    pub relay_not_for_us: AtomicU64,
}

impl SocketCounters {
    pub fn list(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("udp_recv_error", get(&self.udp_recv_error)),
            ("malformed", get(&self.malformed)),
            ("unknown_network", get(&self.unknown_network)),
            ("unknown_index", get(&self.unknown_index)),
            ("relay_not_for_us", get(&self.relay_not_for_us)),
        ]
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Buffers for one batched receive, owned by the receiving task and reused.
#[derive(Debug)]
pub(crate) struct Received {
    /// [`RECV_BATCH`] reads of [`RECV_BUF`] bytes.
    buf: Vec<u8>,
    meta: [RecvMeta; RECV_BATCH],
    reads: usize,
}

impl Default for Received {
    fn default() -> Self {
        Self {
            buf: vec![0; RECV_BATCH * RECV_BUF],
            meta: [RecvMeta::default(); RECV_BATCH],
            reads: 0,
        }
    }
}

impl Received {
    /// Every datagram of the last receive, in order: its sender (as the tunnels know it, see
    /// [`meshd_proto::addr::unmapped`]) and where it is in [`Received::bytes_mut`]. A GRO
    /// read is split at its stride; an empty datagram comes out as an empty range.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, Range<usize>)> + '_ {
        self.meta[..self.reads]
            .iter()
            .enumerate()
            .flat_map(|(i, meta)| {
                let base = i * RECV_BUF;
                let len = meta.len.min(RECV_BUF);
                let stride = if meta.stride == 0 { len } else { meta.stride }.max(1);
                let from = unmapped(meta.addr);
                (0..len.div_ceil(stride).max(1)).map(move |k| {
                    let at = (k * stride).min(len);
                    (from, base + at..base + (at + stride).min(len))
                })
            })
    }

    pub fn bytes(&self, at: Range<usize>) -> &[u8] {
        &self.buf[at]
    }

    pub fn bytes_mut(&mut self, at: Range<usize>) -> &mut [u8] {
        &mut self.buf[at]
    }
}

impl Outside {
    /// Binds `count` sockets on one port, `[::]:port` dual-stack (or `0.0.0.0:port` on a host
    /// without IPv6), one per packet worker; `0` picks a free port. Several sockets share the
    /// port with SO_REUSEPORT and the kernel hands each sender's datagrams to one of them.
    ///
    /// SO_REUSEPORT would also let a second daemon on this host share the port and take part
    /// of our traffic, so the port is first bound once without it: taken, and the bind fails
    /// as it would with a single socket.
    pub fn bind(port: u16, count: usize) -> io::Result<Vec<Outside>> {
        if count <= 1 {
            return Ok(vec![Outside::bind_one(port, false)?]);
        }
        // A port the kernel picked is free again between the probe and the group's first
        // bind; another process taking it in those microseconds is retried.
        let attempts = if port == 0 { 3 } else { 1 };
        let mut attempt = 1;
        loop {
            let (probe, dual_stack) = new_socket()?;
            probe.bind(&any(dual_stack, port).into())?;
            let chosen = probe.local_addr()?.as_socket().map_or(port, |a| a.port());
            drop(probe);
            match (0..count)
                .map(|_| Outside::bind_one(chosen, true))
                .collect::<io::Result<Vec<_>>>()
            {
                Err(_) if attempt < attempts => attempt += 1,
                group => return group,
            }
        }
    }

    /// One socket with large buffers, GRO on and the kernel's path-MTU behaviour,
    /// non-blocking: a packet worker polls it, and anyone may send on it.
    fn bind_one(port: u16, reuse_port: bool) -> io::Result<Outside> {
        let (socket, dual_stack) = new_socket()?;
        socket.set_nonblocking(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        size_buffer(&socket, Buffer::Receive);
        size_buffer(&socket, Buffer::Send);
        let address = any(dual_stack, port);
        socket.bind(&address.into())?;
        // An option the socket's family lacks reads as an error and is left alone.
        let fd = socket.as_fd();
        let before = RESTORED_OPTIONS.map(|(level, name)| sockopt::int_option(fd, level, name));
        let state = UdpSocketState::new((&socket).into())?;
        for ((level, name), value) in RESTORED_OPTIONS.into_iter().zip(before) {
            if let Ok(value) = value
                && let Err(e) = sockopt::set_int_option(fd, level, name, value)
            {
                tracing::debug!(error = %e, level, name, "could not restore a socket option");
            }
        }
        tracing::debug!(
            local = %address,
            recv_buffer = socket.recv_buffer_size().unwrap_or(0),
            send_buffer = socket.send_buffer_size().unwrap_or(0),
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "outside socket bound"
        );
        Ok(Outside {
            socket: socket.into(),
            state,
            dual_stack,
            counters: SocketCounters::default(),
            gso_refused: AtomicU64::new(0),
            reach: Arc::default(),
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

    /// Datagrams one segmented send may carry now (1: segmentation is off).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Datagrams one read may return coalesced (1: GRO is off).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Receives what is queued into `rx`, up to one batch; `false` when nothing was.
    pub fn recv(&self, rx: &mut Received) -> io::Result<bool> {
        let mut chunks = rx.buf.chunks_mut(RECV_BUF);
        let mut bufs: [IoSliceMut<'_>; RECV_BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        rx.reads = 0;
        match self
            .state
            .recv((&self.socket).into(), &mut bufs, &mut rx.meta)
        {
            Ok(reads) => {
                rx.reads = reads;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends one datagram; a failure (no route, a full queue) is counted, not returned.
    pub fn send(&self, bytes: &[u8], destination: SocketAddr, counters: &NetworkCounters) {
        if self.transmit(bytes, destination, None).is_err() {
            bump(&counters.udp_send_error);
        }
    }

    /// Sends `datagrams`, laid back to back and each `segment` bytes long but the last, in
    /// one segmented send (at most [`Outside::max_gso_segments`] of them). Failures are
    /// counted per datagram.
    pub fn send_segments(
        &self,
        datagrams: &[u8],
        segment: usize,
        destination: SocketAddr,
        counters: &NetworkCounters,
    ) {
        let count = datagrams.len().div_ceil(segment.max(1));
        if count <= 1 {
            return self.send(datagrams, destination, counters);
        }
        match self.transmit(datagrams, destination, Some(segment)) {
            Ok(()) => {}
            Err(e) if self.max_gso_segments() <= 1 => {
                // quinn-udp turned segmentation off on this error; resend one by one.
                if get(&self.gso_refused) == 0 {
                    tracing::warn!(error = %e,
                        "the kernel refused UDP segmentation offload; sending one datagram per call");
                }
                bump(&self.gso_refused);
                for datagram in datagrams.chunks(segment) {
                    self.send(datagram, destination, counters);
                }
            }
            Err(_) => add(&counters.udp_send_error, count as u64),
        }
    }

    /// Sends and empties `transmits`.
    pub fn send_all(&self, transmits: &mut Vec<Transmit>, counters: &NetworkCounters) {
        for t in transmits.drain(..) {
            self.send(&t.bytes, t.destination, counters);
        }
    }

    /// One send: a plain `sendto` for one datagram (without the ECN control message
    /// quinn-udp adds to every send; a ping's packets go this way), quinn-udp for a segmented
    /// one. A full buffer is waited on once, up to [`SEND_WAIT_MS`].
    fn transmit(
        &self,
        contents: &[u8],
        destination: SocketAddr,
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let to = self.to_wire(destination);
        let send = || match segment_size {
            None => self.socket.send_to(contents, to).map(drop),
            Some(_) => {
                let transmit = quinn_udp::Transmit {
                    destination: to,
                    ecn: None,
                    contents,
                    segment_size,
                    src_ip: None,
                };
                self.state.try_send((&self.socket).into(), &transmit)
            }
        };
        match send() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                poll::wait_writable(self.socket.as_fd(), SEND_WAIT_MS)?;
                send()
            }
            result => result,
        }
    }
}

/// An IPv6 UDP socket that takes IPv4 too, or an IPv4 one where the host has no IPv6
/// (`true`: dual-stack).
fn new_socket() -> io::Result<(Socket, bool)> {
    match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
        Ok(s) => {
            s.set_only_v6(false)?;
            Ok((s, true))
        }
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => Ok((
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?,
            false,
        )),
        Err(e) => Err(e),
    }
}

/// The wildcard address of the socket's family.
fn any(dual_stack: bool, port: u16) -> SocketAddr {
    if dual_stack {
        (Ipv6Addr::UNSPECIFIED, port).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, port).into()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshd_proto::NetworkId;
    use meshd_proto::sim::{LinkModel, Simulation};
    use meshd_proto::wire::{self, Recipient};

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
            match (d.bytes[0], wire::recipient(&d.bytes).unwrap()) {
                (wire::TYPE_HANDSHAKE_INIT, Recipient::Network(id)) => {
                    assert_eq!(NetworkId::from_bytes(id), nwid);
                    seen[0] = true;
                }
                (wire::TYPE_HANDSHAKE_RESPONSE, Recipient::Index(i)) => {
                    assert!(sim.nodes[receiver].tunnel.owns_index(i));
                    seen[1] = true;
                }
                (wire::TYPE_DATA | wire::TYPE_PROBE, Recipient::Index(i)) => {
                    assert!(sim.nodes[receiver].tunnel.owns_index(i));
                    let relayed = wire::relay_envelope(
                        sim.node_id(receiver),
                        sim.node_id(1 - receiver),
                        &d.bytes,
                    );
                    assert_eq!(wire::recipient(&relayed), Ok(Recipient::Index(i)));
                    seen[2] = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn garbage_has_no_owner() {
        assert!(wire::recipient(&[]).is_err());
        assert!(wire::recipient(&[wire::TYPE_DATA, 0, 0, 0, 1, 2]).is_err());
        assert!(wire::recipient(&[0xff; 64]).is_err());
        let init = [wire::TYPE_HANDSHAKE_INIT, 0, 0, 0];
        assert!(wire::recipient(&init).is_err());
    }

    /// Retries a non-blocking call until it has something (loopback delivers at once; the
    /// deadline keeps a bug from hanging the test).
    fn soon<T>(mut f: impl FnMut() -> io::Result<Option<T>>) -> T {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match f() {
                Ok(Some(v)) => return v,
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            assert!(std::time::Instant::now() < deadline, "nothing arrived");
            std::thread::yield_now();
        }
    }

    #[test]
    fn one_dual_stack_socket_with_large_buffers() {
        let outside = Outside::bind(0, 1).unwrap().remove(0);
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
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"hi", ("127.0.0.1", local.port())).unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = soon(|| outside.socket.recv_from(&mut buf).map(Some));
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(unmapped(from), peer.local_addr().unwrap());
        let back = outside.to_wire(peer.local_addr().unwrap());
        assert!(back.is_ipv6());
        outside.socket.send_to(b"yo", back).unwrap();
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"yo");
    }

    #[test]
    fn a_group_shares_its_port_and_no_one_else_can() {
        let group = Outside::bind(0, 3).unwrap();
        let port = group[0].socket.local_addr().unwrap().port();
        for outside in &group {
            assert_eq!(outside.socket.local_addr().unwrap().port(), port);
        }
        for count in [1, 2] {
            let err = Outside::bind(port, count).unwrap_err();
            assert_eq!(
                err.kind(),
                io::ErrorKind::AddrInUse,
                "{count} sockets: {err}"
            );
        }
        // Every sender reaches the group: each datagram arrives on exactly one socket.
        let senders: Vec<UdpSocket> = (0..16)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for s in &senders {
            s.send_to(b"x", ("127.0.0.1", port)).unwrap();
        }
        let mut rx = Received::default();
        let mut got = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got < senders.len() && std::time::Instant::now() < deadline {
            for outside in &group {
                if outside.recv(&mut rx).unwrap() {
                    got += rx.datagrams().count();
                }
            }
        }
        assert_eq!(got, senders.len());
    }

    #[test]
    fn segmented_sends_arrive_whole_and_in_order() {
        let outside = Outside::bind(0, 1).unwrap().remove(0);
        assert!(outside.max_gso_segments() > 1, "loopback segments");
        assert_eq!(outside.gro_segments(), 64, "the kernel has UDP GRO");
        // The path-MTU options are the kernel's, not quinn-udp's.
        let fd = outside.socket.as_fd();
        let dontfrag = sockopt::int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG);
        assert_eq!(dontfrag.unwrap(), 0);
        let pmtu = sockopt::int_option(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).unwrap();
        assert_ne!(pmtu, libc::IP_PMTUDISC_PROBE);
        // No ancillary data per datagram besides the GRO segment size.
        for (level, name) in &RESTORED_OPTIONS[3..] {
            let on = sockopt::int_option(fd, *level, *name).unwrap();
            assert_eq!(on, 0, "option {level}/{name}");
        }

        let to = SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            outside.socket.local_addr().unwrap().port(),
        ));
        let counters = NetworkCounters::default();
        // 10 datagrams of 100 bytes and a last one of 40, each starting with its number.
        let mut datagrams = Vec::new();
        for i in 0..11u8 {
            let len = if i == 10 { 40 } else { 100 };
            datagrams.extend((0..len).map(|j| if j == 0 { i } else { 0xa5 }));
        }
        outside.send_segments(&datagrams, 100, to, &counters);
        outside.send(b"one", to, &counters);
        assert_eq!(get(&counters.udp_send_error), 0);

        let mut rx = Received::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < 12 {
            soon(|| outside.recv(&mut rx).map(|got| got.then_some(())));
            got.extend(rx.datagrams().map(|(from, at)| {
                assert_eq!(from, to, "the sender, as plain IPv4");
                rx.bytes(at).to_vec()
            }));
        }
        assert_eq!(got.len(), 12);
        for (i, d) in got[..11].iter().enumerate() {
            assert_eq!(d.len(), if i == 10 { 40 } else { 100 });
            assert_eq!(d[0], i as u8);
        }
        assert_eq!(got[11], b"one");
    }

    #[test]
    fn gro_reads_split_at_their_stride() {
        let mut rx = Received::default();
        let from: SocketAddr = "[::ffff:10.0.0.1]:9".parse().unwrap();
        let meta = |len, stride| {
            let mut m = RecvMeta::default();
            (m.addr, m.len, m.stride) = (from, len, stride);
            m
        };
        rx.meta[0] = meta(250, 100);
        rx.meta[1] = meta(0, 0);
        rx.meta[2] = meta(30, 30);
        rx.reads = 3;
        let got: Vec<(SocketAddr, Range<usize>)> = rx.datagrams().collect();
        let v4 = unmapped(from);
        let at = |i: usize, r: Range<usize>| (v4, i * RECV_BUF + r.start..i * RECV_BUF + r.end);
        assert_eq!(
            got,
            [
                at(0, 0..100),
                at(0, 100..200),
                at(0, 200..250),
                at(1, 0..0),
                at(2, 0..30)
            ]
        );
    }

    #[test]
    fn ipv4_peers_are_mapped_both_ways() {
        let v4: SocketAddr = "10.99.1.2:9993".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.99.1.2]:9993".parse().unwrap();
        assert_eq!(unmapped(mapped), v4);
        assert_eq!(unmapped(v4), v4);
        let v6: SocketAddr = "[fd00::1]:9993".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
    }
}
