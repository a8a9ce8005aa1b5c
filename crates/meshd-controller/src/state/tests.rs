use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::test_support::{nwid, spec};
use meshd_proto::Identity;

fn identities() -> &'static Vec<Identity> {
    static IDS: OnceLock<Vec<Identity>> = OnceLock::new();
    IDS.get_or_init(|| (0..6).map(|_| Identity::generate_unproven()).collect())
}

fn join(seed: u8, who: usize) -> Command {
    Command::MemberJoin {
        network: nwid(seed),
        node: identities()[who].node_id(),
        identity: *identities()[who].public(),
        physical: Some(SocketAddr::from(([192, 0, 2, who as u8], 9993))),
        local: vec![],
        at_ms: 2,
    }
}

fn node(who: usize) -> NodeId {
    identities()[who].node_id()
}

/// Network 1 with members 0 and 1 authorized.
fn two_authorized_members() -> (ControllerState, NetworkId) {
    let mut s = ControllerState::default();
    s.apply(&Command::CreateNetwork(spec(1))).unwrap();
    let network = nwid(1);
    for who in 0..2 {
        s.apply(&join(1, who)).unwrap();
        s.apply(&Command::Authorize {
            network,
            node: node(who),
            at_ms: 3,
        })
        .unwrap();
    }
    (s, network)
}

#[test]
fn join_authorize_assigns_addresses_and_signs_a_config() {
    let mut s = ControllerState::default();
    let Applied::NetworkCreated { network } = s.apply(&Command::CreateNetwork(spec(1))).unwrap()
    else {
        panic!("not created")
    };
    assert_eq!(network, nwid(1));
    let applied = s.apply(&join(1, 0)).unwrap();
    assert!(matches!(
        applied,
        Applied::Member {
            authorized: false,
            ..
        }
    ));
    // Unauthorized members are not in the config.
    assert!(s.network(network).unwrap().config().members.is_empty());
    s.apply(&Command::Authorize {
        network,
        node: node(0),
        at_ms: 3,
    })
    .unwrap();
    let net = s.network(network).unwrap();
    let m = &net.members[&node(0)];
    assert_eq!(m.ipv4.len(), 1);
    assert!(net.v4_pools[0].contains(&m.ipv4[0]));
    assert_eq!(m.container_subnet.unwrap().to_string(), "172.28.0.0/24");
    let cfg = net.signed_config().verify(network).unwrap();
    assert_eq!(cfg.revision, net.revision);
    let mc = cfg.member(node(0)).unwrap();
    assert_eq!(mc.ipv4, m.ipv4);
    assert_eq!(mc.container_subnet, m.container_subnet);
    assert_eq!(mc.endpoints, vec![SocketAddr::from(([192, 0, 2, 0], 9993))]);
    let addrs: Vec<String> = cfg
        .interface_addresses(node(0))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(addrs[0].ends_with("/29"), "{addrs:?}");
    assert_eq!(
        addrs[1],
        format!("{}/88", addr::rfc4193_addr(network, node(0)))
    );
    assert_eq!(
        cfg.sixplane_subnet(node(0)),
        Some(addr::sixplane_node_prefix(network, node(0)))
    );
}

#[test]
fn assignments_are_sticky_and_released_on_delete() {
    let mut s = ControllerState::default();
    s.apply(&Command::CreateNetwork(spec(1))).unwrap();
    let network = nwid(1);
    s.apply(&join(1, 0)).unwrap();
    s.apply(&Command::Authorize {
        network,
        node: node(0),
        at_ms: 3,
    })
    .unwrap();
    let before = s.network(network).unwrap().members[&node(0)].clone();
    s.apply(&Command::Deauthorize {
        network,
        node: node(0),
        at_ms: 4,
    })
    .unwrap();
    s.apply(&Command::Authorize {
        network,
        node: node(0),
        at_ms: 5,
    })
    .unwrap();
    let after = &s.network(network).unwrap().members[&node(0)];
    assert_eq!(
        (&before.ipv4, before.container_subnet),
        (&after.ipv4, after.container_subnet)
    );
    s.apply(&Command::DeleteMember {
        network,
        node: node(0),
    })
    .unwrap();
    // The freed /24 goes to the next member.
    s.apply(&join(1, 1)).unwrap();
    s.apply(&Command::Authorize {
        network,
        node: node(1),
        at_ms: 6,
    })
    .unwrap();
    assert_eq!(
        s.network(network).unwrap().members[&node(1)].container_subnet,
        before.container_subnet
    );
}

