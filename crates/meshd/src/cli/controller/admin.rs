//! The admin commands (`network`, `member`, `route`, `replica`): clients of a replica's
//! admin API.
//!
//! Values the user typed are checked before anything is sent, with the same parsers the
//! API uses, so a bad CIDR fails the same way with or without a reachable controller.
//! API errors are printed as the server worded them.

use std::future::Future;

use anyhow::Context;
use meshd_controller::admin_client::AdminClient;
use meshd_controller::api::requests::{
    CreateNetwork, parse_route_target, parse_v4_cidr, parse_via,
};
use meshd_controller::datadir;
use meshd_controller::replica::parse_replica_address;

use super::render;
use super::{
    ApiArgs, MemberArgs, MemberCommand, NetworkArgs, NetworkCommand, NetworkCreateArgs,
    ReplicaArgs, ReplicaCommand, RouteArgs, RouteCommand,
};
use crate::cli::output::{print, print_json};

/// Runs `meshd controller network ...`.
pub(super) fn network(args: NetworkArgs) -> anyhow::Result<()> {
    match args.command {
        NetworkCommand::Create(create) => {
            let req = create_request(&create)?;
            let net = run(&args.api, |c| async move { c.create_network(&req).await })?;
            // Only the id, so that `NWID=$(meshd controller network create ...)` works.
            print(&format!("{}\n", net.id))
        }
        NetworkCommand::List(list) => {
            let nets = run(&args.api, |c| async move { c.networks().await })?;
            if list.json {
                print_json(&nets)
            } else {
                print(&render::network_table(&nets))
            }
        }
        NetworkCommand::Show(show) => {
            let net = run(&args.api, |c| async move { c.network(show.network).await })?;
            if show.json {
                print_json(&net)
            } else {
                print(&render::network_details(&net))
            }
        }
        NetworkCommand::Delete(delete) => {
            let net = run(&args.api, |c| async move {
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

/// Runs `meshd controller member ...`.
pub(super) fn member(args: MemberArgs) -> anyhow::Result<()> {
    match args.command {
        MemberCommand::List(list) => {
            let members = run(&args.api, |c| async move { c.members(list.network).await })?;
            if list.json {
                print_json(&members)
            } else {
                print(&render::member_table(&members, meshd_io::clock::now_ms()))
            }
        }
        MemberCommand::Authorize(a) => {
            let t = a.member;
            let m = run(&args.api, |c| async move {
                c.authorize(t.network, t.node).await
            })?;
            print(&render::authorized(&t.network.to_string(), &m))
        }
        MemberCommand::Deauthorize(d) => {
            let t = d.member;
            run(&args.api, |c| async move {
                c.deauthorize(t.network, t.node).await
            })?;
            print(&format!(
                "deauthorized {} in network {}; its addresses stay reserved until `member delete`\n",
                t.node, t.network
            ))
        }
        MemberCommand::Delete(d) => {
            let t = d.member;
            run(&args.api, |c| async move {
                c.delete_member(t.network, t.node).await
            })?;
            print(&format!(
                "deleted member {} of network {}; its addresses are released\n",
                t.node, t.network
            ))
        }
    }
}

/// Runs `meshd controller route ...`.
pub(super) fn route(args: RouteArgs) -> anyhow::Result<()> {
    match args.command {
        RouteCommand::Add(add) => {
            let target = parse_route_target(&add.target)?;
            let via = parse_via(&add.via)?;
            let route = run(&args.api, |c| async move {
                c.add_route(add.network, target, via).await
            })?;
            print(&format!("added route {}\n", render::route_text(&route)))
        }
        RouteCommand::Remove(remove) => {
            let target = parse_route_target(&remove.target)?;
            let route = run(&args.api, |c| async move {
                c.remove_route(remove.network, target).await
            })?;
            print(&format!("removed route {}\n", render::route_text(&route)))
        }
    }
}

/// Runs `meshd controller replica ...`.
pub(super) fn replica(args: ReplicaArgs) -> anyhow::Result<()> {
    match args.command {
        ReplicaCommand::Add(add) => {
            let address = parse_replica_address(&add.address)
                .map_err(|e| anyhow::anyhow!("--address: {e}"))?;
            let view = run(&args.api, |c| async move {
                c.add_replica(add.id, &address).await
            })?;
            print(&format!(
                "replica {} at {} is a voter of the cluster\n{}",
                add.id,
                add.address.trim(),
                render::replica_table(&view)
            ))
        }
        ReplicaCommand::Remove(remove) => {
            let view = run(
                &args.api,
                |c| async move { c.remove_replica(remove.id).await },
            )?;
            print(&format!(
                "removed replica {}; stop its `meshd controller run` (its data directory is no \
                 longer needed)\n{}",
                remove.id,
                render::replica_table(&view)
            ))
        }
        ReplicaCommand::List(list) => {
            let view = run(&args.api, |c| async move { c.replicas().await })?;
            if list.json {
                print_json(&view)
            } else {
                print(&render::replica_table(&view))
            }
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
    })
}

/// Connects as `api` says and runs one call to completion.
fn run<T, F, Fut>(api: &ApiArgs, call: F) -> anyhow::Result<T>
where
    F: FnOnce(AdminClient) -> Fut,
    Fut: Future<Output = Result<T, meshd_controller::admin_client::ClientError>>,
{
    let client = client(api)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(call(client))?)
}

/// The client for --api/--token (or MESHD_API/MESHD_TOKEN), falling back to what the
/// replica wrote into --data.
fn client(api: &ApiArgs) -> anyhow::Result<AdminClient> {
    let (url, token) = match (&api.api, &api.token, &api.data) {
        (Some(url), Some(token), _) => (url.clone(), token.clone()),
        (url, token, Some(dir)) => {
            let (data_url, data_token) = datadir::read_api_info(dir)?;
            (
                url.clone().unwrap_or(data_url),
                token.clone().unwrap_or(data_token),
            )
        }
        (None, _, None) => anyhow::bail!(
            "no controller API given; pass --api URL --token TOKEN (or set MESHD_API and \
             MESHD_TOKEN), or --data DIR on a replica's host"
        ),
        (Some(_), None, None) => anyhow::bail!(
            "no admin API token given; pass --token TOKEN or set MESHD_TOKEN (it is in \
             DIR/api.token on the replica's host)"
        ),
    };
    Ok(AdminClient::new(url, token)?)
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
        let super::super::ControllerCommand::Network(n) = c.command else {
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

    #[test]
    fn connection_comes_from_flags_or_the_data_dir() {
        let none = ApiArgs {
            api: None,
            token: None,
            data: None,
        };
        assert!(
            client(&none)
                .unwrap_err()
                .to_string()
                .starts_with("no controller API given")
        );
        let no_token = ApiArgs {
            api: Some("http://127.0.0.1:9995".into()),
            ..none.clone()
        };
        assert!(
            client(&no_token)
                .unwrap_err()
                .to_string()
                .contains("--token")
        );

        let tmp = tempfile::tempdir().unwrap();
        let token = datadir::new_token();
        datadir::write_api_info(tmp.path(), "http://127.0.0.1:9995", &token).unwrap();
        let from_data = ApiArgs {
            data: Some(tmp.path().to_owned()),
            ..none.clone()
        };
        assert_eq!(client(&from_data).unwrap().base(), "http://127.0.0.1:9995");
        let overridden = ApiArgs {
            api: Some("http://10.0.0.5:9995".into()),
            ..from_data
        };
        assert_eq!(client(&overridden).unwrap().base(), "http://10.0.0.5:9995");

        let empty = tempfile::tempdir().unwrap();
        let e = client(&ApiArgs {
            data: Some(empty.path().to_owned()),
            ..none
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("no controller data in"), "{e}");
    }
}
