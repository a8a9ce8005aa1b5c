//! `meshd controller`: run a controller replica; manage networks, members, routes and
//! replicas through the admin API.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use meshd_controller::admin_client::AdminClient;
use meshd_controller::replica::{is_loopback_address, parse_replica_address};
use meshd_controller::service::{self, ReplicaSettings};

use super::process::{init_logging, shutdown_signal};
use super::{NetworkIdArg, NodeIdArg};

pub(super) mod admin;
pub(super) mod render;

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
/// Without --join this starts a new controller cluster of one replica. With --join the
/// replica gets the cluster's admin token and waits to be added: start it with
/// `meshd controller run`, then run the `replica add` command init prints.
///
/// Examples:
///
///   meshd controller init --data /var/lib/meshd-controller --listen 10.0.0.1:9994
///   meshd controller init --data /var/lib/meshd-controller --listen 10.0.0.2:9994 \
///       --join http://10.0.0.1:9995 --token $(cat api.token)
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct InitArgs {
    /// Directory for the replica's keys, storage and admin token (created; must not
    /// already hold a replica)
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// Address and port where nodes (QUIC, UDP) and the other replicas (replication, TCP)
    /// reach this replica
    #[arg(long, value_name = "ADDR:PORT", default_value = "[::]:9994")]
    pub listen: SocketAddr,

    /// The address nodes and other replicas use for --listen, when it differs (a DNS
    /// name, NAT). Default: --listen, or 127.0.0.1:PORT when --listen's IP is unspecified
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// Address and TCP port of the admin HTTP API and web panel
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9995")]
    pub api_listen: SocketAddr,

    /// Admin API URL of any replica of an existing cluster to join. Default: none (start a
    /// new cluster)
    #[arg(long, value_name = "URL")]
    pub join: Option<String>,

    /// The cluster's admin token, for --join (api.token in any replica's data directory)
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MESHD_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Replica id, unique in the cluster. Default: 1 for a new cluster; with --join, one
    /// more than the highest id in the cluster
    #[arg(long, value_name = "N")]
    pub id: Option<u64>,
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
/// Any replica's admin API takes these (and every other write): a replica that is not
/// the leader passes them on to the leader.
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
/// Initialize the new replica first with `meshd controller init --join <URL>` and start it
/// with `meshd controller run`; it then catches up with the leader (log or snapshot) and
/// becomes a voter.
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
/// Stop its `meshd controller run` afterwards. The last voter cannot be removed.
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

/// List replicas: id, address, role (leader, follower or learner), replication progress
///
/// MATCHED is the last log index known stored on the replica, LAG how far it is behind the
/// leader, HEALTHY whether it answered the leader in the last 3 s and lags by 100 or fewer.
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
    let advertise = args
        .advertise
        .as_deref()
        .map(|a| parse_replica_address(a).map_err(|e| anyhow::anyhow!("--advertise: {e}")))
        .transpose()?;
    if let Some(url) = args.join.clone() {
        return init_join(args, &url, advertise);
    }
    if args.token.is_some() {
        anyhow::bail!(
            "--token goes with --join (the token of the cluster to join); a new cluster gets \
             a fresh token, written to {}/api.token",
            args.data.display()
        );
    }
    let settings = ReplicaSettings {
        id: args.id.unwrap_or(1),
        listen: args.listen,
        api_listen: args.api_listen,
        advertise,
        join: false,
    };
    service::init(&args.data, &settings)?;
    let dir = args.data.display();
    println!("initialized controller replica {} in {dir}", settings.id);
    print_addresses(&settings, &dir.to_string());
    if settings.advertise.is_none() && settings.listen.ip().is_unspecified() {
        println!(
            "note: other replicas would reach this one at {}, which works on this host only. \
             For a cluster across hosts (`replica add`), every replica must reach the others: \
             set \"advertise\": \"HOST:PORT\" in {dir}/replica.json (or init with --advertise \
             or --listen with a specific IP) while this replica is still alone",
            settings.advertise_address()
        );
    }
    println!("start it with: meshd controller run --data {dir}");
    Ok(())
}

