//! Path choice between peers reachable at several addresses, in the simulator: the
//! handshake may land on a slow path, the path scan moves both sides to the fast one, stray
//! packets on the slow path do not pull them back, and a dead fast path gives way again.

use std::time::Duration;

use meshd_proto::sim::{LinkModel, SimPath, Simulation};
use meshd_proto::tunnel::PeerStatus;

const SLOW: usize = 0;
const FAST: usize = 1;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Two nodes on a slow path (path 0, listed first in the config, +20 ms) and a fast one
/// (path 1) that is down.
fn slow_path_up_fast_path_down(seed: u64) -> Simulation {
    let paths = vec![
        SimPath {
            extra_latency: ms(20),
            up: true,
        },
        SimPath {
            extra_latency: Duration::ZERO,
            up: false,
        },
    ];
    Simulation::with_paths(2, LinkModel::default(), seed, paths)
}

/// [`slow_path_up_fast_path_down`], the fast path coming up once the first handshake has
/// gone out over both.
fn handshake_over_the_slow_path() -> Simulation {
    let mut sim = slow_path_up_fast_path_down(7);
    sim.send(0, 1, b"first").expect("routable");
    // The initiation went to both addresses; only the slow copy survived. The fast path
    // comes up while the handshake is still under way, as when a busy host takes the
    // slower copy first.
    sim.paths[FAST].up = true;
    sim.run_for(ms(10));
    sim
}

/// What node `node`'s tunnel says about node `peer`.
fn status(sim: &Simulation, node: usize, peer: usize) -> PeerStatus {
    sim.nodes[node]
        .tunnel
        .peer_status(sim.node_id(peer), sim.now)
        .expect("the peer is in the config")
}

fn endpoint(sim: &Simulation, node: usize, peer: usize) -> Option<std::net::SocketAddr> {
    status(sim, node, peer).endpoint
}

#[test]
fn both_sides_move_from_the_slow_path_the_handshake_took_to_the_fast_one() {
    let mut sim = handshake_over_the_slow_path();
    // Initiation, response and the packet: three 25 ms hops.
    sim.run_for(ms(70));
    // The handshake finished over the slow path: that is where both sides send at first.
    assert_eq!(sim.payloads(1), vec![b"first".to_vec()]);
    // The scans (started when each side saw the session: four rounds 100 ms apart) have
    // finished by now.
    sim.run_for(ms(600));
    for (node, peer) in [(0, 1), (1, 0)] {
        assert_eq!(
            endpoint(&sim, node, peer),
            Some(sim.nodes[peer].addresses[FAST]),
            "node {node} sends to its peer's fast address"
        );
        let status = status(&sim, node, peer);
        assert_eq!(status.path_changes, 1, "node {node}");
    }

    // From now on traffic both ways, keepalives and probes all take the fast path, and
    // nothing that was still on the slow path pulls an endpoint back.
    sim.recorded = Some(Vec::new());
    for round in 0..40u8 {
        sim.send(0, 1, &[round]).expect("routable");
        sim.send(1, 0, &[round]).expect("routable");
        sim.run_for(ms(250));
    }
    let recorded = sim.recorded.take().expect("recording");
    assert!(recorded.len() >= 80);
    for d in &recorded {
        assert_eq!(sim.path_of(d.to), Some(FAST), "{:?} -> {:?}", d.from, d.to);
    }
    assert_eq!(sim.payloads(1).len(), 41);
    assert_eq!(sim.payloads(0).len(), 40);
    assert_eq!(sim.nodes[0].tunnel.stats().total_dropped(), 0);
    assert_eq!(sim.nodes[1].tunnel.stats().total_dropped(), 0);
}

#[test]
fn a_path_that_comes_up_later_is_found_by_the_next_scan() {
    let mut sim = slow_path_up_fast_path_down(11);
    sim.send(0, 1, b"first").expect("routable");
    sim.run_for(Duration::from_secs(2));
    assert_eq!(endpoint(&sim, 0, 1), Some(sim.nodes[1].addresses[SLOW]));
    sim.paths[FAST].up = true;
    // No new session: the periodic scan (every 30 s) finds it.
    sim.run_for(Duration::from_secs(25));
    assert_eq!(endpoint(&sim, 0, 1), Some(sim.nodes[1].addresses[SLOW]));
    sim.run_for(Duration::from_secs(8));
    assert_eq!(endpoint(&sim, 0, 1), Some(sim.nodes[1].addresses[FAST]));
    assert_eq!(endpoint(&sim, 1, 0), Some(sim.nodes[0].addresses[FAST]));
    sim.send(0, 1, b"second").expect("routable");
    sim.run_for(ms(20));
    assert_eq!(sim.payloads(1), vec![b"first".to_vec(), b"second".to_vec()]);
}

