//! The demo's nine steps: the lab, a controller, a network, three daemons, join, authorize,
//! host-to-host pings, containers from `meshd docker-config`, container-to-container pings.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use meshd_lab::Lab;
use meshd_proto::{NetworkId, NodeId, addr};
use serde_json::Value;

use crate::DemoError;
use crate::commands::{CTL, Meshd, NODES, network, ok_stdout, wait_for};
use crate::containers::container_table;
use crate::report::{Summary, tail};

const CHANNEL_PORT: u16 = 9994;
const API_PORT: u16 = 9995;
const NODE_PORT: u16 = 9993;
const STEPS: usize = 9;

/// One run of the demo in a lab.
#[derive(Debug)]
pub struct Demo<'a> {
    meshd: Meshd<'a>,
    start: Instant,
}

#[derive(Debug)]
struct Joined {
    role: &'static str,
    node: NodeId,
    addrs: Vec<(&'static str, IpAddr)>,
}

impl<'a> Demo<'a> {
    /// A demo in `lab` that runs `exe`, timing its steps from `start`.
    pub fn new(lab: &'a mut Lab, exe: String, start: Instant) -> Self {
        Demo {
            meshd: Meshd { lab, exe },
            start,
        }
    }
}

impl Demo<'_> {
    fn step(&self, n: usize, what: &str) {
        println!(
            "[{n}/{STEPS}] {what}  ({:.1} s)",
            self.start.elapsed().as_secs_f64()
        );
    }

    pub fn run(mut self) -> Result<Summary, DemoError> {
        // 1. The lab.
        let mut roles = vec![CTL];
        roles.extend(NODES);
        for role in &roles {
            self.meshd.lab.add_host(role)?;
        }
        self.step(
            1,
            &format!(
                "lab: {} namespaces {}-{{switch,{}}} on bridge {}, underlay {}/24: ok",
                self.meshd.lab.namespaces().len(),
                self.meshd.lab.naming().namespace_prefix,
                roles.join(","),
                self.meshd.lab.bridge(),
                self.meshd.lab.naming().subnet
            ),
        );

        // 2. The controller.
        let channel = format!("{}:{CHANNEL_PORT}", self.meshd.lab.host(CTL).ip);
        let api = format!("127.0.0.1:{API_PORT}");
        let data = self.meshd.state(CTL);
        self.meshd
            .ctl(&["init", "--listen", &channel, "--api-listen", &api])?;
        let log = self.meshd.lab.dir().join("ctl.log");
        let exe = self.meshd.exe.clone();
        let pid = self
            .meshd
            .lab
            .spawn(CTL, &[&exe, "controller", "run", "--data", &data], &log)?;
        let up = wait_for(Duration::from_secs(20), || {
            if self.meshd.lab.exited(pid).is_some() {
                return Err(DemoError::Exited {
                    what: "the controller".to_owned(),
                    log_tail: tail(&log),
                });
            }
            Ok(self.meshd.ctl(&["network", "list"]).ok())
        })?;
        if up.is_none() {
            return Err(DemoError::Timeout(
                "the controller's API did not answer within 20 s".to_owned(),
            ));
        }
        self.step(
            2,
            &format!("controller running on {channel} (pid {}): ok", pid.pid),
        );

        // 3. A network.
        let created = self.meshd.ctl(&["network", "create", "--name", "demo"])?;
        let nwid: NetworkId = created
            .trim()
            .parse()
            .map_err(|e| DemoError::Output(format!("`network create` printed {created:?}: {e}")))?;
        self.step(3, &format!("network {nwid} created: ok"));

        // 4. Daemons.
        let port = NODE_PORT.to_string();
        let mut pids = Vec::new();
        for role in NODES {
            let state = self.meshd.state(role);
            let log = self.meshd.lab.dir().join(format!("{role}.log"));
            let pid = self.meshd.lab.spawn(
                role,
                &[
                    &exe,
                    "daemon",
                    "--state",
                    &state,
                    "--port",
                    &port,
                    "--controller",
                    &channel,
                    "--configure-forwarding",
                ],
                &log,
            )?;
            pids.push((role, pid, log));
        }
        for (role, pid, log) in &pids {
            let up = wait_for(Duration::from_secs(20), || {
                if self.meshd.lab.exited(*pid).is_some() {
                    return Err(DemoError::Exited {
                        what: format!("{role}: the daemon"),
                        log_tail: tail(log),
                    });
                }
                self.meshd.status(role)
            })?;
            if up.is_none() {
                return Err(DemoError::Timeout(format!(
                    "{role}: the daemon's API did not answer within 20 s"
                )));
            }
        }
        let listed: Vec<String> = pids
            .iter()
            .map(|(r, p, _)| format!("{r}={}", p.pid))
            .collect();
        self.step(
            4,
            &format!("started 3 daemons (pids {}): ok", listed.join(" ")),
        );

        // 5. Join: not admitted yet.
        for role in NODES {
            let out = self.meshd.node_cli(role, &["join", &nwid.to_string()])?;
            ok_stdout(&["meshd", role, "join"], out)?;
        }
        let statuses = self.meshd.wait_network_status(nwid, "ACCESS_DENIED")?;
        let mut nodes = Vec::new();
        for (role, s) in NODES.into_iter().zip(&statuses) {
            let node: NodeId = s["node_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| {
                    DemoError::Output(format!("{role}: no valid node_id in its status"))
                })?;
            nodes.push((role, node));
        }
        let listed: Vec<String> = nodes.iter().map(|(r, n)| format!("{r}={n}")).collect();
        self.step(
            5,
            &format!("3 nodes joined ({}): ACCESS_DENIED", listed.join(" ")),
        );

