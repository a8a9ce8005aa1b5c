//! Port mapping: where the host's router runs a PCP or NAT-PMP server (home routers,
//! miniupnpd), the node asks it to forward the data-plane port, and offers the mapped address
//! as its public endpoint. Peers then reach the node directly even behind a NAT that maps
//! every destination to a new port (symmetric), where punching cannot work. The mapping is
//! renewed at half its lifetime and deleted when the daemon stops.
//!
//! The protocols are `crab_nat`'s (PCP first, NAT-PMP when the router speaks only that): a
//! small maintained crate, and the same pair iroh's port mapper speaks. UPnP-IGD is not spoken
//! yet. The gateway is the default IPv4 route's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, PortMappingType};
use tracing::{debug, info, warn};

use super::{Daemon, stopped};

/// The lifetime asked for; routers may grant less.
const LIFETIME: Duration = Duration::from_secs(2 * 3600);
/// How long one request may take before the router is taken for one that does not map.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait before asking again after no router answered.
const RETRY: Duration = Duration::from_secs(60);

/// A mapping the router granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mapped {
    /// Where the internet reaches the node's data-plane port.
    pub external: SocketAddr,
    /// `pcp` or `nat-pmp`.
    pub protocol: &'static str,
}

/// The IPv4 default gateway, from `/proc/net/route`.
fn default_gateway() -> Option<Ipv4Addr> {
    gateway_in(&std::fs::read_to_string("/proc/net/route").ok()?)
}

/// The default route's gateway in a `/proc/net/route` table.
fn gateway_in(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway) = (fields.get(1)?, fields.get(2)?);
        if *destination != "00000000" {
            return None;
        }
        // Little-endian hex, as the kernel prints it.
        let raw = u32::from_str_radix(gateway, 16).ok()?;
        let gateway = Ipv4Addr::from(raw.swap_bytes());
        (!gateway.is_unspecified()).then_some(gateway)
    })
}

/// This host's address towards `gateway` (the one the router sees requests come from).
fn local_address_towards(gateway: Ipv4Addr) -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((gateway, 5351)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Asks `gateway` to map the data-plane port.
async fn request(gateway: Ipv4Addr, port: NonZeroU16) -> Option<(PortMapping, Mapped)> {
    let local = local_address_towards(gateway)?;
    let options = PortMappingOptions {
        lifetime_seconds: Some(u32::try_from(LIFETIME.as_secs()).unwrap_or(u32::MAX)),
        ..PortMappingOptions::default()
    };
    let mapping = tokio::time::timeout(
        REQUEST_TIMEOUT,
        PortMapping::new(gateway.into(), local, InternetProtocol::Udp, port, options),
    )
    .await
    .ok()?
    .map_err(|e| debug!(%gateway, error = %e, "no port mapping"))
    .ok()?;
    let (ip, protocol) = match mapping.mapping_type() {
        PortMappingType::Pcp { external_ip, .. } => (external_ip, "pcp"),
        PortMappingType::NatPmp => {
            let ip = tokio::time::timeout(
                REQUEST_TIMEOUT,
                crab_nat::natpmp::external_address(gateway.into(), None),
            )
            .await
            .ok()?
            .ok()?;
            (IpAddr::V4(ip), "nat-pmp")
        }
    };
    let external = SocketAddr::new(ip, mapping.external_port().get());
    Some((mapping, Mapped { external, protocol }))
}

/// Keeps a mapping of the data-plane port while the daemon runs.
pub(super) async fn run(daemon: Arc<Daemon>) {
    let Some(port) = NonZeroU16::new(daemon.port) else {
        return;
    };
    let mut stop = daemon.stop.clone();
    let mut held: Option<PortMapping> = None;
    loop {
        let wait = match held.as_mut() {
            None => match default_gateway() {
                None => RETRY,
                Some(gateway) => match request(gateway, port).await {
                    Some((mapping, mapped)) => {
                        info!(external = %mapped.external, protocol = mapped.protocol, %gateway, "port mapped");
                        let lifetime = Duration::from_secs(u64::from(mapping.lifetime()));
                        daemon.set_port_mapping(Some(mapped));
                        held = Some(mapping);
                        lifetime / 2
                    }
                    None => RETRY,
                },
            },
            Some(mapping) => {
                let renewed = tokio::time::timeout(REQUEST_TIMEOUT, mapping.renew()).await;
                if let Ok(Ok(())) = renewed {
                    Duration::from_secs(u64::from(mapping.lifetime())) / 2
                } else {
                    warn!("the router no longer renews the port mapping");
                    held = None;
                    daemon.set_port_mapping(None);
                    Duration::ZERO
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait.max(Duration::from_secs(1))) => {}
            () = stopped(&mut stop) => {
                if let Some(mapping) = held.take() {
                    let deleted = tokio::time::timeout(REQUEST_TIMEOUT, mapping.try_drop()).await;
                    if !matches!(deleted, Ok(Ok(()))) {
                        debug!("could not delete the port mapping; it expires by itself");
                    }
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn the_gateway_comes_from_the_default_route() {
        let table = format!(
            "{HEADER}eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        );
        assert_eq!(gateway_in(&table), Some(Ipv4Addr::new(192, 168, 1, 1)));
        // A default route without a gateway (a point-to-point link), or none at all.
        let direct =
            format!("{HEADER}ppp0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n");
        assert_eq!(gateway_in(&direct), None);
        assert_eq!(gateway_in(HEADER), None);
        assert_eq!(gateway_in("garbage\n00000000 zz"), None);
    }
}
