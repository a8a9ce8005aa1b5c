//! What an admin sees of a running mesh, end to end with real processes: members named
//! after their hosts (or `--hostname`), renamed from the CLI, the names reaching peers'
//! `meshd peers`; members online with their version and path summary; the picture of the
//! mesh (`GET /v1/networks/{nwid}/mesh`) showing a direct link once the nodes talk; and both
//! Prometheus endpoints, the node's `--metrics-listen` and the replica's `/metrics` (token
//! required), passing `promtool check metrics`, their counters moving with traffic.
//!
//! Needs root, iproute2, ping, python3 and promtool (Debian's `prometheus`).

mod common;
mod mesh;

use std::time::Duration;

use common::ok_stdout;
use mesh::{API_PORT, Mesh, python};
use meshd_proto::NetworkId;
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9100";

#[test]
fn members_are_named_reported_drawn_and_measured() {
    let mut m = Mesh::new(&["n1", "n2"]);
    m.nodes[0].args = vec!["--hostname", "web-1", "--metrics-listen", METRICS];
    m.nodes[1].args = vec!["--metrics-listen", METRICS];
    m.start_controller();
    let nwid = m.create_network("observed");
    m.start_daemon(0);
    m.start_daemon(1);
    m.join_all(nwid);
    let system_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the host name")
        .trim()
        .to_owned();

    // Waiting members are online, named after their hosts, with their version.
    let members = wait_members(&m, nwid, "both named after their hosts", |ms| {
        name_of(ms, &m, 0) == "web-1" && name_of(ms, &m, 1) == system_hostname
    });
    for i in 0..2 {
        let row = member(&members, &m, i);
        assert_eq!(row["online"], true, "{row:#}");
        assert_eq!(row["version"], env!("CARGO_PKG_VERSION"), "{row:#}");
    }
    m.phase("waiting members online, named after their hosts");

    m.authorize_all(nwid);
    let (a, b) = (m.nodes[0].addrs().v4, m.nodes[1].addrs().v4);
    let node_metrics_before = scrape_node(&m, 0);
    let failed = m.pings(&[(0, b.into()), (1, a.into())], 5, 5);
    assert!(failed.is_empty(), "{failed:?}\n{}", m.diagnostics());

    // The picture: one direct link between the two, with its round-trip time.
    let (id0, id1) = (m.nodes[0].id().to_string(), m.nodes[1].id().to_string());
    let mut mesh = Value::Null;
    let drawn = meshd_lab::interrupt::wait_until(Duration::from_secs(30), || {
        mesh = api_json(&m, &format!("/v1/networks/{nwid}/mesh"));
        mesh["links"]
            .as_array()
            .is_some_and(|l| l.len() == 1 && l[0]["path"] == "direct" && l[0]["rtt_ms"].is_f64())
    });
    assert!(
        drawn,
        "no direct link in the picture: {mesh:#}\n{}",
        m.diagnostics()
    );
    let link = &mesh["links"][0];
    let mut pair = [link["a"].as_str().unwrap(), link["b"].as_str().unwrap()];
    pair.sort_unstable();
    let mut ids = [id0.as_str(), id1.as_str()];
    ids.sort_unstable();
    assert_eq!(pair, ids, "{mesh:#}");
    let members = wait_members(&m, nwid, "a path summary of one direct peer", |ms| {
        (0..2).all(|i| member(ms, &m, i)["paths"]["direct"] == 1)
    });
    let list = ok_stdout(&m.ctl(&["member", "list", &nwid.to_string()]));
    assert!(
        list.contains("1 direct") && list.contains("online"),
        "{list}"
    );
    m.phase(&format!(
        "mesh drawn: {link}; {} members",
        members.as_array().map_or(0, Vec::len)
    ));

    // Names reach peers; a rename too; an empty name gives the host name back.
    wait_peer_name(&m, 1, &id0, "web-1");
    let out = ok_stdout(&m.ctl(&["member", "rename", &nwid.to_string(), &id0, "db-1"]));
    assert!(out.contains("db-1"), "{out}");
    wait_peer_name(&m, 1, &id0, "db-1");
    ok_stdout(&m.ctl(&["member", "rename", &nwid.to_string(), &id0, ""]));
    wait_peer_name(&m, 1, &id0, "web-1");
    let bad = m.ctl(&["member", "rename", &nwid.to_string(), &id0, "a\u{202e}b"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("printable"), "{err}");
    m.phase("names reach peers, renamed and restored");

    // The node's metrics: valid, and the counters moved with the pings.
    let node_metrics = scrape_node(&m, 0);
    promtool_check(&node_metrics);
    let sent = |page: &str| sample(page, "meshd_peer_sent_packets_total", &id1);
    assert!(
        sent(&node_metrics) >= sent(&node_metrics_before) + 5.0,
        "sent packets did not grow with 5 pings:\nbefore:\n{node_metrics_before}\nafter:\n{node_metrics}"
    );
    for family in [
        "meshd_peer_received_bytes_total",
        "meshd_peer_rtt_seconds",
        "meshd_peer_handshakes_total",
        "meshd_worker_packets_total",
        "meshd_worker_busy_poll_seconds_total",
    ] {
        assert!(
            node_metrics.contains(&format!("\n{family}{{")),
            "{family} missing:\n{node_metrics}"
        );
    }
    let path = format!("name=\"{system_hostname}\",path=\"direct\"");
    assert!(
        node_metrics.contains(&path),
        "{path} missing:\n{node_metrics}"
    );

    // The replica's metrics: the token is required; valid; they see the members.
    let (status, _) = http_get(&m, &format!("http://127.0.0.1:{API_PORT}/metrics"), None);
    assert_eq!(status, 401, "metrics without the token");
    let page = scrape_controller(&m);
    promtool_check(&page);
    let authorized =
        format!("meshd_controller_members{{network=\"{nwid}\",state=\"authorized\"}} 2");
    assert!(page.contains(&authorized), "{authorized} missing:\n{page}");
    assert!(
        page.contains("meshd_controller_connected_nodes 2"),
        "{page}"
    );
    let pushes = sample(&page, "meshd_controller_config_push_seconds_count", "");
    assert!(
        pushes >= 2.0,
        "configs pushed on authorization were not timed:\n{page}"
    );
    for family in [
        "meshd_raft_term",
        "meshd_raft_applied_index",
        "meshd_raft_commit_index",
    ] {
        assert!(
            page.contains(&format!("\n{family} ")),
            "{family} missing:\n{page}"
        );
    }
    m.phase("both metrics endpoints pass promtool");

    // deploy/: the dashboard charts only what the two pages export, and the scrape config
    // is one Prometheus reads.
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let dashboard = std::fs::read_to_string(deploy.join("grafana/meshd-dashboard.json"))
        .expect("the dashboard");
    let _: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exported = format!("{node_metrics}{page}");
    let charted = metric_names(&dashboard);
    assert!(charted.len() >= 20, "{charted:?}");
    for name in &charted {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            exported.contains(&format!("# TYPE {family} ")),
            "the dashboard charts {name}, which no page exports"
        );
    }
    let config = deploy.join("prometheus/prometheus.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(&config)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `meshd_…` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("meshd_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// `member list --json`, polled until `done` holds.
fn wait_members(m: &Mesh, nwid: NetworkId, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = meshd_lab::interrupt::wait_until(Duration::from_secs(20), || {
        let out = m.ctl(&["member", "list", &nwid.to_string(), "--json"]);
        last = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        done(&last)
    });
    assert!(
        ok,
        "timed out waiting for {what}: {last:#}\n{}",
        m.diagnostics()
    );
    last
}

fn member<'a>(members: &'a Value, m: &Mesh, i: usize) -> &'a Value {
    let id = m.nodes[i].id().to_string();
    members
        .as_array()
        .and_then(|ms| ms.iter().find(|row| row["node_id"] == id.as_str()))
        .unwrap_or(&Value::Null)
}