        // 6. Authorize: OK, with addresses.
        for (_, node) in &nodes {
            self.meshd
                .ctl(&["member", "authorize", &nwid.to_string(), &node.to_string()])?;
        }
        let statuses = self.meshd.wait_network_status(nwid, "OK")?;
        let mut joined = Vec::new();
        for ((role, node), s) in nodes.iter().zip(&statuses) {
            let v4 = network(s, nwid)
                .and_then(|n| n["addresses"].as_array())
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
                .find(IpAddr::is_ipv4)
                .ok_or_else(|| {
                    DemoError::Output(format!("{role}: no IPv4 address in its status"))
                })?;
            joined.push(Joined {
                role,
                node: *node,
                addrs: vec![
                    ("IPv4", v4),
                    ("RFC4193", IpAddr::V6(addr::rfc4193_addr(nwid, *node))),
                    ("6PLANE", IpAddr::V6(addr::sixplane_addr(nwid, *node))),
                ],
            });
        }
        let listed: Vec<String> = joined
            .iter()
            .map(|j| format!("{}={}", j.role, j.addrs[0].1))
            .collect();
        self.step(6, &format!("authorized 3 nodes: OK ({})", listed.join(" ")));

        // 7. Pings from n1 across the mesh, every family: first until they all answer
        // (sessions come up), then measured.
        let targets: Vec<(&str, &str, IpAddr)> = joined[1..]
            .iter()
            .flat_map(|j| j.addrs.iter().map(move |(fam, a)| (j.role, *fam, *a)))
            .collect();
        let from = joined[0].role;
        let pairs: Vec<(&str, IpAddr)> = targets.iter().map(|(_, _, a)| (from, *a)).collect();
        let (converged, results) = self.converge(&pairs, 3)?;
        let ok = results.iter().filter(|r| r.is_some()).count();
        self.step(
            7,
            &format!(
                "pinged {} addresses from {from}: {ok}/{} ok",
                targets.len(),
                targets.len()
            ),
        );

        // 8. Containers: each host's bridge on the subnets docker-config gives it.
        let containers = self.meshd.wire_containers(nwid)?;
        let listed: Vec<String> = containers
            .iter()
            .map(|c| format!("{}={}", c.name, c.addrs[0]))
            .collect();
        self.step(
            8,
            &format!(
                "{} containers behind their hosts' bridges, from `meshd docker-config`: {}",
                containers.len(),
                listed.join(" ")
            ),
        );

        // 9. Every container pings every container on the other hosts, IPv4 and IPv6.
        let pairs: Vec<(&str, IpAddr)> = containers
            .iter()
            .flat_map(|c| {
                containers
                    .iter()
                    .filter(|d| d.host != c.host)
                    .flat_map(|d| d.addrs.iter().map(|a| (c.name.as_str(), *a)))
            })
            .collect();
        let (containers_converged, container_results) = self.converge(&pairs, 2)?;
        let container_ok = container_results.iter().filter(|r| r.is_some()).count();
        self.step(
            9,
            &format!(
                "container to container across hosts: {container_ok}/{} pings ok",
                pairs.len()
            ),
        );

        // The node's own view, and the ping tables.
        println!();
        println!("$ meshd status    (on {from}, node {})", joined[0].node);
        let out = self.meshd.node_cli(from, &["status"])?;
        print!("{}", ok_stdout(&["meshd", "status"], out)?);
        println!();
        println!(
            "{:<5} {:<4} {:<8} {:<40} {:<6} RTT",
            "from", "to", "family", "address", "result"
        );
        for ((to, fam, a), r) in targets.iter().zip(&results) {
            let (result, rtt) = match r {
                Some(ms) => ("ok", format!("{ms:.3} ms")),
                None => ("FAIL", "-".to_owned()),
            };
            println!("{from:<5} {to:<4} {fam:<8} {a:<40} {result:<6} {rtt}");
        }
        println!();
        print!(
            "{}",
            container_table(&containers, &pairs, &container_results)
        );
        println!();
        let pids: Vec<String> = self.meshd.lab.pids().iter().map(u32::to_string).collect();
        println!(
            "lab {}: namespaces {}; pids {}; state {}",
            self.meshd.lab.naming().namespace_prefix,
            self.meshd.lab.namespaces().join(" "),
            pids.join(" "),
            self.meshd.lab.dir().display()
        );
        if ok != targets.len() || !converged {
            return Err(DemoError::Pings {
                failed: targets.len() - ok,
                total: targets.len(),
                what: "pings",
            });
        }
        if container_ok != pairs.len() || !containers_converged {
            return Err(DemoError::Pings {
                failed: pairs.len() - container_ok,
                total: pairs.len(),
                what: "container pings",
            });
        }
        println!(
            "demo ok: 3 nodes on network {nwid}, {ok}/{} pings ok, {container_ok}/{} container \
             pings ok in {:.1} s",
            targets.len(),
            pairs.len(),
            self.start.elapsed().as_secs_f64()
        );
        Ok(Summary {
            nwid,
            peer_v4: joined[1].addrs[0].1,
        })
    }

    /// Pings every pair once until all answer (sessions come up with the first packet), for
    /// up to 20 s; then `count` echoes each, measured. Whether they all answered in time, and
    /// the measured results.
    pub(crate) fn converge(
        &self,
        pairs: &[(&str, IpAddr)],
        count: u32,
    ) -> Result<(bool, Vec<Option<f64>>), DemoError> {
        let converged = wait_for(Duration::from_secs(20), || {
            let results = self.meshd.pings(pairs, 1)?;
            Ok(results.iter().all(Option::is_some).then_some(()))
        })?;
        Ok((converged.is_some(), self.meshd.pings(pairs, count)?))
    }
}
