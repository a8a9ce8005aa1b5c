//! `meshd leave`: leave a network.

use clap::Args;

use super::daemon::with_daemon;
use super::output::print;
use super::{NetworkIdArg, StateArgs};

/// Leave a network: remove its addresses and routes from this host
///
/// The daemon stops talking to the network's peers and forgets its cached config. The
/// member record stays on the controller until an admin deletes it.
///
/// Example:
///
///   meshd leave 8056c2e21c000001
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LeaveArgs {
    /// Network to leave: 16 lowercase hex digits, e.g. 8056c2e21c000001
    #[arg(value_name = "NETWORK_ID")]
    pub network: NetworkIdArg,

    #[command(flatten)]
    pub state: StateArgs,
}

/// Runs `meshd leave`.
pub fn run(args: LeaveArgs) -> anyhow::Result<()> {
    let left = with_daemon(
        &args.state,
        |c| async move { Ok(c.leave(args.network).await?) },
    )?;
    print(&format!("left {}\n", left.left))
}
