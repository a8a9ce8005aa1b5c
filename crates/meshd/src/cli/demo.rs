//! `meshd demo`: a local multi-host mesh in network namespaces.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ipnet::IpNet;
use meshd_proto::{NetworkId, NodeId, addr};
use serde_json::Value;

use crate::cli::ResultExt;
use meshd_lab::{Lab, Naming, interrupt};
use meshd_node::docker::DockerSettings;

/// Build a local multi-host mesh in network namespaces (needs root)
///
/// Starts a controller and three "hosts", each in its own network namespace with its own
/// daemon, joins them to one network and authorizes them. Then, as on Docker hosts, gives
/// each host a bridge on the container subnets `meshd docker-config` prints for it, with two
/// "containers" (namespaces) behind it, and pings host to host and container to container
/// across the mesh over IPv4 and IPv6. Everything is removed at the end (also on Ctrl-C)
/// unless --keep is given.
///
/// Example:
///
///   sudo meshd demo
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DemoArgs {
    /// Leave the namespaces and processes running after the demo, to explore them.
    /// Default: off (everything is torn down)
    #[arg(long)]
    pub keep: bool,
}

const CTL: &str = "ctl";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const CHANNEL_PORT: u16 = 9994;
const API_PORT: u16 = 9995;
const NODE_PORT: u16 = 9993;
const STEPS: usize = 9;
/// "Containers" behind each host's bridge.
const CONTAINERS_PER_HOST: u8 = 2;
/// How long one `meshd` CLI call inside the lab may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the demo looks again while it waits for something to come up.
const POLL: Duration = Duration::from_millis(200);

/// Runs `meshd demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !meshd_lab::is_root() {
        return Err(anyhow::anyhow!(
            "`meshd demo` needs root: it creates network namespaces, veths and TUN devices"
        ))
        .hint("run it with sudo: sudo meshd demo");
    }
    let exe = std::env::current_exe().context("cannot find the meshd executable")?;
    let exe = exe
        .to_str()
        .context("the meshd executable's path is not UTF-8")?
        .to_owned();
    interrupt::install_signal_handler("the demo")?;
    let mut lab = Lab::new(Naming::demo(), &[])?;
    let result = Demo {
        lab: &mut lab,
        exe,
        start: Instant::now(),
    }
    .run();
    match result {
        Ok(summary) if args.keep => {
            lab.keep();
            print_keep(&lab, &summary);
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            // The logs are about to go with the lab's directory: show their ends first.
            if interrupt::check().is_ok() {
                print_log_tails(lab.dir());
            }
            Err(e.context("meshd demo failed"))
        } // `lab` drops here on every path: it cleans up unless kept.
    }
}

struct Demo<'a> {
    lab: &'a mut Lab,
    exe: String,
    start: Instant,
}

/// What a successful run leaves for `--keep`'s instructions.
struct Summary {
    nwid: NetworkId,
    /// n2's IPv4 address on the network.
    peer_v4: IpAddr,
}

#[derive(Debug)]
struct Joined {
    role: &'static str,
    node: NodeId,
    addrs: Vec<(&'static str, IpAddr)>,
}

impl Demo<'_> {
    fn step(&self, n: usize, what: &str) {
        println!(
            "[{n}/{STEPS}] {what}  ({:.1} s)",
            self.start.elapsed().as_secs_f64()
        );
    }

    fn state(&self, role: &str) -> String {
        self.lab.dir().join(role).display().to_string()
    }

    fn ctl_data(&self) -> String {
        self.lab.dir().join(CTL).display().to_string()
    }