fn print_addresses(settings: &ReplicaSettings, dir: &str) {
    println!(
        "  nodes and replicas reach it at: {} (node channel on UDP {}, replication on TCP)",
        settings.advertise_address(),
        settings.listen
    );
    println!(
        "  admin API:                      {} (token in {dir}/api.token)",
        settings.api_url()
    );
}

/// `init --join URL`: checks that URL and the token answer, then writes a data directory
/// holding the cluster's token, for a replica that waits to be added.
fn init_join(args: InitArgs, url: &str, advertise: Option<String>) -> anyhow::Result<()> {
    let Some(token) = args.token.clone() else {
        anyhow::bail!(
            "--join needs the cluster's admin token: pass --token TOKEN or set MESHD_TOKEN \
             (it is in api.token in the data directory of any replica of the cluster)"
        );
    };
    let client = AdminClient::new(url, token.clone())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let view = runtime.block_on(async {
        client.health().await?;
        client.replicas().await
    });
    let view = view.map_err(|e| match e.status() {
        Some(hyper::StatusCode::UNAUTHORIZED) => anyhow::anyhow!(
            "the controller at {url} refused the token: {e}; --token must be the cluster's \
             admin token"
        ),
        _ => anyhow::anyhow!("cannot join the controller cluster at {url}: {e}"),
    })?;
    let taken: Vec<u64> = view.replicas.iter().map(|r| r.id).collect();
    let id = match args.id {
        Some(id) if taken.contains(&id) => anyhow::bail!(
            "replica id {id} is taken in the cluster at {url} (ids in use: {taken:?}); pick \
             another --id or leave it out"
        ),
        Some(id) => id,
        None => taken.iter().max().map_or(1, |m| m + 1),
    };
    let cluster_is_local = view
        .replicas
        .iter()
        .all(|r| is_loopback_address(&r.address));
    let advertise = match advertise {
        Some(a) => Some(a),
        None if args.listen.ip().is_unspecified() && !cluster_is_local => anyhow::bail!(
            "--listen {} does not say where the other replicas reach this one; pass \
             --advertise HOST:PORT (or --listen with this host's IP)",
            args.listen
        ),
        None => None,
    };
    let settings = ReplicaSettings {
        id,
        listen: args.listen,
        api_listen: args.api_listen,
        advertise,
        join: true,
    };
    let address = settings.advertise_address();
    if !view.replicas.is_empty() && is_loopback_address(&address) != cluster_is_local {
        anyhow::bail!(
            "this replica would be reached at {address}, but the cluster's replicas are at {}; \
             loopback and other addresses cannot mix in one cluster. Pass --advertise HOST:PORT",
            view.replicas
                .iter()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    service::init_with_token(&args.data, &settings, &token)?;
    let dir = args.data.display();
    println!(
        "initialized controller replica {id} in {dir}, to join the cluster at {}",
        client.base()
    );
    print_addresses(&settings, &dir.to_string());
    println!("1. start it:  meshd controller run --data {dir}");
    println!(
        "2. add it:    meshd controller replica add --api {} --id {id} --address {address}",
        client.base()
    );
    println!("   (with --token or MESHD_TOKEN, or run it with --data DIR on a replica's host)");
    Ok(())
}

/// Runs `meshd controller run`: serves until SIGINT or SIGTERM.
fn run_replica(args: RunArgs) -> anyhow::Result<()> {
    init_logging();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        service::run(&args.data, shutdown_signal(), |bound| {
            eprintln!(
                "meshd controller: admin API on http://{}, node channel on udp {}, \
                 replication on tcp {}",
                bound.api, bound.channel, bound.replication
            );
        })
        .await
    })?;
    Ok(())
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
    admin::replica(args)
}
