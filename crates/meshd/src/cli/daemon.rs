//! `meshd daemon`: the node, one per host; and how the other node commands reach it.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::process::{init_logging, shutdown_signal};
use super::{ResultExt, StateArgs};
use meshd_node::daemon::client::{ClientError, DaemonClient};
use meshd_node::daemon::controller_link::ControllerAddr;
use meshd_node::daemon::engine::EngineDataplane;
use meshd_node::daemon::state::StateDir;
use meshd_node::daemon::{self, DaemonOptions};
use meshd_proto::Identity;

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

    /// Packet worker threads, each with its own UDP socket on --port and its own queue of
    /// every network's TUN; flows and peers spread over them. Default: one per CPU core
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,

    /// After handling packets, a worker keeps polling for more for this many microseconds
    /// before it sleeps. On a virtual machine, waking a sleeping CPU costs tens of
    /// microseconds per packet of a round trip; polling saves that (about a fifth of the
    /// latency meshd adds to a ping) for at most a tenth of a core per worker, and only
    /// while packets flow. 0 turns polling off, for the least CPU use
    #[arg(long, value_name = "US", default_value_t = default_busy_poll_us(),
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub busy_poll_us: u64,

    /// Controller replica to use, as HOST:PORT; repeat for several replicas. Default: the
    /// controllers already saved in the state directory by earlier joins
    #[arg(long = "controller", value_name = "HOST:PORT")]
    pub controllers: Vec<ControllerAddr>,

    /// Enable IPv4/IPv6 forwarding on this host at start (net.ipv4.ip_forward=1,
    /// net.ipv6.conf.all.forwarding=1) so that traffic flows between the mesh and the local
    /// container bridge; firewall rules are left alone (`meshd status` warns when one drops
    /// the traffic). With IPv6 forwarding on, the kernel ignores router advertisements on
    /// interfaces with accept_ra=1: a host that gets its IPv6 address by SLAAC needs
    /// accept_ra=2 on its uplink. Default: off (forwarding settings are left as they are)
    #[arg(long)]
    pub configure_forwarding: bool,

    /// Relay for the other members: pairs that cannot reach each other directly (both
    /// behind hard NATs) may send their encrypted traffic through this host, which sees only
    /// ciphertext, when no controller replica's relay answers. Use it on a host with a public
    /// address; each member may relay up to 100 Mbit/s through it. The controller marks
    /// the member a relay in the network config
    #[arg(long)]
    pub relay: bool,

    /// The name this node reports to its controllers: the member's name in the panel,
    /// `member list` and peers' `meshd peers` until an admin renames it. Default: the host
    /// name
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Serve Prometheus metrics (per peer traffic, round-trip time and path, handshakes,
    /// drops by reason, per worker packets and busy-poll time) on http://ADDR:PORT/metrics.
    /// The page needs no token: keep it on loopback or a management network. Example:
    /// 127.0.0.1:9100. Default: off
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// The global IPv6 prefix delegated to this host (DHCPv6-PD), e.g. 2001:db8:1:40::/60:
    /// the member's container /80 becomes its first /80 (2001:db8:1:40::/80), routed in the
    /// mesh and reachable from the internet without NAT; `meshd docker-config` prints the
    /// Docker settings for it. Default: none (containers use the 6PLANE /80)
    #[arg(long, value_name = "CIDR", value_parser = parse_prefix, conflicts_with = "ipv6_prefix_file")]
    pub ipv6_prefix: Option<ipnet::Ipv6Net>,

    /// A file holding the delegated prefix, which a DHCP client hook writes: read every
    /// second, and a change moves the member's container /80 on every peer within seconds.
    /// An empty file means none
    #[arg(long, value_name = "PATH")]
    pub ipv6_prefix_file: Option<std::path::PathBuf>,
}

fn parse_prefix(text: &str) -> Result<ipnet::Ipv6Net, String> {
    daemon::delegated::parse(text)?
        .ok_or_else(|| "give a prefix like 2001:db8:1:40::/60".to_owned())
}

fn default_busy_poll_us() -> u64 {
    u64::try_from(meshd_engine::DEFAULT_BUSY_POLL.as_micros()).unwrap_or(0)
}

/// Runs `meshd daemon` until SIGINT or SIGTERM.
pub fn run(args: DaemonArgs) -> anyhow::Result<()> {
    init_logging();
    let state = StateDir::open(&args.state.state)?;
    let node = state.identity().node_id();
    let socket = state.socket_path();
    eprintln!(
        "meshd daemon: node {node}, state in {}, local API on {}",
        state.path().display(),
        socket.display()
    );
    let identity = Identity::from_secret_text(&state.identity().to_secret_text())
        .context("cannot copy the node identity")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let workers = args
            .workers
            .map_or_else(meshd_engine::default_workers, usize::from);
        let busy_poll = Duration::from_micros(args.busy_poll_us);
        let engine = meshd_engine::dataplane::Dataplane::bind(args.port, workers, busy_poll)
            .await
            .with_context(|| format!("cannot open the data plane on UDP port {}", args.port))?;
        let port = engine.local_addr().port();
        eprintln!("meshd daemon: data plane on udp port {port}, {workers} packet workers");
        daemon::run(
            DaemonOptions {
                state,
                port,
                controllers: args.controllers,
                configure_forwarding: args.configure_forwarding,
                relay: args.relay,
                hostname: args.hostname.unwrap_or_else(daemon::system_hostname),
                metrics_listen: args.metrics_listen,
                ipv6_prefix: match (args.ipv6_prefix, args.ipv6_prefix_file) {
                    (Some(p), _) => Some(daemon::delegated::PrefixSource::Fixed(p)),
                    (None, Some(path)) => Some(daemon::delegated::PrefixSource::File(path)),
                    (None, None) => None,
                },
            },
            EngineDataplane::new(engine, identity),
            shutdown_signal(),
        )
        .await
    })
}

pub(super) fn with_daemon<T, F, Fut>(state: &StateArgs, call: F) -> anyhow::Result<T>
where
    F: FnOnce(DaemonClient) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match runtime.block_on(call(DaemonClient::new(&state.state))) {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<ClientError>()
                    .is_some_and(ClientError::no_daemon)
            }) =>
        {
            Err(e).hint(format!(
                "start it with: meshd daemon --state {}",
                state.state.display()
            ))
        }
        other => other,
    }
}