fn name_of(members: &Value, m: &Mesh, i: usize) -> String {
    member(members, m, i)["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until node `i`'s `peers --json` names `peer` as `name`.
fn wait_peer_name(m: &Mesh, i: usize, peer: &str, name: &str) {
    let mut last = String::new();
    let ok = meshd_lab::interrupt::wait_until(Duration::from_secs(20), || {
        let out = m.node_cli(i, &["peers", "--json"]);
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        let peers: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
        peers
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["node_id"] == peer && p["name"] == name))
    });
    assert!(
        ok,
        "node {i} never showed {peer} as {name:?}: {last}\n{}",
        m.diagnostics()
    );
}

/// A GET inside the controller's namespace: status and body.
fn http_get(m: &Mesh, url: &str, token: Option<&str>) -> (u16, String) {
    let script = "import sys, urllib.request, urllib.error\n\
                  req = urllib.request.Request(sys.argv[1])\n\
                  if len(sys.argv) > 2: req.add_header('Authorization', 'Bearer ' + sys.argv[2])\n\
                  try:\n    r = urllib.request.urlopen(req, timeout=10); print(r.status); sys.stdout.write(r.read().decode())\n\
                  except urllib.error.HTTPError as e:\n    print(e.code); sys.stdout.write(e.read().decode())\n";
    let mut argv = vec![python(), "-c", script, url];
    argv.extend(token);
    let out = m.lab.exec(mesh::CTL, &argv).expect("lab");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Untrimmed: the exposition format ends with a newline.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
    (
        status.trim().parse().expect("a status line"),
        body.to_owned(),
    )
}

fn token(m: &Mesh) -> String {
    std::fs::read_to_string(m.ctl_data.join("api.token"))
        .expect("the admin token")
        .trim()
        .to_owned()
}

fn api_json(m: &Mesh, path: &str) -> Value {
    let (status, body) = http_get(
        m,
        &format!("http://127.0.0.1:{API_PORT}{path}"),
        Some(&token(m)),
    );
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn scrape_controller(m: &Mesh) -> String {
    let (status, body) = http_get(
        m,
        &format!("http://127.0.0.1:{API_PORT}/metrics"),
        Some(&token(m)),
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// Node `i`'s metrics page, from inside its namespace.
fn scrape_node(m: &Mesh, i: usize) -> String {
    let script = "import sys, urllib.request\n\
                  sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())";
    let url = format!("http://{METRICS}/metrics");
    let out = m
        .lab
        .exec(m.nodes[i].role, &[python(), "-c", script, &url])
        .expect("lab");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Untrimmed: the exposition format ends with a newline.
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `promtool check metrics` accepts `page` (lint problems included).
fn promtool_check(page: &str) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, page).expect("write");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("promtool runs (Debian's prometheus package)");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the first sample of `family` whose labels contain `label_part`.
fn sample(page: &str, family: &str, label_part: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .find(|l| l.contains(label_part))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
