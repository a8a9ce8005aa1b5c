//! `meshd docker-config`: Docker settings for this host's container subnets.

use clap::{Args, ValueEnum};

use super::{NetworkIdArg, StateArgs};

/// Print Docker settings that put this host's containers on the mesh
///
/// The controller gives each member a container subnet; this prints the Docker settings
/// that make containers take their addresses from it, so they are reachable from every
/// other host and container in the network.
///
/// Examples:
///
///   meshd docker-config 8056c2e21c000001 > /etc/docker/daemon.json
///   meshd docker-config 8056c2e21c000001 --format compose
///   sh -c "$(meshd docker-config 8056c2e21c000001 --format network-create --bridge mesh0)"
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DockerConfigArgs {
    /// Network whose container subnets to use: 16 lowercase hex digits
    #[arg(value_name = "NETWORK_ID")]
    pub network: NetworkIdArg,

    /// What to print
    #[arg(long, value_enum, default_value_t = DockerFormat::DaemonJson)]
    pub format: DockerFormat,

    /// Name of the Linux bridge for the Docker network (compose and network-create).
    /// Default: Docker picks the name
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<String>,

    #[command(flatten)]
    pub state: StateArgs,
}

/// Output formats of `meshd docker-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DockerFormat {
    /// /etc/docker/daemon.json for the default bridge (docker0)
    DaemonJson,
    /// a `networks:` section for docker-compose.yml
    Compose,
    /// a `docker network create` command line
    NetworkCreate,
}

/// Runs `meshd docker-config`.
pub fn run(args: DockerConfigArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`meshd docker-config` is not available in this build yet")
}
