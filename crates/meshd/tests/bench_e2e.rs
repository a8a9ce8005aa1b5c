//! `meshd bench` end to end, in network namespaces with real processes: a controller host
//! and two node hosts on one bridge.
//!
//! n1 benches n2 over TCP (by node id), UDP (by node id) and 4 TCP streams (by n2's RFC4193
//! address); the JSON shows throughput, a direct path, the status's MTU and the time asked
//! for. A bench to an address that is not a peer's mesh address is refused by the CLI with
//! the list of peers, and n2's bench server closes a connection made to its underlay address
//! without answering.
//!
//! Needs root, iproute2, ping and python3
//! (`cargo test -p meshd --test bench_e2e -- --nocapture`).

mod common;
mod mesh;

use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

use common::ok_stdout;
use mesh::{MESHD, Mesh, network, python};
use serde_json::Value;

const NODES: [&str; 2] = ["n1", "n2"];
const BENCH_PORT: u16 = 9992;

/// `meshd bench <args> --state S` on node `i`.
fn bench(m: &Mesh, i: usize, args: &[&str]) -> Output {
    let n = &m.nodes[i];
    let mut argv = vec![MESHD, "bench"];
    argv.extend(args);
    argv.extend(["--state", n.state.to_str().expect("UTF-8 path")]);
    m.lab
        .exec_timeout(n.role, &argv, Duration::from_secs(60))
        .expect("lab")
}

/// `meshd bench ... --json` on node `i`: the result.
fn bench_json(m: &Mesh, i: usize, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = bench(m, i, &all);
    assert!(
        out.status.success(),
        "meshd bench {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.diagnostics()
    );
    let value: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench --json prints JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    eprintln!("meshd bench {args:?}: {value}");
    value
}

/// Connects to ADDR PORT, sends a bench request and prints the answer line, or `CLOSED`
/// when the server closed (or reset) the connection without answering.
const PROBE: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
try:
    s.sendall(b'{"v":1,"mode":"tcp","seconds":1,"stream":0}\n')
    b = s.recv(1000)
except ConnectionResetError:
    b = b""
print(b.decode().strip() if b else "CLOSED")
"#;

