//! `meshd controller`: run a controller replica; manage networks, members, routes and
//! replicas through the admin API.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use meshd_controller::service::{self, ReplicaSettings};

use super::{NetworkIdArg, NodeIdArg};

pub(super) mod admin;
pub(super) mod output;

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

/// How admin commands reach the controller's HTTP API.
///
/// The options are global: they may come before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of any replica's admin API, e.g. http://10.0.0.5:9995.
    /// Default: the address in --data
    #[arg(long, value_name = "URL", env = "MESHD_API", global = true)]
    pub api: Option<String>,

    /// Bearer token for the admin API. Default: the token in --data
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MESHD_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,

    /// Data directory of a replica on this host; the API address and token are read from
    /// it (--api and --token override them). Default: none
    #[arg(long, value_name = "DIR", global = true)]
    pub data: Option<PathBuf>,
}

/// Create a new controller replica: its keys, storage and admin token
///
/// Without --join this starts a new controller cluster of one replica; with --join the
/// replica is meant to be added to an existing cluster (see `replica add`). Start it
/// afterwards with `meshd controller run`.
///
/// Example:
///
///   meshd controller init --data /var/lib/meshd-controller --listen [::]:9994
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct InitArgs {
    /// Directory for the replica's keys, storage and admin token (created; must not
    /// already hold a replica)
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// Address and UDP port where nodes and other replicas reach this replica (QUIC)
    #[arg(long, value_name = "ADDR:PORT", default_value = "[::]:9994")]
    pub listen: SocketAddr,

    /// Address and TCP port of the admin HTTP API and web panel
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9995")]
    pub api_listen: SocketAddr,

    /// Admin API URL of a replica of an existing cluster to join. Default: none (start a
    /// new cluster)
    #[arg(long, value_name = "URL")]
    pub join: Option<String>,
}

/// Run a controller replica created with `meshd controller init`
///
/// Serves nodes (join requests, network configs, endpoint probes, relaying) and the
/// admin API until stopped. deploy/ has a systemd unit.
///
/// Example:
///
///   meshd controller run --data /var/lib/meshd-controller
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// Data directory of the replica, as given to `meshd controller init`
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
}

/// Create, list, show and delete networks
///
/// Example:
///
///   meshd controller network create --name prod --v4-pool 10.77.0.0/16
///   meshd controller network list
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, arg_required_else_help = true)]
pub struct NetworkArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    #[command(subcommand)]
    pub command: NetworkCommand,
}

/// The `meshd controller network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    Create(NetworkCreateArgs),
    List(NetworkListArgs),
    Show(NetworkShowArgs),
    Delete(NetworkDeleteArgs),
}

/// Create a network and print its id
///
/// Every member gets IPv6 addresses (6PLANE and RFC4193 unless switched off), an IPv4
/// address from the --v4-pool ranges, and a container subnet from --container-pool.
///
/// Example:
///
///   meshd controller network create --name prod --v4-pool 10.77.0.0/16 \
///       --container-pool 10.78.0.0/16 --container-prefix 24
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct NetworkCreateArgs {
    /// Human-readable name of the network
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// IPv4 range members' addresses are taken from, e.g. 10.77.0.0/16; repeat for
    /// several ranges. Default: 10.147.0.0/16
    #[arg(long = "v4-pool", value_name = "CIDR")]
    pub v4_pools: Vec<String>,

    /// IPv4 range container subnets are taken from, e.g. 10.78.0.0/16; it must not
    /// overlap the --v4-pool ranges. Default: 172.28.0.0/14
    #[arg(long, value_name = "CIDR")]
    pub container_pool: Option<String>,

    /// Prefix length of each member's container subnet
    #[arg(
        long,
        value_name = "LEN",
        default_value_t = 24,
        value_parser = clap::value_parser!(u8).range(1..=32)
    )]
    pub container_prefix: u8,

    /// Do not give members 6PLANE IPv6 addresses (fcXX:..., a /80 per node). Default: on
    #[arg(long = "no-6plane")]
    pub no_6plane: bool,

    /// Do not give members RFC4193 IPv6 addresses (fdXX:..., a /128 per node). Default: on
    #[arg(long)]
    pub no_rfc4193: bool,

    /// MTU of the network's interfaces on every member (1420 fits a 1500-byte underlay,
    /// IPv4 or IPv6)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1420,
        value_parser = clap::value_parser!(u16).range(1280..)
    )]
    pub mtu: u16,
}

