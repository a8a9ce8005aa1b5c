//! A LAN behind two gateway members, h2 (preferred) and h3: the route fails over to h3
//! within 5 s of h2's daemon being killed, and comes back to h2 once it is up again. Both
//! gateways masquerade into the LAN (as routing peers do), so the LAN host's view of a
//! connection's source says which gateway carried it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::ok_stdout;
use crate::mesh::{Mesh, network, ping_all, transfer};
use meshd_proto::NetworkId;

/// How fast traffic must move to the backup gateway once the preferred one dies.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(5);
/// How long the way back may take: the gateway's restart, its sessions, the 5 s hold.
const RETURN_DEADLINE: Duration = Duration::from_secs(30);
const PORT: u16 = 5003;

/// The LAN as the containers test made it: its namespace (`lan`, host `host` on it), the
/// link from the first gateway, and the gateways' addresses on it.
pub struct Lan<'a> {
    pub role: &'a str,
    pub prefix: &'a str,
    pub host: Ipv4Addr,
    /// The LAN side of the link to the first gateway.
    pub far: String,
    /// (node index, LAN address, interface on the gateway) of each gateway.
    pub gateways: [(usize, Ipv4Addr, String); 2],
}

/// The route's entry in node `i`'s status: (gateway in use, all gateways).
fn route_in_use(m: &Mesh, i: usize, nwid: NetworkId, prefix: &str) -> Option<(String, Value)> {
    let status = m.status(i);
    let routes = network(&status, nwid)?["routes"].as_array()?.clone();
    let r = routes.into_iter().find(|r| r["target"] == prefix)?;
    Some((r["node_id"].as_str()?.to_owned(), r["gateways"].clone()))
}

/// Which gateway's LAN address a TCP connection from h1 to the LAN host arrives from.
fn carried_by(m: &Mesh, lan: &Lan, seed: u64) -> IpAddr {
    transfer(
        &m.lab,
        (m.nodes[0].role, lan.role),
        IpAddr::V4(lan.host),
        PORT,
        16 * 1024,
        seed,
    )
    .peer
}

