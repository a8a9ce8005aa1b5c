//! The node daemon's control side as real processes: a controller replica, `meshd daemon`
//! (with the data plane not attached, so no root is needed), and the CLI talking to it over
//! its Unix socket. Join → ACCESS_DENIED → authorize → OK with addresses → deauthorize →
//! restart with every controller down → the network comes back from the cache → leave.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ReplicaProcess, meshd, ok_stdout};
use meshd_proto::{NetworkId, NodeId, addr};
use serde_json::Value;

/// One `meshd daemon` process on its own state directory.
struct DaemonProcess {
    state: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl DaemonProcess {
    /// Starts `meshd daemon --state <state> <args>` and waits until its API answers.
    fn start(state: &Path, args: &[&str]) -> Self {
        let log = state.with_extension("log");
        let mut daemon = Self {
            state: state.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            log,
            child: None,
        };
        daemon.restart();
        daemon
    }

    /// (Re)starts the process with the same arguments.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = meshd()
            .arg("daemon")
            .arg("--state")
            .arg(&self.state)
            .args(&self.args)
            .env("RUST_LOG", "info,meshd=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("meshd runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.cli(&["status", "--json"]).status.success() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("daemon exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not come up: {}", self.log());
    }

    /// SIGTERM, and the exit status of the clean shutdown.
    fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = std::process::Command::new("kill")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait works") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("daemon did not stop on SIGTERM: {}", self.log());
    }

    /// `meshd <args> --state <state>`.
    fn cli(&self, args: &[&str]) -> Output {
        meshd()
            .args(args)
            .arg("--state")
            .arg(&self.state)
            .output()
            .expect("meshd runs")
    }

    fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        serde_json::from_str(&ok_stdout(&out)).expect("status --json is JSON")
    }

    /// Polls `status --json` until `done` holds; panics with the last status and the log.
    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last status:\n{status:#}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn network(status: &Value, nwid: NetworkId) -> Option<&Value> {
    status["networks"]
        .as_array()
        .expect("a networks array")
        .iter()
        .find(|n| n["id"] == nwid.to_string())
}