#[test]
fn exhausted_pools_reject_without_changes() {
    let mut s = ControllerState::default();
    let mut tiny = spec(1);
    tiny.v4_pools = vec!["10.147.17.0/30".parse().unwrap()]; // two hosts
    s.apply(&Command::CreateNetwork(tiny)).unwrap();
    let network = nwid(1);
    for who in 0..3 {
        s.apply(&join(1, who)).unwrap();
    }
    s.apply(&Command::Authorize {
        network,
        node: node(0),
        at_ms: 3,
    })
    .unwrap();
    s.apply(&Command::Authorize {
        network,
        node: node(1),
        at_ms: 3,
    })
    .unwrap();
    let snapshot = s.clone();
    let err = s
        .apply(&Command::Authorize {
            network,
            node: node(2),
            at_ms: 3,
        })
        .unwrap_err();
    assert_eq!(err.kind, RejectKind::Exhausted);
    assert!(err.message.contains("10.147.17.0/30"), "{err}");
    assert_eq!(s, snapshot);
}

#[test]
fn routes_resolve_gateways_and_reject_overlaps() {
    let (mut s, network) = two_authorized_members();
    let gw = IpAddr::V4(s.network(network).unwrap().members[&node(1)].ipv4[0]);
    let lan: IpNet = "192.168.100.0/24".parse().unwrap();
    let applied = s
        .apply(&Command::AddRoute {
            network,
            target: lan,
            via: RouteVia::Gateway(gw),
        })
        .unwrap();
    assert!(matches!(applied, Applied::RouteAdded { via, .. } if via == node(1)));
    let cfg = s.network(network).unwrap().config();
    assert_eq!(cfg.routes, vec![ManagedRoute::via(lan, node(1))]);

    let reject = |s: &mut ControllerState, target: &str, via: RouteVia| {
        let before = s.clone();
        let err = s
            .apply(&Command::AddRoute {
                network,
                target: target.parse().unwrap(),
                via,
            })
            .unwrap_err();
        assert_eq!(*s, before);
        err
    };
    let e = reject(&mut s, "192.168.100.128/25", RouteVia::Node(node(0)));
    assert!(e.message.contains("192.168.100.0/24 via"), "{e}");
    let e = reject(&mut s, "172.28.0.0/16", RouteVia::Node(node(0)));
    assert!(e.message.contains("container subnet"), "{e}");
    let e = reject(&mut s, "10.147.0.0/16", RouteVia::Node(node(0)));
    assert!(e.message.contains("IPv4 pool"), "{e}");
    let e = reject(&mut s, "192.168.7.1/24", RouteVia::Node(node(0)));
    assert!(e.message.contains("did you mean 192.168.7.0/24"), "{e}");
    let e = reject(
        &mut s,
        "192.168.7.0/24",
        RouteVia::Gateway("10.9.9.9".parse().unwrap()),
    );
    assert!(e.message.contains("no member"), "{e}");
    let sixplane = addr::sixplane_node_prefix(network, node(0));
    let e = reject(&mut s, &sixplane.to_string(), RouteVia::Node(node(0)));
    assert!(e.message.contains("6PLANE"), "{e}");
    // Same owner may nest routes.
    s.apply(&Command::AddRoute {
        network,
        target: "192.168.100.0/26".parse().unwrap(),
        via: RouteVia::Node(node(1)),
    })
    .unwrap();
    // A member that routes cannot be deleted under its routes.
    let e = s
        .apply(&Command::DeleteMember {
            network,
            node: node(1),
        })
        .unwrap_err();
    assert_eq!(e.kind, RejectKind::Conflict);
    // New subnets avoid routes: a route over the next free /24 pushes the next member past it.
    s.apply(&Command::AddRoute {
        network,
        target: "172.28.2.0/24".parse().unwrap(),
        via: RouteVia::Node(node(0)),
    })
    .unwrap();
    s.apply(&join(1, 2)).unwrap();
    s.apply(&Command::Authorize {
        network,
        node: node(2),
        at_ms: 3,
    })
    .unwrap();
    assert_eq!(
        s.network(network).unwrap().members[&node(2)]
            .container_subnet
            .unwrap()
            .to_string(),
        "172.28.3.0/24"
    );
}

