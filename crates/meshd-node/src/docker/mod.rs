//! Docker settings for one host on one network: which bridge subnets and gateways put its
//! containers on the container subnets the controller assigned it, and what the host needs
//! around them (forwarding sysctls, the NAT exception, the firewall opening).
//!
//! Pure: [`DockerSettings::new`] takes the network as `meshd status` reports it and the
//! host's routing table, and the renderers only format. `meshd docker-config` and
//! `meshd demo` both use it, so the demo wires its bridges exactly as a user would.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use meshd_proto::NetworkId;
use serde::{Deserialize, Serialize};

use crate::daemon::api::NetworkView;
use crate::host_routes::HostRoute;

/// Docker's default bridge network, which a container subnet must not overlap unless
/// docker0 itself is moved onto it (`--format daemon-json`).
pub const DOCKER_DEFAULT_BRIDGE: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(172, 17, 0, 0), 16) {
    Ok(net) => net,
    Err(_) => panic!("a valid prefix"),
};

/// The network name the compose and `docker network create` forms use unless `--bridge`
/// names one.
pub const DEFAULT_DOCKER_NETWORK: &str = "meshd";

/// A subnet and the bridge's address in it (the containers' gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeSubnet {
    pub subnet: IpNet,
    pub gateway: IpAddr,
}

impl BridgeSubnet {
    /// The gateway with the subnet's prefix length, as an interface address (`ip addr add`).
    pub fn bridge_address(&self) -> IpNet {
        IpNet::new(self.gateway, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }
}

/// Everything `meshd docker-config` prints, for one host on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerSettings {
    pub network: NetworkId,
    /// The mesh interface on this host (`mesh-…`).
    pub interface: String,
    /// The mesh MTU: containers must not send larger packets than the tunnel carries.
    pub mtu: u16,
    /// The bridge named with `--bridge`, if any.
    pub bridge: Option<String>,
    /// The host's container /24 and the bridge's first address in it.
    pub ipv4: BridgeSubnet,
    /// The host's 6PLANE /80 and `::1` in it, when the network has 6PLANE on.
    pub ipv6: Option<BridgeSubnet>,
    /// `sysctl -w` arguments the host needs for forwarding.
    pub sysctls: Vec<String>,
    /// iptables commands (shell lines): no masquerade into the mesh, and the mesh let
    /// through Docker's FORWARD policy. The IPv6 opening falls back from `DOCKER-USER` to
    /// `FORWARD` where Docker has no such chain for ip6tables (before 23.0).
    pub iptables: Vec<String>,
    /// The same for hosts whose firewall is plain nftables.
    pub nft: Vec<String>,
    /// What meshd itself does for the containers' IPv6 leaving this host's uplink (the
    /// network's `ipv6_egress`), when anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_egress: Option<String>,
    /// Overlaps with Docker's default bridge and with routes the host already has.
    pub warnings: Vec<String>,
}

/// Why no settings can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    #[error(
        "network {0} has no config on this host yet (status {1}); wait until `meshd status` says OK"
    )]
    NoConfig(NetworkId, String),
    #[error(
        "network {0} assigns this host no container subnet: the network needs a container pool (meshd controller network create --container-pool CIDR)"
    )]
    NoContainerSubnet(NetworkId),
}