fn network_status(status: &Value, nwid: NetworkId) -> Option<&str> {
    network(status, nwid).and_then(|n| n["status"].as_str())
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("exists").permissions().mode() & 0o777
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn join_authorize_deauthorize_restart_offline_and_leave() {
    let _netns = common::TestNetns::enter("dc");
    let mut replica = ReplicaProcess::init();
    replica.start();
    let nwid: NetworkId = ok_stdout(&replica.cli(&["network", "create", "--name", "e2e"]))
        .parse()
        .expect("network create prints the id alone");
    let tmp = tempfile::tempdir().expect("a temp dir");
    let state = tmp.path().join("node");
    let controller = replica.channel.to_string();
    let mut daemon = DaemonProcess::start(&state, &["--port", "0", "--controller", &controller]);

    // The state directory and everything secret in it are private.
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("identity.secret")), 0o600);
    assert_eq!(mode(&state.join("meshd.sock")), 0o600);
    let status = daemon.wait_for("the controller link", Duration::from_secs(15), |s| {
        s["online"] == true
    });
    let node: NodeId = status["node_id"]
        .as_str()
        .expect("a node id")
        .parse()
        .expect("10 hex digits");
    assert_eq!(status["controllers"][0]["address"], controller);
    assert_eq!(status["controllers"][0]["reachable"], true);
    assert!(status["controllers"][0]["connected_since_s"].is_u64());
    assert_eq!(status["dataplane_attached"], true);

    // Join: the answer comes before the controller's, then ACCESS_DENIED.
    let out = daemon.cli(&["join", &nwid.to_string()]);
    let text = ok_stdout(&out);
    assert_eq!(
        text.lines().next(),
        Some(format!("node {node} joined {nwid}: REQUESTING_CONFIGURATION").as_str()),
        "{text}"
    );
    assert!(
        text.contains(&format!("meshd controller member authorize {nwid} {node}")),
        "join says what the admin must run: {text}"
    );
    let status = daemon.wait_for("ACCESS_DENIED", Duration::from_secs(10), |s| {
        network_status(s, nwid) == Some("ACCESS_DENIED")
    });
    assert!(network(&status, nwid).expect("joined")["revision"].is_null());
    let record = state.join("networks").join(format!("{nwid}.json"));
    assert_eq!(mode(&record), 0o600);
    let saved: Value = serde_json::from_slice(&fs::read(&record).expect("record")).expect("JSON");
    assert_eq!(saved["controllers"][0], controller);
    assert!(saved["joined_at"].is_u64());

    // Authorize: OK with the revision, addresses and container subnets, within seconds.
    let authorized_at = Instant::now();
    ok_stdout(&replica.cli(&["member", "authorize", &nwid.to_string(), &node.to_string()]));
    let status = daemon.wait_for("OK", Duration::from_secs(10), |s| {
        network_status(s, nwid) == Some("OK")
    });
    eprintln!("authorize -> OK in status: {:?}", authorized_at.elapsed());
    let net = network(&status, nwid).expect("joined");
    let first_revision = net["revision"].as_u64().expect("a revision");
    assert!(first_revision > 0);
    assert_eq!(net["name"], "e2e");
    assert_eq!(net["mtu"], 1420);
    assert_eq!(
        net["interface"],
        format!("mesh-{}", &nwid.to_string()[..10])
    );
    let addresses: Vec<&str> = net["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .map(|a| a.as_str().expect("text"))
        .collect();
    assert_eq!(addresses.len(), 3, "{addresses:?}");
    assert!(
        addresses[0].starts_with("10.147.") && addresses[0].ends_with("/16"),
        "IPv4 from the default pool, with its prefix: {addresses:?}"
    );
    // As the interface carries them: RFC4193 in the network /88, 6PLANE `::1` in the /40.
    let rfc4193 = format!("{}/88", addr::rfc4193_addr(nwid, node));
    let sixplane = format!("{}/40", addr::sixplane_addr(nwid, node));
    assert!(addresses.contains(&rfc4193.as_str()), "{addresses:?}");
    assert!(addresses.contains(&sixplane.as_str()), "{addresses:?}");
    let v4_subnet = net["container_subnets"]["ipv4"]
        .as_str()
        .expect("a v4 subnet");
    assert!(
        v4_subnet.starts_with("172.") && v4_subnet.ends_with("/24"),
        "{v4_subnet}"
    );
    assert_eq!(
        net["container_subnets"]["ipv6"],
        addr::sixplane_node_prefix(nwid, node).to_string()
    );
    assert!(
        net["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .any(|r| r["target"] == v4_subnet && r["node_id"] == node.to_string()),
        "{net:#}"
    );
    let config = state.join("networks").join(format!("{nwid}.config"));
    assert_eq!(mode(&config), 0o600);

    // The human form has the same facts.
    let human = ok_stdout(&daemon.cli(&["status"]));
    assert!(
        human.contains(&format!(
            "network {nwid}  e2e  OK  revision {first_revision}"
        )),
        "{human}"
    );
    assert!(human.contains(v4_subnet), "{human}");

    // Deauthorize: ACCESS_DENIED, still holding the verified config.
    ok_stdout(&replica.cli(&[
        "member",
        "deauthorize",
        &nwid.to_string(),
        &node.to_string(),
    ]));
    daemon.wait_for(
        "ACCESS_DENIED after deauthorize",
        Duration::from_secs(10),
        |s| network_status(s, nwid) == Some("ACCESS_DENIED"),
    );
    // And back: a newer revision.
    ok_stdout(&replica.cli(&["member", "authorize", &nwid.to_string(), &node.to_string()]));
    let status = daemon.wait_for("OK again", Duration::from_secs(10), |s| {
        network_status(s, nwid) == Some("OK")
            && network(s, nwid).and_then(|n| n["revision"].as_u64()) > Some(first_revision)
    });
    let revision = network(&status, nwid).expect("joined")["revision"]
        .as_u64()
        .expect("a revision");

    // Stop everything, restart the daemon alone: the network runs on the cached config.
    assert!(daemon.stop().success(), "clean exit: {}", daemon.log());
    assert!(
        !state.join("meshd.sock").exists(),
        "the socket is removed at exit"
    );
    replica.stop();
    daemon.restart();
    let status = daemon.status();
    assert_eq!(network_status(&status, nwid), Some("OK"), "{status:#}");
    assert_eq!(
        network(&status, nwid).expect("joined")["revision"],
        revision
    );
    assert_eq!(status["node_id"], node.to_string(), "same identity");
    let status = daemon.wait_for(
        "the controller to be unreachable",
        Duration::from_secs(20),
        |s| {
            s["controllers"][0]["reachable"] == false
                && s["controllers"][0]["unreachable_for_s"].is_u64()
        },
    );
    assert_eq!(status["online"], false);
    assert_eq!(
        network(&status, nwid).expect("joined")["revision"],
        revision
    );
    let human = ok_stdout(&daemon.cli(&["status"]));
    assert!(
        human.contains(&format!("controller {controller}  unreachable for ")),
        "{human}"
    );

    // A join while no controller answers waits for one.
    let unknown: NetworkId = "0123456789abcdef".parse().expect("valid id");
    let text = ok_stdout(&daemon.cli(&["join", &unknown.to_string()]));
    assert!(text.contains("REQUESTING_CONFIGURATION"), "{text}");
    assert_eq!(
        network_status(&daemon.status(), unknown),
        Some("REQUESTING_CONFIGURATION")
    );

    // The controller comes back: the link reconnects (a join wakes it from its backoff),
    // the unknown network is NOT_FOUND, and the known one stays OK. Its revision never goes
    // back; it may move on, since the controller records the channel's new source address
    // as an endpoint of the member.
    replica.start();
    ok_stdout(&daemon.cli(&["join", &unknown.to_string()]));
    let status = daemon.wait_for("reconnection", Duration::from_secs(30), |s| {
        s["online"] == true && network_status(s, unknown) == Some("NOT_FOUND")
    });
    assert_eq!(network_status(&status, nwid), Some("OK"));
    let now_revision = network(&status, nwid).expect("joined")["revision"].as_u64();
    assert!(now_revision >= Some(revision), "{status:#}");

    // Leave: gone from the status and from the state directory.
    let text = ok_stdout(&daemon.cli(&["leave", &nwid.to_string()]));
    assert_eq!(text, format!("left {nwid}"));
    let status = daemon.status();
    assert!(network(&status, nwid).is_none(), "{status:#}");
    assert!(!record.exists() && !config.exists());
    let out = daemon.cli(&["leave", &nwid.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has not joined network"),
        "{}",
        stderr(&out)
    );

    assert!(daemon.stop().success());
    replica.stop();
}

#[test]
fn commands_without_a_daemon_say_how_to_start_one() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let dir = tmp.path().display().to_string();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["peers"],
        &["leave", "0123456789abcdef"],
    ] {
        let out = meshd()
            .args(args)
            .args(["--state", &dir])
            .output()
            .expect("meshd runs");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out),
            format!(
                "meshd: no daemon is running (no socket at {dir}/meshd.sock)\n\
                 hint: start it with: meshd daemon --state {dir}\n"
            ),
            "{args:?}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_malformed_network_id_is_a_usage_error() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    for args in [&["join", "not-an-id"][..], &["leave", "8056C2E21C00000"]] {
        let out = meshd()
            .args(args)
            .arg("--state")
            .arg(tmp.path())
            .output()
            .expect("meshd runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn daemons_on_separate_state_directories_do_not_collide() {
    let _netns = common::TestNetns::enter("dc");
    let tmp = tempfile::tempdir().expect("a temp dir");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = DaemonProcess::start(&a_dir, &["--port", "0"]);
    let mut b = DaemonProcess::start(&b_dir, &["--port", "0"]);
    assert_ne!(a.status()["node_id"], b.status()["node_id"]);
    assert_eq!(a.status()["controllers"], Value::Array(vec![]));

    // A second daemon on a state directory in use is refused, and the first one lives on.
    let out = meshd()
        .arg("daemon")
        .arg("--state")
        .arg(&a_dir)
        .args(["--port", "0"])
        .output()
        .expect("meshd runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("another meshd daemon is running"),
        "{}",
        stderr(&out)
    );
    assert!(a.cli(&["status"]).status.success());

    // No controller anywhere: a join says where to give one.
    let out = a.cli(&["join", "8056c2e21c000001"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--controller HOST:PORT"),
        "{}",
        stderr(&out)
    );

    // The socket speaks plain HTTP+JSON; errors are JSON too.
    let raw = http_over_unix(
        &a_dir.join("meshd.sock"),
        "GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    assert!(raw.contains("\"error\""), "{raw}");
    let raw = http_over_unix(
        &a_dir.join("meshd.sock"),
        "POST /v1/networks/xyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("bad network id"), "{raw}");

    assert!(a.stop().success());
    assert!(b.stop().success());
}

/// One raw HTTP exchange over a Unix socket, as `curl --unix-socket` would do it.
fn http_over_unix(socket: &Path, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("the daemon listens");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a timeout");
    s.write_all(request.as_bytes()).expect("request sent");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("an answer");
    out
}

const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// `cat <path>` in this thread's network namespace (the test's).
fn cat_here(path: &str) -> String {
    ok_stdout(
        &std::process::Command::new("cat")
            .arg(path)
            .output()
            .expect("cat runs"),
    )
}

/// `cat <path>` inside the network namespace of the daemon's process, found by
/// `ip netns identify`.
fn cat_in_daemons_netns(daemon: &DaemonProcess, path: &str) -> String {
    let pid = daemon.child.as_ref().expect("running").id();
    let ns = ok_stdout(
        &std::process::Command::new("ip")
            .args(["netns", "identify", &pid.to_string()])
            .output()
            .expect("ip runs"),
    );
    assert!(
        ns.starts_with("msh-fw"),
        "the daemon runs in the test's namespace, not {ns:?}"
    );
    ok_stdout(
        &std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "cat", path])
            .output()
            .expect("ip runs"),
    )
}

