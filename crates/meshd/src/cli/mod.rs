//! The `meshd` command line: the top-level [`Cli`], the [`Command`] enum, and one module
//! per subcommand. Each module defines its clap `Args` struct and a `run` function.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub mod bench;
pub mod controller;
pub mod daemon;
pub mod demo;
pub mod docker_config;
pub mod join;
pub mod leave;
pub mod output;
pub mod peers;
pub mod process;
pub mod simulate;
pub mod status;

/// How the CLI takes a network id (16 lowercase hex digits, e.g. `8056c2e21c000001`): parsed
/// by clap, so a malformed id is a usage error (exit code 2) before anything is sent.
pub type NetworkIdArg = meshd_proto::NetworkId;

/// How the CLI takes a node id (10 lowercase hex digits, e.g. `89e92ceee5`).
pub type NodeIdArg = meshd_proto::NodeId;

/// Where the daemon keeps its identity, cached configs and control socket.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/meshd";

/// meshd: a peer-to-peer L3 VPN for Docker hosts across clouds.
/// It joins hosts and their containers into one dual-stack (IPv4 + IPv6) private network.
///
/// Typical flow:
///
///   # on the controller host: create a replica, start it, create a network
///   meshd controller init --data /var/lib/meshd-controller
///   meshd controller run --data /var/lib/meshd-controller
///   meshd controller network create --name prod --data /var/lib/meshd-controller
///
///   # on every host: start the node (see deploy/ for the systemd unit) and ask to join
///   meshd daemon
///   meshd join 8056c2e21c000001 --controller ctl.example.com:9994
///
///   # on the controller host: admit the node (its id is in `meshd status` on that host)
///   meshd controller member authorize 8056c2e21c000001 89e92ceee5 --data /var/lib/meshd-controller
///
///   # on the host: addresses, routes and peers
///   meshd status
///
/// Human output by default, `--json` for scripts. Errors print one line
/// `meshd: <reason>` (sometimes followed by a `hint:` line) and exit with code 1;
/// usage errors exit with code 2.
#[derive(Debug, Parser)]
#[command(
    name = "meshd",
    version,
    verbatim_doc_comment,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level subcommands. The help text of each lives on its `Args` struct.
#[derive(Debug, Subcommand)]
pub enum Command {
    Daemon(daemon::DaemonArgs),
    Join(join::JoinArgs),
    Leave(leave::LeaveArgs),
    Status(status::StatusArgs),
    Peers(peers::PeersArgs),
    Bench(bench::BenchArgs),
    DockerConfig(docker_config::DockerConfigArgs),
    Controller(controller::ControllerArgs),
    Demo(demo::DemoArgs),
    Simulate(simulate::SimulateArgs),
}

impl Command {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Daemon(args) => daemon::run(args),
            Command::Join(args) => join::run(args),
            Command::Leave(args) => leave::run(args),
            Command::Status(args) => status::run(args),
            Command::Peers(args) => peers::run(args),
            Command::Bench(args) => bench::run(args),
            Command::DockerConfig(args) => docker_config::run(args),
            Command::Controller(args) => controller::run(args),
            Command::Demo(args) => demo::run(args),
            Command::Simulate(args) => simulate::run(args),
        }
    }
}

/// `--state DIR`, shared by every command that talks to the local daemon.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// State directory of the local node: its identity, cached network configs and the
    /// daemon's control socket
    #[arg(
        long,
        value_name = "DIR",
        env = "MESHD_STATE",
        default_value = DEFAULT_STATE_DIR
    )]
    pub state: PathBuf,
}

/// An error with a suggestion for the user, printed by `main` as a `hint:` line.
///
/// Displays as the wrapped error and is transparent in the error chain.
#[derive(Debug)]
pub struct Hinted {
    error: anyhow::Error,
    hint: String,
}

impl Hinted {
    /// The suggestion to print after the error.
    pub fn hint(&self) -> &str {
        &self.hint
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Attach a `hint:` line to an error: `do_thing().hint("start it with `meshd daemon`")?`.
pub trait ResultExt<T> {
    /// Wraps the error (if any) so that `main` prints `hint` below the reason.
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|error| {
            anyhow::Error::new(Hinted {
                error: error.into(),
                hint: hint.into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::controller::ControllerCommand;
    use super::controller::network::NetworkCommand;
    use super::docker_config::DockerFormat;
    use super::*;

    fn parse(args: &[&str]) -> Command {
        match Cli::try_parse_from(std::iter::once("meshd").chain(args.iter().copied())) {
            Ok(cli) => cli.command,
            Err(error) => panic!("{args:?} does not parse: {error}"),
        }
    }

    #[test]
    fn api_options_are_accepted_before_and_after_the_admin_subcommand() {
        for args in [
            &[
                "controller",
                "network",
                "--api",
                "http://a:9995",
                "--token",
                "t",
                "list",
            ][..],
            &[
                "controller",
                "network",
                "list",
                "--api",
                "http://a:9995",
                "--token",
                "t",
            ][..],
        ] {
            let Command::Controller(controller) = parse(args) else {
                panic!("not a controller command");
            };
            let ControllerCommand::Network(network) = controller.command else {
                panic!("not a network command");
            };
            assert!(matches!(network.command, NetworkCommand::List(_)));
            assert_eq!(
                network.api.api.as_deref(),
                Some("http://a:9995"),
                "{args:?}"
            );
            assert_eq!(network.api.token.as_deref(), Some("t"), "{args:?}");
        }
    }

    #[test]
    fn defaults() {
        let Command::DockerConfig(args) = parse(&["docker-config", "8056c2e21c000001"]) else {
            panic!("not docker-config");
        };
        assert_eq!(args.format, DockerFormat::DaemonJson);
        let Command::Daemon(args) = parse(&["daemon", "--state", "/tmp/x"]) else {
            panic!("not daemon");
        };
        assert_eq!(args.port, 9993);
        assert_eq!(args.state.state, PathBuf::from("/tmp/x"));
        assert!(args.controllers.is_empty());
    }

    #[test]
    fn loss_must_be_a_percentage() {
        assert!(Cli::try_parse_from(["meshd", "simulate", "--loss", "100.5"]).is_err());
        assert!(Cli::try_parse_from(["meshd", "simulate", "--loss", "nan"]).is_err());
        let Command::Simulate(args) = parse(&["simulate", "--loss", "0.5"]) else {
            panic!("not simulate");
        };
        assert!((args.loss - 0.5).abs() < f64::EPSILON);
    }
}
