//! `meshd status` for people: a compact summary in the spirit of ZeroTier's `info` +
//! `listnetworks` and Tailscale's `status`: one line for the node, one for the controller
//! replica in use and one for the others (while none answers: how long, then one line per
//! controller with why), a block per network.

use std::fmt::Write as _;

use meshd_proto::NodeId;

use crate::daemon::api::{ControllerView, NetworkStatus, NetworkView, PeerPath, StatusView};

/// Most routes listed per network; `--json` has them all.
const MAX_ROUTES_SHOWN: usize = 6;

/// The human form of a status.
pub fn render(s: &StatusView) -> String {
    let mut out = String::new();
    let online = if s.online { "ONLINE" } else { "OFFLINE" };
    let host = if s.hostname.is_empty() {
        String::new()
    } else {
        format!("  host {}", s.hostname)
    };
    let _ = writeln!(
        out,
        "node {}{host}  key {}  meshd {}  {online}",
        s.node_id, s.key_fingerprint, s.version
    );
    if !s.dataplane_attached {
        let _ = writeln!(
            out,
            "data plane not attached: no interface is created and no packets flow"
        );
    }
    if !s.forwarding.configured.is_empty() {
        let _ = writeln!(
            out,
            "forwarding: set by meshd ({})",
            s.forwarding.configured.join(", ")
        );
    }
    for problem in &s.forwarding.problems {
        let _ = writeln!(out, "warning: {problem}");
    }
    controller_lines(s, &mut out);
    reach_line(s, &mut out);
    if s.networks.is_empty() {
        let _ = writeln!(
            out,
            "\nno networks; join one with `meshd join <network-id>`"
        );
    }
    for n in &s.networks {
        out.push('\n');
        out.push_str(&network_block(s.node_id, n));
    }
    if !s.peers.is_empty() {
        let count = |p: PeerPath| s.peers.iter().filter(|x| x.path == p).count();
        let _ = writeln!(
            out,
            "\npeers: {} ({} direct, {} relay, {} without a session); `meshd peers` lists them",
            s.peers.len(),
            count(PeerPath::Direct),
            count(PeerPath::Relay),
            count(PeerPath::None),
        );
    }
    if !s.packet_workers.is_empty() {
        let moved: Vec<String> = s
            .packet_workers
            .iter()
            .map(|w| format!("{}/{}", w.to_peers, w.from_peers))
            .collect();
        let polled: Vec<String> = s
            .packet_workers
            .iter()
            .map(|w| format!("{} ms", w.busy_poll_ms))
            .collect();
        let _ = writeln!(
            out,
            "packet workers: {} (packets to/from peers: {}; busy polling: {})",
            s.packet_workers.len(),
            moved.join(", "),
            polled.join(", ")
        );
    }
    out
}

/// Most other controllers named on the line after the connected one.
const MAX_OTHER_CONTROLLERS_SHOWN: usize = 4;

