//! Two nodes in two network namespaces joined by a veth pair, each running a real
//! `Dataplane`: ping every kind of mesh address, move 5 MB over TCP byte-exact, run a second
//! network over the same sockets, leave.
//! Needs root, iproute2 and iputils-ping.

mod common;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{Netns, Node, WORKERS, config, member, veth};
use meshd_engine::{DEFAULT_BUSY_POLL, Dataplane, interface_name};
use meshd_proto::addr::{rfc4193_addr, sixplane_addr};
use meshd_proto::{Identity, NetworkKey};

const TRANSFER: usize = 5 * 1024 * 1024;
const TCP_PORT: u16 = 5201;

/// Pings `to` three times from inside `ns`; returns the average RTT in ms.
fn ping(ns: &Netns, to: IpAddr) -> f64 {
    let to = to.to_string();
    let out = ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "3", &to]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" 3 received"),
        "ping {to} from {}: {text}{}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
    // rtt min/avg/max/mdev = 0.101/0.154/0.230/0.055 ms
    let stats = text
        .lines()
        .find(|l| l.starts_with("rtt"))
        .and_then(|l| l.split(" = ").nth(1))
        .unwrap_or_else(|| panic!("no rtt line in {text}"));
    stats
        .split('/')
        .nth(1)
        .and_then(|avg| avg.parse().ok())
        .unwrap_or_else(|| panic!("no average in {stats}"))
}

/// Deterministic bytes that no layer can compress or align by accident (xorshift64).
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

/// Sends `data` from a thread in `from` to a server thread in `to` listening on `server`;
/// returns what the server received and the time from connect to the server's
/// acknowledgement of the last byte.
fn transfer(from: &Netns, to: &Netns, server: SocketAddr, data: Vec<u8>) -> (Vec<u8>, Duration) {
    let timeout = Some(Duration::from_secs(60));
    let listener = to
        .thread(move || TcpListener::bind(server))
        .join()
        .expect("bind thread")
        .expect("bind the TCP server on the mesh address");
    let receiver = std::thread::spawn(move || -> io::Result<Vec<u8>> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(timeout)?;
        let mut received = Vec::with_capacity(TRANSFER);
        stream.read_to_end(&mut received)?;
        stream.write_all(&(received.len() as u64).to_le_bytes())?;
        Ok(received)
    });
    let sender = from.thread(move || -> io::Result<Duration> {
        let started = Instant::now();
        let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(10))?;
        stream.set_write_timeout(timeout)?;
        stream.set_read_timeout(timeout)?;
        stream.write_all(&data)?;
        stream.shutdown(Shutdown::Write)?;
        let mut ack = [0u8; 8];
        stream.read_exact(&mut ack)?;
        assert_eq!(u64::from_le_bytes(ack), data.len() as u64);
        Ok(started.elapsed())
    });
    let elapsed = sender
        .join()
        .expect("TCP client thread")
        .expect("TCP client");
    let received = receiver
        .join()
        .expect("TCP server thread")
        .expect("TCP server");
    (received, elapsed)
}

/// Each node handshakes with the other as soon as it joins, so the first to join may reach
/// the other before it has joined: that initiation is an `unknown_network` drop (and it is
/// retried). Nothing else may be dropped at the socket.
fn only_unknown_network_drops(node: &Node) {
    let drops = node.socket_drops();
    assert!(
        drops
            .iter()
            .all(|(name, n)| *n == 0 || *name == "unknown_network"),
        "{drops:?}"
    );
}

