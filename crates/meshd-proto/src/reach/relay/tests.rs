use proptest::prelude::*;

use super::*;
use crate::reach::credential::Credential;

const NOW_UNIX: u64 = 1_000_000;

fn node(n: u64) -> NodeId {
    NodeId::new(0x10_0000_0000 + n).expect("valid")
}

fn net(n: u64) -> NetworkId {
    NetworkId::from_bytes((0x8056_c2e2_1c00_0000 + n).to_be_bytes())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

fn secret() -> RelaySecret {
    RelaySecret::derive(b"cluster")
}

fn cred(n: u64) -> Credential {
    secret().issue(node(n), NOW_UNIX + 3600)
}

fn request(n: u64, sequence: u64) -> [u8; crate::reach::reflect::REFLECT_LEN] {
    let c = cred(n);
    ReflectRequest {
        node: c.node,
        expires: c.expires,
        sequence,
    }
    .encode(&c.key)
}

/// Nodes 1 and 2 in network 1, node 3 in network 2.
fn relay(now: Instant) -> RelayServer {
    let mut r = RelayServer::new(secret(), RelayLimits::default());
    r.set_members([(net(1), node(1)), (net(1), node(2)), (net(2), node(3))]);
    for (n, a) in [
        (1, "203.0.113.1:4000"),
        (2, "203.0.113.2:5000"),
        (3, "203.0.113.3:6000"),
    ] {
        r.handle(now, NOW_UNIX, addr(a), &request(n, 1))
            .expect("registers");
    }
    r
}

fn envelope(to: u64, from: u64) -> Vec<u8> {
    let mut inner = vec![0u8; wire::DATA_OVERHEAD + 20];
    wire::put_data_header(&mut inner, wire::TYPE_DATA, 7, 1);
    wire::relay_envelope(node(to), node(from), &inner)
}

#[test]
fn reflect_answers_with_the_observed_address_and_registers() {
    let now = Instant::now();
    let mut r = RelayServer::new(secret(), RelayLimits::default());
    r.set_members([(net(1), node(1))]);
    let from = addr("203.0.113.9:40001");
    let Ok(RelayAction::Reply { to, bytes }) = r.handle(now, NOW_UNIX, from, &request(1, 5)) else {
        panic!("a reply")
    };
    assert_eq!(to, from);
    let answer = Reflection::open(&bytes, &cred(1).key).expect("authentic");
    assert_eq!(
        answer,
        Reflection {
            sequence: 5,
            observed: from
        }
    );
    assert_eq!(r.registered(node(1)), Some(from));
    assert_eq!(r.counters().reflections, 1);
}

#[test]
fn replays_are_refused_and_newer_requests_roam() {
    let now = Instant::now();
    let mut r = relay(now);
    let moved = addr("198.51.100.7:7000");
    assert_eq!(
        r.handle(now, NOW_UNIX, moved, &request(1, 1)),
        Err(ReachDrop::Replayed)
    );
    assert_eq!(r.registered(node(1)), Some(addr("203.0.113.1:4000")));
    assert!(r.handle(now, NOW_UNIX, moved, &request(1, 2)).is_ok());
    assert_eq!(r.registered(node(1)), Some(moved));
    assert_eq!(r.counters().drops.get("replayed"), Some(&1));
}

#[test]
fn only_members_with_valid_credentials_register() {
    let now = Instant::now();
    let mut r = relay(now);
    let a = addr("192.0.2.1:1");
    // Node 9 holds a valid credential but is no authorized member.
    assert_eq!(
        r.handle(now, NOW_UNIX, a, &request(9, 1)),
        Err(ReachDrop::NotMember)
    );
    assert_eq!(
        r.handle(now, NOW_UNIX + 7200, a, &request(1, 9)),
        Err(ReachDrop::Expired)
    );
    let mut forged = request(1, 9);
    forged[20] ^= 1;
    assert_eq!(r.handle(now, NOW_UNIX, a, &forged), Err(ReachDrop::BadMac));
    assert_eq!(r.registered(node(1)), Some(addr("203.0.113.1:4000")));
}

#[test]
fn relays_between_members_of_a_common_network_only() {
    let now = Instant::now();
    let mut r = relay(now);
    let e = envelope(2, 1);
    assert_eq!(
        r.handle(now, NOW_UNIX, addr("203.0.113.1:4000"), &e),
        Ok(RelayAction::Forward {
            to: addr("203.0.113.2:5000"),
            bytes: &e
        })
    );
    // Node 3 is in another network.
    assert_eq!(
        r.handle(now, NOW_UNIX, addr("203.0.113.1:4000"), &envelope(3, 1)),
        Err(ReachDrop::NotTogether)
    );
    // From anywhere but node 1's registered address.
    assert_eq!(
        r.handle(now, NOW_UNIX, addr("203.0.113.66:4000"), &e),
        Err(ReachDrop::WrongSource)
    );
    // An unknown source, an unregistered destination.
    assert_eq!(
        r.handle(now, NOW_UNIX, addr("203.0.113.1:4000"), &envelope(2, 9)),
        Err(ReachDrop::SourceNotRegistered)
    );
    r.set_members([(net(1), node(1)), (net(1), node(2)), (net(1), node(4))]);
    assert_eq!(
        r.handle(now, NOW_UNIX, addr("203.0.113.1:4000"), &envelope(4, 1)),
        Err(ReachDrop::DestinationNotRegistered)
    );
    // Garbage and other message types.
    assert!(matches!(
        r.handle(
            now,
            NOW_UNIX,
            addr("203.0.113.1:4000"),
            &e[..wire::RELAY_HEADER_LEN]
        ),
        Err(ReachDrop::Malformed(_))
    ));
    assert_eq!(
        r.handle(
            now,
            NOW_UNIX,
            addr("203.0.113.1:4000"),
            &e[wire::RELAY_HEADER_LEN..]
        ),
        Err(ReachDrop::UnexpectedType)
    );
    assert_eq!(r.counters().relayed_packets, 1);
}

#[test]
fn deauthorized_and_silent_members_lose_their_registration() {
    let now = Instant::now();
    let mut r = relay(now);
    r.set_members([(net(1), node(1))]);
    assert_eq!(r.registered(node(2)), None);
    assert_eq!(
        r.handle(now, NOW_UNIX, addr("203.0.113.1:4000"), &envelope(2, 1)),
        Err(ReachDrop::NotTogether)
    );
    let later = now + RelayLimits::default().registration_ttl + Duration::from_secs(1);
    assert_eq!(
        r.handle(later, NOW_UNIX, addr("203.0.113.1:4000"), &envelope(1, 1)),
        Err(ReachDrop::SourceNotRegistered)
    );
    r.expire(later);
    assert_eq!(r.registrations(), 0);
}

#[test]
fn each_source_is_rate_limited() {
    let now = Instant::now();
    let mut r = RelayServer::new(
        secret(),
        RelayLimits {
            bytes_per_second: 1000,
            burst: 1000,
            registration_ttl: Duration::from_secs(60),
        },
    );
    r.set_members([(net(1), node(1)), (net(1), node(2))]);
    r.handle(now, NOW_UNIX, addr("203.0.113.1:4000"), &request(1, 1))
        .expect("registers");
    r.handle(now, NOW_UNIX, addr("203.0.113.2:5000"), &request(2, 1))
        .expect("registers");
    let e = envelope(2, 1);
    let from = addr("203.0.113.1:4000");
    let sent = (0..100)
        .take_while(|_| r.handle(now, NOW_UNIX, from, &e).is_ok())
        .count();
    assert_eq!(sent, 1000 / e.len());
    assert_eq!(
        r.handle(now, NOW_UNIX, from, &e),
        Err(ReachDrop::RateLimited)
    );
    // The other direction has its own bucket; time refills this one.
    assert!(
        r.handle(now, NOW_UNIX, addr("203.0.113.2:5000"), &envelope(1, 2))
            .is_ok()
    );
    assert!(
        r.handle(now + Duration::from_secs(1), NOW_UNIX, from, &e)
            .is_ok()
    );
}

proptest! {
    /// Whatever arrives from wherever: no panic, and a forward only ever goes to the
    /// registered address of a member sharing a network with a registered source.
    #[test]
    fn hostile_datagrams(
        datagrams in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..80), 0u8..4, any::<bool>()),
            1..40,
        )
    ) {
        let now = Instant::now();
        let mut r = relay(now);
        let registered = [addr("203.0.113.1:4000"), addr("203.0.113.2:5000")];
        for (mut bytes, who, as_envelope) in datagrams {
            if as_envelope && bytes.len() > 1 {
                bytes = wire::relay_envelope(node(u64::from(who % 3) + 1), node(1), &bytes);
            }
            let from = registered[usize::from(who) % 2];
            if let Ok(RelayAction::Forward { to, .. }) = r.handle(now, NOW_UNIX, from, &bytes) {
                prop_assert!(registered.contains(&to));
            }
        }
    }
}
