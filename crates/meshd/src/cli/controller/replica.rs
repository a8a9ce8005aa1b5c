//! `meshd controller replica`: add, remove and list the replicas of the cluster.

use clap::{Args, Subcommand};
use meshd_controller::api::text;
use meshd_controller::raft::ReplicaKey;
use meshd_controller::replica::parse_replica_address;

use super::api::{ApiArgs, run as call};
use crate::cli::output::{print, print_json};

/// Add, remove and list controller replicas (the consensus cluster)
///
/// Any replica's admin API takes these (and every other write): a replica that is not
/// the leader passes them on to the leader.
///
/// Example:
///
///   meshd controller replica add --id 2 --address ctl2.example.com:9994 --key 3f2a...
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
///   meshd controller replica add --id 2 --address ctl2.example.com:9994 --key 3f2a...
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReplicaAddArgs {
    /// Replica id, unique in the cluster
    #[arg(long, value_name = "N")]
    pub id: u64,

    /// Where the other replicas reach the new one: its `init --listen` address
    #[arg(long, value_name = "HOST:PORT")]
    pub address: String,

    /// The new replica's key (64 hex digits), printed by its `init --join` and `run`: the
    /// cluster replicates only with a replica that proves it
    #[arg(long, value_name = "HEX")]
    pub key: String,
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

/// Runs `meshd controller replica ...`.
pub(super) fn run(args: ReplicaArgs) -> anyhow::Result<()> {
    match args.command {
        ReplicaCommand::Add(add) => {
            let address = parse_replica_address(&add.address)
                .map_err(|e| anyhow::anyhow!("--address: {e}"))?;
            let key: ReplicaKey = add.key.parse().map_err(|e| anyhow::anyhow!("--key: {e}"))?;
            let view = call(&args.api, |c| async move {
                c.add_replica(add.id, &address, &key.to_string()).await
            })?;
            print(&format!(
                "replica {} at {} is a voter of the cluster\n{}",
                add.id,
                add.address.trim(),
                text::replica_table(&view)
            ))
        }
        ReplicaCommand::Remove(remove) => {
            let view = call(
                &args.api,
                |c| async move { c.remove_replica(remove.id).await },
            )?;
            print(&format!(
                "removed replica {}; stop its `meshd controller run` (its data directory is no \
                 longer needed)\n{}",
                remove.id,
                text::replica_table(&view)
            ))
        }
        ReplicaCommand::List(list) => {
            let view = call(&args.api, |c| async move { c.replicas().await })?;
            if list.json {
                print_json(&view)
            } else {
                print(&text::replica_table(&view))
            }
        }
    }
}
