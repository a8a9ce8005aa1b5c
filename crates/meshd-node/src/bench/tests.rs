use std::io::Write;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::measure::*;
use super::report::*;
use super::target::*;
use crate::daemon::api::{
    ContainerSubnets, NetworkStatus, NetworkView, PeerPath, PeerView, StatusView,
};
use crate::daemon::bench::{Ack, MAX_REPLY_BYTES, MAX_SESSIONS, Mode, Server, read_line};

const NWID: &str = "8056c2e21c000001";

fn peer(node: &str, name: &str, path: PeerPath, addresses: &[&str]) -> PeerView {
    PeerView {
        node_id: node.parse().unwrap(),
        network: NWID.parse().unwrap(),
        name: name.into(),
        path,
        relay: None,
        relay_member: None,
        direct: None,
        path_age_s: None,
        endpoint: None,
        candidates: vec![],
        path_changes: 0,
        path_scan: None,
        rtt_ms: None,
        last_handshake_s: None,
        rx_bytes: 0,
        tx_bytes: 0,
        rx_packets: 0,
        tx_packets: 0,
        handshakes: 0,
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
    }
}

fn status() -> StatusView {
    let mut s: StatusView = serde_json::from_value(serde_json::json!({
        "node_id": "89e92ceee5",
        "version": "0.1.0",
        "online": true,
        "dataplane_attached": true,
        "controllers": [],
        "networks": [],
        "peers": [],
    }))
    .unwrap();
    s.networks.push(NetworkView {
        id: NWID.parse().unwrap(),
        name: "prod".into(),
        member_name: String::new(),
        status: NetworkStatus::Ok,
        revision: Some(1),
        interface: Some("mesh-8056c2e21c".into()),
        mtu: Some(1420),
        addresses: vec!["10.147.17.23/16".parse().unwrap()],
        container_subnets: ContainerSubnets::default(),
        ipv6_egress: None,
        routes: vec![],
        kernel_routes: vec![],
        drops: Default::default(),
        relaying: None,
        controllers: vec![],
        joined_at: 1,
        error: None,
    });
    s.peers = vec![
        peer(
            "1a2b3c4d5e",
            "host-b",
            PeerPath::Direct,
            &["10.147.17.2", "fd80:56c2:e21c:0:199:931a:2b3c:4d5e"],
        ),
        peer(
            "2b3c4d5e6f",
            "",
            PeerPath::Relay,
            &["fc9c:56c2:e32b:3c4d:5e6f::1"],
        ),
    ];
    s
}

#[test]
fn peers_resolve_by_node_id_or_mesh_address() {
    let s = status();
    let t = resolve(&s, "1a2b3c4d5e").unwrap();
    assert_eq!(t.address, "10.147.17.2".parse::<IpAddr>().unwrap());
    assert_eq!((t.name.as_str(), t.path), ("host-b", PeerPath::Direct));
    // Without IPv4, the first address.
    let t = resolve(&s, "2b3c4d5e6f").unwrap();
    assert_eq!(t.address.to_string(), "fc9c:56c2:e32b:3c4d:5e6f::1");
    assert_eq!(t.path, PeerPath::Relay);
    let t = resolve(&s, " fd80:56c2:e21c:0:199:931a:2b3c:4d5e ").unwrap();
    assert_eq!(t.node.to_string(), "1a2b3c4d5e");
    let t = resolve(&s, "::ffff:10.147.17.2").unwrap();
    assert_eq!(t.address, IpAddr::V4(Ipv4Addr::new(10, 147, 17, 2)));
}

#[test]
fn unknown_peers_and_other_addresses_are_refused_with_the_peer_list() {
    let s = status();
    let e = resolve(&s, "3c4d5e6f70").unwrap_err().to_string();
    assert!(e.starts_with("unknown peer 3c4d5e6f70. Peers:"), "{e}");
    assert!(
        e.contains("1a2b3c4d5e (host-b) 10.147.17.2, 2b3c4d5e6f fc9c:"),
        "{e}"
    );
    let e = resolve(&s, "192.0.2.11").unwrap_err().to_string();
    assert!(e.contains("not a mesh address of any peer"), "{e}");
    let e = resolve(&s, "10.147.17.23").unwrap_err().to_string();
    assert!(e.contains("this node's own mesh address"), "{e}");
    let e = resolve(&s, "89e92ceee5").unwrap_err().to_string();
    assert!(e.contains("is this node"), "{e}");
    let e = resolve(&s, "host-b").unwrap_err().to_string();
    assert!(e.contains("neither a node id"), "{e}");
    let mut lonely = status();
    lonely.peers.clear();
    let e = resolve(&lonely, "1a2b3c4d5e").unwrap_err().to_string();
    assert!(e.contains("no peers"), "{e}");
}

