//! `meshd daemon`: the node, one per host.

use clap::Args;

use super::StateArgs;

/// Run the meshd node on this host (one per host; needs root)
///
/// The daemon owns this host's identity, its TUN interface, kernel addresses and routes,
/// and the encrypted UDP sessions to its peers. It keeps running on the last network config
/// it received while every controller is unreachable. The other commands (`join`,
/// `status`, `peers`, ...) talk to it over a Unix socket in the state directory. Needs
/// root (or CAP_NET_ADMIN); deploy/ has a systemd unit.
///
/// Example:
///
///   sudo meshd daemon --controller ctl.example.com:9994 --configure-forwarding
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub state: StateArgs,

    /// UDP port for encrypted traffic between peers; open it in your firewall
    #[arg(long, value_name = "N", default_value_t = 9993)]
    pub port: u16,

    /// Controller replica to use, as HOST:PORT; repeat for several replicas. Default: the
    /// controllers already saved in the state directory by earlier joins
    #[arg(long = "controller", value_name = "HOST:PORT")]
    pub controllers: Vec<String>,

    /// Enable IPv4/IPv6 forwarding on this host so that traffic flows between the mesh and
    /// the local container bridge. Default: off (forwarding settings are left as they are)
    #[arg(long)]
    pub configure_forwarding: bool,
}

/// Runs `meshd daemon`.
pub fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`meshd daemon` is not available in this build yet")
}
