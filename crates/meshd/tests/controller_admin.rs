//! `meshd controller network|member|route` against a real admin API served in-process
//! (over an in-memory controller): output, exit codes and the one-line errors.

use std::net::SocketAddr;
use std::process::{Command, Output};

use meshd_controller::controller::{Controller, InMemoryController};
use meshd_controller::datadir;
use meshd_controller::state::Command as StateCommand;
use meshd_proto::{Identity, NetworkId, NodeId};
use serde_json::Value;

struct Server {
    controller: InMemoryController,
    url: String,
    token: String,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let controller = InMemoryController::default();
        let token = datadir::new_token();
        let app = meshd_controller::api::router(controller.clone(), token.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a port on 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            controller,
            url,
            token,
            runtime,
        }
    }

    /// Runs `meshd controller <args> --api URL --token TOKEN`.
    fn meshd(&self, args: &[&str]) -> Output {
        let mut all = vec!["controller"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--api", &self.url, "--token", &self.token]);
        meshd(&all, &[])
    }

    /// As [`Self::meshd`]; asserts success and returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.meshd(args);
        assert!(
            out.status.success(),
            "meshd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("output is UTF-8")
    }

    /// A node asks to join, as the node channel would record it.
    fn join(&self, network: &str) -> NodeId {
        let identity = Identity::generate_unproven();
        let network: NetworkId = network.parse().expect("a network id");
        self.runtime
            .block_on(self.controller.write(StateCommand::MemberJoin {
                network,
                node: identity.node_id(),
                identity: *identity.public(),
                physical: Some(SocketAddr::from(([192, 0, 2, 1], 9993))),
                local: vec![],
                at_ms: 1,
            }))
            .expect("the join applies");
        identity.node_id()
    }
}

