//! IPv6 egress (NAT66): on a network whose config says `ipv6_egress: nat66`, this host
//! masquerades its containers' mesh IPv6 traffic (their 6PLANE /80) that leaves through its
//! own uplink, so containers on mesh addresses reach the IPv6 internet. Traffic into the mesh
//! (out of the mesh interface, or to the network's 6PLANE and RFC4193 ranges) and traffic
//! between the containers themselves keeps its addresses. A member whose containers use a
//! delegated (global) /80 needs no NAT and gets none.
//!
//! The rule goes in with the tool the host's firewall is managed with: `ip6tables` when it is
//! installed (Docker hosts), else `nft`. ip6tables gets a chain per network,
//! `MESHD-EG-<nwid>`, that POSTROUTING jumps to for the source /80; nft a table per network,
//! `ip6 meshd-egress-<nwid>`. Either is replaced whole on every change, found and removed
//! by its name (also after a crash), and removed when the network leaves or the daemon stops.
//!
//! [`EgressRule`] is pure (what to install); [`Egress`] runs the tools.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ipnet::Ipv6Net;
use meshd_proto::config::Ipv6Egress;
use meshd_proto::{NetworkConfig, NetworkId, NodeId, addr};
use serde::{Deserialize, Serialize};

use super::firewall::{find_tool, run_tool, words};

/// How long one firewall command may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What one network's egress rule masquerades.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    pub network: NetworkId,
    /// The mesh interface: traffic out of it is never masqueraded.
    pub interface: String,
    /// This host's containers' mesh /80.
    pub source: Ipv6Net,
    /// Destinations that stay unmasqueraded: the network's mesh ranges and the source.
    pub inside: Vec<Ipv6Net>,
}

impl EgressRule {
    /// The rule `node` needs for `cfg`, `None` when egress is off or not needed.
    pub fn for_config(cfg: &NetworkConfig, node: NodeId) -> Option<Self> {
        let me = cfg.member(node)?;
        if cfg.ipv6_egress != Ipv6Egress::Nat66 || me.delegated_subnet.is_some() {
            return None;
        }
        let source = cfg.sixplane_subnet(node)?;
        let mut inside = vec![addr::sixplane_network_prefix(cfg.network_id)];
        if cfg.rfc4193 {
            inside.push(addr::rfc4193_network_prefix(cfg.network_id));
        }
        Some(Self {
            network: cfg.network_id,
            interface: meshd_engine::interface_name(cfg.network_id),
            source,
            inside,
        })
    }

    /// The ip6tables chain of `network`'s rule (at most 28 characters).
    pub fn chain(network: NetworkId) -> String {
        format!("MESHD-EG-{network}")
    }

    /// The nft table of `network`'s rule.
    pub fn table(network: NetworkId) -> String {
        format!("meshd-egress-{network}")
    }

    /// The ip6tables commands (arguments after `ip6tables`) that install the rule, after the
    /// network's chain was created empty.
    pub fn ip6tables(&self) -> Vec<Vec<String>> {
        let chain = Self::chain(self.network);
        let mut out: Vec<Vec<String>> = Vec::new();
        let rule = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        out.push(rule(&[
            "-t",
            "nat",
            "-A",
            &chain,
            "-o",
            &self.interface,
            "-j",
            "RETURN",
        ]));
        for net in self.inside.iter().chain([&self.source]) {
            out.push(rule(&[
                "-t",
                "nat",
                "-A",
                &chain,
                "-d",
                &net.to_string(),
                "-j",
                "RETURN",
            ]));
        }
        out.push(rule(&["-t", "nat", "-A", &chain, "-j", "MASQUERADE"]));
        out.push(rule(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            &self.source.to_string(),
            "-j",
            &chain,
        ]));
        out
    }

    /// One nft command line that replaces the network's table with the rule (nft applies
    /// one command line as one transaction).
    pub fn nft(&self) -> String {
        let table = Self::table(self.network);
        let inside: Vec<String> = self
            .inside
            .iter()
            .chain([&self.source])
            .map(ToString::to_string)
            .collect();
        format!(
            "add table ip6 {table}; delete table ip6 {table}; add table ip6 {table}; \
             add chain ip6 {table} postrouting {{ type nat hook postrouting priority srcnat; }}; \
             add rule ip6 {table} postrouting ip6 saddr {source} oifname != \"{iface}\" \
             ip6 daddr != {{ {inside} }} masquerade",
            source = self.source,
            iface = self.interface,
            inside = inside.join(", "),
        )
    }

    /// One line for people: what the rule does.
    pub fn describe(&self, tool: EgressTool) -> String {
        format!(
            "nat66: {} leaving through this host's uplink is masqueraded ({}), traffic into the \
             mesh keeps its addresses",
            self.source,
            tool.name()
        )
    }
}

/// The firewall tool egress rules go in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressTool {
    Ip6tables,
    Nft,
}