#[test]
fn a_different_identity_for_a_known_node_is_refused() {
    let mut s = ControllerState::default();
    s.apply(&Command::CreateNetwork(spec(1))).unwrap();
    s.apply(&join(1, 0)).unwrap();
    let network = nwid(1);
    // Forge a record whose stored identity differs from the one presented.
    let net = s.networks.get_mut(&network).unwrap();
    net.members.get_mut(&node(0)).unwrap().identity.ed25519[0] ^= 1;
    let before = s.clone();
    let err = s.apply(&join(1, 0)).unwrap_err();
    assert_eq!(err.kind, RejectKind::Forbidden);
    assert_eq!(s, before);
}

#[test]
fn pools_and_routes_are_bounded_and_checked_in_one_pass() {
    let pools = |n: u32| -> Vec<Ipv4Net> {
        (0..n)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i * 8), 29).unwrap())
            .collect()
    };
    let mut s = ControllerState::default();
    // Tens of thousands of pools: refused at once.
    let mut huge = spec(8);
    huge.v4_pools = pools(70_000);
    let started = std::time::Instant::now();
    let e = s.apply(&Command::CreateNetwork(huge)).unwrap_err();
    assert_eq!(e.kind, RejectKind::Invalid, "{}", e.message);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // Overlap anywhere in the list is found.
    let mut overlapping = spec(8);
    overlapping.v4_pools = pools(MAX_V4_POOLS as u32 - 1);
    overlapping.v4_pools.push("10.0.0.0/16".parse().unwrap());
    let e = s.apply(&Command::CreateNetwork(overlapping)).unwrap_err();
    assert_eq!(e.kind, RejectKind::Conflict, "{}", e.message);
    let mut most = spec(8);
    most.v4_pools = pools(MAX_V4_POOLS as u32);
    s.apply(&Command::CreateNetwork(most)).unwrap();
    s.apply(&join(8, 0)).unwrap();
    s.apply(&Command::Authorize {
        network: nwid(8),
        node: node(0),
        at_ms: 3,
    })
    .unwrap();
    let route = |i: u32| Command::AddRoute {
        network: nwid(8),
        target: IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x6400_0000 + (i << 8)), 24).unwrap()),
        via: RouteVia::Node(node(0)),
    };
    for i in 0..MAX_ROUTES as u32 {
        s.apply(&route(i)).unwrap();
    }
    let e = s.apply(&route(MAX_ROUTES as u32)).unwrap_err();
    assert_eq!(e.kind, RejectKind::Conflict, "{}", e.message);
    // The config still signs.
    let net = s.network(nwid(8)).unwrap();
    net.signed_config().verify(nwid(8)).unwrap();
}

#[test]
fn routes_that_would_cut_the_mesh_off_are_refused() {
    let mut s = ControllerState::default();
    s.apply(&Command::CreateNetwork(spec(6))).unwrap();
    s.apply(&join(6, 1)).unwrap();
    s.apply(&Command::Authorize {
        network: nwid(6),
        node: node(1),
        at_ms: 3,
    })
    .unwrap();
    let add = |target: &str| Command::AddRoute {
        network: nwid(6),
        target: target.parse().unwrap(),
        via: RouteVia::Node(node(1)),
    };
    for (target, kind) in [
        ("127.0.0.0/8", RejectKind::Invalid),
        ("127.0.0.1/32", RejectKind::Invalid),
        ("224.0.0.0/4", RejectKind::Invalid),
        ("239.1.0.0/16", RejectKind::Invalid),
        ("169.254.0.0/16", RejectKind::Invalid),
        ("0.0.0.0/0", RejectKind::Invalid),
        ("::1/128", RejectKind::Invalid),
        ("fe80::/64", RejectKind::Invalid),
        ("ff02::/16", RejectKind::Invalid),
        ("::/0", RejectKind::Invalid),
        // Member 1 is reached at 192.0.2.1:9993.
        ("192.0.2.0/24", RejectKind::Conflict),
        ("192.0.0.0/8", RejectKind::Conflict),
    ] {
        let e = s.apply(&add(target)).unwrap_err();
        assert_eq!(e.kind, kind, "{target}: {}", e.message);
    }
    let revision = s.network(nwid(6)).unwrap().revision;
    s.apply(&add("192.168.50.0/24")).unwrap();
    assert_eq!(s.network(nwid(6)).unwrap().revision, revision + 1);
}