/// List networks
///
/// Example:
///
///   meshd controller network list --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct NetworkListArgs {
    /// Print JSON for scripts instead of a table. Default: off
    #[arg(long)]
    pub json: bool,
}

/// Show one network: its settings, pools, routes and member count
///
/// Example:
///
///   meshd controller network show 8056c2e21c000001
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct NetworkShowArgs {
    /// The network: 16 lowercase hex digits
    #[arg(value_name = "NWID")]
    pub network: NetworkIdArg,

    /// Print JSON for scripts instead of text. Default: off
    #[arg(long)]
    pub json: bool,
}

/// Delete a network and all its members
///
/// Nodes drop the network at their next config update.
///
/// Example:
///
///   meshd controller network delete 8056c2e21c000001
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct NetworkDeleteArgs {
    /// The network: 16 lowercase hex digits
    #[arg(value_name = "NWID")]
    pub network: NetworkIdArg,
}

/// List, authorize, deauthorize and delete members of a network
///
/// Example:
///
///   meshd controller member list 8056c2e21c000001
///   meshd controller member authorize 8056c2e21c000001 89e92ceee5
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, arg_required_else_help = true)]
pub struct MemberArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    #[command(subcommand)]
    pub command: MemberCommand,
}

/// The `meshd controller member` subcommands.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    List(MemberListArgs),
    Authorize(AuthorizeArgs),
    Deauthorize(DeauthorizeArgs),
    Delete(MemberDeleteArgs),
}

/// List a network's members
///
/// One line per member: node id, name, authorized, addresses, container subnet, last seen.
///
/// Example:
///
///   meshd controller member list 8056c2e21c000001 --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct MemberListArgs {
    /// The network: 16 lowercase hex digits
    #[arg(value_name = "NWID")]
    pub network: NetworkIdArg,

    /// Print JSON for scripts instead of a table. Default: off
    #[arg(long)]
    pub json: bool,
}

/// A member of a network, named by network id and node id.
#[derive(Debug, Clone, Args)]
pub struct MemberTarget {
    /// The network: 16 lowercase hex digits
    #[arg(value_name = "NWID")]
    pub network: NetworkIdArg,

    /// The member's node id: 10 lowercase hex digits (shown by `meshd status` on its host
    /// and by `member list`)
    #[arg(value_name = "NODE_ID")]
    pub node: NodeIdArg,
}

/// Admit a member: it gets its addresses and can reach the other members
///
/// Example:
///
///   meshd controller member authorize 8056c2e21c000001 89e92ceee5
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct AuthorizeArgs {
    #[command(flatten)]
    pub member: MemberTarget,
}

/// Cut a member off: peers stop accepting its sessions
///
/// Its addresses and container subnet stay reserved; `authorize` restores it.
///
/// Example:
///
///   meshd controller member deauthorize 8056c2e21c000001 89e92ceee5
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DeauthorizeArgs {
    #[command(flatten)]
    pub member: MemberTarget,
}

/// Delete a member record and release its addresses
///
/// The node may ask to join again later.
///
/// Example:
///
///   meshd controller member delete 8056c2e21c000001 89e92ceee5
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct MemberDeleteArgs {
    #[command(flatten)]
    pub member: MemberTarget,
}

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
/// Examples:
///
///   meshd controller route add 8056c2e21c000001 192.168.50.0/24 --via 89e92ceee5
///   meshd controller route add 8056c2e21c000001 192.168.50.0/24 --via 10.77.0.12
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RouteAddArgs {
    /// The network: 16 lowercase hex digits
    #[arg(value_name = "NWID")]
    pub network: NetworkIdArg,

    /// The prefix to route, IPv4 or IPv6, e.g. 192.168.50.0/24
    #[arg(value_name = "CIDR")]
    pub target: String,

    /// The member that owns the prefix: its node id, or one of its mesh addresses
    #[arg(long, value_name = "NODE_ID|IP")]
    pub via: String,
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

/// Add, remove and list controller replicas (the consensus cluster)
///
/// Example:
///
///   meshd controller replica add --id 2 --address ctl2.example.com:9994
///   meshd controller replica list
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, arg_required_else_help = true)]
pub struct ReplicaArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    #[command(subcommand)]
    pub command: ReplicaCommand,
}

