//! Path choice with real daemons: two hosts reach each other over the lab's bridge (the
//! fast path) and through a router namespace whose forwarded packets pass a userspace delay
//! line (the slow path, +3 ms each way). Each daemon reports both of its addresses to the
//! controller, so each peer has two candidates.
//!
//! The bridge path between the two hosts is blackholed while they meet, so their first
//! session runs over the slow path, as when a handshake copy on a slower path wins the race.
//! Once the bridge path is open again, the periodic path scan (every 30 s) moves one side
//! onto it and the other follows (by its own scan, or by the traffic now arriving there): the endpoints change, ping drops below the slow path's delay, and the endpoint
//! stays there while traffic flows.
//!
//! Needs root, iproute2, ping and python3 (`cargo test -p meshd --test paths_e2e --
//! --nocapture` prints the phases).

mod common;
mod mesh;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mesh::{Mesh, NODE_PORT, python};
use serde_json::Value;

/// One-way delay the slow path adds.
const DELAY_MS: u64 = 3;
const ROUTER: &str = "slow";

/// A delay line on a TUN device: every packet read from it is written back into it
/// `DELAY_S` later (argv: device name, delay in seconds). Policy routing in the router
/// namespace sends what arrives from the hosts into the TUN, and what comes out of it on to
/// its destination.
const DELAY_LINE: &str = r#"
import collections, fcntl, os, select, struct, sys, time
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454ca, 0x0001, 0x1000
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", sys.argv[1].encode(), IFF_TUN | IFF_NO_PI))
delay = float(sys.argv[2])
line = collections.deque()
while True:
    timeout = max(0.0, line[0][0] - time.monotonic()) if line else None
    readable, _, _ = select.select([fd], [], [], timeout)
    if readable:
        line.append((time.monotonic() + delay, os.read(fd, 65536)))
    now = time.monotonic()
    while line and line[0][0] <= now:
        os.write(fd, line.popleft()[1])
"#;