#[test]
fn members_waiting_for_authorization_are_capped_and_age_out() {
    let mut s = ControllerState::default();
    s.apply(&Command::CreateNetwork(spec(7))).unwrap();
    let join_at = |identity: &Identity, at_ms: u64| Command::MemberJoin {
        network: nwid(7),
        node: identity.node_id(),
        identity: *identity.public(),
        physical: None,
        local: vec![],
        at_ms,
    };
    // An authorized member is never aged out.
    s.apply(&join(7, 0)).unwrap();
    s.apply(&Command::Authorize {
        network: nwid(7),
        node: node(0),
        at_ms: 2,
    })
    .unwrap();
    let waiting: Vec<Identity> = (0..MAX_WAITING_MEMBERS)
        .map(|_| Identity::generate_unproven())
        .collect();
    for (i, id) in waiting.iter().enumerate() {
        s.apply(&join_at(id, 10 + i as u64)).unwrap();
    }
    let net = |s: &ControllerState| s.network(nwid(7)).unwrap().members.len();
    assert_eq!(net(&s), MAX_WAITING_MEMBERS + 1);
    // At the cap, with everyone seen recently: refused, nothing changes.
    let late = Identity::generate_unproven();
    let e = s.apply(&join_at(&late, 1_000)).unwrap_err();
    assert_eq!(e.kind, RejectKind::Conflict, "{}", e.message);
    assert_eq!(net(&s), MAX_WAITING_MEMBERS + 1);
    // A member on record re-joins freely.
    s.apply(&join_at(&waiting[0], 2_000)).unwrap();
    // A day later, those not seen since go and make room (waiting[0] was seen at 2000).
    let day_later = WAITING_MEMBER_TTL_MS + 1_500;
    s.apply(&join_at(&late, day_later)).unwrap();
    let members = &s.network(nwid(7)).unwrap().members;
    assert_eq!(members.len(), 3, "node 0, waiting[0], and the late one");
    assert!(members.contains_key(&node(0)));
    assert!(members.contains_key(&waiting[0].node_id()));
    assert!(members.contains_key(&late.node_id()));
}

#[test]
fn two_members_cannot_share_an_x25519_key() {
    let mut s = ControllerState::default();
    s.apply(&Command::CreateNetwork(spec(5))).unwrap();
    s.apply(&join(5, 0)).unwrap();
    // Another Ed25519 key with node 0's X25519 key: another node id, the same peer key.
    let copier = Identity::generate_unproven();
    let identity = PublicIdentity {
        x25519: identities()[0].public().x25519,
        ed25519: copier.public().ed25519,
    };
    let e = s
        .apply(&Command::MemberJoin {
            network: nwid(5),
            node: identity.node_id().unwrap(),
            identity,
            physical: None,
            local: vec![],
            at_ms: 3,
        })
        .unwrap_err();
    assert_eq!(e.kind, RejectKind::Forbidden, "{}", e.message);
    assert_eq!(s.network(nwid(5)).unwrap().members.len(), 1);
}

