//! Port mapping on a router ([`Lab::enable_port_mapping`]), proven with real clients and
//! real UDP: one lab with a symmetric NAT router running miniupnpd, one host behind it and
//! two public hosts. The LAN host asks for mappings with Debian's `natpmpc` (NAT-PMP) and
//! `upnpc` (UPnP-IGD); a public host that it never sent to then reaches it through them,
//! and through nothing else.
//!
//! The sockets are made by threads inside the hosts' namespaces and then used from the
//! test's thread (a socket stays in the namespace it was made in). What must not arrive is
//! waited for `udp::SILENCE`.
//!
//! Needs root, iproute2, nftables, conntrack, `miniupnpd` (`miniupnpd-nftables`),
//! `natpmpc` and `upnpc` (`miniupnpc`).

mod udp;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use ipnet::Ipv4Net;
use meshd_lab::port_mapping::NAT_PMP_PORT;
use meshd_lab::{Lab, Naming, NatKind};
use udp::{ARRIVAL, expect, port, send, silence, socket};

/// Runs a client in `role`'s namespace; its exit status and stdout (stderr after it).
fn client(lab: &Lab, role: &str, argv: &[&str]) -> (bool, String) {
    let out = lab
        .exec_timeout(role, argv, Duration::from_secs(20))
        .expect("lab");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The word after `prefix` on the first line that has it.
#[track_caller]
fn field<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"))
}