/// The slow path: `n1 --p1/p2-- slow --p3/p4-- n2`, 10.201.1.0/24 and 10.201.2.0/24, with
/// the delay line `dl` in the router. Returns the hosts' addresses on it.
fn build_slow_path(m: &mut Mesh) -> (Ipv4Addr, Ipv4Addr) {
    let lab = &mut m.lab;
    lab.add_namespace(ROUTER).expect("lab");
    let [p1, p2, p3, p4, dl] = ["p1", "p2", "p3", "p4", "dl"].map(|s| lab.link_name(s));
    lab.add_veth("n1", &p1, ROUTER, &p2).expect("lab");
    lab.add_veth("n2", &p4, ROUTER, &p3).expect("lab");
    let n1 = Ipv4Addr::new(10, 201, 1, 1);
    let n2 = Ipv4Addr::new(10, 201, 2, 2);
    for (role, link, cidr) in [
        ("n1", &p1, format!("{n1}/24")),
        (ROUTER, &p2, "10.201.1.254/24".to_owned()),
        (ROUTER, &p3, "10.201.2.254/24".to_owned()),
        ("n2", &p4, format!("{n2}/24")),
    ] {
        lab.run_ip(role, &["addr", "add", &cidr, "dev", link])
            .expect("lab");
        lab.run_ip(role, &["link", "set", link, "up"]).expect("lab");
    }
    lab.run_ip(
        "n1",
        &["route", "add", "10.201.2.0/24", "via", "10.201.1.254"],
    )
    .expect("lab");
    lab.run_ip(
        "n2",
        &["route", "add", "10.201.1.0/24", "via", "10.201.2.254"],
    )
    .expect("lab");
    // Forward, and accept what comes back out of the delay line from an address that
    // routes elsewhere.
    let sysctl = lab
        .exec(
            ROUTER,
            &[
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
        )
        .expect("lab");
    assert!(sysctl.status.success(), "{sysctl:?}");
    let log = m.ctl_log.with_file_name("delay-line.log");
    let delay = format!("{}", DELAY_MS as f64 / 1000.0);
    lab.spawn(ROUTER, &[python(), "-c", DELAY_LINE, &dl, &delay], &log)
        .expect("lab");
    let up = meshd_lab::interrupt::wait_until(Duration::from_secs(10), || {
        lab.exec(ROUTER, &["ip", "link", "show", &dl])
            .expect("lab")
            .status
            .success()
    });
    assert!(up, "the delay line's TUN did not appear");
    lab.run_ip(ROUTER, &["link", "set", &dl, "up"])
        .expect("lab");
    for from in [&p2, &p3] {
        lab.run_ip(ROUTER, &["rule", "add", "iif", from, "lookup", "100"])
            .expect("lab");
    }
    lab.run_ip(
        ROUTER,
        &["route", "add", "default", "dev", &dl, "table", "100"],
    )
    .expect("lab");
    (n1, n2)
}

/// The bridge path between the two hosts, blackholed or open.
fn bridge_path(m: &Mesh, open: bool) {
    let verb = if open { "del" } else { "add" };
    for (role, peer) in [("n1", "n2"), ("n2", "n1")] {
        let to = format!("{}/32", m.lab.ip(peer));
        m.lab
            .run_ip(role, &["route", verb, "blackhole", &to])
            .expect("lab");
    }
}

/// The only peer in a node's `status --json`.
fn peer(status: &Value) -> Option<&Value> {
    status["peers"].as_array().and_then(|p| p.first())
}

fn endpoint(status: &Value) -> Option<SocketAddr> {
    peer(status)?["endpoint"].as_str()?.parse().ok()
}

/// Median RTT of `count` pings from node `from` to `to`, in ms: one echo held up by a
/// stall of the host (CI shares two cores) does not decide, as it would an average.
fn ping_median_ms(m: &Mesh, from: usize, to: IpAddr, count: u32) -> f64 {
    let count = count.to_string();
    let to = to.to_string();
    let out = m
        .lab
        .exec(
            m.nodes[from].role,
            &["ping", "-n", "-c", &count, "-i", "0.05", "-W", "2", &to],
        )
        .expect("lab");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ping {to} failed:\n{text}");
    // 64 bytes from 10.147.0.2: icmp_seq=1 ttl=64 time=6.31 ms
    let mut times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.trim_end_matches(" ms").parse().ok())
        .collect();
    assert!(!times.is_empty(), "no replies in:\n{text}");
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

#[test]
fn peers_move_to_a_faster_path_when_it_opens_and_stay_there() {
    let mut m = Mesh::new(&["n1", "n2"]);
    m.phase(&m.describe_lab());
    let (slow1, slow2) = build_slow_path(&mut m);
    bridge_path(&m, false);
    m.phase("slow path up, bridge path between the hosts blackholed");

    m.start_controller();
    let nwid = m.create_network("paths");
    m.start_daemon(0);
    m.start_daemon(1);
    m.join_all(nwid);
    m.authorize_all(nwid);
    let to_n2 = IpAddr::V4(m.nodes[1].addrs().v4);
    let slow_ms = ping_median_ms(&m, 0, to_n2, 5);
    m.phase(&format!("joined; ping over the slow path {slow_ms:.2} ms"));
    let slow_rtt = 2.0 * DELAY_MS as f64;
    assert!(slow_ms >= slow_rtt, "the slow path takes {slow_ms} ms");
    // The scan the new session started (rounds over 0.3 s, then at most 1 s for answers)
    // is over: the slow path is the only one that answered it.
    std::thread::sleep(Duration::from_secs(2));
    let port = NODE_PORT;
    assert_eq!(
        endpoint(&m.status(0)),
        Some(SocketAddr::from((slow2, port)))
    );
    assert_eq!(
        endpoint(&m.status(1)),
        Some(SocketAddr::from((slow1, port)))
    );
    let candidates = peer(&m.status(0)).expect("a peer")["candidates"].clone();
    assert!(
        candidates
            .as_array()
            .is_some_and(|c| c.len() >= 2 && c.iter().any(|a| a == &slow2_text(slow2))),
        "n1 knows both of n2's addresses: {candidates}"
    );

    bridge_path(&m, true);
    m.phase("bridge path open; waiting for the next path scan");
    let fast = |peer_role: &str| SocketAddr::from((m.lab.ip(peer_role), port));
    for (i, other) in [(0, "n2"), (1, "n1")] {
        let want = fast(other);
        m.wait_status(
            i,
            "the endpoint on the bridge",
            Duration::from_secs(45),
            |s| endpoint(s) == Some(want),
        );
    }
    let fast_ms = ping_median_ms(&m, 0, to_n2, 20);
    m.phase(&format!("moved; ping over the bridge {fast_ms:.2} ms"));
    assert!(
        fast_ms < slow_rtt,
        "ping {fast_ms} ms: still slower than the bridge"
    );
    // The side whose scan ran first moved by its scan; the other may have followed the
    // traffic that then came over the bridge (a path its own scan never saw answer).
    let changes: Vec<u64> = (0..2)
        .map(|i| {
            peer(&m.status(i)).expect("a peer")["path_changes"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert!(
        changes.iter().sum::<u64>() >= 1,
        "no scan moved an endpoint: path_changes {changes:?}"
    );

    // Traffic both ways across the next scan (30 s): the endpoints stay.
    let to_n1 = IpAddr::V4(m.nodes[0].addrs().v4);
    let until = Instant::now() + Duration::from_secs(32);
    while Instant::now() < until {
        ping_median_ms(&m, 0, to_n2, 20);
        ping_median_ms(&m, 1, to_n1, 20);
    }
    assert_eq!(endpoint(&m.status(0)), Some(fast("n2")));
    assert_eq!(endpoint(&m.status(1)), Some(fast("n1")));

    // `meshd peers --json` shows what the last scan measured: both of the peer's addresses
    // on every side, and on a side whose scan heard both, the bridge well ahead.
    let slow = [
        SocketAddr::from((slow2, port)),
        SocketAddr::from((slow1, port)),
    ];
    let mut both_heard = 0;
    for (i, other) in [(0, "n2"), (1, "n1")] {
        let scan = peer(&m.status(i)).expect("a peer")["path_scan"].clone();
        assert_eq!(scan["under_load"], false, "node {i}: {scan}");
        let rtt = |address: SocketAddr| {
            let paths = scan["paths"].as_array().expect("paths");
            let entry = paths
                .iter()
                .find(|p| p["address"] == address.to_string())
                .unwrap_or_else(|| panic!("node {i}: {address} not scanned: {scan}"));
            entry["rtt_ms"].as_f64()
        };
        if let (Some(bridge), Some(delayed)) = (rtt(fast(other)), rtt(slow[i])) {
            assert!(bridge < delayed, "node {i}: {scan}");
            both_heard += 1;
        }
    }
    assert!(
        both_heard >= 1,
        "no scan since the bridge opened heard both paths"
    );
    m.phase("done");
}

fn slow2_text(slow2: Ipv4Addr) -> Value {
    Value::String(SocketAddr::from((slow2, NODE_PORT)).to_string())
}
