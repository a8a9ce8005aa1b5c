//! `meshd controller route`: add and remove managed routes.

use clap::{Args, Subcommand};
use meshd_controller::api::requests::{parse_route_target, parse_via};
use meshd_controller::api::text;

use super::api::{ApiArgs, run as call};
use crate::cli::NetworkIdArg;
use crate::cli::output::print;

/// Add and remove managed routes (a prefix reached through one member)
///
/// Example:
///
///   meshd controller route add 8056c2e21c000001 192.168.50.0/24 --via 89e92ceee5
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, arg_required_else_help = true)]
pub struct RouteArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    #[command(subcommand)]
    pub command: RouteCommand,
}

/// The `meshd controller route` subcommands.
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    Add(RouteAddArgs),
    Remove(RouteRemoveArgs),
}

/// Route a prefix through a member, e.g. a LAN behind one host
///
/// Every member then sends traffic for CIDR to that member; the member must forward it
/// (e.g. `meshd daemon --configure-forwarding`).
///
/// With several --via, the route fails over: members send to the first gateway that is
/// alive, move to the next within about 3 seconds when it dies, and go back once it has
/// been alive for 5 seconds. `meshd status` on a member shows the gateway in use.
///
/// Examples:
///
///   meshd controller route add 8056c2e21c000001 192.168.50.0/24 --via 89e92ceee5
///   meshd controller route add 8056c2e21c000001 192.168.50.0/24 --via 10.77.0.12
///   meshd controller route add 8056c2e21c000001 192.168.50.0/24 --via 89e92ceee5 --via 5ba1c0ffee
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RouteAddArgs {
    /// The network: 16 lowercase hex digits
    #[arg(value_name = "NWID")]
    pub network: NetworkIdArg,

    /// The prefix to route, IPv4 or IPv6, e.g. 192.168.50.0/24
    #[arg(value_name = "CIDR")]
    pub target: String,

    /// A gateway member: its node id, or one of its mesh addresses. Repeat for failover,
    /// most preferred first (at most 8)
    #[arg(long, value_name = "NODE_ID|IP", required = true)]
    pub via: Vec<String>,
}

/// Remove a managed route
///
/// Example:
///
///   meshd controller route remove 8056c2e21c000001 192.168.50.0/24
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RouteRemoveArgs {
    /// The network: 16 lowercase hex digits
    #[arg(value_name = "NWID")]
    pub network: NetworkIdArg,

    /// The routed prefix, exactly as added
    #[arg(value_name = "CIDR")]
    pub target: String,
}

/// Runs `meshd controller route ...`.
pub(super) fn run(args: RouteArgs) -> anyhow::Result<()> {
    match args.command {
        RouteCommand::Add(add) => {
            let target = parse_route_target(&add.target)?;
            let gateways = add
                .via
                .iter()
                .map(|v| parse_via(v))
                .collect::<Result<Vec<_>, _>>()?;
            let route = call(&args.api, |c| async move {
                c.add_route(add.network, target, &gateways).await
            })?;
            print(&format!("added route {}\n", text::route_text(&route)))
        }
        RouteCommand::Remove(remove) => {
            let target = parse_route_target(&remove.target)?;
            let route = call(&args.api, |c| async move {
                c.remove_route(remove.network, target).await
            })?;
            print(&format!("removed route {}\n", text::route_text(&route)))
        }
    }
}