impl DockerSettings {
    /// Settings for the network `view` (this host's `meshd status`), checked against the
    /// host's routes.
    pub fn new(
        view: &NetworkView,
        bridge: Option<&str>,
        host_routes: &[HostRoute],
    ) -> Result<Self, DockerConfigError> {
        let (Some(mtu), Some(_)) = (view.mtu, view.revision) else {
            return Err(DockerConfigError::NoConfig(
                view.id,
                view.status.to_string(),
            ));
        };
        let v4 = view
            .container_subnets
            .ipv4
            .ok_or(DockerConfigError::NoContainerSubnet(view.id))?;
        let interface = view
            .interface
            .clone()
            .unwrap_or_else(|| meshd_engine::interface_name(view.id));
        let ipv4 = BridgeSubnet {
            subnet: IpNet::V4(v4),
            gateway: IpAddr::V4(first_host_v4(v4)),
        };
        let ipv6 = view.container_subnets.ipv6.and_then(|net| match net {
            IpNet::V6(v6) => Some(BridgeSubnet {
                subnet: net,
                gateway: IpAddr::V6(first_host_v6(v6)),
            }),
            IpNet::V4(_) => None,
        });
        let mut sysctls = vec!["net.ipv4.ip_forward=1".to_owned()];
        if ipv6.is_some() {
            sysctls.push("net.ipv6.conf.all.forwarding=1".to_owned());
        }
        let mut iptables = Vec::new();
        let mut nft = Vec::new();
        for (tool, family, subnet) in [("iptables", "ip", Some(ipv4)), ("ip6tables", "ip6", ipv6)] {
            let Some(BridgeSubnet { subnet, .. }) = subnet else {
                continue;
            };
            iptables.push(format!(
                "{tool} -t nat -I POSTROUTING -s {subnet} -o {interface} -j RETURN"
            ));
            let accept = format!("-i {interface} -d {subnet} -j ACCEPT");
            iptables.push(if tool == "ip6tables" {
                // Docker before 23.0 makes no DOCKER-USER chain for ip6tables, not even
                // with "ip6tables": true (moby/moby#44706). There the opening goes into
                // FORWARD: what Docker inserts above it drops nothing from the mesh.
                format!("{tool} -I DOCKER-USER {accept} 2>/dev/null || {tool} -I FORWARD {accept}")
            } else {
                format!("{tool} -I DOCKER-USER {accept}")
            });
            nft.push(format!(
                "nft insert rule {family} nat POSTROUTING {family} saddr {subnet} oifname \"{interface}\" return"
            ));
            nft.push(format!(
                "nft insert rule {family} filter FORWARD iifname \"{interface}\" {family} daddr {subnet} accept"
            ));
        }
        let mut settings = Self {
            network: view.id,
            interface,
            mtu,
            bridge: bridge.map(str::to_owned),
            ipv4,
            ipv6,
            sysctls,
            iptables,
            nft,
            ipv6_egress: view.ipv6_egress.as_ref().map(|e| e.summary.clone()),
            warnings: Vec::new(),
        };
        settings.warnings = settings.overlaps(host_routes);
        Ok(settings)
    }

    /// What already claims part of the container subnets: Docker's default bridge, and
    /// host routes other than the mesh's own and an exact route for the subnet (a bridge
    /// already set up with these settings).
    fn overlaps(&self, host_routes: &[HostRoute]) -> Vec<String> {
        let mut warnings = Vec::new();
        let IpNet::V4(v4) = self.ipv4.subnet else {
            return warnings;
        };
        if overlap(IpNet::V4(v4), IpNet::V4(DOCKER_DEFAULT_BRIDGE)) {
            warnings.push(format!(
                "the container subnet {v4} lies in Docker's default bridge network \
                 {DOCKER_DEFAULT_BRIDGE}: use --format daemon-json (it moves docker0 onto \
                 {v4}), or set \"bip\" in /etc/docker/daemon.json to another subnet first"
            ));
        }
        let ours: Vec<IpNet> = std::iter::once(self.ipv4.subnet)
            .chain(self.ipv6.map(|s| s.subnet))
            .collect();
        for route in host_routes {
            if route.prefix.prefix_len() == 0
                || route.device == "lo"
                || route.device.starts_with("mesh-")
            {
                continue;
            }
            for subnet in &ours {
                if route.prefix != *subnet && overlap(route.prefix, *subnet) {
                    warnings.push(format!(
                        "this host already routes {} to {}, which overlaps the container \
                         subnet {subnet}: containers there would be unreachable from the mesh; \
                         remove that route or pick another container pool",
                        route.prefix, route.device
                    ));
                }
            }
        }
        warnings
    }

    fn network_name(&self) -> &str {
        self.bridge.as_deref().unwrap_or(DEFAULT_DOCKER_NETWORK)
    }

    /// `/etc/docker/daemon.json` for the default bridge (docker0).
    pub fn daemon_json(&self) -> String {
        let mut doc = serde_json::Map::new();
        doc.insert("bip".into(), self.ipv4.bridge_address().to_string().into());
        doc.insert("fixed-cidr".into(), self.ipv4.subnet.to_string().into());
        if let Some(v6) = &self.ipv6 {
            doc.insert("ipv6".into(), true.into());
            doc.insert("fixed-cidr-v6".into(), v6.subnet.to_string().into());
        }
        doc.insert("mtu".into(), self.mtu.into());
        let mut text = serde_json::to_string_pretty(&serde_json::Value::Object(doc))
            .unwrap_or_else(|_| "{}".to_owned());
        text.push('\n');
        text
    }

