//! `meshd controller`: run a controller replica; manage networks, members, routes and
//! replicas through the admin API. One file per subcommand; the admin subcommands are
//! clients of [`meshd_controller::admin_client`], their human output
//! [`meshd_controller::api::text`]'s.

use clap::{Args, Subcommand};

mod api;
mod init;
mod member;
pub(super) mod network;
mod network_update;
mod replica;
mod route;

use init::{InitArgs, RunArgs};
use member::MemberArgs;
use network::NetworkArgs;
use replica::ReplicaArgs;
use route::RouteArgs;

/// Run a controller replica; manage networks, members, routes and replicas
///
/// A controller holds all network state and hands signed network configs to nodes. `init`
/// and `run` operate a replica on this host; `network`, `member`, `route` and `replica`
/// are clients of the admin API of any replica (pass --api and --token, or --data on a
/// replica's host).
///
/// Example:
///
///   meshd controller init --data /var/lib/meshd-controller
///   meshd controller run --data /var/lib/meshd-controller
///   meshd controller network create --name prod --v4-pool 10.77.0.0/16 \
///       --container-pool 10.78.0.0/16 --data /var/lib/meshd-controller
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, arg_required_else_help = true)]
pub struct ControllerArgs {
    #[command(subcommand)]
    pub command: ControllerCommand,
}

/// The `meshd controller` subcommands.
#[derive(Debug, Subcommand)]
pub enum ControllerCommand {
    Init(InitArgs),
    Run(RunArgs),
    Network(NetworkArgs),
    Member(MemberArgs),
    Route(RouteArgs),
    Replica(ReplicaArgs),
}

/// Runs `meshd controller ...`.
pub fn run(args: ControllerArgs) -> anyhow::Result<()> {
    match args.command {
        ControllerCommand::Init(args) => init::init(args),
        ControllerCommand::Run(args) => init::run_replica(args),
        ControllerCommand::Network(args) => network::run(args),
        ControllerCommand::Member(args) => member::run(args),
        ControllerCommand::Route(args) => route::run(args),
        ControllerCommand::Replica(args) => replica::run(args),
    }
}