/// The controllers: while connected, the replica in use and one line for the others; while
/// none answers, how long the node has been on its own, then each address and why it fails.
fn controller_lines(s: &StatusView, out: &mut String) {
    if s.controllers.is_empty() {
        let _ = writeln!(
            out,
            "no controller: join with `meshd join <network-id> --controller HOST:PORT`"
        );
        return;
    }
    let connected: Vec<&ControllerView> = s.controllers.iter().filter(|c| c.connected).collect();
    if !connected.is_empty() {
        let width = connected.iter().map(|c| c.address.len()).max().unwrap_or(0);
        for c in &connected {
            let since = c
                .connected_since_s
                .map(|s| format!("  connected for {}", duration(s)))
                .unwrap_or_default();
            let _ = writeln!(out, "controller {:width$}{since}", c.address);
        }
        let others: Vec<String> = s
            .controllers
            .iter()
            .filter(|c| !c.connected)
            .map(|c| {
                if c.unreachable_for_s.is_some() {
                    format!("{} (unreachable)", c.address)
                } else {
                    c.address.clone()
                }
            })
            .collect();
        if !others.is_empty() {
            let mut shown = others[..others.len().min(MAX_OTHER_CONTROLLERS_SHOWN)].join(", ");
            if others.len() > MAX_OTHER_CONTROLLERS_SHOWN {
                let _ = write!(
                    shown,
                    " and {} more",
                    others.len() - MAX_OTHER_CONTROLLERS_SHOWN
                );
            }
            let _ = writeln!(
                out,
                "controllers {} known, also {shown}",
                s.controllers.len()
            );
        }
        return;
    }
    // Said once an attempt failed, not in the moment before the first one ends.
    let tried = s.controllers.iter().any(|c| c.unreachable_for_s.is_some());
    if let (Some(for_s), true) = (s.controllers_unreachable_for_s, tried) {
        let cached = if s.networks.iter().any(|n| n.revision.is_some()) {
            "; running on cached configs"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "controllers unreachable for {}{cached}",
            duration(for_s)
        );
    }
    let width = s
        .controllers
        .iter()
        .map(|c| c.address.len())
        .max()
        .unwrap_or(0);
    for c in &s.controllers {
        let state = match c.unreachable_for_s {
            Some(s) => format!(
                "unreachable for {}{}",
                duration(s),
                c.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            None => "connecting".to_owned(),
        };
        let _ = writeln!(out, "controller {:width$}  {state}", c.address);
    }
}

/// One network: its status line, then addresses, container subnets and routes.
pub fn network_block(node: NodeId, n: &NetworkView) -> String {
    let mut out = String::new();
    let name = if n.name.is_empty() {
        ""
    } else {
        n.name.as_str()
    };
    let revision = n
        .revision
        .map(|r| format!("  revision {r}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "network {}  {name}{}{}{revision}",
        n.id,
        if name.is_empty() { "" } else { "  " },
        n.status
    );
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "  {key:<11} {value}");
    };
    match n.status {
        NetworkStatus::RequestingConfiguration => line(
            "waiting",
            format!("for a controller ({})", n.controllers.join(", ")),
        ),
        NetworkStatus::AccessDenied => line(
            "waiting",
            format!(
                "for an admin to run: meshd controller member authorize {} {node}",
                n.id
            ),
        ),
        NetworkStatus::NotFound => line(
            "not found",
            format!(
                "no such network on {}; check the id",
                n.controllers.join(", ")
            ),
        ),
        NetworkStatus::Ok => {}
    }
    if !n.member_name.is_empty() {
        line("member", n.member_name.clone());
    }
    if let Some(interface) = &n.interface {
        let mtu = n.mtu.map(|m| format!("  mtu {m}")).unwrap_or_default();
        line("interface", format!("{interface}{mtu}"));
    }
    if !n.addresses.is_empty() {
        line("addresses", join(&n.addresses));
    }
    let containers: Vec<String> = [
        n.container_subnets.ipv4.map(|s| s.to_string()),
        n.container_subnets.ipv6.map(|s| s.to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !containers.is_empty() {
        line("containers", containers.join("  "));
    }
    if let Some(egress) = &n.ipv6_egress {
        line("ipv6 egress", egress.summary.clone());
    }
    let others: Vec<_> = n.routes.iter().filter(|r| r.node_id != node).collect();
    for (i, r) in others.iter().take(MAX_ROUTES_SHOWN).enumerate() {
        let mut text = format!("{} via {}", r.target, r.node_id);
        if !r.gateways.is_empty() {
            let all: Vec<String> = r.gateways.iter().map(ToString::to_string).collect();
            text.push_str(&format!(" (in use; gateways {})", all.join(", ")));
        }
        line(if i == 0 { "routes" } else { "" }, text);
    }
    if others.len() > MAX_ROUTES_SHOWN {
        line(
            "",
            format!(
                "and {} more (`meshd status --json` lists them all)",
                others.len() - MAX_ROUTES_SHOWN
            ),
        );
    }
    if !n.drops.is_empty() {
        let drops: Vec<String> = n.drops.iter().map(|(r, c)| format!("{r} {c}")).collect();
        line("dropped", drops.join(", "));
    }
    if let Some(relayed) = n.relaying {
        line(
            "relaying",
            format!(
                "for the other members: {} packets, {}",
                relayed.packets,
                super::units::bytes(relayed.bytes)
            ),
        );
    }
    if let Some(error) = &n.error {
        line("error", error.clone());
    }
    out
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("  ")
}

/// Where the internet sees the node, its NAT, and how many relays answer.
fn reach_line(s: &StatusView, out: &mut String) {
    if s.relays.is_empty() && s.port_mapping.is_none() {
        return;
    }
    let alive = s.relays.iter().filter(|r| r.alive).count();
    let endpoint = s
        .public_endpoint
        .map_or_else(|| "not known yet".to_owned(), |e| e.to_string());
    let nat = s.nat.as_deref().unwrap_or("unknown");
    let mapped = s.port_mapping.as_ref().map_or_else(String::new, |m| {
        format!("  port mapped by the router ({})", m.protocol)
    });
    let _ = writeln!(
        out,
        "public endpoint {endpoint}  NAT {nat}  relays {alive}/{} answering{mapped}",
        s.relays.len()
    );
}

/// A duration in its two largest units: `42s`, `2m13s`, `3h12m`, `5d3h`.
pub fn duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use crate::daemon::api::{ContainerSubnets, ControllerView, RouteView};
    use crate::daemon::dataplane::WorkerPackets;
    use crate::daemon::forwarding::ForwardingReport;

    use super::*;

    fn network(status: NetworkStatus) -> NetworkView {
        NetworkView {
            id: "8056c2e21c000001".parse().unwrap(),
            name: "prod".into(),
            member_name: "web-1".into(),
            status,
            revision: Some(42),
            interface: Some("mesh-8056c2e21c".into()),
            mtu: Some(1420),
            addresses: vec![
                "10.147.17.23/16".parse().unwrap(),
                "fd80:56c2:e21c:0:199:9389:e92c:eee5/88".parse().unwrap(),
                "fc9c:56c2:e389:e92c:eee5::1/40".parse().unwrap(),
            ],
            container_subnets: ContainerSubnets {
                ipv4: Some("172.28.3.0/24".parse().unwrap()),
                ipv6: Some("fc9c:56c2:e389:e92c:eee5::/80".parse().unwrap()),
            },
            ipv6_egress: None,
            routes: vec![
                RouteView {
                    target: "172.28.3.0/24".parse().unwrap(),
                    node_id: "89e92ceee5".parse().unwrap(),
                    gateways: vec![],
                },
                RouteView {
                    target: "172.28.4.0/24".parse().unwrap(),
                    node_id: "1a2b3c4d5e".parse().unwrap(),
                    gateways: vec![],
                },
                RouteView {
                    target: "192.168.77.0/24".parse().unwrap(),
                    node_id: "5ba1c0ffee".parse().unwrap(),
                    gateways: vec!["1a2b3c4d5e".parse().unwrap(), "5ba1c0ffee".parse().unwrap()],
                },
            ],
            kernel_routes: vec![],
            drops: [("unknown_peer".to_owned(), 3)].into(),
            relaying: None,
            controllers: vec!["127.0.0.1:9994".into()],
            joined_at: 1,
            error: None,
        }
    }

    fn status(networks: Vec<NetworkView>) -> StatusView {
        StatusView {
            delegated_prefix: None,
            node_id: "89e92ceee5".parse().unwrap(),
            key_fingerprint: "ab12:cd34:ef56:7890".into(),
            hostname: "web-1".into(),
            version: "0.1.0".into(),
            online: false,
            controller: None,
            controllers_unreachable_for_s: Some(3 * 3600 + 12 * 60 + 7),
            dataplane_attached: true,
            controllers: vec![ControllerView {
                address: "127.0.0.1:9994".into(),
                reachable: false,
                connected: false,
                learned: false,
                connected_since_s: None,
                unreachable_for_s: Some(3 * 3600 + 12 * 60),
                error: Some("no answer from 127.0.0.1:9994 within 5 s".into()),
            }],
            networks,
            peers: vec![],
            forwarding: ForwardingReport {
                ipv4: true,
                ipv6: true,
                firewall: "unknown (no iptables or nft)".into(),
                configured: vec![],
                problems: vec![],
            },
            packet_workers: vec![],
            public_endpoint: None,
            nat: None,
            relays: vec![],
            port_mapping: None,
        }
    }

    #[test]
    fn summary_reads_at_a_glance() {
        let text = render(&status(vec![network(NetworkStatus::Ok)]));
        assert_eq!(
            text,
            "node 89e92ceee5  host web-1  key ab12:cd34:ef56:7890  meshd 0.1.0  OFFLINE\n\
             controllers unreachable for 3h12m; running on cached configs\n\
             controller 127.0.0.1:9994  unreachable for 3h12m: no answer from 127.0.0.1:9994 within 5 s\n\
             \n\
             network 8056c2e21c000001  prod  OK  revision 42\n\
             \x20 member      web-1\n\
             \x20 interface   mesh-8056c2e21c  mtu 1420\n\
             \x20 addresses   10.147.17.23/16  fd80:56c2:e21c:0:199:9389:e92c:eee5/88  fc9c:56c2:e389:e92c:eee5::1/40\n\
             \x20 containers  172.28.3.0/24  fc9c:56c2:e389:e92c:eee5::/80\n\
             \x20 routes      172.28.4.0/24 via 1a2b3c4d5e\n\
             \x20             192.168.77.0/24 via 5ba1c0ffee (in use; gateways 1a2b3c4d5e, 5ba1c0ffee)\n\
             \x20 dropped     unknown_peer 3\n"
        );
    }

    #[test]
    fn a_relaying_member_says_what_it_relayed() {
        let mut n = network(NetworkStatus::Ok);
        let node = "89e92ceee5".parse().unwrap();
        assert!(!network_block(node, &n).contains("relaying"));
        n.relaying = Some(crate::daemon::api::RelayedView {
            packets: 1200,
            bytes: 1_500_000,
        });
        let text = network_block(node, &n);
        assert!(
            text.contains("for the other members: 1200 packets, 1.5 MB"),
            "{text}"
        );
    }

    #[test]
    fn waiting_states_say_what_to_do() {
        let mut denied = network(NetworkStatus::AccessDenied);
        denied.interface = None;
        let text = network_block("89e92ceee5".parse().unwrap(), &denied);
        assert!(
            text.contains("meshd controller member authorize 8056c2e21c000001 89e92ceee5"),
            "{text}"
        );
        let mut fresh = network(NetworkStatus::RequestingConfiguration);
        fresh.name = String::new();
        fresh.revision = None;
        let text = network_block("89e92ceee5".parse().unwrap(), &fresh);
        assert!(
            text.starts_with("network 8056c2e21c000001  REQUESTING_CONFIGURATION\n"),
            "{text}"
        );
        assert!(text.contains("for a controller (127.0.0.1:9994)"), "{text}");
        let mut s = status(vec![]);
        s.packet_workers = vec![
            WorkerPackets {
                to_peers: 1200,
                from_peers: 1100,
                busy_poll_ms: 37,
            },
            WorkerPackets::default(),
        ];
        assert!(
            render(&s).ends_with(
                "packet workers: 2 (packets to/from peers: 1200/1100, 0/0; busy polling: 37 ms, 0 ms)\n"
            ),
            "{}",
            render(&s)
        );
        s.packet_workers.clear();
        s.dataplane_attached = false;
        let text = render(&s);
        assert!(text.contains("data plane not attached"), "{text}");
        assert!(text.contains("no networks"), "{text}");
    }

    #[test]
    fn forwarding_problems_are_warnings() {
        let mut s = status(vec![network(NetworkStatus::Ok)]);
        s.forwarding.ipv4 = false;
        s.forwarding.configured = vec!["net.ipv6.conf.all.forwarding=1".into()];
        s.forwarding.problems = vec![
            "net.ipv4.ip_forward is 0: containers behind this host are unreachable over IPv4 \
             from other hosts; run `sysctl -w net.ipv4.ip_forward=1` or start the daemon with \
             --configure-forwarding"
                .into(),
            "iptables FORWARD policy is DROP and no rule accepts the mesh interfaces".into(),
        ];
        let text = render(&s);
        assert!(
            text.starts_with(
                "node 89e92ceee5  host web-1  key ab12:cd34:ef56:7890  meshd 0.1.0  OFFLINE\n\
                 forwarding: set by meshd (net.ipv6.conf.all.forwarding=1)\n\
                 warning: net.ipv4.ip_forward is 0: containers behind this host are unreachable \
                 over IPv4 from other hosts; run `sysctl -w net.ipv4.ip_forward=1` or start the \
                 daemon with --configure-forwarding\n\
                 warning: iptables FORWARD policy is DROP and no rule accepts the mesh interfaces\n\
                 controllers unreachable for 3h12m; running on cached configs\n\
                 controller 127.0.0.1:9994"
            ),
            "{text}"
        );
    }

    fn controller(address: &str, connected_since_s: Option<u64>, learned: bool) -> ControllerView {
        ControllerView {
            address: address.into(),
            reachable: connected_since_s.is_some(),
            connected: connected_since_s.is_some(),
            learned,
            connected_since_s,
            unreachable_for_s: None,
            error: None,
        }
    }

    #[test]
    fn the_connected_replica_comes_first_and_the_others_on_one_line() {
        let mut s = status(vec![network(NetworkStatus::Ok)]);
        s.online = true;
        s.controller = Some("10.0.0.2:9994".into());
        s.controllers_unreachable_for_s = None;
        let mut dead = controller("10.0.0.1:9994", None, false);
        dead.unreachable_for_s = Some(12);
        dead.error = Some("no answer".into());
        s.controllers = vec![
            dead,
            controller("10.0.0.2:9994", Some(3), true),
            controller("10.0.0.3:9994", None, true),
        ];
        let text = render(&s);
        assert!(
            text.starts_with(
                "node 89e92ceee5  host web-1  key ab12:cd34:ef56:7890  meshd 0.1.0  ONLINE\n\
                 controller 10.0.0.2:9994  connected for 3s\n\
                 controllers 3 known, also 10.0.0.1:9994 (unreachable), 10.0.0.3:9994\n\
                 \n\
                 network 8056c2e21c000001  prod  OK  revision 42\n"
            ),
            "{text}"
        );
        assert!(!text.contains("unreachable for"), "{text}");

        // Many replicas: the line stays short.
        s.controllers
            .extend((4..10).map(|i| controller(&format!("10.0.0.{i}:9994"), None, true)));
        let text = render(&s);
        assert!(
            text.contains(
                "controllers 9 known, also 10.0.0.1:9994 (unreachable), 10.0.0.3:9994, \
                 10.0.0.4:9994, 10.0.0.5:9994 and 4 more\n"
            ),
            "{text}"
        );

        // A single controller, connected: one line.
        s.controllers = vec![controller("10.0.0.2:9994", Some(75), false)];
        let text = render(&s);
        assert!(
            text.starts_with(
                "node 89e92ceee5  host web-1  key ab12:cd34:ef56:7890  meshd 0.1.0  ONLINE\n\
                 controller 10.0.0.2:9994  connected for 1m15s\n\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn without_any_controller_session_the_node_says_how_long() {
        let mut s = status(vec![]);
        s.controllers_unreachable_for_s = Some(130);
        s.controllers = vec![
            controller("10.0.0.1:9994", None, false),
            controller("10.0.0.2:9994", None, true),
        ];
        // Before the first attempt fails: only "connecting".
        let text = render(&s);
        assert!(!text.contains("controllers unreachable"), "{text}");
        assert!(
            text.contains("controller 10.0.0.1:9994  connecting\n"),
            "{text}"
        );
        s.controllers[0].unreachable_for_s = Some(130);
        s.controllers[0].error = Some("no answer".into());
        s.controllers[1].unreachable_for_s = Some(125);
        let text = render(&s);
        // No network holds a config: nothing is "running on cached configs".
        assert!(
            text.contains(
                "controllers unreachable for 2m10s\n\
                 controller 10.0.0.1:9994  unreachable for 2m10s: no answer\n\
                 controller 10.0.0.2:9994  unreachable for 2m05s\n"
            ),
            "{text}"
        );
        s.networks = vec![network(NetworkStatus::Ok)];
        let text = render(&s);
        assert!(
            text.contains("controllers unreachable for 2m10s; running on cached configs\n"),
            "{text}"
        );
    }

    #[test]
    fn the_public_endpoint_nat_and_relays_on_one_line() {
        let mut s = status(vec![]);
        assert!(
            !render(&s).contains("public endpoint"),
            "no relays, no line"
        );
        let relay = |address: &str, alive| crate::daemon::api::RelayStatusView {
            address: address.parse().unwrap(),
            alive,
            rtt_ms: alive.then_some(1.5),
            observed: alive.then(|| "203.0.113.5:40000".parse().unwrap()),
        };
        s.relays = vec![
            relay("198.51.100.1:9995", true),
            relay("198.51.100.2:9995", false),
        ];
        assert!(render(&s).contains("public endpoint not known yet  NAT unknown  relays 1/2"));
        s.public_endpoint = Some("203.0.113.5:40000".parse().unwrap());
        s.nat = Some("endpoint-independent".into());
        let text = render(&s);
        assert!(
            text.contains(
                "public endpoint 203.0.113.5:40000  NAT endpoint-independent  relays 1/2 answering"
            ),
            "{text}"
        );
        s.port_mapping = Some(crate::daemon::api::PortMappingView {
            external: "203.0.113.5:40000".parse().unwrap(),
            protocol: "pcp".into(),
        });
        assert!(render(&s).contains("answering  port mapped by the router (pcp)"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(133), "2m13s");
        assert_eq!(duration(3 * 3600 + 12 * 60 + 5), "3h12m");
        assert_eq!(duration(5 * 86_400 + 3 * 3600), "5d3h");
    }
}
