//! `meshd join`: ask a controller to admit this host to a network.

use clap::Args;

use super::{NetworkIdArg, StateArgs};

/// Ask the controller to admit this host to a network
///
/// The running daemon sends a join request; the host becomes a member (unauthorized)
/// and gets its addresses once an admin runs `meshd controller member authorize`.
/// `meshd status` shows where the join stands.
///
/// Example:
///
///   meshd join 8056c2e21c000001 --controller ctl.example.com:9994
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct JoinArgs {
    /// Network to join: 16 lowercase hex digits, e.g. 8056c2e21c000001
    #[arg(value_name = "NETWORK_ID")]
    pub network: NetworkIdArg,

    /// Controller replica to send the request to, as HOST:PORT. Default: the controllers
    /// the daemon already knows (from `meshd daemon --controller` or earlier joins)
    #[arg(long, value_name = "HOST:PORT")]
    pub controller: Option<String>,

    #[command(flatten)]
    pub state: StateArgs,
}

/// Runs `meshd join`.
pub fn run(args: JoinArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`meshd join` is not available in this build yet")
}
