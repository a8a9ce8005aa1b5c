//! `meshd simulate`: the in-memory protocol simulator.

use std::time::Duration;

use clap::Args;
use meshd_proto::addr;
use meshd_proto::sim::{LinkModel, Simulation, payload_of};
use meshd_proto::tunnel::DropReason;

/// Run the in-memory protocol simulator with a virtual clock
///
/// Simulates NODES nodes, a controller and a lossy network in one process, with no
/// sockets and no root, for SECONDS of virtual time. The same seed gives the same run.
///
/// Example:
///
///   meshd simulate --nodes 5 --seconds 600 --loss 10 --seed 42
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SimulateArgs {
    /// Number of simulated nodes
    #[arg(
        long,
        value_name = "N",
        default_value_t = 3,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub nodes: u32,

    /// Virtual time to simulate, in seconds
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub seconds: u64,

    /// Percentage of packets the simulated network drops (0 to 100)
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0, value_parser = parse_percent)]
    pub loss: f64,

    /// Seed of the random generator, to repeat a run. Default: a random seed
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

/// Parses a percentage between 0 and 100 (fractions allowed).
fn parse_percent(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not between 0 and 100"))
    }
}

/// Runs `meshd simulate`: every node sends to every other node ten times a second for the
/// whole run, over a lossy, reordering network, then the delivery table is printed.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let nodes = usize::try_from(args.nodes)?;
    anyhow::ensure!(nodes <= 200, "--nodes is at most 200 (got {nodes})");
    let seed = args.seed.unwrap_or_else(random_seed);
    let link = LinkModel {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        loss: args.loss / 100.0,
    };
    let started = std::time::Instant::now();
    let mut sim = Simulation::new(nodes, link, seed);
    let nwid = sim.config.network_id;
    println!(
        "meshd simulate: {nodes} nodes, {} s of virtual time, {}% loss, 20 ms + up to 10 ms latency, seed {seed}",
        args.seconds, args.loss
    );
    println!(
        "network {nwid}  6PLANE {}  RFC4193 {}",
        addr::sixplane_network_prefix(nwid),
        addr::rfc4193_network_prefix(nwid)
    );
    println!();
    println!("{:<12} {:<15} {:<30} CONTAINERS", "NODE", "IPV4", "6PLANE");
    for n in &sim.nodes {
        let id = n.identity.node_id();
        let subnet = sim.config.member(id).and_then(|m| m.container_subnet);
        println!(
            "{:<12} {:<15} {:<30} {}",
            id,
            n.ipv4,
            addr::sixplane_addr(nwid, id),
            subnet.map(|s| s.to_string()).unwrap_or_default()
        );
    }

    let mut sent = vec![vec![0u64; nodes]; nodes];
    let mut refused = 0u64;
    let rounds = args.seconds * 10;
    for round in 0..rounds {
        for (from, row) in sent.iter_mut().enumerate() {
            for (to, count) in row.iter_mut().enumerate() {
                if from != to {
                    let payload = format!("{from}>{to}#{round}");
                    match sim.send(from, to, payload.as_bytes()) {
                        Ok(()) => *count += 1,
                        Err(_) => refused += 1,
                    }
                }
            }
        }
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(Duration::from_secs(1));

    println!();
    println!(
        "{:<12} {:<12} {:>8} {:>10} {:>7} {:>11} {:>8}",
        "FROM", "TO", "SENT", "DELIVERED", "RATE", "HANDSHAKES", "RTT"
    );
    let mut total = (0u64, 0u64);
    for (from, row) in sent.iter().enumerate() {
        for (to, &count) in row.iter().enumerate() {
            if from == to {
                continue;
            }
            let prefix = format!("{from}>{to}#");
            let delivered = sim.nodes[to]
                .received
                .iter()
                .filter(|(_, p)| payload_of(p).starts_with(prefix.as_bytes()))
                .count() as u64;
            total.0 += count;
            total.1 += delivered;
            let status = sim.nodes[from].tunnel.peer_status(sim.node_id(to), sim.now);
            let (handshakes, rtt) = status.map_or((0, None), |s| (s.handshakes, s.rtt));
            println!(
                "{:<12} {:<12} {:>8} {:>10} {:>6.1}% {:>11} {:>8}",
                sim.node_id(from),
                sim.node_id(to),
                count,
                delivered,
                percent(delivered, count),
                handshakes,
                rtt.map(|d| format!("{} ms", d.as_millis()))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    println!();
    let mut drops: Vec<String> = Vec::new();
    for reason in DropReason::ALL {
        let n: u64 = sim
            .nodes
            .iter()
            .map(|n| n.tunnel.stats().dropped(*reason))
            .sum();
        if n > 0 {
            drops.push(format!("{reason} {n}"));
        }
    }
    println!(
        "delivered {} of {} packets ({:.1}%); the wire lost {} datagrams; {} packets refused while handshakes ran",
        total.1,
        total.0,
        percent(total.1, total.0),
        sim.lost,
        refused
    );
    println!(
        "drops counted by the tunnels: {}",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        }
    );
    println!(
        "simulated {} s in {:.2} s of real time",
        args.seconds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn random_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
