//! `meshd status`: what this node is and which networks it is in. The human form is
//! [`meshd_node::text::status`]'s; `--json` prints the daemon's `GET /v1/status` answer as
//! it comes.

use clap::Args;

use super::StateArgs;
use super::daemon::with_daemon;
use super::output::print;
use meshd_node::text::status::render;

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
    if args.json {
        let json = with_daemon(&args.state, |c| async move {
            Ok(c.get_json("/v1/status").await?)
        })?;
        return print(&String::from_utf8_lossy(&json));
    }
    let status = with_daemon(&args.state, |c| async move { Ok(c.status().await?) })?;
    print(&render(&status))
}