fn meshd(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshd"))
        .args(args)
        .env_remove("MESHD_API")
        .env_remove("MESHD_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("the meshd binary runs")
}

/// Asserts exit code 1 and exactly one stderr line; returns it without `meshd: `.
fn one_line_failure(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8(out.stderr.clone()).expect("errors are UTF-8");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
        .trim_end()
        .strip_prefix("meshd: ")
        .unwrap_or_else(|| panic!("no `meshd: ` prefix: {stderr}"))
        .to_owned()
}

#[test]
fn admin_commands_end_to_end() {
    let s = Server::start();
    let created = s.ok(&[
        "network",
        "create",
        "--name",
        "prod",
        "--v4-pool",
        "10.77.0.0/16",
        "--container-pool",
        "10.78.0.0/16",
    ]);
    let nwid = created.trim_end().to_owned();
    assert_eq!(created, format!("{nwid}\n"), "only the id on stdout");
    assert!(nwid.len() == 16 && nwid.bytes().all(|b| b.is_ascii_hexdigit()));

    let list = s.ok(&["network", "list"]);
    assert!(list.starts_with("NETWORK ID"), "{list}");
    assert!(list.contains(&nwid) && list.contains("prod"), "{list}");
    let json: Value = serde_json::from_str(&s.ok(&["network", "list", "--json"])).unwrap();
    assert_eq!(json[0]["id"], nwid.as_str());
    let show = s.ok(&["network", "show", &nwid]);
    assert!(show.contains("ipv4 pools      10.77.0.0/16"), "{show}");

    let node = s.join(&nwid).to_string();
    let members = s.ok(&["member", "list", &nwid]);
    assert!(members.starts_with("NODE ID"), "{members}");
    assert!(
        members.contains("6PLANE /80") && members.contains("LAST SEEN"),
        "{members}"
    );
    assert!(members.contains(&node), "{members}");
    let authorized = s.ok(&["member", "authorize", &nwid, &node]);
    assert!(
        authorized.starts_with(&format!("authorized {node}")),
        "{authorized}"
    );
    assert!(
        authorized.contains("containers 10.78.0.0/24"),
        "{authorized}"
    );
    let json: Value = serde_json::from_str(&s.ok(&["member", "list", &nwid, "--json"])).unwrap();
    assert_eq!(json[0]["authorized"], true);
    let ip = json[0]["ipv4"][0].as_str().unwrap().to_owned();

    let added = s.ok(&["route", "add", &nwid, "192.168.50.0/24", "--via", &node]);
    assert_eq!(added, format!("added route 192.168.50.0/24 via {node}\n"));
    let added = s.ok(&["route", "add", &nwid, "fd42::/64", "--via", &ip]);
    assert_eq!(
        added,
        format!("added route fd42::/64 via {node} (gateway {ip})\n")
    );

    // The server's refusals, printed as it worded them.
    let e = one_line_failure(&s.meshd(&["route", "add", &nwid, "10.77.5.0/24", "--via", &node]));
    assert_eq!(
        e,
        "route 10.77.5.0/24 overlaps the network's IPv4 pool 10.77.0.0/16"
    );
    let e = one_line_failure(&s.meshd(&["member", "delete", &nwid, &node]));
    assert!(e.contains("remove it first"), "{e}");
    let e = one_line_failure(&s.meshd(&["network", "show", "8056c2e21c000001"]));
    assert_eq!(
        e,
        "no network 8056c2e21c000001; `meshd controller network list` shows the networks"
    );
    let e = one_line_failure(&s.meshd(&["member", "authorize", &nwid, "89e92ceee5"]));
    assert!(e.starts_with("node 89e92ceee5 is not a member"), "{e}");

    let removed = s.ok(&["route", "remove", &nwid, "192.168.50.0/24"]);
    assert_eq!(
        removed,
        format!("removed route 192.168.50.0/24 via {node}\n")
    );
    s.ok(&["route", "remove", &nwid, "fd42::/64"]);
    let e = one_line_failure(&s.meshd(&["route", "remove", &nwid, "fd42::/64"]));
    assert_eq!(e, format!("network {nwid} has no route fd42::/64"));

    s.ok(&["member", "deauthorize", &nwid, &node]);
    s.ok(&["member", "delete", &nwid, &node]);
    assert!(
        s.ok(&["member", "list", &nwid])
            .starts_with("no members yet")
    );
    let deleted = s.ok(&["network", "delete", &nwid]);
    assert_eq!(
        deleted,
        format!("deleted network {nwid} (prod) and its 0 members\n")
    );
    assert!(s.ok(&["network", "list"]).starts_with("no networks"));
}

#[test]
fn bad_cidrs_are_refused_before_any_request() {
    // Nothing listens there: the CIDR error proves no request was attempted.
    let api = ["--api", "http://127.0.0.1:1", "--token", "t"];
    let run = |args: &[&str]| {
        let mut all = vec!["controller"];
        all.extend_from_slice(args);
        all.extend_from_slice(&api);
        one_line_failure(&meshd(&all, &[]))
    };
    let nwid = "8056c2e21c000001";
    assert_eq!(
        run(&["route", "add", nwid, "192.168.50/24", "--via", "89e92ceee5"]),
        r#"route target "192.168.50/24" is not a CIDR; write it like 192.168.50.0/24"#
    );
    assert_eq!(
        run(&["route", "remove", nwid, "192.168.50.1/24"]),
        "route target 192.168.50.1/24 has host bits set; did you mean 192.168.50.0/24?"
    );
    assert!(
        run(&["route", "add", nwid, "10.9.0.0/16", "--via", "gw"]).contains("neither a node id")
    );
    assert!(
        run(&["network", "create", "--name", "x", "--v4-pool", "10.1.0.0"])
            .contains("has no prefix length")
    );
}

#[test]
fn connection_problems_are_one_line() {
    let s = Server::start();
    let e = one_line_failure(&meshd(
        &[
            "controller",
            "network",
            "list",
            "--api",
            &s.url,
            "--token",
            "wrong",
        ],
        &[],
    ));
    assert!(e.starts_with("missing or wrong bearer token"), "{e}");

    let e = one_line_failure(&meshd(
        &[
            "controller",
            "network",
            "list",
            "--api",
            "http://127.0.0.1:1",
            "--token",
            "t",
        ],
        &[],
    ));
    assert!(
        e.starts_with("cannot reach the controller API at http://127.0.0.1:1: "),
        "{e}"
    );
    assert!(e.ends_with("is `meshd controller run` running?"), "{e}");

    let e = one_line_failure(&meshd(&["controller", "network", "list"], &[]));
    assert!(e.starts_with("no controller API given"), "{e}");

    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("ctl");
    let e = one_line_failure(&meshd(
        &[
            "controller",
            "member",
            "list",
            "8056c2e21c000001",
            "--data",
            missing.to_str().unwrap(),
        ],
        &[],
    ));
    assert_eq!(
        e,
        format!(
            "no controller data in {0}; run `meshd controller init --data {0}` first",
            missing.display()
        )
    );
}

#[test]
fn api_and_token_come_from_the_data_dir_or_the_environment() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    datadir::write_api_info(tmp.path(), &s.url, &s.token).unwrap();
    let dir = tmp.path().to_str().unwrap();
    let out = meshd(&["controller", "network", "--data", dir, "list"], &[]);
    assert!(out.status.success(), "{out:?}");
    let out = meshd(
        &["controller", "network", "list"],
        &[("MESHD_API", &s.url), ("MESHD_TOKEN", &s.token)],
    );
    assert!(out.status.success(), "{out:?}");
}
