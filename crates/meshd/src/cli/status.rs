//! `meshd status`: what this node is and which networks it is in.

use clap::Args;

use super::StateArgs;

/// Show this node: node id, controllers, networks, addresses, routes, peers
///
/// Asks the running daemon. Use it after `meshd join` to see whether the host has been
/// authorized yet, and to find the node id an admin needs for
/// `meshd controller member authorize`.
///
/// Examples:
///
///   meshd status
///   meshd status --json | jq -r .node_id
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    /// Print JSON for scripts instead of the human-readable summary. Default: off
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub state: StateArgs,
}

/// Runs `meshd status`.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`meshd status` is not available in this build yet")
}
