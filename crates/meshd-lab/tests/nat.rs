//! The lab's NAT routers ([`Lab::add_router`]) behave as their [`NatKind`] says, proven with
//! real UDP between namespaces: one lab with three public hosts and a port-restricted
//! cone, a symmetric and a full-cone router, each with two hosts behind it on the same
//! `192.168.1.0/24`.
//!
//! The sockets are made by threads inside the hosts' namespaces and then used from the
//! test's thread (a socket stays in the namespace it was made in), so every exchange is a
//! plain sequence of sends and receives. What must not arrive is waited for `udp::SILENCE`.
//!
//! Needs root, iproute2, nftables (`nft`), `conntrack` and `sysctl`.

mod udp;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use ipnet::Ipv4Net;
use meshd_lab::{Lab, Naming, NatKind};
use udp::{expect, port, recv, send, silence, socket};

/// Where a public host's socket is reached: its host's underlay address and its port.
fn public(lab: &Lab, role: &str, sock: &UdpSocket) -> SocketAddrV4 {
    SocketAddrV4::new(lab.ip(role), port(sock))
}

fn sysctl(lab: &Lab, role: &str, key: &str) -> String {
    let out = lab.exec(role, &["sysctl", "-n", key]).expect("lab");
    assert!(out.status.success(), "sysctl {key}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn nat_routers_map_filter_and_forget_as_their_kind_says() {
    let lan: Ipv4Net = "192.168.1.0/24".parse().expect("a prefix");
    let mut lab = Lab::new(Naming::test(), &["p1", "p2", "p3"]).expect("lab");
    let tag = lab.tag().to_owned();
    let routers = [
        ("rc", NatKind::PortRestrictedCone, ["c1", "c2"]),
        ("rs", NatKind::Symmetric, ["s1", "s2"]),
        ("rf", NatKind::FullCone, ["f1", "f2"]),
    ];
    for (router, kind, behind) in routers {
        let r = lab.add_router(router, kind, lan).expect("lab");
        assert_eq!(r.gateway, Ipv4Addr::new(192, 168, 1, 1));
        for host in behind {
            lab.add_host_behind(router, host).expect("lab");
        }
    }
    // Every LAN is the same 192.168.1.0/24; every router has its own public address.
    for (router, _, [h1, h2]) in routers {
        assert_eq!(lab.ip(h1), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(lab.ip(h2), Ipv4Addr::new(192, 168, 1, 11));
        assert_eq!(lab.router(router).public_ip, lab.ip(router));
        assert_eq!(lab.router(router).behind, [h1, h2]);
    }
    let rc_ip = lab.router("rc").public_ip;
    let rs_ip = lab.router("rs").public_ip;
    let rf_ip = lab.router("rf").public_ip;
    eprintln!("lab {tag}: routers rc={rc_ip} rs={rs_ip} rf={rf_ip}, LANs {lan}");

    // Hosts on one LAN reach each other directly, untranslated.
    let (c1, c2) = (socket(&lab, "c1"), socket(&lab, "c2"));
    let c1_lan = SocketAddrV4::new(lab.ip("c1"), port(&c1));
    send(&c2, c1_lan, "lan");
    let (from, _) = recv(&c1, "c2 -> c1 on the LAN");
    assert_eq!(*from.ip(), lab.ip("c2"), "LAN traffic is not translated");

    // Unsolicited traffic stays out, whatever the kind: straight to a LAN address (from
    // an outsider that routes the LAN via the router) and to a socket of the router's own;
    // the LAN does reach the router.
    let mut quiet = Vec::new();
    for ((router, _, [h1, h2]), outsider) in routers.iter().zip(["p3", "p1", "p2"]) {
        let r = lab.router(router).clone();
        let via = r.public_ip.to_string();
        lab.run_ip(outsider, &["route", "add", &lan.to_string(), "via", &via])
            .expect("lab");
        let (inside, own) = (socket(&lab, h1), socket(&lab, router));
        let (outside, neighbour) = (socket(&lab, outsider), socket(&lab, h2));
        let text = format!("{h2} to its gateway {router}");
        send(&neighbour, SocketAddrV4::new(r.gateway, port(&own)), &text);
        expect(&own, SocketAddrV4::new(lab.ip(h2), port(&neighbour)), &text);
        let to_inside = SocketAddrV4::new(lab.ip(h1), port(&inside));
        send(&outside, to_inside, &format!("{outsider} straight to {h1}"));
        let to_router = SocketAddrV4::new(r.public_ip, port(&own));
        let text = format!("{outsider} to {router} itself");
        send(&outside, to_router, &text);
        quiet.extend([inside, own]);
    }
    silence(
        &quiet.iter().collect::<Vec<_>>(),
        "routers drop unsolicited traffic from outside",
    );
    drop(quiet);

    let (p1, p1b, p2, p3) = (
        socket(&lab, "p1"),
        socket(&lab, "p1"),
        socket(&lab, "p2"),
        socket(&lab, "p3"),
    );
    let p1_at = public(&lab, "p1", &p1);
    let (p2_at, p3_at) = (public(&lab, "p2", &p2), public(&lab, "p3", &p3));

    // 1. Port-restricted cone: one internal socket, one external port for every
    // destination; only what it sent to (address and port) may answer.
    send(&c1, p1_at, "c1 to p1");
    let (c1_via_p1, _) = recv(&p1, "c1 -> p1");
    send(&c1, p2_at, "c1 to p2");
    let (c1_via_p2, _) = recv(&p2, "c1 -> p2");
    assert_eq!(*c1_via_p1.ip(), rc_ip, "translated to the router's address");
    assert_eq!(
        c1_via_p1, c1_via_p2,
        "the cone maps one socket to one external endpoint"
    );
    let c1_out = c1_via_p1;
    send(&p3, c1_out, "p3 unsolicited to c1");
    send(&p1b, c1_out, "p1 from another port to c1");
    silence(
        &[&c1, &c2],
        "the cone lets in only the address and port c1 sent to",
    );
    send(&p1, c1_out, "p1 replies to c1");
    expect(&c1, p1_at, "p1 replies to c1");
    send(&p2, c1_out, "p2 replies to c1");
    expect(&c1, p2_at, "p2 replies to c1");
    eprintln!("cone: c1 is {c1_out} to p1 and p2; p3 and p1's other port are kept out");

    // 2. Symmetric: a new external port for each destination. (The ports are random: two
    // are the same by chance about once in 64,000 runs.)
    let (s1, s2) = (socket(&lab, "s1"), socket(&lab, "s2"));
    send(&s1, p1_at, "s1 to p1");
    let (s1_via_p1, _) = recv(&p1, "s1 -> p1");
    send(&s1, p2_at, "s1 to p2");
    let (s1_via_p2, _) = recv(&p2, "s1 -> p2");
    assert_eq!((*s1_via_p1.ip(), *s1_via_p2.ip()), (rs_ip, rs_ip));
    assert_ne!(
        s1_via_p1.port(),
        s1_via_p2.port(),
        "a symmetric NAT gives each destination its own external port"
    );
    send(&p3, s1_via_p1, "p3 unsolicited to s1");
    send(&p3, s1_via_p2, "p3 unsolicited to s1");
    silence(&[&s1, &s2], "the symmetric NAT lets in no stranger");
    send(&p1, s1_via_p1, "p1 replies to s1");
    expect(&s1, p1_at, "p1 replies to s1");
    send(&p2, s1_via_p2, "p2 replies to s1");
    expect(&s1, p2_at, "p2 replies to s1");
    eprintln!("symmetric: s1 is {s1_via_p1} to p1 and {s1_via_p2} to p2");

    // 3. Full cone: after one datagram out, anyone may send to the mapped port.
    let (f1, f2) = (socket(&lab, "f1"), socket(&lab, "f2"));
    send(&f1, p1_at, "f1 to p1");
    let (f1_out, _) = recv(&p1, "f1 -> p1");
    assert_eq!(*f1_out.ip(), rf_ip, "translated to the router's address");
    send(&p3, f1_out, "p3, never contacted, to f1");
    expect(&f1, p3_at, "p3, never contacted, to f1");
    send(&f1, p3_at, "f1 answers p3");
    expect(&p3, f1_out, "f1 answers p3");
    send(&f1, p2_at, "f1 to p2");
    expect(&p2, f1_out, "f1 to p2");
    // A port nothing inside sent from stays shut.
    send(
        &p3,
        SocketAddrV4::new(rf_ip, port(&f2)),
        "p3 to an unmapped port",
    );
    silence(&[&f1, &f2], "the full cone opens only mapped ports");
    eprintln!("full cone: f1 is {f1_out} to everyone, and p3 got in");

    // 4. No hairpin: a LAN host sending to its router's public address and the port
    // mapped for its neighbour reaches neither of them.
    send(&c2, c1_out, "c2 hairpin to c1");
    send(&s2, s1_via_p1, "s2 hairpin to s1");
    send(&f2, f1_out, "f2 hairpin to f1");
    silence(&[&c1, &c2, &s1, &s2, &f1, &f2], "routers do not hairpin");
    // The full cone's mapping was there all along: p3 still gets in.
    send(&p3, f1_out, "p3 to f1 after the hairpin");
    expect(&f1, p3_at, "p3 to f1 after the hairpin");
    eprintln!("no hairpin on any router");

    // 5. Flushing conntrack forgets the mappings: answers that got in before do not now.
    send(&p1, c1_out, "p1 to c1 before the flush");
    expect(&c1, p1_at, "p1 to c1 before the flush");
    lab.flush_conntrack("rc").expect("lab");
    lab.flush_conntrack("rf").expect("lab");
    send(&p1, c1_out, "p1 to c1 after the flush");
    send(&p3, f1_out, "p3 to f1 after the flush");
    send(&p1, f1_out, "p1 to f1 after the flush");
    silence(&[&c1, &f1], "flushed routers let nothing back in");
    eprintln!("flush_conntrack: the cone's and the full cone's mappings are gone");

    // 6. UDP timeouts are per router: a 1 s timeout forgets an idle mapping.
    let default_timeout = sysctl(&lab, "rs", "net.netfilter.nf_conntrack_udp_timeout_stream");
    lab.set_udp_timeout("rc", Duration::from_secs(1))
        .expect("lab");
    lab.set_udp_timeout("rf", Duration::from_millis(300))
        .expect("lab");
    for router in ["rc", "rf"] {
        for key in ["udp_timeout", "udp_timeout_stream"] {
            let key = format!("net.netfilter.nf_conntrack_{key}");
            assert_eq!(sysctl(&lab, router, &key), "1", "{key} on {router}");
        }
    }
    assert_eq!(
        sysctl(&lab, "rs", "net.netfilter.nf_conntrack_udp_timeout_stream"),
        default_timeout,
        "the timeouts are per namespace"
    );
    // Fresh sockets: fresh mappings, made under the new timeouts.
    let (c1, f1) = (socket(&lab, "c1"), socket(&lab, "f1"));
    send(&c1, p1_at, "new c1 to p1");
    let (c1_out, _) = recv(&p1, "new c1 -> p1");
    send(&p1, c1_out, "p1 replies to the new c1");
    expect(&c1, p1_at, "p1 replies to the new c1");
    send(&f1, p1_at, "new f1 to p1");
    let (f1_out, _) = recv(&p1, "new f1 -> p1");
    send(&p3, f1_out, "p3 to the new f1");
    expect(&f1, p3_at, "p3 to the new f1");
    std::thread::sleep(Duration::from_millis(2500));
    send(&p1, c1_out, "p1 to c1 after the timeout");
    send(&p3, f1_out, "p3 to f1 after the timeout");
    silence(&[&c1, &f1], "idle mappings time out");
    eprintln!(
        "set_udp_timeout: 1 s on rc and rf (rs keeps {default_timeout} s); idle mappings went"
    );

    // The lab's drop removes the routers and the hosts behind them.
    let namespaces = lab.namespaces().len();
    assert_eq!(
        namespaces,
        1 + 3 + 3 + 6,
        "switch, public hosts, routers, LAN hosts"
    );
    drop(lab);
    let left = meshd_lab::leftovers(&tag);
    assert!(left.is_empty(), "the lab {tag} left {left:#?}");
}
