//! `meshd demo`: a local multi-host mesh in network namespaces.

use clap::Args;

/// Build a local multi-host mesh in network namespaces (needs root)
///
/// Starts a controller and several "hosts", each in its own network namespace with its
/// own daemon and container subnet, joins them to one network, authorizes them, and pings
/// across the mesh. Everything is removed at the end unless --keep is given.
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
    let _ = args;
    anyhow::bail!("`meshd demo` is not available in this build yet")
}
