//! `meshd docker-config`: Docker settings for this host's container subnets.

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::daemon::with_daemon;
use super::output::print;
use super::{NetworkIdArg, ResultExt, StateArgs};
use meshd_node::docker::DockerSettings;
use meshd_node::host_routes;

/// Print Docker settings that put this host's containers on the mesh
///
/// The controller gives each member a container subnet; this prints the Docker settings
/// that make containers take their addresses from it, so they are reachable from every
/// other host and container in the network. The file or command goes to stdout; what
/// the host needs around it (forwarding sysctls, the iptables/nft rules that keep Docker
/// from masquerading traffic into the mesh and let the mesh through its FORWARD policy,
/// and warnings about overlapping subnets) goes to stderr. The MTU is the mesh's, so
/// containers never send packets the tunnel would have to drop. `--format json` prints
/// all of it for scripts.
///
/// Examples:
///
///   meshd docker-config 8056c2e21c000001 > /etc/docker/daemon.json
///   meshd docker-config 8056c2e21c000001 --apply
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

    /// Merge the daemon.json settings into --daemon-json (other keys are kept) instead of
    /// printing them; Docker must be restarted to take them. For a host whose container
    /// subnets change (a new delegated IPv6 prefix), a DHCP client hook runs this
    #[arg(long, conflicts_with = "format")]
    pub apply: bool,

    /// The file --apply writes
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/docker/daemon.json",
        requires = "apply"
    )]
    pub daemon_json: std::path::PathBuf,

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
    /// everything above as one JSON object, for scripts
    Json,
}

/// Runs `meshd docker-config`.
pub fn run(args: DockerConfigArgs) -> anyhow::Result<()> {
    let nwid = args.network;
    let status = with_daemon(&args.state, |c| async move { Ok(c.status().await?) })?;
    let view = status
        .networks
        .iter()
        .find(|n| n.id == nwid)
        .with_context(|| format!("this node has not joined network {nwid}"))
        .hint(format!("join it first: meshd join {nwid}"))?;
    let settings = DockerSettings::new(view, args.bridge.as_deref(), &host_routes::read())?;
    if args.apply {
        return apply(&settings, &args.daemon_json);
    }
    let text = match args.format {
        DockerFormat::DaemonJson => settings.daemon_json(),
        DockerFormat::Compose => settings.compose(),
        DockerFormat::NetworkCreate => settings.network_create(),
        DockerFormat::Json => {
            let mut text = serde_json::to_string_pretty(&settings)?;
            text.push('\n');
            return print(&text);
        }
    };
    eprint!("{}", settings.host_notes());
    print(&text)
}

/// `--apply`: merges the settings into `path` and says what changed and what to do next.
fn apply(settings: &DockerSettings, path: &std::path::Path) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let merged = settings
        .merge_daemon_json(existing.as_deref())
        .map_err(|e| anyhow::anyhow!("{} was left alone: {e}", path.display()))?;
    eprint!("{}", settings.host_notes());
    if existing.as_deref() == Some(merged.as_str()) {
        return print(&format!("{} already has these settings\n", path.display()));
    }
    meshd_io::fs::write_atomically(path, merged.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let v6 = settings
        .ipv6
        .map(|s| format!(", IPv6 {}", s.subnet))
        .unwrap_or_default();
    print(&format!(
        "wrote {}: containers on {}{v6}; restart Docker to take them (systemctl restart docker)\n",
        path.display(),
        settings.ipv4.subnet
    ))
}