    /// `existing` (an `/etc/docker/daemon.json`, if there is one) with this host's settings
    /// merged in: the keys [`DockerSettings::daemon_json`] sets are replaced (IPv6 keys
    /// dropped when the network gives no IPv6 subnet), every other key is kept.
    pub fn merge_daemon_json(&self, existing: Option<&str>) -> Result<String, String> {
        let mut doc = match existing.map(str::trim).filter(|t| !t.is_empty()) {
            None => serde_json::Map::new(),
            Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(_) => return Err("it is not a JSON object; fix or move it first".to_owned()),
                Err(e) => return Err(format!("it is not valid JSON ({e}); fix or move it first")),
            },
        };
        if self.ipv6.is_none() {
            doc.remove("ipv6");
            doc.remove("fixed-cidr-v6");
        }
        let ours: serde_json::Value =
            serde_json::from_str(&self.daemon_json()).map_err(|e| e.to_string())?;
        if let serde_json::Value::Object(ours) = ours {
            doc.extend(ours);
        }
        let mut text = serde_json::to_string_pretty(&serde_json::Value::Object(doc))
            .map_err(|e| e.to_string())?;
        text.push('\n');
        Ok(text)
    }

    /// A `networks:` section for docker-compose.yml.
    pub fn compose(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# meshd network {}: this host's containers ({})",
            self.network, self.interface
        );
        let _ = writeln!(out, "networks:");
        let _ = writeln!(out, "  {}:", self.network_name());
        let _ = writeln!(out, "    driver: bridge");
        if self.ipv6.is_some() {
            let _ = writeln!(out, "    enable_ipv6: true");
        }
        let _ = writeln!(out, "    driver_opts:");
        if let Some(bridge) = &self.bridge {
            let _ = writeln!(out, "      com.docker.network.bridge.name: \"{bridge}\"");
        }
        let _ = writeln!(out, "      com.docker.network.driver.mtu: \"{}\"", self.mtu);
        let _ = writeln!(out, "    ipam:");
        let _ = writeln!(out, "      config:");
        for s in std::iter::once(&self.ipv4).chain(&self.ipv6) {
            let _ = writeln!(out, "        - subnet: \"{}\"", s.subnet);
            let _ = writeln!(out, "          gateway: \"{}\"", s.gateway);
        }
        out
    }

    /// A `docker network create` command line.
    pub fn network_create(&self) -> String {
        let mut words = vec!["docker network create --driver bridge".to_owned()];
        words.push(format!(
            "--subnet {} --gateway {}",
            self.ipv4.subnet, self.ipv4.gateway
        ));
        if let Some(v6) = &self.ipv6 {
            words.push(format!(
                "--ipv6 --subnet {} --gateway {}",
                v6.subnet, v6.gateway
            ));
        }
        words.push(format!("--opt com.docker.network.driver.mtu={}", self.mtu));
        if let Some(bridge) = &self.bridge {
            words.push(format!("--opt com.docker.network.bridge.name={bridge}"));
        }
        words.push(self.network_name().to_owned());
        let mut text = words.join(" \\\n    ");
        text.push('\n');
        text
    }

    /// What the host needs besides the Docker settings, as shell comments and commands;
    /// printed to stderr so that stdout stays the file or command itself.
    pub fn host_notes(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# forwarding between {} and the bridge (or: meshd daemon --configure-forwarding):",
            self.interface
        );
        for s in &self.sysctls {
            let _ = writeln!(out, "sysctl -w {s}");
        }
        let _ = writeln!(
            out,
            "# no masquerade into the mesh (containers keep their addresses), and the mesh let \
             through Docker's FORWARD policy:"
        );
        if self.ipv6.is_some() {
            let _ = writeln!(
                out,
                "# (Docker before 23.0 has no DOCKER-USER chain for ip6tables: the IPv6 \
                 opening goes into FORWARD there)"
            );
        }
        for rule in &self.iptables {
            let _ = writeln!(out, "{rule}");
        }
        let _ = writeln!(out, "# the same with nftables:");
        for rule in &self.nft {
            let _ = writeln!(out, "{rule}");
        }
        if let Some(egress) = &self.ipv6_egress {
            let _ = writeln!(out, "# IPv6 egress, done by meshd itself: {egress}");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
}

fn overlap(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn first_host_v4(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(1))
}