pub fn route_fails_over(
    m: &mut Mesh,
    nwid: NetworkId,
    lan: &Lan,
    report: &dyn Fn(&Mesh) -> String,
) {
    let lab = &m.lab;
    // The LAN becomes a bridge with the host on it, and the second gateway joins it.
    let bridge = lab.link_name("lb");
    lab.run_ip(lan.role, &["link", "add", &bridge, "type", "bridge"])
        .expect("lab");
    lab.run_ip(lan.role, &["link", "set", &bridge, "up"])
        .expect("lab");
    let host = format!("{}/24", lan.host);
    lab.run_ip(lan.role, &["addr", "del", &host, "dev", &lan.far])
        .expect("lab");
    lab.run_ip(lan.role, &["link", "set", &lan.far, "master", &bridge])
        .expect("lab");
    lab.run_ip(lan.role, &["addr", "add", &host, "dev", &bridge])
        .expect("lab");
    let (g2, g2_addr, g2_if) = &lan.gateways[1];
    let g2_role = m.nodes[*g2].role;
    let far2 = lab.link_name("l3");
    lab.add_veth(g2_role, g2_if, lan.role, &far2).expect("lab");
    lab.run_ip(lan.role, &["link", "set", &far2, "master", &bridge])
        .expect("lab");
    lab.run_ip(lan.role, &["link", "set", &far2, "up"])
        .expect("lab");
    lab.run_ip(
        g2_role,
        &["addr", "add", &format!("{g2_addr}/24"), "dev", g2_if],
    )
    .expect("lab");
    lab.run_ip(g2_role, &["link", "set", g2_if, "up"])
        .expect("lab");
    for (i, _, iface) in &lan.gateways {
        let script = format!(
            "add table ip lanmasq; add chain ip lanmasq post {{ type nat hook postrouting \
             priority srcnat; }}; add rule ip lanmasq post oifname \"{iface}\" masquerade"
        );
        let out = lab.exec(m.nodes[*i].role, &["nft", &script]).expect("lab");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ids: Vec<String> = lan
        .gateways
        .iter()
        .map(|(i, ..)| m.nodes[*i].id().to_string())
        .collect();
    let (preferred, backup) = (&lan.gateways[0], &lan.gateways[1]);
    m.phase(&format!(
        "LAN {} behind {} and {}, both masquerading into it",
        lan.prefix, m.nodes[preferred.0].role, m.nodes[backup.0].role
    ));

    // Through the preferred gateway while both live.
    let nw = nwid.to_string();
    ok_stdout(&m.ctl(&[
        "route", "add", &nw, lan.prefix, "--via", &ids[0], "--via", &ids[1],
    ]));
    let lan_ping = [(m.nodes[0].role, IpAddr::V4(lan.host))];
    let reached = meshd_lab::interrupt::wait_until(Duration::from_secs(10), || {
        ping_all(&m.lab, &lan_ping, 1, 1)[0].is_ok()
    });
    assert!(
        reached,
        "h1 does not reach the LAN through the failover route\n{}",
        report(m)
    );
    let (in_use, all) = route_in_use(m, 0, nwid, lan.prefix).expect("h1 lists the route");
    assert_eq!(in_use, ids[0], "h1 should use the preferred gateway");
    assert_eq!(
        all,
        serde_json::json!(ids),
        "h1's status lists both gateways"
    );
    assert_eq!(carried_by(m, lan, 1), IpAddr::V4(preferred.1));
    m.phase(&format!(
        "route via {} then {}: h1 goes through {}",
        ids[0], ids[1], ids[0]
    ));

    // The preferred gateway's daemon dies: pings resume through the backup within 5 s.
    let proc = m.nodes[preferred.0].proc.take().expect("the daemon runs");
    m.lab.kill(proc);
    let killed = Instant::now();
    let mut resumed = None;
    meshd_lab::interrupt::wait_until(FAILOVER_DEADLINE * 3, || {
        if ping_all(&m.lab, &lan_ping, 1, 1)[0].is_ok() {
            resumed = Some(killed.elapsed());
        }
        resumed.is_some()
    });
    let resumed =
        resumed.unwrap_or_else(|| panic!("h1 never reached the LAN again\n{}", report(m)));
    assert!(
        resumed <= FAILOVER_DEADLINE,
        "pings resumed {resumed:?} after the kill, over {FAILOVER_DEADLINE:?}\n{}",
        report(m)
    );
    let (in_use, _) = route_in_use(m, 0, nwid, lan.prefix).expect("h1 lists the route");
    assert_eq!(
        in_use, ids[1],
        "h1's status should show the backup gateway in use"
    );
    assert_eq!(carried_by(m, lan, 2), IpAddr::V4(backup.1));
    m.phase(&format!(
        "{}'s daemon killed: pings to the LAN resume through {} after {:.2} s",
        m.nodes[preferred.0].role,
        m.nodes[backup.0].role,
        resumed.as_secs_f64()
    ));

    // Back: the preferred gateway restarts, and traffic returns to it after the hold.
    m.start_daemon(preferred.0);
    let restarted = Instant::now();
    let back = meshd_lab::interrupt::wait_until(RETURN_DEADLINE, || {
        route_in_use(m, 0, nwid, lan.prefix).is_some_and(|(g, _)| g == ids[0])
    });
    assert!(
        back,
        "h1 did not go back to {} within {RETURN_DEADLINE:?}\n{}",
        ids[0],
        report(m)
    );
    let returned = restarted.elapsed();
    // The hysteresis: a gateway that just came back is trusted only after its hold.
    assert!(
        returned >= Duration::from_secs(3),
        "traffic went back to {} {returned:?} after its restart: no hold",
        ids[0]
    );
    let carried = meshd_lab::interrupt::wait_until(Duration::from_secs(5), || {
        ping_all(&m.lab, &lan_ping, 1, 1)[0].is_ok()
    });
    assert!(
        carried,
        "h1 does not reach the LAN after the return\n{}",
        report(m)
    );
    assert_eq!(carried_by(m, lan, 3), IpAddr::V4(preferred.1));
    m.phase(&format!(
        "{} back: traffic returns to it {:.1} s after its restart",
        m.nodes[preferred.0].role,
        returned.as_secs_f64()
    ));
    ok_stdout(&m.ctl(&["route", "remove", &nw, lan.prefix]));
}