#[test]
fn bench_measures_the_tunnel_to_a_peer() {
    let mut m = Mesh::new(&NODES);
    m.phase(&m.describe_lab());
    m.start_controller();
    let nwid = m.create_network("bench");
    for i in 0..NODES.len() {
        m.start_daemon(i);
    }
    m.join_all(nwid);
    m.authorize_all(nwid);
    m.phase("2 daemons joined and authorized");

    let n2 = m.nodes[1].addrs();
    let to_n2 = [(0, IpAddr::V4(n2.v4)), (0, IpAddr::V6(n2.rfc4193))];
    let mut failed = Vec::new();
    let up = meshd_lab::interrupt::wait_until(Duration::from_secs(20), || {
        failed = m.pings(&to_n2, 1, 1);
        failed.is_empty()
    });
    assert!(
        up,
        "n1 does not reach n2:\n{}\n{}",
        failed.join("\n"),
        m.diagnostics()
    );
    m.phase("n1 reaches n2");

    let status = m.status(0);
    let mtu = network(&status, nwid).expect("joined")["mtu"].clone();
    assert!(mtu.is_u64(), "{status:#}");
    let n2_id = m.nodes[1].id().to_string();

    // TCP, one stream, by node id: the peer's mesh IPv4 address.
    let r = bench_json(&m, 0, &[&n2_id, "--seconds", "2"]);
    assert_eq!(r["peer"], n2_id.as_str());
    assert_eq!(r["address"], n2.v4.to_string());
    assert_eq!(r["mode"], "tcp");
    assert_eq!(r["streams"], 1);
    assert!(r["mbit_per_s"].as_f64().expect("mbit_per_s") > 0.0, "{r}");
    assert!(r["bytes"].as_u64().expect("bytes") > 0, "{r}");
    assert!(
        r["packets_per_s"].as_f64().expect("packets_per_s") > 0.0,
        "{r}"
    );
    assert_eq!(r["path"], "direct", "{r}");
    assert_eq!(r["mtu"], mtu, "{r}");
    let seconds = r["seconds"].as_f64().expect("seconds");
    assert!((1.9..3.5).contains(&seconds), "about 2 s: {r}");
    assert!(r["retransmits"].is_u64(), "{r}");
    assert!(r["loss_percent"].is_null(), "{r}");
    for key in ["cpu_local_percent", "cpu_remote_percent"] {
        let cpu = r[key].as_f64().unwrap_or_else(|| panic!("{key}: {r}"));
        assert!((0.0..=100.0 * 64.0).contains(&cpu), "{key}: {r}");
    }
    m.phase("TCP bench by node id");

    // The status counts what the packet workers (one per core by default) moved: at least
    // one sealed packet per MTU of the bench's bytes.
    let workers = m.status(0)["packet_workers"].clone();
    let workers = workers.as_array().expect("packet_workers is a list");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(workers.len(), cores, "{workers:?}");
    let sum = |key: &str| -> u64 { workers.iter().map(|w| w[key].as_u64().unwrap()).sum() };
    let bytes = r["bytes"].as_u64().unwrap();
    assert!(
        sum("to_peers") >= bytes / 1500,
        "{bytes} bytes: {workers:?}"
    );
    assert!(
        sum("from_peers") > 0,
        "the bench's acknowledgements: {workers:?}"
    );
    // Between the batches of a transfer the workers poll before they sleep (the default
    // --busy-poll-us), and the status says for how long.
    assert!(
        sum("busy_poll_ms") > 0,
        "no busy polling counted: {workers:?}"
    );

    // UDP, by node id: loss is reported.
    let r = bench_json(&m, 0, &[&n2_id, "--udp", "--seconds", "1"]);
    assert_eq!(r["mode"], "udp");
    let loss = r["loss_percent"].as_f64().expect("loss_percent");
    assert!((0.0..=100.0).contains(&loss), "{r}");
    assert!(loss < 100.0, "some datagrams arrive: {r}");
    assert!(r["mbit_per_s"].as_f64().expect("mbit_per_s") > 0.0, "{r}");
    assert!(
        r["packets_per_s"].as_f64().expect("packets_per_s") > 0.0,
        "{r}"
    );
    assert!(r["retransmits"].is_null(), "{r}");
    assert_eq!(r["path"], "direct", "{r}");
    m.phase("UDP bench");

    // Four streams to the RFC4193 address (IPv6 through the dual-stack server).
    let rfc4193 = n2.rfc4193.to_string();
    let r = bench_json(&m, 0, &[&rfc4193, "--streams", "4", "--seconds", "1"]);
    assert_eq!(r["streams"], 4);
    assert_eq!(r["peer"], n2_id.as_str());
    assert_eq!(r["address"], rfc4193.as_str());
    assert!(r["mbit_per_s"].as_f64().expect("mbit_per_s") > 0.0, "{r}");
    m.phase("4 TCP streams over RFC4193");

    // The human form.
    let out = bench(&m, 0, &[&n2.sixplane.to_string(), "--seconds", "1"]);
    let text = ok_stdout(&out);
    for needle in [
        "Mbit/s",
        "host-wide TCP retransmits",
        "DIRECT",
        "tunnel MTU",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    eprintln!("{text}");

    // Not a mesh address: the CLI refuses, listing the peers.
    let underlay = m.lab.ip(NODES[1]).to_string();
    let out = bench(&m, 0, &[&underlay, "--seconds", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a mesh address of any peer") && stderr.contains(&n2_id),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    let out = bench(&m, 0, &["0123456789"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && stderr.contains("unknown peer 0123456789"),
        "{stderr}"
    );
    // ... and so does n2's server, on its underlay address: closed without an answer,
    // while its mesh address answers the same request.
    let port = BENCH_PORT.to_string();
    let probe = |to: &str| {
        ok_stdout(
            &m.lab
                .exec(NODES[0], &[python(), "-c", PROBE, to, &port])
                .expect("lab"),
        )
    };
    assert_eq!(probe(&underlay), "CLOSED");
    assert!(probe(&n2.v4.to_string()).contains("\"ok\":true"));
    m.phase("non-mesh addresses refused");
}