#[test]
fn two_namespaces_ping_and_transfer_through_the_mesh() {
    let a = Netns::new();
    let b = Netns::new();
    let (underlay_a, underlay_b) = veth(&a, &b);

    let key = NetworkKey::generate();
    let nwid = key.network_id();
    let (id_a, id_b) = (Identity::generate_unproven(), Identity::generate_unproven());
    let (public_a, public_b) = (*id_a.public(), *id_b.public());
    let (node_a, node_b) = (id_a.node_id(), id_b.node_id());
    let dp_a = Node::start(&a, id_a);
    let dp_b = Node::start(&b, id_b);

    // Each member's endpoint is its veth address with its data plane's port.
    let cfg = config(
        &key,
        1,
        vec![
            member(0, &public_a, SocketAddr::from((underlay_a, dp_a.port))),
            member(1, &public_b, SocketAddr::from((underlay_b, dp_b.port))),
        ],
    );
    dp_a.join(&cfg).unwrap();
    dp_b.join(&cfg).unwrap();
    assert_eq!(
        dp_a.join(&cfg).unwrap_err(),
        format!("network {nwid} is already joined")
    );
    let ifname = interface_name(nwid);
    assert!(a.link_exists(&ifname) && b.link_exists(&ifname));
    let status = dp_a.status(nwid).unwrap();
    assert_eq!(status.interface, ifname);
    assert_eq!(status.mtu, 1420);
    assert_eq!(status.addresses.len(), 3);
    assert_eq!(
        status.routes,
        vec!["172.28.1.0/24".parse().unwrap()],
        "B's container subnet"
    );
    assert_eq!(
        a.addresses(&ifname),
        status.addresses.iter().copied().collect()
    );

    // Every kind of mesh address of B, from A: IPv4, RFC4193, 6PLANE.
    let targets: [(&str, IpAddr); 3] = [
        ("ipv4", IpAddr::V4(Ipv4Addr::new(10, 147, 17, 11))),
        ("rfc4193", IpAddr::V6(rfc4193_addr(nwid, node_b))),
        ("6plane", IpAddr::V6(sixplane_addr(nwid, node_b))),
    ];
    for (i, (kind, to)) in targets.into_iter().enumerate() {
        let rtt = ping(&a, to);
        let note = if i == 0 {
            ", the first echo waited for the handshake"
        } else {
            ""
        };
        println!("ping {kind} {to}: 3 of 3, avg rtt {rtt:.3} ms{note}");
    }
    // And back, on the session A started.
    ping(&b, IpAddr::V4(Ipv4Addr::new(10, 147, 17, 10)));

    // 5 MB of TCP from A to B's mesh IPv4, compared byte for byte.
    let data = payload(TRANSFER);
    let server = SocketAddr::from((Ipv4Addr::new(10, 147, 17, 11), TCP_PORT));
    let (received, elapsed) = transfer(&a, &b, server, data.clone());
    assert_eq!(received.len(), data.len());
    if let Some(at) = received.iter().zip(&data).position(|(x, y)| x != y) {
        panic!("TCP stream differs at byte {at}");
    }
    let mbit = TRANSFER as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    println!(
        "TCP {} bytes A→B in {:.3} s: {mbit:.0} Mbit/s (debug-profile engine)",
        TRANSFER,
        elapsed.as_secs_f64()
    );
    // And over IPv6 (6PLANE), smaller, to prove that path too.
    let server6 = SocketAddr::from((sixplane_addr(nwid, node_b), TCP_PORT + 1));
    let small = payload(256 * 1024);
    let (received, _) = transfer(&a, &b, server6, small.clone());
    assert!(received == small, "6PLANE TCP stream differs");

    // Many flows spread over the packet workers: each flow goes to one TUN queue by its hash,
    // so with 32 flows every one of the two workers of A sends some (all on one: 2^-31).
    let before = dp_a.workers();
    assert_eq!(before.len(), WORKERS);
    let flows = a
        .thread(|| -> io::Result<()> {
            let to = SocketAddr::from((Ipv4Addr::new(10, 147, 17, 11), 9));
            for _ in 0..32 {
                let socket = UdpSocket::bind((Ipv4Addr::new(10, 147, 17, 10), 0))?;
                for _ in 0..20 {
                    socket.send_to(b"one flow of many", to)?;
                }
            }
            Ok(())
        })
        .join()
        .expect("UDP flows thread");
    flows.expect("send UDP flows");
    let deadline = Instant::now() + Duration::from_secs(5);
    let spread = loop {
        let after = dp_a.workers();
        let sent: Vec<u64> = after
            .iter()
            .zip(&before)
            .map(|(now, then)| now.to_peers - then.to_peers)
            .collect();
        if sent.iter().sum::<u64>() >= 32 * 20 || Instant::now() > deadline {
            break sent;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("32 UDP flows from A: packets sent per worker {spread:?}");
    assert!(spread.iter().sum::<u64>() >= 32 * 20, "{spread:?}");
    assert!(
        spread.iter().all(|&n| n > 0),
        "one worker sent all: {spread:?}"
    );
    assert!(
        dp_b.workers().iter().any(|w| w.from_peers >= 32 * 20),
        "B's worker for A's socket opened them: {:?}",
        dp_b.workers()
    );
    let flags = a.exec(&["cat", &format!("/sys/class/net/{ifname}/tun_flags")]);
    let flags = String::from_utf8_lossy(&flags.stdout);
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_ne!(flags & 0x100, 0, "IFF_MULTI_QUEUE: {flags:#x}");

    // The port is the node's: a second data plane cannot share it, even though the workers'
    // sockets share it among themselves.
    let port = dp_a.port;
    let second = a.block_on(move || async move {
        Dataplane::bind(port, WORKERS, DEFAULT_BUSY_POLL)
            .await
            .err()
    });
    let second = second.expect("a second data plane on the same port must fail");
    assert!(second.to_string().contains("in use"), "{second}");

    // Both sides see one established session, and nothing was forged, replayed or lost to
    // I/O errors.
    for (dp, peer) in [(&dp_a, node_b), (&dp_b, node_a)] {
        let status = dp.status(nwid).unwrap();
        assert_eq!(status.peers.len(), 1);
        let p = &status.peers[0];
        assert_eq!(p.node_id, peer);
        assert!(p.has_session && p.rx_bytes > 0 && p.tx_bytes > 0, "{p:?}");
        for (name, count) in &status.drops {
            // The kernel's IPv6 MLD/RS chatter on a new link.
            let benign = ["no_route", "not_ip", "multicast"];
            assert!(
                *count == 0 || benign.contains(name),
                "drop {name} = {count}: {:?}",
                status.drops
            );
        }
        only_unknown_network_drops(dp);
    }

    // An update that removes B from the config: A tears the peer down and drops B's route.
    let alone = config(
        &key,
        2,
        vec![member(
            0,
            &public_a,
            SocketAddr::from((underlay_a, dp_a.port)),
        )],
    );
    dp_a.update(&alone).unwrap();
    let status = dp_a.status(nwid).unwrap();
    assert!(status.peers.is_empty() && status.routes.is_empty());
    assert!(a.routes(&ifname, &["proto", "109"]).is_empty());
    dp_a.update(&cfg).unwrap();
    assert_eq!(a.routes(&ifname, &["proto", "109"]).len(), 1);

    // A second network over the same sockets: its tunnels issue receiver indices under
    // another prefix, and every handshake response and data message finds its network by
    // that index alone.
    let key2 = NetworkKey::generate();
    let nwid2 = key2.network_id();
    let mut cfg2 = config(
        &key2,
        1,
        vec![
            member(0, &public_a, SocketAddr::from((underlay_a, dp_a.port))),
            member(1, &public_b, SocketAddr::from((underlay_b, dp_b.port))),
        ],
    );
    cfg2.v4_pools = vec!["10.148.17.0/24".parse().unwrap()];
    cfg2.container_pool = None;
    for (i, m) in cfg2.members.iter_mut().enumerate() {
        let i = u8::try_from(i).unwrap();
        m.ipv4 = vec![Ipv4Addr::new(10, 148, 17, 10 + i)];
        m.container_subnet = None;
    }
    let b_in_2 = cfg2.member(node_b).unwrap().ipv4[0];
    let a_in_2 = cfg2.member(node_a).unwrap().ipv4[0];
    dp_a.join(&cfg2).unwrap();
    dp_b.join(&cfg2).unwrap();
    ping(&a, IpAddr::V4(b_in_2));
    ping(&b, IpAddr::V4(a_in_2));
    ping(&a, IpAddr::V6(sixplane_addr(nwid2, node_b)));
    // The first network still works beside it.
    ping(&a, IpAddr::V4(Ipv4Addr::new(10, 147, 17, 11)));
    for dp in [&dp_a, &dp_b] {
        only_unknown_network_drops(dp);
        assert!(dp.status(nwid2).unwrap().peers[0].has_session);
    }
    for dp in [&dp_a, &dp_b] {
        dp.leave(nwid2).unwrap();
    }

    // Leaving removes the interface, its addresses and routes; nothing is left behind.
    for (dp, ns) in [(&dp_a, &a), (&dp_b, &b)] {
        dp.leave(nwid).unwrap();
        assert!(!ns.link_exists(&ifname), "{ifname} still in {}", ns.name);
        assert!(ns.ip(&["route", "show", "proto", "109"]).trim().is_empty());
        assert!(
            ns.ip(&["-6", "route", "show", "proto", "109"])
                .trim()
                .is_empty()
        );
        assert!(dp.status(nwid).is_none());
        assert_eq!(
            dp.leave(nwid).unwrap_err(),
            format!("network {nwid} is not joined")
        );
    }
}
