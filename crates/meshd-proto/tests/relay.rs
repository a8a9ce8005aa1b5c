//! Relayed peers in the simulator: traffic starts through a relay at once when no direct
//! path answers, moves to a direct path as soon as one works, falls back to the relay when
//! the direct path dies, and moves to another relay when its relay goes away.

use std::net::SocketAddr;
use std::time::Duration;

use meshd_proto::sim::{LinkModel, Simulation};
use meshd_proto::tunnel::{DIRECT_DEAD, RELAYED_SCAN_INTERVAL, Via};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn relay(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, n], 9995))
}

fn via(sim: &Simulation, node: usize, peer: usize) -> Option<Via> {
    sim.nodes[node]
        .tunnel
        .peer_status(sim.node_id(peer), sim.now)
        .expect("the peer is in the config")
        .via
}

/// Pings both ways once and lets them arrive: whether both did.
fn ping_both_ways(sim: &mut Simulation, tag: &str) -> bool {
    let (before0, before1) = (sim.payloads(0).len(), sim.payloads(1).len());
    let (a, b) = (format!("{tag} 0->1"), format!("{tag} 1->0"));
    sim.send(0, 1, a.as_bytes()).expect("routable");
    sim.send(1, 0, b.as_bytes()).expect("routable");
    sim.run_for(ms(50));
    sim.payloads(1)[before1..].contains(&a.into_bytes())
        && sim.payloads(0)[before0..].contains(&b.into_bytes())
}

/// Two nodes that cannot reach each other directly, one relay.
fn blocked_pair_with_relay() -> Simulation {
    let mut sim = Simulation::new(2, LinkModel::default(), 3);
    sim.direct_blocked = true;
    sim.add_relay(relay(1));
    sim
}

#[test]
fn without_a_direct_path_traffic_goes_through_the_relay_at_once() {
    let mut sim = blocked_pair_with_relay();
    sim.send(0, 1, b"first").expect("routable");
    sim.run_for(ms(50));
    assert_eq!(
        sim.payloads(1),
        vec![b"first".to_vec()],
        "queued, then relayed"
    );
    assert_eq!(via(&sim, 0, 1), Some(Via::Relay(relay(1))));
    assert_eq!(via(&sim, 1, 0), Some(Via::Relay(relay(1))));
    // Well past scans and keepalives, it keeps working through the relay.
    sim.run_for(RELAYED_SCAN_INTERVAL * 3);
    assert!(ping_both_ways(&mut sim, "later"));
    assert_eq!(via(&sim, 0, 1), Some(Via::Relay(relay(1))));
}

#[test]
fn a_direct_path_takes_over_and_the_relay_takes_back_when_it_dies() {
    let mut sim = blocked_pair_with_relay();
    assert!(ping_both_ways(&mut sim, "relayed"));
    // The NATs open (a punch gets through): the next relayed scan finds the direct path.
    sim.direct_blocked = false;
    sim.run_for(RELAYED_SCAN_INTERVAL + ms(500));
    let direct = |sim: &Simulation, node: usize| Some(Via::Direct(sim.nodes[1 - node].address));
    assert_eq!(via(&sim, 0, 1), direct(&sim, 0));
    assert_eq!(via(&sim, 1, 0), direct(&sim, 1));
    let punched = |sim: &Simulation| {
        sim.nodes[0]
            .tunnel
            .peer_status(sim.node_id(1), sim.now)
            .expect("a peer")
            .punched
    };
    assert!(punched(&sim), "found while relayed: a punched path");
    assert!(ping_both_ways(&mut sim, "direct"));
    // The direct path dies (a NAT forgot the mapping): within DIRECT_DEAD both sides are
    // back on the relay, and traffic flows.
    sim.direct_blocked = true;
    let mut waited = Duration::ZERO;
    while via(&sim, 0, 1) != Some(Via::Relay(relay(1)))
        || via(&sim, 1, 0) != Some(Via::Relay(relay(1)))
    {
        assert!(waited <= DIRECT_DEAD, "still direct after {waited:?}");
        let _ = ping_both_ways(&mut sim, "probing");
        sim.run_for(ms(950));
        waited += Duration::from_secs(1);
    }
    assert!(ping_both_ways(&mut sim, "relayed again"));
    assert!(!punched(&sim), "relayed again: nothing punched");
}

#[test]
fn traffic_moves_to_another_relay_when_its_relay_dies() {
    let mut sim = blocked_pair_with_relay();
    sim.add_relay(relay(2));
    assert!(ping_both_ways(&mut sim, "first relay"));
    assert_eq!(via(&sim, 0, 1), Some(Via::Relay(relay(1))));
    sim.remove_relay(relay(1));
    assert!(ping_both_ways(&mut sim, "second relay"));
    assert_eq!(via(&sim, 0, 1), Some(Via::Relay(relay(2))));
    assert_eq!(via(&sim, 1, 0), Some(Via::Relay(relay(2))));
}