fn first_host_v6(net: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()).wrapping_add(1))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::daemon::api::{ContainerSubnets, NetworkStatus};

    fn view() -> NetworkView {
        NetworkView {
            id: "8056c2e21c000001".parse().unwrap(),
            name: "prod".into(),
            member_name: String::new(),
            status: NetworkStatus::Ok,
            revision: Some(7),
            interface: Some("mesh-8056c2e21c".into()),
            mtu: Some(1420),
            addresses: vec![],
            container_subnets: ContainerSubnets {
                ipv4: Some("172.28.3.0/24".parse().unwrap()),
                ipv6: Some("fc9c:56c2:e389:e92c:eee5::/80".parse().unwrap()),
            },
            ipv6_egress: None,
            routes: vec![],
            kernel_routes: vec![],
            drops: BTreeMap::new(),
            relaying: None,
            controllers: vec![],
            joined_at: 0,
            error: None,
        }
    }

    fn route(prefix: &str, device: &str) -> HostRoute {
        HostRoute {
            prefix: prefix.parse().unwrap(),
            device: device.into(),
        }
    }

    #[test]
    fn subnets_and_gateways_come_from_the_assignment() {
        let s = DockerSettings::new(&view(), None, &[]).unwrap();
        assert_eq!(s.ipv4.subnet.to_string(), "172.28.3.0/24");
        assert_eq!(s.ipv4.gateway.to_string(), "172.28.3.1");
        assert_eq!(s.ipv4.bridge_address().to_string(), "172.28.3.1/24");
        let v6 = s.ipv6.unwrap();
        assert_eq!(v6.subnet.to_string(), "fc9c:56c2:e389:e92c:eee5::/80");
        assert_eq!(v6.gateway.to_string(), "fc9c:56c2:e389:e92c:eee5::1");
        assert_eq!(s.mtu, 1420);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn daemon_json_is_exactly_what_docker_reads() {
        let s = DockerSettings::new(&view(), None, &[]).unwrap();
        assert_eq!(
            s.daemon_json(),
            "{\n  \"bip\": \"172.28.3.1/24\",\n  \"fixed-cidr\": \"172.28.3.0/24\",\n  \
             \"fixed-cidr-v6\": \"fc9c:56c2:e389:e92c:eee5::/80\",\n  \"ipv6\": true,\n  \
             \"mtu\": 1420\n}\n"
        );
        let mut v4_only = view();
        v4_only.container_subnets.ipv6 = None;
        let json: serde_json::Value = serde_json::from_str(
            &DockerSettings::new(&v4_only, None, &[])
                .unwrap()
                .daemon_json(),
        )
        .unwrap();
        assert!(json.get("ipv6").is_none() && json.get("fixed-cidr-v6").is_none());
    }

    #[test]
    fn compose_and_network_create_name_the_bridge_and_mtu() {
        let s = DockerSettings::new(&view(), Some("mesh0"), &[]).unwrap();
        assert_eq!(
            s.compose(),
            "# meshd network 8056c2e21c000001: this host's containers (mesh-8056c2e21c)\n\
             networks:\n  mesh0:\n    driver: bridge\n    enable_ipv6: true\n    driver_opts:\n      \
             com.docker.network.bridge.name: \"mesh0\"\n      \
             com.docker.network.driver.mtu: \"1420\"\n    ipam:\n      config:\n        \
             - subnet: \"172.28.3.0/24\"\n          gateway: \"172.28.3.1\"\n        \
             - subnet: \"fc9c:56c2:e389:e92c:eee5::/80\"\n          \
             gateway: \"fc9c:56c2:e389:e92c:eee5::1\"\n"
        );
        let line = s.network_create().replace(" \\\n    ", " ");
        assert_eq!(
            line,
            "docker network create --driver bridge --subnet 172.28.3.0/24 --gateway 172.28.3.1 \
             --ipv6 --subnet fc9c:56c2:e389:e92c:eee5::/80 --gateway fc9c:56c2:e389:e92c:eee5::1 \
             --opt com.docker.network.driver.mtu=1420 --opt com.docker.network.bridge.name=mesh0 \
             mesh0\n"
        );
    }

    #[test]
    fn the_deploy_compose_example_is_what_docker_config_prints() {
        let example = include_str!("../../../../deploy/compose/docker-compose.yml");
        let s = DockerSettings::new(&view(), Some("mesh"), &[]).unwrap();
        let printed = s.compose();
        let block = printed
            .split_once("networks:\n")
            .map(|(_, block)| block)
            .unwrap();
        assert!(
            example.ends_with(&format!("networks:\n{block}")),
            "deploy/compose/docker-compose.yml should end with\nnetworks:\n{block}"
        );
    }

    #[test]
    fn host_notes_keep_container_addresses_across_the_mesh() {
        let s = DockerSettings::new(&view(), None, &[]).unwrap();
        let notes = s.host_notes();
        for line in [
            "sysctl -w net.ipv4.ip_forward=1",
            "sysctl -w net.ipv6.conf.all.forwarding=1",
            "iptables -t nat -I POSTROUTING -s 172.28.3.0/24 -o mesh-8056c2e21c -j RETURN",
            "ip6tables -t nat -I POSTROUTING -s fc9c:56c2:e389:e92c:eee5::/80 -o mesh-8056c2e21c -j RETURN",
            "iptables -I DOCKER-USER -i mesh-8056c2e21c -d 172.28.3.0/24 -j ACCEPT",
            "ip6tables -I DOCKER-USER -i mesh-8056c2e21c -d fc9c:56c2:e389:e92c:eee5::/80 -j ACCEPT \
             2>/dev/null || ip6tables -I FORWARD -i mesh-8056c2e21c -d fc9c:56c2:e389:e92c:eee5::/80 \
             -j ACCEPT",
            "nft insert rule ip nat POSTROUTING ip saddr 172.28.3.0/24 oifname \"mesh-8056c2e21c\" return",
        ] {
            assert!(notes.lines().any(|l| l == line), "{line} missing:\n{notes}");
        }
    }

    #[test]
    fn apply_merges_into_an_existing_daemon_json() {
        let s = DockerSettings::new(&view(), None, &[]).unwrap();
        let merged = s
            .merge_daemon_json(Some(
                r#"{"log-driver": "journald", "bip": "172.17.0.1/16"}"#,
            ))
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(json["log-driver"], "journald");
        assert_eq!(json["bip"], "172.28.3.1/24");
        assert_eq!(json["fixed-cidr-v6"], "fc9c:56c2:e389:e92c:eee5::/80");
        assert_eq!(s.merge_daemon_json(None).unwrap(), s.daemon_json());
        assert!(
            s.merge_daemon_json(Some("[1]"))
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            s.merge_daemon_json(Some("{bad"))
                .unwrap_err()
                .contains("not valid JSON")
        );
        // A network without IPv6 takes the IPv6 keys out again.
        let mut v4_only = view();
        v4_only.container_subnets.ipv6 = None;
        let s = DockerSettings::new(&v4_only, None, &[]).unwrap();
        let merged = s.merge_daemon_json(Some(&merged)).unwrap();
        assert!(
            !merged.contains("fixed-cidr-v6") && merged.contains("journald"),
            "{merged}"
        );
    }

    #[test]
    fn host_notes_say_what_meshd_does_for_ipv6_egress() {
        let mut v = view();
        assert!(
            !DockerSettings::new(&v, None, &[])
                .unwrap()
                .host_notes()
                .contains("egress")
        );
        v.ipv6_egress = Some(crate::daemon::forwarding::EgressView {
            source: "fc9c:56c2:e389:e92c:eee5::/80".parse().unwrap(),
            tool: Some(crate::daemon::forwarding::EgressTool::Ip6tables),
            installed: true,
            summary: "nat66: fc9c:56c2:e389:e92c:eee5::/80 leaving ... (ip6tables)".into(),
        });
        let s = DockerSettings::new(&v, None, &[]).unwrap();
        assert!(
            s.host_notes().contains(
                "# IPv6 egress, done by meshd itself: nat66: fc9c:56c2:e389:e92c:eee5::/80"
            )
        );
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["ipv6_egress"].as_str().unwrap().starts_with("nat66"));
    }

    #[test]
    fn overlaps_are_warned_about() {
        let mut docker_default = view();
        docker_default.container_subnets.ipv4 = Some("172.17.5.0/24".parse().unwrap());
        let s = DockerSettings::new(&docker_default, None, &[]).unwrap();
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("172.17.0.0/16"), "{:?}", s.warnings);

        let routes = [
            route("0.0.0.0/0", "eth0"),
            route("172.28.0.0/16", "eth1"),
            route("172.28.3.0/24", "docker0"),
            route("172.28.0.0/16", "mesh-8056c2e21c"),
            route("fc9c:56c2:e300::/40", "mesh-8056c2e21c"),
            route("fc9c:56c2:e389:e92c:eee5:1::/96", "br1"),
            route("10.0.0.0/8", "eth0"),
        ];
        let s = DockerSettings::new(&view(), None, &routes).unwrap();
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("172.28.0.0/16 to eth1"));
        assert!(s.warnings[1].contains("to br1"));
    }

    #[test]
    fn a_network_without_containers_or_config_says_what_to_do() {
        let mut none = view();
        none.container_subnets.ipv4 = None;
        let e = DockerSettings::new(&none, None, &[]).unwrap_err();
        assert!(e.to_string().contains("--container-pool"), "{e}");
        let mut waiting = view();
        waiting.status = NetworkStatus::AccessDenied;
        waiting.revision = None;
        waiting.mtu = None;
        let e = DockerSettings::new(&waiting, None, &[]).unwrap_err();
        assert!(e.to_string().contains("ACCESS_DENIED"), "{e}");
    }
}
