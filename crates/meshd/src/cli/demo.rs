//! `meshd demo`: a local multi-host mesh in network namespaces.

use anyhow::Context;
use clap::Args;
use meshd_demo::{DemoError, Settings};

use crate::cli::ResultExt;

/// Build a local multi-host mesh in network namespaces (needs root)
///
/// Starts a controller and three "hosts", each in its own network namespace with its own
/// daemon, joins them to one network and authorizes them. Then, as on Docker hosts, gives
/// each host a bridge on the container subnets `meshd docker-config` prints for it, with two
/// "containers" (namespaces) behind it, and pings host to host and container to container
/// across the mesh over IPv4 and IPv6. Everything is removed at the end (also on Ctrl-C)
/// unless --keep is given.
///
/// Example:
///
///   sudo meshd demo
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DemoArgs {
    /// Leave the namespaces and processes running after the demo, to explore them.
    /// Default: off (everything is torn down)
    #[arg(long)]
    pub keep: bool,
}

/// Runs `meshd demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the meshd executable")?;
    let exe = exe
        .to_str()
        .context("the meshd executable's path is not UTF-8")?
        .to_owned();
    match meshd_demo::run(Settings {
        exe,
        keep: args.keep,
    }) {
        Ok(()) => Ok(()),
        Err(e @ DemoError::NotRoot) => Err(e).hint("run it with sudo: sudo meshd demo"),
        Err(e) => Err(anyhow::Error::new(e).context("meshd demo failed")),
    }
}
