//! `meshd controller member`: list, authorize, deauthorize, rename and delete members.

use clap::{Args, Subcommand};
use meshd_controller::api::requests::UpdateMember;
use meshd_controller::api::text;

use super::api::{ApiArgs, run as call};
use crate::cli::output::{print, print_json};
use crate::cli::{NetworkIdArg, NodeIdArg};

/// List, authorize, deauthorize, rename and delete members of a network
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
    Rename(RenameArgs),
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

/// Give a member a name (shown by `member list`, the panel, and peers' `meshd peers`)
///
/// A member is named after its host until renamed; an empty name ("") gives it its host
/// name again.
///
/// Example:
///
///   meshd controller member rename 8056c2e21c000001 89e92ceee5 web-1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RenameArgs {
    #[command(flatten)]
    pub member: MemberTarget,

    /// The new name: printable text, at most 255 bytes
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Print the member as JSON for scripts. Default: off
    #[arg(long)]
    pub json: bool,
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

/// Runs `meshd controller member ...`.
pub(super) fn run(args: MemberArgs) -> anyhow::Result<()> {
    match args.command {
        MemberCommand::List(list) => {
            let members = call(&args.api, |c| async move { c.members(list.network).await })?;
            if list.json {
                print_json(&members)
            } else {
                print(&text::member_table(&members, meshd_io::clock::now_ms()))
            }
        }
        MemberCommand::Authorize(a) => {
            let t = a.member;
            let m = call(&args.api, |c| async move {
                c.authorize(t.network, t.node).await
            })?;
            print(&text::authorized(&t.network.to_string(), &m))
        }
        MemberCommand::Deauthorize(d) => {
            let t = d.member;
            call(&args.api, |c| async move {
                c.deauthorize(t.network, t.node).await
            })?;
            print(&format!(
                "deauthorized {} in network {}; its addresses stay reserved until `member delete`\n",
                t.node, t.network
            ))
        }
        MemberCommand::Rename(r) => {
            let t = r.member;
            let update = UpdateMember {
                name: Some(r.name),
                authorized: None,
            };
            let m = call(&args.api, |c| async move {
                c.update_member(t.network, t.node, &update).await
            })?;
            if r.json {
                print_json(&m)
            } else {
                print(&format!(
                    "renamed {} in network {} to {:?}\n",
                    t.node, t.network, m.name
                ))
            }
        }
        MemberCommand::Delete(d) => {
            let t = d.member;
            call(&args.api, |c| async move {
                c.delete_member(t.network, t.node).await
            })?;
            print(&format!(
                "deleted member {} of network {}; its addresses are released\n",
                t.node, t.network
            ))
        }
    }
}
