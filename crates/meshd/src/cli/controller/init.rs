//! `meshd controller init` and `meshd controller run`: a replica on this host.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use meshd_controller::admin_client::AdminClient;
use meshd_controller::replica::{is_loopback_address, parse_replica_address};
use meshd_controller::service::{self, ReplicaSettings};

use crate::cli::process::{init_logging, shutdown_signal};

/// Create a new controller replica: its keys, storage and admin token
///
/// Without --join this starts a new controller cluster of one replica. With --join the
/// replica gets the cluster's admin token and secret and waits to be added: start it with
/// `meshd controller run`, then run the `replica add` command init prints.
///
/// The admin API speaks HTTPS unless it listens on loopback only; init prints its
/// certificate's fingerprint, which clients pin with --fingerprint.
///
/// Examples:
///
///   meshd controller init --data /var/lib/meshd-controller --listen 10.0.0.1:9994 \
///       --api-listen 10.0.0.1:9995
///   meshd controller init --data /var/lib/meshd-controller --listen 10.0.0.2:9994 \
///       --join https://10.0.0.1:9995 --token $(cat api.token) --fingerprint sha256:...
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct InitArgs {
    /// Directory for the replica's keys, storage and admin token (created; must not
    /// already hold a replica)
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// Address and port where nodes (QUIC, UDP) and the other replicas (replication, TCP)
    /// reach this replica. The relay for nodes behind NAT takes the next UDP port
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

    /// For --join with an https:// URL: the fingerprint of that replica's certificate, as
    /// its `init` or `run` printed it
    #[arg(long, value_name = "sha256:HEX", env = "MESHD_API_FINGERPRINT")]
    pub fingerprint: Option<String>,

    /// What the replica's relay forwards for one member behind NAT, in Mbit/s; 0 for no
    /// limit
    #[arg(long, value_name = "MBIT", default_value_t = meshd_controller::service::DEFAULT_RELAY_LIMIT_MBIT)]
    pub relay_limit_mbit: u64,

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

/// Runs `meshd controller init`.
pub(super) fn init(args: InitArgs) -> anyhow::Result<()> {
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
        relay_limit_mbit: Some(args.relay_limit_mbit),
    };
    let made = service::init(&args.data, &settings)?;
    let dir = args.data.display();
    println!("initialized controller replica {} in {dir}", settings.id);
    print_addresses(&settings, &dir.to_string(), &made);
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

fn print_addresses(settings: &ReplicaSettings, dir: &str, made: &service::Initialized) {
    println!(
        "  nodes and replicas reach it at: {} (node channel on UDP {}, replication on TCP)",
        settings.advertise_address(),
        settings.listen
    );
    println!("  replica key:                    {}", made.key);
    println!(
        "  admin API:                      {} (token in {dir}/api.token)",
        settings.api_url()
    );
    if settings.api_tls() {
        println!(
            "  admin API certificate:          {} (clients pin it with --fingerprint)",
            made.api_fingerprint
        );
    }
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
    let mut client = AdminClient::new(url, token.clone())?;
    if let Some(fingerprint) = &args.fingerprint {
        client = client.pinned(
            fingerprint
                .parse()
                .map_err(|e| anyhow::anyhow!("--fingerprint: {e}"))?,
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let joined = runtime.block_on(async {
        client.health().await?;
        let view = client.replicas().await?;
        let secret = client.cluster_secret().await?;
        Ok::<_, meshd_controller::admin_client::ClientError>((view, secret))
    });
    let (view, secret) = joined.map_err(|e| match e.status() {
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
        relay_limit_mbit: Some(args.relay_limit_mbit),
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
    let made = service::init_with_token(&args.data, &settings, &token, &secret.cluster_secret)?;
    let dir = args.data.display();
    println!(
        "initialized controller replica {id} in {dir}, to join the cluster at {}",
        client.base()
    );
    print_addresses(&settings, &dir.to_string(), &made);
    println!("1. start it:  meshd controller run --data {dir}");
    let pin = client
        .fingerprint()
        .map(|f| format!(" --fingerprint {f}"))
        .unwrap_or_default();
    println!(
        "2. add it:    meshd controller replica add --api {}{pin} --id {id} --address {address} \
         --key {}",
        client.base(),
        made.key
    );
    println!("   (with --token or MESHD_TOKEN, or run it with --data DIR on a replica's host)");
    Ok(())
}

/// Runs `meshd controller run`: serves until SIGINT or SIGTERM.
pub(super) fn run_replica(args: RunArgs) -> anyhow::Result<()> {
    init_logging();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        service::run(&args.data, shutdown_signal(), |bound| {
            let api = match bound.api_fingerprint {
                Some(fingerprint) => format!("https://{} (certificate {fingerprint})", bound.api),
                None => format!("http://{}", bound.api),
            };
            eprintln!(
                "meshd controller: admin API on {api}, node channel on udp {}, replication on \
                 tcp {}, relay on udp {}; replica key {}",
                bound.channel, bound.replication, bound.relay, bound.key
            );
        })
        .await
    })?;
    Ok(())
}
