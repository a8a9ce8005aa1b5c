//! `Kernel` against a real kernel, inside a throwaway network namespace (needs root).

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};

use common::{Netns, config, member};
use ipnet::IpNet;
use meshd_engine::{InterfacePlan, Kernel, plan, tun};
use meshd_proto::{Identity, ManagedRoute, NetworkKey};

fn net(s: &str) -> IpNet {
    s.parse().expect("a valid prefix")
}

#[test]
fn kernel_applies_plans_as_diffs_and_removes_the_link() {
    let ns = Netns::new();
    let key = NetworkKey::generate();
    let ids: Vec<Identity> = (0..3).map(|_| Identity::generate_unproven()).collect();
    let me = ids[0].node_id();
    let endpoint = |i: u8| SocketAddr::from(([192, 0, 2, i], 9993));
    let members = |n: usize| {
        (0..n)
            .map(|i| {
                let i = u8::try_from(i).unwrap();
                member(i, ids[usize::from(i)].public(), endpoint(i))
            })
            .collect::<Vec<_>>()
    };

    // Three members, a LAN behind member 1, and my own LAN (never routed into the TUN).
    let mut cfg1 = config(&key, 1, members(3));
    cfg1.routes = vec![
        ManagedRoute::via(net("192.168.50.0/24"), ids[1].node_id()),
        ManagedRoute::via(net("192.168.60.0/24"), me),
    ];
    cfg1.canonicalize();
    let plan1 = plan(&cfg1, me);
    let ifname = plan1.name.clone();
    assert_eq!(plan1.routes.len(), 3, "{plan1:?}"); // 172.28.1/24, 172.28.2/24, 192.168.50/24

    // Member 2 leaves, member 1 gains a v6 LAN, my address moves, the MTU shrinks.
    let mut cfg2 = config(&key, 2, members(2));
    cfg2.mtu = 1400;
    cfg2.members
        .iter_mut()
        .find(|m| m.node_id == me)
        .unwrap()
        .ipv4 = vec![Ipv4Addr::new(10, 147, 17, 99)];
    cfg2.routes = vec![
        ManagedRoute::via(net("192.168.50.0/24"), ids[1].node_id()),
        ManagedRoute::via(net("fd00:50::/64"), ids[1].node_id()),
    ];
    cfg2.canonicalize();
    let plan2 = plan(&cfg2, me);

    let check = ns.clone();
    let (p1, p2) = (plan1.clone(), plan2.clone());
    ns.block_on(move || async move {
        let ifname = p1.name.clone();
        let device = tun::open(&ifname, 1500, 1).unwrap();
        let kernel = Kernel::connect().await.unwrap();
        kernel
            .apply(&ifname, &InterfacePlan::unconfigured(ifname.clone()), &p1)
            .await
            .unwrap();

        // Everything in plan 1 is there, routes marked proto 109, the link up at the MTU.
        let (mtu, flags) = check.link(&ifname);
        assert_eq!(mtu, 1420);
        assert!(flags.iter().any(|f| f == "UP"), "{flags:?}");
        assert_eq!(check.addresses(&ifname), p1.addresses);
        assert_eq!(check.routes(&ifname, &["proto", "109"]), p1.routes);
        // The addresses brought the network routes: the v4 pool, the RFC4193 /88, the
        // 6PLANE /40.
        let all = check.routes(&ifname, &[]);
        let connected: BTreeSet<IpNet> = p1.addresses.iter().map(IpNet::trunc).collect();
        assert!(connected.is_subset(&all), "{connected:?} not in {all:?}");
        let ours = check.ip(&["route", "show", "proto", "109"]);
        assert!(ours.contains("172.28.1.0/24"), "{ours}");

        // Something that is not ours: an address and a route someone else put there.
        check.ip(&["addr", "add", "192.0.2.77/32", "dev", &ifname]);
        check.ip(&["route", "add", "198.51.100.0/24", "dev", &ifname]);

        kernel.apply(&ifname, &p1, &p2).await.unwrap();
        let (mtu, _) = check.link(&ifname);
        assert_eq!(mtu, 1400);
        let mut expected = p2.addresses.clone();
        expected.insert(net("192.0.2.77/32"));
        assert_eq!(check.addresses(&ifname), expected);
        assert_eq!(check.routes(&ifname, &["proto", "109"]), p2.routes);
        assert!(check.routes(&ifname, &[]).contains(&net("198.51.100.0/24")));

        // Applying the same diff again converges instead of failing: "exists" on add and
        // "not found" on remove are tolerated.
        kernel.apply(&ifname, &p1, &p2).await.unwrap();
        assert_eq!(check.routes(&ifname, &["proto", "109"]), p2.routes);

        // Removing the link takes its addresses and routes along, even with the TUN open.
        kernel.remove(&ifname).await.unwrap();
        assert!(!check.link_exists(&ifname));
        assert!(
            check
                .ip(&["route", "show", "proto", "109"])
                .trim()
                .is_empty()
        );
        assert!(
            check
                .ip(&["-6", "route", "show", "proto", "109"])
                .trim()
                .is_empty()
        );
        kernel.remove(&ifname).await.unwrap(); // gone already: fine
        let missing = kernel.apply(&ifname, &p1, &p2).await.unwrap_err();
        assert!(missing.to_string().contains(&ifname), "{missing}");
        drop(device);
    });
    assert_eq!(ifname.len(), 15);
}

#[test]
fn closing_the_last_tun_queue_removes_the_link() {
    let ns = Netns::new();
    let check = ns.clone();
    ns.block_on(move || async move {
        let mut queues = tun::open("mesh-closetest", 1420, 3).unwrap();
        assert_eq!(queues.len(), 3);
        assert!(check.link_exists("mesh-closetest"));
        // Every queue holds the link: it goes with the last one.
        while queues.len() > 1 {
            drop(queues.pop());
            assert!(check.link_exists("mesh-closetest"));
        }
        drop(queues);
        assert!(!check.link_exists("mesh-closetest"));
        // Not a valid interface name: refused before the kernel sees it.
        assert!(tun::open("mesh-this-name-is-too-long", 1420, 1).is_err());
    });
}