    /// `meshd controller <args> --data D` on the controller host; its stdout on success.
    fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let data = self.ctl_data();
        let mut argv = vec![self.exe.as_str(), "controller"];
        argv.extend(args);
        argv.extend(["--data", &data]);
        ok_stdout(&argv, self.lab.exec_timeout(CTL, &argv, CLI_TIMEOUT)?)
    }

    /// `meshd <args> --state S` on a node host.
    fn node_cli(&self, role: &str, args: &[&str]) -> anyhow::Result<Output> {
        let state = self.state(role);
        let mut argv = vec![self.exe.as_str()];
        argv.extend(args);
        argv.extend(["--state", &state]);
        Ok(self.lab.exec_timeout(role, &argv, CLI_TIMEOUT)?)
    }

    /// A node's `status --json`, or `None` while its daemon does not answer.
    fn status(&self, role: &str) -> anyhow::Result<Option<Value>> {
        let out = self.node_cli(role, &["status", "--json"])?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(serde_json::from_slice(&out.stdout).ok())
    }

    /// Waits until every node's status for `nwid` is `want`; the last statuses.
    fn wait_network_status(&self, nwid: NetworkId, want: &str) -> anyhow::Result<Vec<Value>> {
        let mut last = Vec::new();
        let done = wait_for(Duration::from_secs(20), || {
            last.clear();
            for role in NODES {
                let s = self.status(role)?.unwrap_or(Value::Null);
                last.push(s);
            }
            Ok(last
                .iter()
                .all(|s| network_status(s, nwid) == Some(want))
                .then_some(()))
        })?;
        if done.is_none() {
            let seen: Vec<String> = NODES
                .iter()
                .zip(&last)
                .map(|(r, s)| format!("{r}={}", network_status(s, nwid).unwrap_or("?")))
                .collect();
            bail!(
                "timed out waiting for {want} on every node (seen: {})",
                seen.join(", ")
            );
        }
        Ok(last)
    }

    fn run(mut self) -> anyhow::Result<Summary> {
        // 1. The lab.
        let mut roles = vec![CTL];
        roles.extend(NODES);
        for role in &roles {
            self.lab.add_host(role)?;
        }
        self.step(
            1,
            &format!(
                "lab: {} namespaces {}-{{switch,{}}} on bridge {}, underlay {}/24: ok",
                self.lab.namespaces().len(),
                self.lab.naming().namespace_prefix,
                roles.join(","),
                self.lab.bridge(),
                self.lab.naming().subnet
            ),
        );

        // 2. The controller.
        let channel = format!("{}:{CHANNEL_PORT}", self.lab.host(CTL).ip);
        let api = format!("127.0.0.1:{API_PORT}");
        let data = self.ctl_data();
        self.ctl(&["init", "--listen", &channel, "--api-listen", &api])?;
        let log = self.lab.dir().join("ctl.log");
        let exe = self.exe.clone();
        let pid = self
            .lab
            .spawn(CTL, &[&exe, "controller", "run", "--data", &data], &log)?;
        let up = wait_for(Duration::from_secs(20), || {
            if self.lab.exited(pid).is_some() {
                bail!("the controller exited:\n{}", tail(&log));
            }
            Ok(self.ctl(&["network", "list"]).ok())
        })?;
        if up.is_none() {
            bail!("the controller's API did not answer within 20 s");
        }
        self.step(
            2,
            &format!("controller running on {channel} (pid {}): ok", pid.pid),
        );

        // 3. A network.
        let created = self.ctl(&["network", "create", "--name", "demo"])?;
        let nwid: NetworkId = created
            .trim()
            .parse()
            .with_context(|| format!("`network create` printed {created:?}"))?;
        self.step(3, &format!("network {nwid} created: ok"));

        // 4. Daemons.
        let port = NODE_PORT.to_string();
        let mut pids = Vec::new();
        for role in NODES {
            let state = self.state(role);
            let log = self.lab.dir().join(format!("{role}.log"));
            let pid = self.lab.spawn(
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
                if self.lab.exited(*pid).is_some() {
                    bail!("{role}: the daemon exited:\n{}", tail(log));
                }
                self.status(role)
            })?;
            if up.is_none() {
                bail!("{role}: the daemon's API did not answer within 20 s");
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
            let out = self.node_cli(role, &["join", &nwid.to_string()])?;
            ok_stdout(&["meshd", "join"], out).with_context(|| format!("{role}: join"))?;
        }
        let statuses = self.wait_network_status(nwid, "ACCESS_DENIED")?;
        let mut nodes = Vec::new();
        for (role, s) in NODES.into_iter().zip(&statuses) {
            let node: NodeId = s["node_id"]
                .as_str()
                .context("no node_id in status")?
                .parse()
                .context("a malformed node_id in status")?;
            nodes.push((role, node));
        }
        let listed: Vec<String> = nodes.iter().map(|(r, n)| format!("{r}={n}")).collect();
        self.step(
            5,
            &format!("3 nodes joined ({}): ACCESS_DENIED", listed.join(" ")),
        );

        // 6. Authorize: OK, with addresses.
        for (_, node) in &nodes {
            self.ctl(&["member", "authorize", &nwid.to_string(), &node.to_string()])?;
        }
        let statuses = self.wait_network_status(nwid, "OK")?;
        let mut joined = Vec::new();
        for ((role, node), s) in nodes.iter().zip(&statuses) {
            let v4 = network(s, nwid)
                .and_then(|n| n["addresses"].as_array())
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())
                .find(IpAddr::is_ipv4)
                .with_context(|| format!("{role}: no IPv4 address in its status"))?;
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
        let containers = self.wire_containers(nwid)?;
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
        let out = self.node_cli(from, &["status"])?;
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
        let pids: Vec<String> = self.lab.pids().iter().map(u32::to_string).collect();
        println!(
            "lab {}: namespaces {}; pids {}; state {}",
            self.lab.naming().namespace_prefix,
            self.lab.namespaces().join(" "),
            pids.join(" "),
            self.lab.dir().display()
        );
        if ok != targets.len() || !converged {
            bail!("{} of {} pings failed", targets.len() - ok, targets.len());
        }
        if container_ok != pairs.len() || !containers_converged {
            bail!(
                "{} of {} container pings failed",
                pairs.len() - container_ok,
                pairs.len()
            );
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

    /// Gives each host a bridge on the container subnets its `meshd docker-config` prints,
    /// and [`CONTAINERS_PER_HOST`] containers behind it (addresses `.2`, `.3`, … and `::2`,
    /// `::3`, …, the bridge's as gateway, the mesh MTU), as Docker would.
    fn wire_containers(&mut self, nwid: NetworkId) -> anyhow::Result<Vec<Container>> {
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
            let settings: DockerSettings = serde_json::from_str(&text)
                .with_context(|| format!("{host}: docker-config printed {text:?}"))?;
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
                    .collect::<anyhow::Result<_>>()?;
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

    /// Pings every pair once until all answer (sessions come up with the first packet), for
    /// up to 20 s; then `count` echoes each, measured. Whether they all answered in time, and
    /// the measured results.
    fn converge(
        &self,
        pairs: &[(&str, IpAddr)],
        count: u32,
    ) -> anyhow::Result<(bool, Vec<Option<f64>>)> {
        let converged = wait_for(Duration::from_secs(20), || {
            let results = self.pings(pairs, 1)?;
            Ok(results.iter().all(Option::is_some).then_some(()))
        })?;
        Ok((converged.is_some(), self.pings(pairs, count)?))
    }

    /// Pings each `(from, to)` at once (`count` echoes, 0.2 s apart): the average RTT in ms
    /// for each that answered.
    fn pings(&self, pairs: &[(&str, IpAddr)], count: u32) -> anyhow::Result<Vec<Option<f64>>> {
        let argvs: Vec<Vec<String>> = pairs
            .iter()
            .map(|(_, to)| {
                let mut argv = vec!["ping".to_owned()];
                if to.is_ipv6() {
                    argv.push("-6".to_owned());
                }
                argv.extend(
                    ["-n", "-c", &count.to_string(), "-W", "1", "-i", "0.2"].map(str::to_owned),
                );
                argv.push(to.to_string());
                argv
            })
            .collect();
        let argvs: Vec<Vec<&str>> = argvs
            .iter()
            .map(|a| a.iter().map(String::as_str).collect())
            .collect();
        let commands: Vec<(&str, &[&str])> = pairs
            .iter()
            .zip(&argvs)
            .map(|((from, _), a)| (*from, a.as_slice()))
            .collect();
        let outs = self
            .lab
            .exec_all(&commands, Duration::from_secs(10))
            .context("cannot run ping")?;
        Ok(outs
            .iter()
            .map(|o| {
                o.status
                    .success()
                    .then(|| avg_rtt(&String::from_utf8_lossy(&o.stdout)))
                    .flatten()
            })
            .collect())
    }
}

/// A namespace standing in for a Docker container on one of the hosts.
#[derive(Debug)]
struct Container {
    name: String,
    host: &'static str,
    /// IPv4, then IPv6 if the network has 6PLANE.
    addrs: Vec<IpAddr>,
}

/// Polls `done` every [`POLL`] until it gives `Some` or `timeout` passes (`None`); an
/// interrupt is an error.
fn wait_for<T>(
    timeout: Duration,
    done: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<Option<T>> {
    interrupt::wait_for(timeout, POLL, done)
}

/// Address `n` of `subnet` with the subnet's prefix length (`n` = 1 is the gateway's).
fn nth_address(subnet: IpNet, n: u128) -> anyhow::Result<IpNet> {
    let addr = match subnet {
        IpNet::V4(net) => IpAddr::V4(std::net::Ipv4Addr::from(
            u32::from(net.network()) + u32::try_from(n)?,
        )),
        IpNet::V6(net) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(net.network()) + n)),
    };
    anyhow::ensure!(subnet.contains(&addr), "{subnet} has no address {n}");
    Ok(IpNet::new(addr, subnet.prefix_len())?)
}

/// Container-to-container results as a matrix: a row per container with its addresses, a
/// column per container, `ok`/`FAIL` for IPv4 then IPv6 (`-` on the same host).
fn container_table(
    containers: &[Container],
    pairs: &[(&str, IpAddr)],
    results: &[Option<f64>],
) -> String {
    use std::fmt::Write as _;
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

/// The average from ping's `rtt min/avg/max/mdev = a/b/c/d ms` line.
fn avg_rtt(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("min/avg/max"))?;
    line.split('=')
        .nth(1)?
        .trim()
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

fn network(status: &Value, nwid: NetworkId) -> Option<&Value> {
    status["networks"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == nwid.to_string())
}

fn network_status(status: &Value, nwid: NetworkId) -> Option<&str> {
    network(status, nwid).and_then(|n| n["status"].as_str())
}

fn ok_stdout(argv: &[&str], out: Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn print_log_tails(dir: &Path) {
    for role in std::iter::once(CTL).chain(NODES) {
        let log: PathBuf = dir.join(format!("{role}.log"));
        if log.exists() {
            eprintln!("--- {role}.log (tail)\n{}", tail(&log));
        }
    }
}

fn print_keep(lab: &Lab, summary: &Summary) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "meshd".to_owned());
    println!();
    println!("--keep: the lab is still running. To look around (as root):");
    for role in NODES {
        println!(
            "  ip netns exec {} {exe} status --state {}",
            lab.host(role).netns,
            lab.dir().join(role).display()
        );
    }
    println!(
        "  ip netns exec {} {exe} controller member list {} --data {}",
        lab.host(CTL).netns,
        summary.nwid,
        lab.dir().join(CTL).display()
    );
    println!(
        "  ip netns exec {} ping {}    (n1 -> n2 over the mesh; logs: {}/*.log)",
        lab.host(NODES[0]).netns,
        summary.peer_v4,
        lab.dir().display()
    );
    println!("To remove it (as root):");
    let namespaces = lab.namespaces().join(" ");
    println!(
        "  for ns in {namespaces}; do ip netns pids $ns | xargs -r kill; ip netns del $ns; \
         done; rm -rf {}",
        lab.dir().display()
    );
}
