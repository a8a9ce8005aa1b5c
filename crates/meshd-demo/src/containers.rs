//! The containers' side of the demo: on each host a bridge on the subnets its
//! `meshd docker-config` prints, and namespaces behind it standing in for containers.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use meshd_node::docker::DockerSettings;
use meshd_proto::NetworkId;

use crate::DemoError;
use crate::commands::{Meshd, NODES, ok_stdout};

/// "Containers" behind each host's bridge.
const CONTAINERS_PER_HOST: u8 = 2;

/// A namespace standing in for a Docker container on one of the hosts.
#[derive(Debug)]
pub struct Container {
    pub name: String,
    pub host: &'static str,
    /// IPv4, then IPv6 if the network has 6PLANE.
    pub addrs: Vec<IpAddr>,
}

impl Meshd<'_> {
    /// Gives each host a bridge on the container subnets its `meshd docker-config` prints,
    /// and [`CONTAINERS_PER_HOST`] containers behind it (addresses `.2`, `.3`, … and `::2`,
    /// `::3`, …, the bridge's as gateway, the mesh MTU), as Docker would.
    pub(crate) fn wire_containers(&mut self, nwid: NetworkId) -> Result<Vec<Container>, DemoError> {
        let mut containers = Vec::new();
        for (i, host) in NODES.into_iter().enumerate() {
            let bridge = self.lab.link_name(&format!("b{i}"));
            let out = self.node_cli(
                host,
                &[
                    "docker-config",
                    &nwid.to_string(),
                    "--format",
                    "json",
                    "--bridge",
                    &bridge,
                ],
            )?;
            let text = ok_stdout(&["meshd", "docker-config"], out)?;
            let settings: DockerSettings = serde_json::from_str(&text).map_err(|e| {
                DemoError::Output(format!("{host}: docker-config printed {text:?}: {e}"))
            })?;
            let subnets: Vec<_> = std::iter::once(settings.ipv4)
                .chain(settings.ipv6)
                .collect();
            let bridge_addresses: Vec<IpNet> = subnets.iter().map(|s| s.bridge_address()).collect();
            self.lab.add_bridge(host, &bridge, &bridge_addresses)?;
            for k in 1..=CONTAINERS_PER_HOST {
                let name = format!("{host}c{k}");
                let addresses: Vec<IpNet> = subnets
                    .iter()
                    .map(|s| nth_address(s.subnet, u128::from(k) + 1))
                    .collect::<Result<_, _>>()?;
                let gateways: Vec<IpAddr> = subnets.iter().map(|s| s.gateway).collect();
                self.lab.add_container(
                    host,
                    &name,
                    &bridge,
                    &addresses,
                    &gateways,
                    settings.mtu,
                )?;
                containers.push(Container {
                    name,
                    host,
                    addrs: addresses.iter().map(IpNet::addr).collect(),
                });
            }
        }
        Ok(containers)
    }
}

/// Address `n` of `subnet` with the subnet's prefix length (`n` = 1 is the gateway's).
fn nth_address(subnet: IpNet, n: u128) -> Result<IpNet, DemoError> {
    let too_small = || DemoError::Output(format!("{subnet} has no address {n}"));
    let addr = match subnet {
        IpNet::V4(net) => {
            let n = u32::try_from(n).map_err(|_| too_small())?;
            IpAddr::V4(Ipv4Addr::from(
                u32::from(net.network())
                    .checked_add(n)
                    .ok_or_else(too_small)?,
            ))
        }
        IpNet::V6(net) => IpAddr::V6(Ipv6Addr::from(
            u128::from(net.network())
                .checked_add(n)
                .ok_or_else(too_small)?,
        )),
    };
    if !subnet.contains(&addr) {
        return Err(too_small());
    }
    IpNet::new(addr, subnet.prefix_len()).map_err(|_| too_small())
}

/// Container-to-container results as a matrix: a row per container with its addresses, a
/// column per container, `ok`/`FAIL` for IPv4 then IPv6 (`-` on the same host).
pub fn container_table(
    containers: &[Container],
    pairs: &[(&str, IpAddr)],
    results: &[Option<f64>],
) -> String {
    let mut out = String::from("containers:\n");
    for c in containers {
        let addrs: Vec<String> = c.addrs.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  {:<6} on {:<3} {}", c.name, c.host, addrs.join("  "));
    }
    let _ = writeln!(out, "\ncontainer pings (IPv4/IPv6), from row to column:");
    let mut line = format!("{:<6}", "");
    for c in containers {
        let _ = write!(line, " {:<9}", c.name);
    }
    let _ = writeln!(out, "{}", line.trim_end());
    for from in containers {
        let mut line = format!("{:<6}", from.name);
        for to in containers {
            let cell = if from.host == to.host {
                "-".to_owned()
            } else {
                let results: Vec<&str> = to
                    .addrs
                    .iter()
                    .map(|a| {
                        let ok = pairs
                            .iter()
                            .zip(results)
                            .find(|((f, t), _)| *f == from.name && t == a)
                            .is_some_and(|(_, r)| r.is_some());
                        if ok { "ok" } else { "FAIL" }
                    })
                    .collect();
                results.join("/")
            };
            let _ = write!(line, " {cell:<9}");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_addresses_stay_inside_the_subnet() {
        let v4: IpNet = "10.1.2.0/24".parse().expect("cidr");
        assert_eq!(nth_address(v4, 2).expect("fits").to_string(), "10.1.2.2/24");
        assert!(nth_address(v4, 256).is_err());
        let v6: IpNet = "fd00::/80".parse().expect("cidr");
        assert_eq!(nth_address(v6, 3).expect("fits").to_string(), "fd00::3/80");
    }

    #[test]
    fn table_marks_same_host_and_failures() {
        let a: IpAddr = "10.0.0.2".parse().expect("ip");
        let b: IpAddr = "10.0.1.2".parse().expect("ip");
        let containers = [
            Container {
                name: "n1c1".into(),
                host: "n1",
                addrs: vec![a],
            },
            Container {
                name: "n2c1".into(),
                host: "n2",
                addrs: vec![b],
            },
        ];
        let pairs = [("n1c1", b), ("n2c1", a)];
        let table = container_table(&containers, &pairs, &[Some(0.1), None]);
        let rows: Vec<&str> = table.lines().rev().take(2).collect();
        assert_eq!(rows, ["n2c1   FAIL      -", "n1c1   -         ok"]);
    }
}