impl EgressTool {
    pub fn name(self) -> &'static str {
        match self {
            EgressTool::Ip6tables => "ip6tables",
            EgressTool::Nft => "nft",
        }
    }
}

/// `meshd status`'s view of a network's IPv6 egress (`"ipv6_egress"` in `status --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressView {
    /// The masqueraded source: this host's containers' /80.
    pub source: Ipv6Net,
    /// The tool the rule went in with; `None` when neither is installed.
    pub tool: Option<EgressTool>,
    pub installed: bool,
    /// What it does, or why it is not installed.
    pub summary: String,
}

/// The egress rules this daemon installed, per network.
#[derive(Debug, Default)]
pub struct Egress {
    installed: Mutex<BTreeMap<NetworkId, (EgressRule, EgressView)>>,
}

impl Egress {
    /// Makes `network`'s rule what `rule` says (`None`: none). Blocks on the tools.
    pub fn apply(&self, network: NetworkId, rule: Option<&EgressRule>) {
        let mut installed = self
            .installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (installed.get(&network), rule) {
            // Nothing to do: the same rule is in, or none was and none is wanted.
            (Some((old, view)), Some(new)) if old == new && view.installed => return,
            (None, None) => return,
            _ => {}
        }
        let tool = detect();
        if let Some((tool, path)) = &tool {
            remove(*tool, path, network);
        }
        let Some(rule) = rule else {
            installed.remove(&network);
            return;
        };
        let view = match &tool {
            None => EgressView {
                source: rule.source,
                tool: None,
                installed: false,
                summary: "nat66 is on but neither ip6tables nor nft is installed: containers' \
                          mesh IPv6 cannot reach the internet; install iptables or nftables"
                    .to_owned(),
            },
            Some((tool, path)) => match install(*tool, path, rule) {
                Ok(()) => {
                    tracing::info!(%network, source = %rule.source, tool = tool.name(), "IPv6 egress masquerade installed");
                    EgressView {
                        source: rule.source,
                        tool: Some(*tool),
                        installed: true,
                        summary: rule.describe(*tool),
                    }
                }
                Err(e) => {
                    tracing::warn!(%network, error = %e, "cannot install the IPv6 egress masquerade");
                    remove(*tool, path, network);
                    EgressView {
                        source: rule.source,
                        tool: Some(*tool),
                        installed: false,
                        summary: format!("nat66 is on but its rule failed: {e}"),
                    }
                }
            },
        };
        installed.insert(network, (rule.clone(), view));
    }

    /// Removes every rule this daemon installed (at shutdown).
    pub fn remove_all(&self) {
        let networks: Vec<NetworkId> = self
            .installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        for network in networks {
            self.apply(network, None);
        }
    }

    pub fn view(&self, network: NetworkId) -> Option<EgressView> {
        self.installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&network)
            .map(|(_, view)| view.clone())
    }
}

/// The tool this host's firewall is managed with: ip6tables where installed, else nft.
fn detect() -> Option<(EgressTool, PathBuf)> {
    find_tool("ip6tables")
        .map(|p| (EgressTool::Ip6tables, p))
        .or_else(|| find_tool("nft").map(|p| (EgressTool::Nft, p)))
}

fn install(tool: EgressTool, path: &std::path::Path, rule: &EgressRule) -> Result<(), String> {
    match tool {
        EgressTool::Nft => run_tool(path, &[&rule.nft()], TIMEOUT).map(drop),
        EgressTool::Ip6tables => {
            let chain = EgressRule::chain(rule.network);
            run_tool(path, &["-t", "nat", "-N", &chain], TIMEOUT)?;
            for args in rule.ip6tables() {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_tool(path, &args, TIMEOUT)?;
            }
            Ok(())
        }
    }
}

/// Removes `network`'s rule, whatever source it was installed for (also one a crashed
/// daemon left). Failures mean there was nothing to remove.
fn remove(tool: EgressTool, path: &std::path::Path, network: NetworkId) {
    match tool {
        EgressTool::Nft => {
            let table = EgressRule::table(network);
            let _ = run_tool(path, &[&format!("delete table ip6 {table}")], TIMEOUT);
        }
        EgressTool::Ip6tables => {
            let chain = EgressRule::chain(network);
            if let Ok(listing) = run_tool(path, &["-t", "nat", "-S", "POSTROUTING"], TIMEOUT) {
                for args in jumps_to(&listing, &chain) {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let _ = run_tool(path, &args, TIMEOUT);
                }
            }
            let _ = run_tool(path, &["-t", "nat", "-F", &chain], TIMEOUT);
            let _ = run_tool(path, &["-t", "nat", "-X", &chain], TIMEOUT);
        }
    }
}