#[test]
fn configure_forwarding_turns_forwarding_on_in_the_daemons_namespace() {
    let _netns = common::TestNetns::enter("fw");
    for path in [IPV4_FORWARD, IPV6_FORWARD] {
        assert_eq!(
            cat_here(path),
            "0",
            "a fresh namespace forwards nothing: {path}"
        );
    }
    let tmp = tempfile::tempdir().expect("a temp dir");
    let mut daemon = DaemonProcess::start(
        &tmp.path().join("node"),
        &["--port", "0", "--configure-forwarding"],
    );
    for path in [IPV4_FORWARD, IPV6_FORWARD] {
        assert_eq!(cat_in_daemons_netns(&daemon, path), "1", "{path}");
    }
    let status = daemon.status();
    let fw = &status["forwarding"];
    assert_eq!(fw["ipv4"], true, "{status:#}");
    assert_eq!(fw["ipv6"], true, "{status:#}");
    assert_eq!(
        fw["configured"],
        serde_json::json!(["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]),
        "{status:#}"
    );
    // No network gives this host a container subnet: nothing to warn about.
    assert_eq!(fw["problems"], serde_json::json!([]), "{status:#}");
    assert!(fw["firewall"].as_str().is_some_and(|f| !f.is_empty()));
    let human = ok_stdout(&daemon.cli(&["status"]));
    assert!(
        human.contains(
            "forwarding: set by meshd (net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1)"
        ),
        "{human}"
    );
    assert!(!human.contains("warning:"), "{human}");
    assert!(
        daemon.log().contains(
            "--configure-forwarding: set net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1"
        ),
        "{}",
        daemon.log()
    );
    assert!(daemon.stop().success());
}

#[test]
fn without_configure_forwarding_the_sysctls_are_left_alone() {
    let _netns = common::TestNetns::enter("fw");
    let tmp = tempfile::tempdir().expect("a temp dir");
    let mut daemon = DaemonProcess::start(&tmp.path().join("node"), &["--port", "0"]);
    let status = daemon.status();
    let fw = &status["forwarding"];
    assert_eq!(fw["ipv4"], false, "{status:#}");
    assert_eq!(fw["ipv6"], false, "{status:#}");
    assert_eq!(fw["configured"], serde_json::json!([]), "{status:#}");
    assert_eq!(fw["problems"], serde_json::json!([]), "{status:#}");
    for path in [IPV4_FORWARD, IPV6_FORWARD] {
        assert_eq!(cat_in_daemons_netns(&daemon, path), "0", "{path}");
    }
    let human = ok_stdout(&daemon.cli(&["status"]));
    assert!(!human.contains("forwarding:"), "{human}");
    assert!(daemon.stop().success());
}
