//! `meshd peers`: one line per peer.

use clap::Args;

use super::StateArgs;
use super::daemon::with_daemon;
use super::output::print;
use meshd_node::text::peers::render;

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
    if args.json {
        let json = with_daemon(&args.state, |c| async move {
            Ok(c.get_json("/v1/peers").await?)
        })?;
        return print(&String::from_utf8_lossy(&json));
    }
    let status = with_daemon(&args.state, |c| async move { Ok(c.status().await?) })?;
    print(&render(&status))
}
