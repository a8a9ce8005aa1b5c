//! Plain UDP between a lab's namespaces, for the tests that prove what a router lets through:
//! sockets made inside a namespace, datagrams that must arrive (from whom, with what) and
//! silence where nothing may.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use meshd_lab::Lab;

/// How long a datagram that should arrive may take.
pub const ARRIVAL: Duration = Duration::from_secs(3);
/// How long a datagram that should not arrive is waited for.
pub const SILENCE: Duration = Duration::from_millis(800);

/// A UDP socket on an ephemeral port in `role`'s namespace.
pub fn socket(lab: &Lab, role: &str) -> UdpSocket {
    lab.udp_socket(role, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .expect("a UDP socket")
}

pub fn port(sock: &UdpSocket) -> u16 {
    sock.local_addr().expect("bound").port()
}

pub fn send(sock: &UdpSocket, to: SocketAddrV4, text: &str) {
    sock.send_to(text.as_bytes(), to).expect("send");
}

/// The next datagram on `sock` within [`ARRIVAL`]: its source and text.
#[track_caller]
pub fn recv(sock: &UdpSocket, what: &str) -> (SocketAddrV4, String) {
    sock.set_read_timeout(Some(ARRIVAL)).expect("a timeout");
    let mut buf = [0u8; 1500];
    match sock.recv_from(&mut buf) {
        Ok((n, SocketAddr::V4(from))) => (from, String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok((_, from)) => panic!("{what}: a datagram from {from}"),
        Err(e) => panic!("{what}: nothing arrived within {ARRIVAL:?} ({e})"),
    }
}

/// `recv`, which must carry `text` from `from`.
#[track_caller]
pub fn expect(sock: &UdpSocket, from: SocketAddrV4, text: &str) {
    let got = recv(sock, text);
    assert_eq!(got, (from, text.to_owned()), "{text}: wrong source or text");
}

/// Every datagram that arrives on any of `socks` within [`SILENCE`].
pub fn arrivals(socks: &[&UdpSocket]) -> Vec<(SocketAddr, String)> {
    let deadline = Instant::now() + SILENCE;
    let mut got = Vec::new();
    for sock in socks {
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("a timeout");
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => got.push((from, String::from_utf8_lossy(&buf[..n]).into())),
                Err(_) => break,
            }
        }
    }
    got
}

/// Nothing arrives on any of `socks` within [`SILENCE`].
#[track_caller]
pub fn silence(socks: &[&UdpSocket], what: &str) {
    let got = arrivals(socks);
    assert!(got.is_empty(), "{what}, yet these arrived: {got:?}");
}