#[test]
fn a_port_mapping_lets_anyone_reach_the_lan_host_through_a_symmetric_nat() {
    let lan: Ipv4Net = "192.168.1.0/24".parse().expect("a prefix");
    let mut lab = Lab::new(Naming::test(), &["p1", "p2"]).expect("lab");
    let tag = lab.tag().to_owned();
    lab.add_router("rs", NatKind::Symmetric, lan).expect("lab");
    lab.add_host_behind("rs", "s1").expect("lab");
    lab.enable_port_mapping("rs").expect("lab");
    let r = lab.router("rs").clone();
    let pm = r.port_mapping.clone().expect("port mapping is on");
    let (public_ip, gateway) = (r.public_ip, r.gateway.to_string());
    assert_eq!(pm.pcp_server, SocketAddrV4::new(r.gateway, NAT_PMP_PORT));
    assert!(pm.config.exists() && pm.log.exists(), "{pm:?}");
    let dir = lab.dir().to_owned();
    eprintln!(
        "lab {tag}: router rs={public_ip}, s1={}, {pm:?}",
        lab.ip("s1")
    );

    // 1. NAT-PMP: s1 maps an external port to its socket's port X and learns the public
    // address.
    let (s1, s1_other) = (socket(&lab, "s1"), socket(&lab, "s1"));
    let x = port(&s1).to_string();
    let (ok, out) = client(
        &lab,
        "s1",
        &["natpmpc", "-g", &gateway, "-a", "0", &x, "udp", "3600"],
    );
    assert!(ok, "natpmpc maps a port:\n{out}");
    let reported: Ipv4Addr = field(&out, "Public IP address : ").parse().expect("an IP");
    assert_eq!(
        reported, public_ip,
        "NAT-PMP reports the router's public address"
    );
    let external: u16 = field(&out, "Mapped public port ").parse().expect("a port");
    assert_eq!(field(&out, "to local port "), x, "{out}");
    let mapped = SocketAddrV4::new(public_ip, external);
    eprintln!("NAT-PMP: s1's port {x} is mapped to {mapped}");

    // p1 never heard from s1, yet reaches it through the mapping, untranslated; s1's
    // answer comes back from the mapped endpoint.
    let p1 = socket(&lab, "p1");
    let p1_at = SocketAddrV4::new(lab.ip("p1"), port(&p1));
    send(&p1, mapped, "p1, never contacted, to the mapping");
    expect(&s1, p1_at, "p1, never contacted, to the mapping");
    send(&s1, p1_at, "s1 answers p1");
    expect(&p1, mapped, "s1 answers p1");

    // What s1 sends first, to someone new, does not leave from the mapping: miniupnpd's
    // nftables backend adds no source NAT, and the symmetric NAT picks a random port. (The
    // same port by chance about once in 64,000 runs.)
    let p2 = socket(&lab, "p2");
    let p2_at = SocketAddrV4::new(lab.ip("p2"), port(&p2));
    send(&s1, p2_at, "s1 to p2");
    p2.set_read_timeout(Some(ARRIVAL)).expect("a timeout");
    let mut buf = [0u8; 64];
    let (_, from) = p2.recv_from(&mut buf).expect("s1 -> p2");
    let SocketAddr::V4(s1_via_p2) = from else {
        panic!("{from}")
    };
    assert_eq!(*s1_via_p2.ip(), public_ip);
    assert_ne!(
        s1_via_p2.port(),
        external,
        "a new flow leaves from a new port"
    );
    eprintln!("s1 to p2 leaves from {s1_via_p2}, not from the mapping");

    // 2. Nothing else gets in: a port without a mapping, the LAN address itself (p2
    // routes the LAN via the router), the router's NAT-PMP service from outside.
    let unmapped = (1..)
        .map(|i| external.wrapping_add(i))
        .find(|&p| p > 1024 && p != port(&s1_other))
        .expect("a port");
    send(
        &p2,
        SocketAddrV4::new(public_ip, unmapped),
        "p2 to an unmapped port",
    );
    let via = public_ip.to_string();
    lab.run_ip("p2", &["route", "add", &lan.to_string(), "via", &via])
        .expect("lab");
    let s1_lan = SocketAddrV4::new(lab.ip("s1"), port(&s1));
    send(&p2, s1_lan, "p2 straight to s1's LAN address");
    silence(&[&s1, &s1_other], "only the mapped port lets strangers in");
    // NAT-PMP's public-address request, to the router's public address.
    send(&p2, SocketAddrV4::new(public_ip, NAT_PMP_PORT), "\0\0");
    silence(&[&p2], "the router serves NAT-PMP to its LAN only");

    // 3. No hairpin: s1 sending to its own mapping from another socket reaches the router
    // itself, not the mapped socket.
    send(&s1_other, mapped, "s1 hairpin to its own mapping");
    silence(
        &[&s1, &s1_other],
        "the mapping applies to what arrives from outside",
    );

    // 4. UPnP-IGD: the same through miniupnpd's SOAP interface (SSDP found it too, but
    // miniupnpc calls an IGD with a private external address "not connected"; the URL
    // skips that check).
    let url = pm.igd_url.as_str();
    let (ok, out) = client(&lab, "s1", &["upnpc", "-u", url, "-s"]);
    assert!(ok, "upnpc -s:\n{out}");
    assert_eq!(field(&out, "ExternalIPAddress = "), public_ip.to_string());
    let s1_upnp = socket(&lab, "s1");
    let y = port(&s1_upnp).to_string();
    let s1_ip = lab.ip("s1").to_string();
    let wanted = (1..)
        .map(|i| external.wrapping_add(1000 + i))
        .find(|&p| p > 1024 && p != unmapped)
        .expect("a port")
        .to_string();
    let add = [
        "upnpc", "-u", url, "-e", "lab", "-a", &s1_ip, &y, &wanted, "UDP", "3600",
    ];
    let (ok, out) = client(&lab, "s1", &add);
    assert!(
        ok && out.contains("is redirected to internal"),
        "upnpc -a:\n{out}"
    );
    let upnp_mapped = SocketAddrV4::new(public_ip, wanted.parse().expect("a port"));
    send(&p2, upnp_mapped, "p2 to the UPnP mapping");
    expect(&s1_upnp, p2_at, "p2 to the UPnP mapping");
    // secure_mode: another host's address may not be mapped (miniupnpd answers UPnP's
    // 718, ConflictInMappingEntry, and logs why).
    let other = [
        "upnpc",
        "-u",
        url,
        "-a",
        "192.168.1.99",
        "7000",
        "7000",
        "UDP",
        "60",
    ];
    let (_, out) = client(&lab, "s1", &other);
    assert!(out.contains("failed with code 718"), "{out}");
    let log = std::fs::read_to_string(&pm.log).expect("miniupnpd's log");
    let refused = format!("Client {s1_ip} tried to redirect port to 192.168.1.99");
    assert!(log.contains(&refused), "secure mode refused it:\n{log}");
    let (_, list) = client(&lab, "s1", &["upnpc", "-u", url, "-l"]);
    eprintln!("UPnP: s1's port {y} is mapped to {upnp_mapped}; the router's list:\n{list}");
    assert!(list.contains(&format!("{wanted}->{s1_ip}:{y}")), "{list}");
    assert!(list.contains(&format!("{external}->{s1_ip}:{x}")), "{list}");
    assert!(!list.contains("192.168.1.99"), "{list}");

    // 5. Deleted mappings let no new flow in (fresh sockets: new flows).
    let (ok, out) = client(
        &lab,
        "s1",
        &["natpmpc", "-g", &gateway, "-a", "0", &x, "udp", "0"],
    );
    assert!(ok, "natpmpc deletes the mapping:\n{out}");
    let (ok, out) = client(&lab, "s1", &["upnpc", "-u", url, "-d", &wanted, "UDP"]);
    assert!(ok, "upnpc -d:\n{out}");
    let (_, list) = client(&lab, "s1", &["upnpc", "-u", url, "-l"]);
    assert!(
        !list.contains(&format!("->{s1_ip}:")),
        "no mapping is left:\n{list}"
    );
    let (p1_new, p2_new) = (socket(&lab, "p1"), socket(&lab, "p2"));
    send(&p1_new, mapped, "p1 to the deleted NAT-PMP mapping");
    send(&p2_new, upnp_mapped, "p2 to the deleted UPnP mapping");
    silence(&[&s1, &s1_other, &s1_upnp], "deleted mappings are closed");
    // A flow that went through the mapping before lives on in conntrack, as on any
    // router with miniupnpd's nftables backend, until flushed.
    send(&p1, mapped, "p1 again, on its old flow");
    expect(&s1, p1_at, "p1 again, on its old flow");
    lab.flush_conntrack("rs").expect("lab");
    send(&p1, mapped, "p1 after the flush");
    silence(&[&s1], "a flushed router forgets the old flow");
    eprintln!("deleted: both mappings closed; the old flow went with the conntrack flush");

    // The lab's drop stops miniupnpd and removes everything, the directory it made too.
    drop(lab);
    let left = meshd_lab::leftovers(&tag);
    assert!(left.is_empty(), "the lab {tag} left {left:#?}");
    assert!(
        !dir.exists(),
        "the lab's directory {} is gone",
        dir.display()
    );
}
