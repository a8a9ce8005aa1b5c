//! The host's routes as the kernel lists them in `/proc/net/route` and
//! `/proc/net/ipv6_route`: enough to warn that a container subnet is already in use, and to
//! find the router to ask for a port mapping. Lines that do not parse are skipped: both are
//! best effort, never a failure.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A prefix the host routes somewhere, and the interface it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub prefix: IpNet,
    pub device: String,
}

/// The routes of the calling process's network namespace (empty where /proc is not
/// readable).
pub fn read() -> Vec<HostRoute> {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    let mut routes = parse_v4(&v4);
    routes.extend(parse_v6(&v6));
    routes
}

/// The IPv4 default route's gateway in the calling process's network namespace.
pub fn default_gateway() -> Option<Ipv4Addr> {
    default_gateway_v4(&std::fs::read_to_string("/proc/net/route").ok()?)
}

/// An address of `/proc/net/route`: the in-memory (network order) bytes printed as a
/// native-endian hex word.
fn v4_word(hex: &str) -> Option<Ipv4Addr> {
    u32::from_str_radix(hex, 16)
        .ok()
        .map(|w| Ipv4Addr::from(w.to_ne_bytes()))
}

/// `/proc/net/route`: a header line, then `Iface Destination Gateway Flags RefCnt Use
/// Metric Mask ...`, addresses as the in-memory (network order) bytes printed as a
/// native-endian hex word.
pub fn parse_v4(text: &str) -> Vec<HostRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (device, dest, mask) = (fields.first()?, fields.get(1)?, fields.get(7)?);
            let mask = v4_word(mask)?;
            let len = u8::try_from(u32::from(mask).leading_ones()).ok()?;
            let prefix = Ipv4Net::new(v4_word(dest)?, len).ok()?;
            Some(HostRoute {
                prefix: IpNet::V4(prefix.trunc()),
                device: (*device).to_owned(),
            })
        })
        .collect()
}

/// The gateway of the default route (destination 0.0.0.0) in a `/proc/net/route` table;
/// `None` without one, or for a default route with no gateway (a point-to-point link).
pub fn default_gateway_v4(text: &str) -> Option<Ipv4Addr> {
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if v4_word(fields.get(1)?)? != Ipv4Addr::UNSPECIFIED {
            return None;
        }
        v4_word(fields.get(2)?).filter(|gateway| !gateway.is_unspecified())
    })
}

/// `/proc/net/ipv6_route`: `dest dest_len src src_len next_hop metric refcnt use flags
/// device`, addresses as 32 hex digits, lengths as 2. Host routes (/128) are the kernel's
/// local and neighbour entries, not prefixes in use, and are left out.
pub fn parse_v6(text: &str) -> Vec<HostRoute> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (dest, len, device) = (fields.first()?, fields.get(1)?, fields.get(9)?);
            let len = u8::from_str_radix(len, 16).ok()?;
            if dest.len() != 32 || len >= 128 {
                return None;
            }
            let dest = Ipv6Addr::from(u128::from_str_radix(dest, 16).ok()?);
            let prefix = Ipv6Net::new(dest, len).ok()?;
            Some(HostRoute {
                prefix: IpNet::V6(prefix.trunc()),
                device: (*device).to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn reads_the_kernels_ipv4_table() {
        // Little-endian layout, as on x86_64 and aarch64.
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            garbage line\n";
        let routes = parse_v4(text);
        if cfg!(target_endian = "little") {
            assert_eq!(
                routes,
                vec![
                    HostRoute {
                        prefix: "0.0.0.0/0".parse().unwrap(),
                        device: "eth0".into()
                    },
                    HostRoute {
                        prefix: "10.0.0.0/24".parse().unwrap(),
                        device: "eth0".into()
                    },
                    HostRoute {
                        prefix: "172.17.0.0/16".parse().unwrap(),
                        device: "docker0".into()
                    },
                ]
            );
        } else {
            assert_eq!(routes.len(), 3);
        }
    }

    #[test]
    fn finds_the_default_routes_gateway() {
        let header =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let gateway = u32::from_ne_bytes([192, 168, 1, 1]);
        let table = format!(
            "{header}eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth0\t00000000\t{gateway:08X}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        );
        assert_eq!(
            default_gateway_v4(&table),
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
        // A default route without a gateway (a point-to-point link), or none at all.
        let direct =
            format!("{header}ppp0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n");
        assert_eq!(default_gateway_v4(&direct), None);
        assert_eq!(default_gateway_v4(header), None);
        assert_eq!(default_gateway_v4("garbage\n00000000 zz"), None);
    }

    #[test]
    fn reads_the_kernels_ipv6_table() {
        let text = "\
fc9c56c2e30000000000000000000000 28 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 mesh-8056c2e21c
fc9c56c2e389e92ceee5000000000000 50 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 br0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0
fc9c56c2e389e92ceee5000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001 br0
";
        assert_eq!(
            parse_v6(text),
            vec![
                HostRoute {
                    prefix: "fc9c:56c2:e300::/40".parse().unwrap(),
                    device: "mesh-8056c2e21c".into()
                },
                HostRoute {
                    prefix: "fc9c:56c2:e389:e92c:eee5::/80".parse().unwrap(),
                    device: "br0".into()
                },
                HostRoute {
                    prefix: "fe80::/64".parse().unwrap(),
                    device: "eth0".into()
                },
            ],
            "the /128 is a local address, not a prefix"
        );
    }

    #[test]
    fn reads_this_hosts_tables_without_failing() {
        // Whatever this machine has: at least it parses, and loopback-only namespaces give
        // nothing for the container subnets to clash with.
        let routes = read();
        assert!(routes.iter().all(|r| !r.device.is_empty()));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = parse_v4(&text);
            let _ = parse_v6(&text);
        }

        #[test]
        fn arbitrary_fields_never_panic(fields in proptest::collection::vec("[0-9A-Fa-f]{0,34}", 0..12)) {
            let line = fields.join(" ");
            let _ = parse_v4(&format!("header\n{line}"));
            let _ = parse_v6(&line);
        }
    }
}