#[test]
fn names_refuse_control_and_formatting_characters() {
    for bad in [
        "evil\u{202E}txt.exe",
        "zero\u{200B}width",
        "bom\u{FEFF}",
        "isolate\u{2067}x",
        "tag\u{E0041}",
        "bell\u{7}",
    ] {
        let e = validate_name(bad, "member name").unwrap_err();
        assert_eq!(e.kind, RejectKind::Invalid, "{bad:?}");
        assert!(e.message.contains("U+"), "{}", e.message);
    }
    for good in ["web-1", "Zürich büro", "東京", "db (primary)", ""] {
        validate_name(good, "member name").unwrap();
    }
    assert!(validate_name(&"x".repeat(MAX_NAME_LEN + 1), "name").is_err());
}

#[test]
fn a_member_says_it_relays_and_its_endpoint_is_port_mapped() {
    let mut s = ControllerState::default();
    s.apply(&Command::CreateNetwork(spec(4))).unwrap();
    let network = nwid(4);
    s.apply(&join(4, 0)).unwrap();
    let reach = |relay, port_mapped| Command::MemberReach {
        network,
        node: node(0),
        relay,
        port_mapped,
    };
    // Unauthorized: recorded, no new revision.
    let before = s.network(network).unwrap().revision;
    s.apply(&reach(true, true)).unwrap();
    assert_eq!(s.network(network).unwrap().revision, before);
    s.apply(&Command::Authorize {
        network,
        node: node(0),
        at_ms: 3,
    })
    .unwrap();
    let config = |s: &ControllerState| s.network(network).unwrap().config();
    let m = config(&s).members[0].clone();
    assert!(m.relay && m.port_mapped, "{m:?}");
    // The same again changes nothing; a change is a new revision.
    let revision = s.network(network).unwrap().revision;
    s.apply(&reach(true, true)).unwrap();
    assert_eq!(s.network(network).unwrap().revision, revision);
    s.apply(&reach(false, false)).unwrap();
    assert_eq!(s.network(network).unwrap().revision, revision + 1);
    let m = config(&s).members[0].clone();
    assert!(!m.relay && !m.port_mapped);
    // A member nobody has seen is refused.
    let unknown = Command::MemberReach {
        network,
        node: node(5),
        relay: true,
        port_mapped: false,
    };
    assert!(s.apply(&unknown).is_err());
}

#[test]
fn commands_round_trip_through_postcard_and_json() {
    let cmds = vec![
        Command::CreateNetwork(spec(3)),
        join(3, 1),
        Command::AddRoute {
            network: nwid(3),
            target: "10.1.0.0/16".parse().unwrap(),
            via: RouteVia::Gateway("10.147.17.3".parse().unwrap()),
        },
    ];
    for c in cmds {
        let bin = postcard::to_allocvec(&c).unwrap();
        assert_eq!(postcard::from_bytes::<Command>(&bin).unwrap(), c);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), c);
    }
    assert!(
        !format!("{:?}", spec(3)).contains("[3, 3"),
        "key seed leaks into Debug"
    );
}

