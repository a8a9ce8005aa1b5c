//! `meshd controller network update`: change a network's settings.

use clap::Args;
use meshd_controller::api::requests::UpdateNetwork;
use meshd_controller::api::text;
use meshd_proto::config::Ipv6Egress;

use super::api::{ApiArgs, run as call};
use crate::cli::NetworkIdArg;
use crate::cli::output::{print, print_json};

/// Change a network's settings; members follow within seconds
///
/// Examples:
///
///   meshd controller network update 8056c2e21c000001 --ipv6-egress nat66
///   meshd controller network update 8056c2e21c000001 --name staging --mtu 1380
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, arg_required_else_help = true)]
pub struct NetworkUpdateArgs {
    /// The network: 16 lowercase hex digits
    #[arg(value_name = "NWID")]
    pub network: NetworkIdArg,

    /// New name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// New MTU of the network's interfaces
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1280..))]
    pub mtu: Option<u16>,

    /// nat66: members masquerade their containers' mesh IPv6 leaving through their own
    /// uplink; off: they do not
    #[arg(long, value_name = "nat66|off")]
    pub ipv6_egress: Option<Ipv6Egress>,

    /// Print the network as JSON for scripts instead of text. Default: off
    #[arg(long)]
    pub json: bool,
}

/// Runs `meshd controller network update`.
pub(super) fn run(api: &ApiArgs, update: NetworkUpdateArgs) -> anyhow::Result<()> {
    let req = UpdateNetwork {
        name: update.name.clone(),
        mtu: update.mtu,
        ipv6_egress: update.ipv6_egress,
    };
    if req == UpdateNetwork::default() {
        anyhow::bail!("nothing to change: give --name, --mtu or --ipv6-egress (see --help)");
    }
    let network = update.network;
    let net = call(
        api,
        |c| async move { c.update_network(network, &req).await },
    )?;
    if update.json {
        print_json(&net)
    } else {
        print(&text::network_details(&net))
    }
}