/// The `meshd controller replica` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReplicaCommand {
    Add(ReplicaAddArgs),
    Remove(ReplicaRemoveArgs),
    List(ReplicaListArgs),
}

/// Add a replica to the cluster
///
/// Three or five replicas tolerate one or two failed replicas.
/// Initialize the new replica first with `meshd controller init --join <URL>`.
///
/// Example:
///
///   meshd controller replica add --id 2 --address ctl2.example.com:9994
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReplicaAddArgs {
    /// Replica id, unique in the cluster
    #[arg(long, value_name = "N")]
    pub id: u64,

    /// Where the other replicas reach the new one: its `init --listen` address
    #[arg(long, value_name = "HOST:PORT")]
    pub address: String,
}

/// Remove a replica from the cluster
///
/// Example:
///
///   meshd controller replica remove --id 2
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReplicaRemoveArgs {
    /// Id of the replica to remove
    #[arg(long, value_name = "N")]
    pub id: u64,
}

/// List replicas: id, address, role (leader or follower), replication progress
///
/// Example:
///
///   meshd controller replica list --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReplicaListArgs {
    /// Print JSON for scripts instead of a table. Default: off
    #[arg(long)]
    pub json: bool,
}

/// Runs `meshd controller ...`.
pub fn run(args: ControllerArgs) -> anyhow::Result<()> {
    match args.command {
        ControllerCommand::Init(args) => init(args),
        ControllerCommand::Run(args) => run_replica(args),
        ControllerCommand::Network(args) => network(args),
        ControllerCommand::Member(args) => member(args),
        ControllerCommand::Route(args) => route(args),
        ControllerCommand::Replica(args) => replica(args),
    }
}

/// Runs `meshd controller init`.
fn init(args: InitArgs) -> anyhow::Result<()> {
    if args.join.is_some() {
        anyhow::bail!(
            "joining an existing controller cluster (`--join`) is not available in this build yet; \
             run `meshd controller init` without --join for a replica of its own"
        );
    }
    let settings = ReplicaSettings {
        id: 1,
        listen: args.listen,
        api_listen: args.api_listen,
    };
    service::init(&args.data, &settings)?;
    let dir = args.data.display();
    println!("initialized controller replica {} in {dir}", settings.id);
    println!("  node channel (QUIC, UDP): {}", settings.listen);
    println!(
        "  admin API:                {} (token in {dir}/api.token)",
        settings.api_url()
    );
    println!("start it with: meshd controller run --data {dir}");
    Ok(())
}

/// Runs `meshd controller run`: serves until SIGINT or SIGTERM.
fn run_replica(args: RunArgs) -> anyhow::Result<()> {
    init_logging();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        service::run(&args.data, shutdown_signal(), |bound| {
            eprintln!(
                "meshd controller: admin API on http://{}, node channel on udp {}",
                bound.api, bound.channel
            );
        })
        .await
    })?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM, so systemd and Ctrl-C both stop the replica cleanly.
pub(super) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default (info, with openraft's per-election
/// chatter at warn).
pub(super) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs `meshd controller network ...`.
fn network(args: NetworkArgs) -> anyhow::Result<()> {
    admin::network(args)
}

/// Runs `meshd controller member ...`.
fn member(args: MemberArgs) -> anyhow::Result<()> {
    admin::member(args)
}

/// Runs `meshd controller route ...`.
fn route(args: RouteArgs) -> anyhow::Result<()> {
    admin::route(args)
}

/// Runs `meshd controller replica ...`.
fn replica(args: ReplicaArgs) -> anyhow::Result<()> {
    let _api = args.api;
    match args.command {
        ReplicaCommand::Add(_) => {
            anyhow::bail!("`meshd controller replica add` is not available in this build yet")
        }
        ReplicaCommand::Remove(_) => {
            anyhow::bail!("`meshd controller replica remove` is not available in this build yet")
        }
        ReplicaCommand::List(_) => {
            anyhow::bail!("`meshd controller replica list` is not available in this build yet")
        }
    }
}
