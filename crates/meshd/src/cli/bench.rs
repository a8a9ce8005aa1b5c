//! `meshd bench`: tunnel throughput to one peer.

use clap::Args;

use super::StateArgs;

/// Measure tunnel throughput to a peer, with a progress bar
///
/// Sends traffic through the encrypted tunnel to PEER for the given time and reports
/// throughput (and, with --udp, loss). The peer must be online and in a network shared
/// with this host.
///
/// Examples:
///
///   meshd bench 89e92ceee5
///   meshd bench fc9c:56c2:e389:e92c:eee5::1 --seconds 30 --streams 4
///   meshd bench 89e92ceee5 --udp --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    /// The peer: its node id (10 lowercase hex digits, e.g. 89e92ceee5) or one of its mesh
    /// addresses
    #[arg(value_name = "PEER")]
    pub peer: String,

    /// How long to send, in seconds
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub seconds: u32,

    /// Number of parallel streams
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub streams: u16,

    /// Send UDP instead of TCP and report loss. Default: off (TCP)
    #[arg(long)]
    pub udp: bool,

    /// Print the result as JSON (and no progress bar). Default: off
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub state: StateArgs,
}

/// Runs `meshd bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`meshd bench` is not available in this build yet")
}
