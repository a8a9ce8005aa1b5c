//! `meshd bench`: tunnel throughput to one peer, measured against the bench server of the
//! peer's daemon ([`meshd_node::daemon::bench`]) on its mesh address.
//!
//! The local daemon's status resolves the peer (node id or mesh address) and gives the
//! path and the MTU; its `GET /v1/cpu` gives its CPU time before and after. Resolving,
//! measuring and reporting are [`meshd_node::bench`]'s.

use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::time::Instant;

use clap::Args;
use meshd_node::bench::{
    BenchError, Measured, Plan, Progress, Target, measure, percent, read_retransmits, render,
    resolve, summarize,
};
use meshd_node::daemon::bench::{
    BENCH_PORT, CpuView, MAX_SECONDS, MAX_SESSIONS, Mode, UDP_HEADER_BYTES,
};

use super::daemon::with_daemon;
use super::output::{print, print_json};
use super::{Hinted, StateArgs};

/// Measure tunnel throughput to a peer, with a progress bar
///
/// Sends traffic through the encrypted tunnel to PEER for the given time and reports
/// throughput, packets per second, TCP retransmits (or, with --udp, loss), the path
/// (DIRECT or RELAY), the tunnel MTU and the CPU time both daemons spent, as a percentage
/// of one core. The peer must be online and in a network shared with this host; its
/// daemon answers on TCP and UDP port 9992 of its mesh addresses, with no setup.
///
/// TCP shows what an application gets; UDP sends as fast as it can (or at --rate) and
/// shows what arrives: loss at full speed means the path is slower than the sender, so
/// use --rate to see the loss at a given rate. TCP packets per second are estimated from
/// the bytes and the MTU; retransmits count all TCP of this host (its network namespace)
/// during the run.
///
/// Examples:
///
///   meshd bench 89e92ceee5
///   meshd bench 10.147.17.23 --seconds 30 --streams 4
///   meshd bench fc9c:56c2:e389:e92c:eee5::1 --udp --rate 200
///   meshd bench 89e92ceee5 --json | jq .mbit_per_s
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    /// The peer: its node id (10 lowercase hex digits, e.g. 89e92ceee5; then its mesh IPv4
    /// address is used) or one of its mesh addresses (IPv4, RFC4193 or 6PLANE)
    #[arg(value_name = "PEER")]
    pub peer: String,

    /// How long to send, in seconds (at most 60)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SECONDS))
    )]
    pub seconds: u32,

    /// Number of parallel streams (at most 8)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=MAX_SESSIONS as i64)
    )]
    pub streams: u16,

    /// Send UDP instead of TCP and report loss. Default: off (TCP)
    #[arg(long)]
    pub udp: bool,

    /// With --udp: bytes per datagram (the 16-byte session header included); keep it
    /// below the tunnel MTU minus 48 to avoid fragmentation
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 1200,
        requires = "udp",
        value_parser = clap::value_parser!(u16).range(UDP_HEADER_BYTES as i64..=65000)
    )]
    pub size: u16,

    /// With --udp: send at this many Mbit/s in total instead of as fast as possible
    #[arg(long, value_name = "MBIT_PER_S", requires = "udp", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Print the result as JSON (and no progress bar). Default: off
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub state: StateArgs,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{text:?} is not a positive number of Mbit/s")),
    }
}

/// Runs `meshd bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let status = with_daemon(&args.state, |c| async move { Ok(c.status().await?) })?;
    let target = resolve(&status, &args.peer)?;
    let mtu = status
        .networks
        .iter()
        .find(|n| n.id == target.network)
        .and_then(|n| n.mtu);
    let mode = if args.udp { Mode::Udp } else { Mode::Tcp };
    let plan = Plan {
        address: SocketAddr::new(target.address, BENCH_PORT),
        mode,
        seconds: args.seconds,
        streams: args.streams,
        size: usize::from(args.size),
        rate_bytes_per_s: args.rate.map(|r| r * 1e6 / 8.0),
    };

    let retrans0 = (mode == Mode::Tcp).then(read_retransmits).flatten();
    let (cpu0, t0) = (local_cpu_ms(&args.state), Instant::now());
    let show = !args.json && io::stderr().is_terminal();
    let outcome = if show {
        let mut bar = Progress::new(plan.seconds);
        let outcome = measure(&plan, &mut |elapsed, bytes| bar.update(elapsed, bytes));
        bar.clear();
        outcome
    } else {
        measure(&plan, &mut |_, _| {})
    };
    let outcome = outcome.map_err(|e| for_peer(e, &target))?;
    let (cpu1, t1) = (local_cpu_ms(&args.state), Instant::now());
    let retrans1 = (mode == Mode::Tcp).then(read_retransmits).flatten();
    // The path as of now: a session may have come up with the bench traffic.
    let path = with_daemon(&args.state, |c| async move { Ok(c.status().await?) })
        .ok()
        .and_then(|s| {
            s.peers
                .iter()
                .find(|p| p.node_id == target.node && p.network == target.network)
                .map(|p| p.path)
        })
        .unwrap_or(target.path);

    let local_wall_ms = (t1 - t0).as_secs_f64() * 1000.0;
    let result = summarize(
        &plan,
        &target,
        &outcome,
        Measured {
            path,
            mtu,
            retransmits: retrans0.zip(retrans1).map(|(a, b)| b.saturating_sub(a)),
            cpu_local_percent: cpu0
                .zip(cpu1)
                .map(|(a, b)| percent(b.saturating_sub(a) as f64, local_wall_ms)),
        },
    );
    if args.json {
        print_json(&result)
    } else {
        print(&render(&result, &target, &outcome))
    }
}

/// The daemon's CPU time, or `None` (an older daemon, no /proc).
fn local_cpu_ms(state: &StateArgs) -> Option<u64> {
    let body = with_daemon(state, |c| async move { Ok(c.get_json("/v1/cpu").await?) }).ok()?;
    serde_json::from_slice::<CpuView>(&body).ok()?.cpu_ms
}

/// A failed measurement as the user reads it, with a hint when the peer did not answer.
fn for_peer(error: BenchError, target: &Target) -> anyhow::Error {
    match error {
        BenchError::Unreachable(why) => anyhow::Error::new(Hinted {
            error: anyhow::anyhow!(
                "no bench session with peer {} at {}: {why}",
                target.node,
                SocketAddr::new(target.address, BENCH_PORT)
            ),
            hint: "the peer's daemon may be older than this one (no bench server), or its \
                       mesh address is unreachable: `meshd peers` shows the path to it"
                .to_owned(),
        }),
        other => anyhow::Error::msg(format!("bench to peer {}: {other}", target.node)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_positive_numbers() {
        assert!(parse_rate("0").is_err() && parse_rate("inf").is_err());
        assert_eq!(parse_rate("12.5"), Ok(12.5));
    }
}
