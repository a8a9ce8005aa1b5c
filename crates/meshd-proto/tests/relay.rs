//! Relayed peers in the simulator: traffic starts through a relay at once when no direct
//! path answers, moves to a direct path as soon as one works, falls back to the relay when
//! the direct path dies, and moves to another relay when its relay goes away.

use std::net::SocketAddr;
use std::time::Duration;

use meshd_proto::reach::relay::RelayLimits;
use meshd_proto::sim::{Datagram, LinkModel, Simulation};
use meshd_proto::tunnel::{DIRECT_DEAD, DropReason, RELAYED_SCAN_INTERVAL, Via};
use meshd_proto::wire;

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

/// Nodes 0 and 1 cannot reach each other; node 2, a member marked as a relay, reaches both.
fn blocked_pair_with_member_relay() -> Simulation {
    let mut sim = Simulation::new(3, LinkModel::default(), 5);
    sim.blocked.push((0, 1));
    sim.make_relay(2);
    sim.run_for(ms(200));
    sim
}

fn relay_drops(sim: &Simulation, node: usize, reason: DropReason) -> u64 {
    sim.nodes[node].tunnel.stats().dropped(reason)
}

#[test]
fn a_member_marked_as_relay_carries_a_pair_without_any_replica() {
    let mut sim = blocked_pair_with_member_relay();
    let through_member = Some(Via::Relay(sim.nodes[2].address));
    assert!(ping_both_ways(&mut sim, "through the member"));
    assert_eq!(via(&sim, 0, 1), through_member);
    assert_eq!(via(&sim, 1, 0), through_member);
    let stats = sim.nodes[2].tunnel.stats();
    assert!(stats.relayed_packets >= 2, "the member relayed: {stats:?}");
    // Long past keepalives, scans and rekeys, it keeps working.
    sim.run_for(Duration::from_secs(200));
    assert!(ping_both_ways(&mut sim, "later"));
    assert_eq!(via(&sim, 0, 1), through_member);
    // The pair stays direct with the relay itself.
    assert_eq!(via(&sim, 0, 2), Some(Via::Direct(sim.nodes[2].address)));
}

#[test]
fn a_member_not_marked_as_relay_relays_nothing() {
    let mut sim = Simulation::new(3, LinkModel::default(), 6);
    sim.blocked.push((0, 1));
    sim.run_for(ms(200));
    assert!(!ping_both_ways(&mut sim, "nobody relays"));
    assert_eq!(sim.nodes[2].tunnel.stats().relayed_packets, 0);
    // An envelope sent to it anyway is refused and counted.
    let envelope = wire::relay_envelope(sim.node_id(1), sim.node_id(0), &data_message());
    let (from, to) = (sim.nodes[0].address, sim.nodes[2].address);
    let refused = sim.inject(Datagram {
        from,
        to,
        bytes: envelope,
    });
    assert_eq!(refused, Some(Err(DropReason::RelayNotForUs)));
}

/// A data message the relay can parse (it never opens it).
fn data_message() -> Vec<u8> {
    let mut data = vec![0u8; wire::DATA_OVERHEAD + 20];
    wire::put_data_header(&mut data, wire::TYPE_DATA, 7, 1);
    data
}

#[test]
fn a_member_relay_takes_envelopes_only_from_the_source_session_and_within_its_limit() {
    let mut sim = blocked_pair_with_member_relay();
    let (a, b, r) = (sim.node_id(0), sim.node_id(1), sim.nodes[2].address);
    let a_address = sim.nodes[0].address;
    let envelope = wire::relay_envelope(b, a, &data_message());
    let send = |sim: &mut Simulation, from: SocketAddr, bytes: &[u8]| {
        sim.inject(Datagram {
            from,
            to: r,
            bytes: bytes.to_vec(),
        })
    };
    // Spoofed: node 0's id from another address.
    let spoofer = SocketAddr::from(([203, 0, 113, 9], 9993));
    assert_eq!(
        send(&mut sim, spoofer, &envelope),
        Some(Err(DropReason::RelayWrongSource))
    );
    // To a node that is no member: nobody to relay to.
    let stranger = meshd_proto::Identity::generate_unproven().node_id();
    let lost = wire::relay_envelope(stranger, a, &data_message());
    assert_eq!(
        send(&mut sim, a_address, &lost),
        Some(Err(DropReason::RelayNoPath))
    );
    // Envelopes do not nest: no relay chains.
    let nested = wire::relay_envelope(sim.node_id(2), a, &envelope);
    assert_eq!(
        send(&mut sim, a_address, &nested),
        Some(Err(DropReason::Malformed))
    );
    // From the right address: relayed until the source's burst is spent, then limited.
    let before = sim.nodes[2].tunnel.stats().relayed_packets;
    let burst = RelayLimits::default().burst as usize / envelope.len();
    for _ in 0..burst {
        assert_eq!(send(&mut sim, a_address, &envelope), Some(Ok(false)));
    }
    assert_eq!(
        send(&mut sim, a_address, &envelope),
        Some(Err(DropReason::RelayRateLimited))
    );
    assert_eq!(
        sim.nodes[2].tunnel.stats().relayed_packets - before,
        burst as u64
    );
    assert_eq!(relay_drops(&sim, 2, DropReason::RelayRateLimited), 1);
    assert_eq!(relay_drops(&sim, 2, DropReason::RelayWrongSource), 1);
}

#[test]
fn a_replica_relay_comes_first_and_a_member_relay_takes_over_without_one() {
    let mut sim = blocked_pair_with_member_relay();
    let member = Some(Via::Relay(sim.nodes[2].address));
    // The member relay carried the pair first; a replica's relay that answers is preferred.
    assert!(ping_both_ways(&mut sim, "member"));
    assert_eq!(via(&sim, 0, 1), member);
    sim.add_relay(relay(1));
    assert!(ping_both_ways(&mut sim, "replica"));
    assert_eq!(via(&sim, 0, 1), Some(Via::Relay(relay(1))));
    assert_eq!(via(&sim, 1, 0), Some(Via::Relay(relay(1))));
    // Every replica gone: back to the member.
    sim.remove_relay(relay(1));
    assert!(ping_both_ways(&mut sim, "member again"));
    assert_eq!(via(&sim, 0, 1), member);
    assert_eq!(via(&sim, 1, 0), member);
}
