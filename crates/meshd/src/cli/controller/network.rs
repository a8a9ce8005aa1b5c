//! `meshd controller network`: create, update, list, show and delete networks.

use clap::{Args, Subcommand};
use meshd_controller::api::requests::{CreateNetwork, parse_v4_cidr};
use meshd_controller::api::text;
use meshd_proto::config::Ipv6Egress;

use super::api::{ApiArgs, run as call};
use crate::cli::NetworkIdArg;
use crate::cli::output::{print, print_json};

/// Create, update, list, show and delete networks
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
    Update(super::network_update::NetworkUpdateArgs),
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

    /// What members do with their containers' mesh IPv6 (6PLANE, RFC4193) leaving through
    /// their own uplink: nat66 masquerades it behind the host's address (never traffic into
    /// the mesh); off leaves it alone
    #[arg(long, value_name = "nat66|off", default_value = "off")]
    pub ipv6_egress: Ipv6Egress,
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

/// Runs `meshd controller network ...`.
pub(super) fn run(args: NetworkArgs) -> anyhow::Result<()> {
    match args.command {
        NetworkCommand::Create(create) => {
            let req = create_request(&create)?;
            let net = call(&args.api, |c| async move { c.create_network(&req).await })?;
            // Only the id, so that `NWID=$(meshd controller network create ...)` works.
            print(&format!("{}\n", net.id))
        }
        NetworkCommand::Update(update) => super::network_update::run(&args.api, update),
        NetworkCommand::List(list) => {
            let nets = call(&args.api, |c| async move { c.networks().await })?;
            if list.json {
                print_json(&nets)
            } else {
                print(&text::network_table(&nets))
            }
        }
        NetworkCommand::Show(show) => {
            let net = call(&args.api, |c| async move { c.network(show.network).await })?;
            if show.json {
                print_json(&net)
            } else {
                print(&text::network_details(&net))
            }
        }
        NetworkCommand::Delete(delete) => {
            let net = call(&args.api, |c| async move {
                c.delete_network(delete.network).await
            })?;
            print(&format!(
                "deleted network {} ({}) and its {} members\n",
                net.id,
                if net.name.is_empty() {
                    "no name"
                } else {
                    &net.name
                },
                net.members.total
            ))
        }
    }
}

/// The request body, with every CIDR checked and written canonically.
fn create_request(args: &NetworkCreateArgs) -> anyhow::Result<CreateNetwork> {
    let v4_pools = args
        .v4_pools
        .iter()
        .map(|p| parse_v4_cidr("--v4-pool", p).map(|n| n.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let container_pool = args
        .container_pool
        .as_deref()
        .map(|p| parse_v4_cidr("--container-pool", p).map(|n| n.to_string()))
        .transpose()?;
    Ok(CreateNetwork {
        name: args.name.clone(),
        // None: the controller's default pool.
        v4_pools: (!v4_pools.is_empty()).then_some(v4_pools),
        container_pool,
        container_prefix: Some(args.container_prefix),
        sixplane: Some(!args.no_6plane),
        rfc4193: Some(!args.no_rfc4193),
        mtu: Some(args.mtu),
        ipv6_egress: Some(args.ipv6_egress),
    })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use meshd_controller::state::{
        DEFAULT_CONTAINER_POOL, DEFAULT_CONTAINER_PREFIX, DEFAULT_V4_POOL,
    };

    use super::*;
    use crate::cli::{Cli, Command};

    fn create_args(extra: &[&str]) -> NetworkCreateArgs {
        let args = ["meshd", "controller", "network", "create", "--name", "prod"];
        let cli = Cli::try_parse_from(args.iter().chain(extra)).unwrap();
        let Command::Controller(c) = cli.command else {
            panic!("not controller")
        };
        let crate::cli::controller::ControllerCommand::Network(n) = c.command else {
            panic!("not network")
        };
        let NetworkCommand::Create(create) = n.command else {
            panic!("not create")
        };
        create
    }

    #[test]
    fn create_defaults_are_the_controllers() {
        let req = create_request(&create_args(&[])).unwrap();
        assert_eq!(req.v4_pools, None);
        assert_eq!(req.container_pool, None);
        assert_eq!(req.container_prefix, Some(DEFAULT_CONTAINER_PREFIX));
        assert_eq!(req.mtu, Some(meshd_proto::config::DEFAULT_MTU));
        assert_eq!((req.sixplane, req.rfc4193), (Some(true), Some(true)));
        // The help states the defaults the controller applies.
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("controller")
            .and_then(|c| c.find_subcommand_mut("network"))
            .and_then(|c| c.find_subcommand_mut("create"))
            .unwrap()
            .render_long_help()
            .to_string();
        for default in [DEFAULT_V4_POOL, DEFAULT_CONTAINER_POOL] {
            assert!(help.contains(&format!("Default: {default}")), "{help}");
        }
    }

    #[test]
    fn bad_cidrs_fail_before_any_request() {
        let e = create_request(&create_args(&["--v4-pool", "10.77.0/16"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"--v4-pool "10.77.0/16" is not a CIDR; write it like 10.147.0.0/16"#
        );
        let e = create_request(&create_args(&["--container-pool", "10.78.1.0/16"])).unwrap_err();
        assert!(e.to_string().contains("did you mean 10.78.0.0/16?"), "{e}");
        let req =
            create_request(&create_args(&["--v4-pool", " 10.77.0.0/16", "--no-6plane"])).unwrap();
        assert_eq!(req.v4_pools, Some(vec!["10.77.0.0/16".to_owned()]));
        assert_eq!(req.sixplane, Some(false));
    }
}