fn arb_command() -> impl Strategy<Value = Command> {
    let seed = 1u8..3;
    let who = 0usize..6;
    prop_oneof![
        seed.clone().prop_map(|s| Command::CreateNetwork(spec(s))),
        seed.clone()
            .prop_map(|s| Command::DeleteNetwork { network: nwid(s) }),
        (seed.clone(), who.clone()).prop_map(|(s, w)| join(s, w)),
        (seed.clone(), who.clone()).prop_map(|(s, w)| Command::Authorize {
            network: nwid(s),
            node: node(w),
            at_ms: 9
        }),
        (seed.clone(), who.clone()).prop_map(|(s, w)| Command::Deauthorize {
            network: nwid(s),
            node: node(w),
            at_ms: 9
        }),
        (seed.clone(), who.clone()).prop_map(|(s, w)| Command::DeleteMember {
            network: nwid(s),
            node: node(w)
        }),
        (seed.clone(), who.clone(), 0u32..8, 22u8..=26).prop_map(|(s, w, third, len)| {
            Command::AddRoute {
                network: nwid(s),
                target: IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::new(172, 28, third as u8, 0), len)
                        .unwrap()
                        .trunc(),
                ),
                via: RouteVia::Node(node(w)),
            }
        }),
        (seed.clone(), who.clone(), any::<bool>(), any::<bool>()).prop_map(
            |(s, w, relay, port_mapped)| Command::MemberReach {
                network: nwid(s),
                node: node(w),
                relay,
                port_mapped,
            }
        ),
        (seed.clone(), who.clone(), who.clone(), 0u32..8).prop_map(|(s, a, b, third)| {
            Command::AddFailoverRoute {
                network: nwid(s),
                target: IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::new(172, 28, third as u8, 0), 24).unwrap(),
                ),
                gateways: vec![RouteVia::Node(node(a)), RouteVia::Node(node(b))],
            }
        }),
        (seed.clone(), any::<bool>()).prop_map(|(s, on)| Command::SetIpv6Egress {
            network: nwid(s),
            egress: if on {
                Ipv6Egress::Nat66
            } else {
                Ipv6Egress::Off
            },
        }),
        (
            seed.clone(),
            who.clone(),
            proptest::option::of((0u16..4, 56u8..=64))
        )
            .prop_map(|(s, w, prefix)| Command::MemberDelegatedPrefix {
                network: nwid(s),
                node: node(w),
                prefix: prefix.map(|(n, len)| {
                    Ipv6Net::new(
                        std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, n << 8, 0, 0, 0, 0),
                        len,
                    )
                    .unwrap()
                    .trunc()
                }),
            }),
        (seed, 0u32..8).prop_map(|(s, third)| Command::RemoveRoute {
            network: nwid(s),
            target: IpNet::V4(Ipv4Net::new(Ipv4Addr::new(172, 28, third as u8, 0), 24).unwrap()),
        }),
    ]
}

