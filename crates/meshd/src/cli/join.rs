//! `meshd join`: ask a controller to admit this host to a network.

use std::time::Duration;

use clap::Args;
use meshd_proto::NodeId;
use tokio::time::Instant;

use super::daemon::with_daemon;
use super::output::print;
use super::{NetworkIdArg, StateArgs};
use meshd_node::daemon::api::{NetworkStatus, NetworkView};
use meshd_node::daemon::controller_link::ControllerAddr;
use meshd_node::text::status::network_block;

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
    pub controller: Option<ControllerAddr>,

    #[command(flatten)]
    pub state: StateArgs,
}

/// How long `meshd join` waits for the controller's first answer.
const ANSWER_WAIT: Duration = Duration::from_secs(3);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Runs `meshd join`: asks the daemon to join, prints where the join stands, and waits a
/// moment for the controller's answer.
pub fn run(args: JoinArgs) -> anyhow::Result<()> {
    let nwid = args.network;
    with_daemon(&args.state, |client| async move {
        let joined = client.join(nwid, args.controller).await?;
        let node = joined.node_id;
        print(&format!(
            "node {node} joined {nwid}: {}\n",
            joined.network.status
        ))?;
        let mut network = joined.network;
        let deadline = Instant::now() + ANSWER_WAIT;
        while network.status == NetworkStatus::RequestingConfiguration && Instant::now() < deadline
        {
            tokio::time::sleep(POLL_INTERVAL).await;
            let status = client.status().await?;
            match status.networks.into_iter().find(|n| n.id == nwid) {
                Some(n) => network = n,
                // Left meanwhile (another `meshd leave`): nothing more to say.
                None => return Ok(()),
            }
        }
        print(&outcome(node, &network))
    })
}

/// What follows the first line: the network once the controller answered, or what it
/// still waits for.
fn outcome(node: NodeId, n: &NetworkView) -> String {
    match n.status {
        NetworkStatus::Ok => network_block(node, n),
        NetworkStatus::AccessDenied => format!(
            "{}: ACCESS_DENIED: an admin must authorize this node:\n  meshd controller member authorize {} {node}\n",
            n.id, n.id
        ),
        NetworkStatus::NotFound => format!(
            "{}: NOT_FOUND: {} does not know this network; check the id, or `meshd leave {}`\n",
            n.id,
            n.controllers.join(", "),
            n.id
        ),
        NetworkStatus::RequestingConfiguration => format!(
            "no answer from {} yet; `meshd status` shows where the join stands\n",
            n.controllers.join(", ")
        ),
    }
}