#[test]
fn a_dead_fast_path_gives_way_to_the_slow_one() {
    let mut sim = handshake_over_the_slow_path();
    sim.run_for(ms(700));
    assert_eq!(endpoint(&sim, 0, 1), Some(sim.nodes[1].addresses[FAST]));
    sim.paths[FAST].up = false;
    // Both keep sending into the dead path until the silence rule (15 s) starts a new
    // handshake, whose retransmission (5 s later) also tries the other addresses.
    let mut delivered_at = None;
    for tick in 0..160u32 {
        sim.send(0, 1, b"ping").expect("routable");
        sim.run_for(ms(250));
        if sim.nodes[1].received.len() > 1 {
            delivered_at = Some(tick);
            break;
        }
    }
    let tick = delivered_at.expect("traffic finds the slow path again within 40 s");
    assert!(
        tick >= 40,
        "nothing can arrive before the silence rule: {tick}"
    );
    sim.run_for(ms(700));
    assert_eq!(endpoint(&sim, 0, 1), Some(sim.nodes[1].addresses[SLOW]));
    assert_eq!(endpoint(&sim, 1, 0), Some(sim.nodes[0].addresses[SLOW]));
}

/// Two nodes that met over the fast path (both up from the start).
fn met_over_the_fast_path(seed: u64) -> Simulation {
    let mut sim = slow_path_up_fast_path_down(seed);
    sim.paths[FAST].up = true;
    sim.send(0, 1, b"first").expect("routable");
    sim.run_for(Duration::from_secs(2));
    assert_eq!(endpoint(&sim, 0, 1), Some(sim.nodes[1].addresses[FAST]));
    sim
}

/// Runs `sim` for `duration` with 1 KB packets both ways every 5 ms (about 400 KB/s each
/// way) when `busy`, nothing of its own otherwise.
fn run_with_traffic(sim: &mut Simulation, duration: Duration, busy: bool) {
    let tick = ms(5);
    let mut elapsed = Duration::ZERO;
    while elapsed < duration {
        if busy {
            sim.send(0, 1, &[7; 1000]).expect("routable");
            sim.send(1, 0, &[7; 1000]).expect("routable");
        }
        sim.run_for(tick);
        elapsed += tick;
    }
}

/// Two nodes that met over the fast path, which turns slower than the slow one just before
/// the periodic scan (30 s after the session started); the 5 s across that scan carry
/// traffic when `busy`.
fn fast_path_slows_down_across_a_scan(busy: bool) -> Simulation {
    let mut sim = met_over_the_fast_path(13);
    sim.run_for(Duration::from_secs(27));
    sim.paths[FAST].extra_latency = ms(40);
    run_with_traffic(&mut sim, Duration::from_secs(5), busy);
    sim
}

#[test]
fn a_scan_under_load_keeps_the_endpoint_and_a_quiet_one_soon_after_decides() {
    // A transfer fills the fast path's queues: its probes take longer than the idle slow
    // path's. The scan that runs meanwhile must not move the transfer onto the slow path.
    let mut sim = fast_path_slows_down_across_a_scan(true);
    for (node, peer) in [(0, 1), (1, 0)] {
        assert_eq!(
            endpoint(&sim, node, peer),
            Some(sim.nodes[peer].addresses[FAST]),
            "node {node} keeps its endpoint through a scan under load"
        );
        let status = status(&sim, node, peer);
        let scan = status.last_scan.expect("a scan finished");
        assert!(scan.under_load, "node {node}: {scan:?}");
        assert_eq!(scan.paths.len(), 2, "{scan:?}");
    }
    // Quiet again, the fast path really still slower: the next scan, due within 5 s of the
    // loaded one, not 30, moves both sides.
    run_with_traffic(&mut sim, Duration::from_secs(6), false);
    for (node, peer) in [(0, 1), (1, 0)] {
        assert_eq!(
            endpoint(&sim, node, peer),
            Some(sim.nodes[peer].addresses[SLOW]),
            "node {node} moves once it measures without load"
        );
    }
}

#[test]
fn without_load_the_same_scan_moves_to_the_faster_path() {
    // The control for the test above: the same slowdown with no traffic moves the endpoint
    // at the periodic scan, so it is the load that held it.
    let sim = fast_path_slows_down_across_a_scan(false);
    assert_eq!(endpoint(&sim, 0, 1), Some(sim.nodes[1].addresses[SLOW]));
}