/// The `ip6tables` arguments that delete each rule of an `-S POSTROUTING` listing that
/// jumps to `chain`.
pub fn jumps_to(listing: &str, chain: &str) -> Vec<Vec<String>> {
    listing
        .lines()
        .map(words)
        .filter(|w| w.first().is_some_and(|a| a == "-A"))
        .filter(|w| w.windows(2).any(|p| p[0] == "-j" && p[1] == chain))
        .map(|mut w| {
            w[0] = "-D".to_owned();
            let mut args = vec!["-t".to_owned(), "nat".to_owned()];
            args.extend(w);
            args
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::Ipv4Addr;

    use meshd_proto::{Identity, MemberConfig, NetworkKey};

    use super::*;

    fn config(egress: Ipv6Egress) -> (NetworkConfig, NodeId) {
        let key = NetworkKey::from_seed(&[3; 32]).unwrap();
        let mut cfg = NetworkConfig::new(key.network_id(), "egress");
        cfg.ipv6_egress = egress;
        let id = Identity::generate_unproven();
        cfg.members.push(MemberConfig {
            node_id: id.node_id(),
            identity: *id.public(),
            name: "h1".into(),
            ipv4: vec![Ipv4Addr::new(10, 147, 17, 10)],
            container_subnet: None,
            delegated_subnet: None,
            endpoints: vec![],
            relay: false,
            port_mapped: false,
        });
        (cfg, id.node_id())
    }

    #[test]
    fn only_nat66_members_on_mesh_addresses_get_a_rule() {
        let (cfg, node) = config(Ipv6Egress::Off);
        assert_eq!(EgressRule::for_config(&cfg, node), None);
        let (mut cfg, node) = config(Ipv6Egress::Nat66);
        let rule = EgressRule::for_config(&cfg, node).unwrap();
        assert_eq!(Some(rule.source), cfg.sixplane_subnet(node));
        assert_eq!(
            rule.inside,
            vec![
                addr::sixplane_network_prefix(cfg.network_id),
                addr::rfc4193_network_prefix(cfg.network_id)
            ]
        );
        // Containers on a delegated (global) /80 need no NAT; a non-member gets nothing.
        cfg.members[0].delegated_subnet = Some("2001:db8:1:40::/80".parse().unwrap());
        assert_eq!(EgressRule::for_config(&cfg, node), None);
        let stranger = Identity::generate_unproven().node_id();
        assert_eq!(EgressRule::for_config(&cfg, stranger), None);
    }

    #[test]
    fn ip6tables_rules_return_mesh_traffic_and_masquerade_the_rest() {
        let (cfg, node) = config(Ipv6Egress::Nat66);
        let rule = EgressRule::for_config(&cfg, node).unwrap();
        let chain = EgressRule::chain(cfg.network_id);
        assert!(chain.len() <= 28, "{chain}");
        let lines: Vec<String> = rule.ip6tables().iter().map(|a| a.join(" ")).collect();
        let iface = meshd_engine::interface_name(cfg.network_id);
        assert_eq!(lines[0], format!("-t nat -A {chain} -o {iface} -j RETURN"));
        assert_eq!(
            lines[lines.len() - 2],
            format!("-t nat -A {chain} -j MASQUERADE")
        );
        assert_eq!(
            lines[lines.len() - 1],
            format!("-t nat -A POSTROUTING -s {} -j {chain}", rule.source)
        );
        for net in rule.inside.iter().chain([&rule.source]) {
            assert!(lines.contains(&format!("-t nat -A {chain} -d {net} -j RETURN")));
        }
    }

    #[test]
    fn leftover_jumps_are_found_by_chain() {
        let listing = "-P POSTROUTING ACCEPT\n\
                       -A POSTROUTING -s fc9c::/80 -j MESHD-EG-8056c2e21c000001\n\
                       -A POSTROUTING -s fd00::/64 -j MASQUERADE\n\
                       -A POSTROUTING -s fc9d::/80 -j MESHD-EG-8056c2e21c000002\n";
        assert_eq!(
            jumps_to(listing, "MESHD-EG-8056c2e21c000001"),
            vec![
                "-t nat -D POSTROUTING -s fc9c::/80 -j MESHD-EG-8056c2e21c000001"
                    .split(' ')
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            ]
        );
        assert!(jumps_to("", "X").is_empty());
    }

    #[test]
    fn the_nft_command_is_valid_nftables() {
        let (cfg, node) = config(Ipv6Egress::Nat66);
        let rule = EgressRule::for_config(&cfg, node).unwrap();
        let script = rule.nft();
        assert!(
            script.contains(&format!("ip6 saddr {}", rule.source)),
            "{script}"
        );
        // nft's own check, when it is installed: parses and validates without applying.
        if let Some(nft) = find_tool("nft") {
            let checked = run_tool(&nft, &["-c", &script], TIMEOUT);
            assert!(checked.is_ok(), "{script}: {checked:?}");
        }
    }
}
