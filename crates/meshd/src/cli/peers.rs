//! `meshd peers`: one line per peer.

use clap::Args;

use super::StateArgs;

/// List peers: path (DIRECT or RELAY), endpoint, RTT, rx/tx, handshake age
///
/// Asks the running daemon. A peer on RELAY cannot be reached directly (usually a NAT or
/// firewall on one side); its traffic goes through a controller replica, still
/// end-to-end encrypted.
///
/// Examples:
///
///   meshd peers
///   meshd peers --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PeersArgs {
    /// Print JSON for scripts instead of the table. Default: off
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub state: StateArgs,
}

/// Runs `meshd peers`.
pub fn run(args: PeersArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`meshd peers` is not available in this build yet")
}