#[test]
fn retransmits_from_snmp() {
    let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens \
                AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs\n\
                Tcp: 1 200 120000 -1 10 5 0 0 2 1000 900 42 0\n\
                Udp: InDatagrams\nUdp: 3\n";
    assert_eq!(parse_retransmits(snmp), Some(42));
    assert_eq!(parse_retransmits("Tcp: RetransSegs\n"), None);
    assert_eq!(parse_retransmits(""), None);
}

#[test]
fn progress_and_numbers() {
    assert_eq!(
        progress_line(3.0, 812.4, 10.0),
        "  3.0 s  812 Mbit/s  [######..............]"
    );
    assert_eq!(
        progress_line(12.0, 0.0, 10.0),
        "  12.0 s  0 Mbit/s  [####################]"
    );
    assert_eq!(thousands(1_234_567.8), "1 234 568");
    assert_eq!(thousands(999.0), "999");
    assert_eq!(thousands(0.0), "0");
}

/// A server on loopback that accepts everything, or nothing.
fn server(accept: bool) -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = Server::bind_on(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], 0, move |_| accept).unwrap();
    let addr = server.local_addr().unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    runtime.spawn(async move {
        server.run(stop).await;
        drop(stop_tx);
    });
    (runtime, addr)
}

fn plan(address: SocketAddr, mode: Mode, streams: u16) -> Plan {
    Plan {
        address,
        mode,
        seconds: 1,
        streams,
        size: 1200,
        rate_bytes_per_s: Some(10e6 / 8.0),
    }
}

#[test]
fn tcp_and_udp_sessions_against_the_server_on_loopback() {
    let (_runtime, addr) = server(true);
    let mut calls = 0;
    let o = measure(&plan(addr, Mode::Tcp, 2), &mut |_, _| calls += 1).unwrap();
    assert!(calls >= 3, "progress is reported");
    assert_eq!(o.streams.len(), 2);
    for s in &o.streams {
        assert_eq!(s.report.bytes, s.sent_bytes, "every byte sent is counted");
        assert!(s.report.seconds > 0.9 && s.report.seconds < 5.0, "{s:?}");
    }
    assert!(o.seconds > 0.9 && o.seconds < 5.0, "{o:?}");

    // UDP on the same port number. 10 Mbit/s over loopback: nothing is lost.
    let udp_plan = plan(addr, Mode::Udp, 1);
    match measure(&udp_plan, &mut |_, _| {}) {
        Ok(o) => {
            let s = &o.streams[0];
            assert!(s.sent_packets > 500, "{s:?}");
            let target = Target {
                node: "1a2b3c4d5e".parse().unwrap(),
                name: String::new(),
                network: NWID.parse().unwrap(),
                address: addr.ip(),
                path: PeerPath::Direct,
            };
            let m = Measured {
                path: PeerPath::Direct,
                mtu: Some(1420),
                retransmits: None,
                cpu_local_percent: Some(1.0),
            };
            let r = summarize(&udp_plan, &target, &o, m);
            assert!(r.loss_percent.is_some(), "{r:?}");
            assert!(r.mbit_per_s > 5.0 && r.mbit_per_s < 15.0, "{r:?}");
            assert!(render(&r, &target, &o).contains("lost"));
        }
        // The UDP port matching the random TCP port was taken: refused, cleanly.
        Err(BenchError::Refused(why)) => assert!(why.contains("UDP"), "{why}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn refusals_are_clear() {
    let (_runtime, addr) = server(false);
    match open(&plan(addr, Mode::Tcp, 1), 0) {
        Err(BenchError::Unreachable(why)) => {
            assert!(why.contains("closed the connection"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (rt, addr) = server(true);
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.write_all(b"{\"v\":9,\"mode\":\"tcp\",\"seconds\":1}\n")
        .unwrap();
    let ack: Ack = serde_json::from_slice(&read_line(&mut conn, MAX_REPLY_BYTES).unwrap()).unwrap();
    assert!(ack.error.unwrap().contains("version 9"));
    // Garbage without a newline: refused once the line is too long.
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.write_all(&[b'x'; 1000]).unwrap();
    let ack: Ack = serde_json::from_slice(&read_line(&mut conn, MAX_REPLY_BYTES).unwrap()).unwrap();
    assert!(ack.error.unwrap().contains("longer than"));
    // Nothing listens: unreachable.
    drop(rt);
    std::thread::sleep(Duration::from_millis(100));
    assert!(matches!(
        open(&plan(addr, Mode::Tcp, 1), 0),
        Err(BenchError::Unreachable(_))
    ));
}

#[test]
fn busy_servers_say_so() {
    let (_runtime, addr) = server(true);
    let p = Plan {
        seconds: 2,
        ..plan(addr, Mode::Tcp, 1)
    };
    let held: Vec<_> = (0..MAX_SESSIONS as u32)
        .map(|k| open(&p, k).unwrap())
        .collect();
    match open(&p, 9) {
        Err(BenchError::Refused(why)) => assert!(why.contains("busy"), "{why}"),
        other => panic!("expected busy, got {other:?}"),
    }
    drop(held);
}