fn check_invariants(s: &ControllerState) -> Result<(), TestCaseError> {
    for net in s.networks.values() {
        let mut seen_v4 = BTreeSet::new();
        let mut subnets: Vec<Ipv4Net> = Vec::new();
        for m in net.members.values() {
            for a in &m.ipv4 {
                prop_assert!(
                    net.v4_pools.iter().any(|p| p.contains(a)),
                    "{} outside pools",
                    a
                );
                prop_assert!(seen_v4.insert(*a), "duplicate address {}", a);
            }
            if let Some(sub) = m.container_subnet {
                prop_assert!(net.container_pool.contains(&sub));
                for other in &subnets {
                    prop_assert!(
                        !overlaps(&IpNet::V4(sub), &IpNet::V4(*other)),
                        "{} overlaps {}",
                        sub,
                        other
                    );
                }
                subnets.push(sub);
            }
            if m.authorized {
                prop_assert!(!m.ipv4.is_empty() && m.container_subnet.is_some());
            }
        }
        for (t, r) in &net.routes {
            for sub in &subnets {
                prop_assert!(
                    !overlaps(t, &IpNet::V4(*sub)),
                    "route {} overlaps subnet {}",
                    t,
                    sub
                );
            }
            for g in r.gateways() {
                prop_assert!(net.members.contains_key(&g));
            }
        }
        let prefixes: Vec<_> = net
            .members
            .values()
            .filter_map(|m| m.delegated_prefix)
            .collect();
        for (i, a) in prefixes.iter().enumerate() {
            for b in &prefixes[..i] {
                prop_assert!(
                    !overlaps(&IpNet::V6(*a), &IpNet::V6(*b)),
                    "{} overlaps {}",
                    a,
                    b
                );
            }
        }
        // The signed config always encodes and verifies.
        prop_assert!(net.signed_config().verify(net.id).is_ok());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rejected_commands_change_nothing_and_replay_is_deterministic(
        cmds in proptest::collection::vec(arb_command(), 1..60)
    ) {
        let mut s = ControllerState::default();
        let mut log = Vec::new();
        for c in &cmds {
            let before = s.clone();
            match s.apply(c) {
                Ok(_) => log.push(c.clone()),
                Err(_) => prop_assert_eq!(&s, &before),
            }
            check_invariants(&s)?;
        }
        // Applying the same full log (rejections included) on a fresh replica: same state.
        let mut replica = ControllerState::default();
        for c in &cmds {
            let _ = replica.apply(c);
        }
        prop_assert_eq!(&replica, &s);
        let mut again = ControllerState::default();
        for c in &log {
            prop_assert!(again.apply(c).is_ok());
        }
        prop_assert_eq!(&again, &s);
    }
}

#[test]
fn routes_via_a_deauthorized_member_are_withdrawn_until_it_is_authorized_again() {
    let (mut s, network) = two_authorized_members();
    let lan: IpNet = "192.168.100.0/24".parse().unwrap();
    s.apply(&Command::AddRoute {
        network,
        target: lan,
        via: RouteVia::Node(node(1)),
    })
    .unwrap();
    let routed = ManagedRoute::via(lan, node(1));
    assert_eq!(
        s.network(network).unwrap().config().routes,
        vec![routed.clone()]
    );

    let before = s.network(network).unwrap().revision;
    s.apply(&Command::Deauthorize {
        network,
        node: node(1),
        at_ms: 4,
    })
    .unwrap();
    let net = s.network(network).unwrap();
    assert!(net.revision > before, "nodes must get the withdrawal");
    let cfg = net.signed_config().verify(network).unwrap();
    assert!(cfg.routes.is_empty(), "{:?}", cfg.routes);
    // The route itself is kept: authorizing the member again brings it back.
    assert!(net.routes.contains_key(&lan));
    s.apply(&Command::Authorize {
        network,
        node: node(1),
        at_ms: 5,
    })
    .unwrap();
    assert_eq!(s.network(network).unwrap().config().routes, vec![routed]);
}

/// Joins written before node ids needed proof of work keep their place in the log's
/// encoding (variant 3) and replay under the plain-hash id they had, on every replica alike;
/// joins written now carry the id the replica checked at `Hello`.
#[test]
fn joins_from_before_proof_of_work_replay_under_their_old_ids() {
    let identity = *identities()[0].public();
    let old = Command::MemberJoinBeforeProofOfWork {
        network: nwid(1),
        identity,
        physical: None,
        local: vec![],
        at_ms: 2,
    };
    assert_eq!(postcard::to_allocvec(&old).unwrap()[0], 3);
    let mut s = ControllerState::default();
    s.apply(&Command::CreateNetwork(spec(1))).unwrap();
    s.apply(&old).unwrap();
    let legacy = identity.node_id_before_proof_of_work().unwrap();
    let members = &s.network(nwid(1)).unwrap().members;
    assert!(members.contains_key(&legacy), "{:?}", members.keys());
    assert!(!members.contains_key(&node(0)));
    s.apply(&join(1, 1)).unwrap();
    assert!(s.network(nwid(1)).unwrap().members.contains_key(&node(1)));
}

#[test]
fn failover_routes_list_their_authorized_gateways_in_order() {
    let (mut s, network) = two_authorized_members();
    s.apply(&join(1, 2)).unwrap();
    s.apply(&Command::Authorize {
        network,
        node: node(2),
        at_ms: 3,
    })
    .unwrap();
    let lan: IpNet = "192.168.100.0/24".parse().unwrap();
    let gw2 = IpAddr::V4(s.network(network).unwrap().members[&node(2)].ipv4[0]);
    let failover = |gateways: Vec<RouteVia>| Command::AddFailoverRoute {
        network,
        target: lan,
        gateways,
    };
    // Twice the same gateway, a stranger, none at all: refused, nothing changed.
    for bad in [
        vec![
            RouteVia::Node(node(1)),
            RouteVia::Gateway(s.network(network).unwrap().members[&node(1)].ipv4[0].into()),
        ],
        vec![RouteVia::Node(node(1)), RouteVia::Node(node(5))],
        vec![],
    ] {
        let before = s.clone();
        assert!(s.apply(&failover(bad)).is_err());
        assert_eq!(s, before);
    }
    s.apply(&failover(vec![
        RouteVia::Node(node(1)),
        RouteVia::Gateway(gw2),
    ]))
    .unwrap();
    let route = |s: &ControllerState| s.network(network).unwrap().config().routes;
    assert_eq!(
        route(&s),
        vec![ManagedRoute {
            target: lan,
            gateways: vec![node(1), node(2)]
        }]
    );
    // A deauthorized gateway leaves the list; the route stays while one is left.
    s.apply(&Command::Deauthorize {
        network,
        node: node(1),
        at_ms: 4,
    })
    .unwrap();
    assert_eq!(route(&s), vec![ManagedRoute::via(lan, node(2))]);
    // A backup gateway cannot be deleted under its route either.
    let e = s
        .apply(&Command::DeleteMember {
            network,
            node: node(2),
        })
        .unwrap_err();
    assert_eq!(e.kind, RejectKind::Conflict);
    // The signed config carries both gateways (a version 4 config).
    s.apply(&Command::Authorize {
        network,
        node: node(1),
        at_ms: 5,
    })
    .unwrap();
    let cfg = s
        .network(network)
        .unwrap()
        .signed_config()
        .verify(network)
        .unwrap();
    assert_eq!(cfg.routes[0].gateways, vec![node(1), node(2)]);
}

#[test]
fn delegated_prefixes_give_members_global_container_subnets() {
    let (mut s, network) = two_authorized_members();
    let delegate = |prefix: &str| Command::MemberDelegatedPrefix {
        network,
        node: node(1),
        prefix: Some(prefix.parse().unwrap()),
    };
    let before = s.network(network).unwrap().revision;
    s.apply(&delegate("2001:db8:1:40::/60")).unwrap();
    let net = s.network(network).unwrap();
    assert_eq!(net.revision, before + 1);
    let cfg = net.signed_config().verify(network).unwrap();
    assert_eq!(
        cfg.member(node(1)).unwrap().delegated_subnet,
        Some("2001:db8:1:40::/80".parse().unwrap())
    );
    assert_eq!(
        cfg.container_subnet_v6(node(1)),
        Some("2001:db8:1:40::/80".parse().unwrap())
    );
    // The same again changes nothing; bad prefixes are refused with what to fix.
    s.apply(&delegate("2001:db8:1:40::/60")).unwrap();
    assert_eq!(s.network(network).unwrap().revision, before + 1);
    for (bad, says) in [
        ("2001:db8:1:41::/60", "did you mean 2001:db8:1:40::/60"),
        ("2001:db8:1:40::/96", "longer than the /80"),
        ("fd00:1::/48", "not global unicast"),
    ] {
        let e = s.apply(&delegate(bad)).unwrap_err();
        assert!(e.message.contains(says), "{bad}: {e}");
    }
    // Another member's prefix may not overlap it, nor may a route.
    let e = s
        .apply(&Command::MemberDelegatedPrefix {
            network,
            node: node(0),
            prefix: Some("2001:db8:1::/48".parse().unwrap()),
        })
        .unwrap_err();
    assert_eq!(e.kind, RejectKind::Conflict);
    let e = s
        .apply(&Command::AddRoute {
            network,
            target: "2001:db8:1:40::/64".parse().unwrap(),
            via: RouteVia::Node(node(0)),
        })
        .unwrap_err();
    assert!(e.message.contains("delegated prefix"), "{e}");
    // A new prefix moves the subnet; none gives the 6PLANE /80 back.
    s.apply(&delegate("2001:db8:2:80::/60")).unwrap();
    let cfg = s.network(network).unwrap().config();
    assert_eq!(
        cfg.member(node(1)).unwrap().delegated_subnet,
        Some("2001:db8:2:80::/80".parse().unwrap())
    );
    s.apply(&Command::MemberDelegatedPrefix {
        network,
        node: node(1),
        prefix: None,
    })
    .unwrap();
    let cfg = s.network(network).unwrap().config();
    assert_eq!(
        cfg.container_subnet_v6(node(1)),
        cfg.sixplane_subnet(node(1))
    );
}

#[test]
fn ipv6_egress_is_a_network_setting_nodes_get() {
    let (mut s, network) = two_authorized_members();
    let before = s.network(network).unwrap().revision;
    s.apply(&Command::SetIpv6Egress {
        network,
        egress: Ipv6Egress::Nat66,
    })
    .unwrap();
    let net = s.network(network).unwrap();
    assert_eq!(net.revision, before + 1);
    let cfg = net.signed_config().verify(network).unwrap();
    assert_eq!(cfg.ipv6_egress, Ipv6Egress::Nat66);
}
