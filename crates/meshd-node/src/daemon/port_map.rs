//! Port mapping: where the host's router maps ports (PCP, NAT-PMP or UPnP-IGD: home routers,
//! miniupnpd), the node asks it to forward the data-plane port, and offers the mapped address
//! as its public endpoint. Peers then reach the node directly even behind a NAT that maps
//! every destination to a new port (symmetric), where punching cannot work. The mapping is
//! renewed at half its lifetime and deleted when the daemon stops.
//!
//! PCP and NAT-PMP are `crab_nat`'s (PCP first, NAT-PMP when the router speaks only that), to
//! the default IPv4 route's gateway; UPnP-IGD is `igd-next`'s (SSDP discovery, then SOAP),
//! tried when neither answers. The same three iroh's port mapper speaks, from two small
//! maintained crates.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, PortMappingType};
use tracing::{debug, info, warn};

use super::{Daemon, stopped};
use crate::host_routes;

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
    /// `pcp`, `nat-pmp` or `upnp`.
    pub protocol: &'static str,
}

/// A mapping held on the router, to renew and delete.
enum Held {
    PcpOrNatPmp(PortMapping),
    Upnp {
        gateway: igd_next::aio::Gateway<igd_next::aio::tokio::Tokio>,
        external_port: u16,
        local: SocketAddr,
    },
}

/// How long UPnP discovery listens for the router's answer.
const UPNP_SEARCH: Duration = Duration::from_secs(3);
/// What the router's UPnP mapping table says the mapping is for.
const UPNP_DESCRIPTION: &str = "meshd";

fn lifetime_seconds() -> u32 {
    u32::try_from(LIFETIME.as_secs()).unwrap_or(u32::MAX)
}

impl Held {
    /// Asks the router again for the same mapping; the time until the next renewal.
    async fn renew(&mut self) -> Option<Duration> {
        match self {
            Held::PcpOrNatPmp(mapping) => {
                tokio::time::timeout(REQUEST_TIMEOUT, mapping.renew())
                    .await
                    .ok()?
                    .ok()?;
                Some(Duration::from_secs(u64::from(mapping.lifetime())) / 2)
            }
            Held::Upnp {
                gateway,
                external_port,
                local,
            } => {
                let renewed = gateway.add_port(
                    igd_next::PortMappingProtocol::UDP,
                    *external_port,
                    *local,
                    lifetime_seconds(),
                    UPNP_DESCRIPTION,
                );
                tokio::time::timeout(REQUEST_TIMEOUT, renewed)
                    .await
                    .ok()?
                    .ok()?;
                Some(LIFETIME / 2)
            }
        }
    }

    /// Removes the mapping from the router; it would expire by itself.
    async fn delete(self) {
        let deleted = match self {
            Held::PcpOrNatPmp(mapping) => {
                matches!(
                    tokio::time::timeout(REQUEST_TIMEOUT, mapping.try_drop()).await,
                    Ok(Ok(()))
                )
            }
            Held::Upnp {
                gateway,
                external_port,
                ..
            } => {
                let removed =
                    gateway.remove_port(igd_next::PortMappingProtocol::UDP, external_port);
                matches!(
                    tokio::time::timeout(REQUEST_TIMEOUT, removed).await,
                    Ok(Ok(()))
                )
            }
        };
        if !deleted {
            debug!("could not delete the port mapping; it expires by itself");
        }
    }
}

/// Asks a UPnP-IGD router found by SSDP for the data-plane port, the same one outside if
/// it is free.
async fn request_upnp(port: NonZeroU16) -> Option<(Held, Mapped)> {
    let mut options = igd_next::SearchOptions::default();
    options.timeout = Some(UPNP_SEARCH);
    let gateway = igd_next::aio::tokio::search_gateway(options)
        .await
        .map_err(|e| debug!(error = %e, "no UPnP-IGD router"))
        .ok()?;
    let router = gateway.addr;
    let local_ip = match router.ip() {
        IpAddr::V4(v4) => local_address_towards(v4)?,
        IpAddr::V6(_) => return None,
    };
    let local = SocketAddr::new(local_ip, port.get());
    let external_ip = tokio::time::timeout(REQUEST_TIMEOUT, gateway.get_external_ip())
        .await
        .ok()?
        .ok()?;
    let udp = igd_next::PortMappingProtocol::UDP;
    let same = gateway.add_port(udp, port.get(), local, lifetime_seconds(), UPNP_DESCRIPTION);
    let external_port = match tokio::time::timeout(REQUEST_TIMEOUT, same).await {
        Ok(Ok(())) => port.get(),
        _ => {
            let any = gateway.add_any_port(udp, local, lifetime_seconds(), UPNP_DESCRIPTION);
            tokio::time::timeout(REQUEST_TIMEOUT, any)
                .await
                .ok()?
                .ok()?
        }
    };
    let mapped = Mapped {
        external: SocketAddr::new(external_ip, external_port),
        protocol: "upnp",
    };
    Some((
        Held::Upnp {
            gateway,
            external_port,
            local,
        },
        mapped,
    ))
}

/// This host's address towards `gateway` (the one the router sees requests come from).
fn local_address_towards(gateway: Ipv4Addr) -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((gateway, 5351)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Asks the router to map the data-plane port: PCP or NAT-PMP to the default gateway, then
/// UPnP-IGD.
async fn request(port: NonZeroU16) -> Option<(Held, Mapped)> {
    if let Some(gateway) = host_routes::default_gateway()
        && let Some((mapping, mapped)) = request_pcp_or_nat_pmp(gateway, port).await
    {
        return Some((Held::PcpOrNatPmp(mapping), mapped));
    }
    request_upnp(port).await
}

/// Asks `gateway` to map the data-plane port over PCP, else NAT-PMP.
async fn request_pcp_or_nat_pmp(
    gateway: Ipv4Addr,
    port: NonZeroU16,
) -> Option<(PortMapping, Mapped)> {
    let local = local_address_towards(gateway)?;
    let options = PortMappingOptions {
        lifetime_seconds: Some(lifetime_seconds()),
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
    let mut held: Option<Held> = None;
    loop {
        let wait = match held.as_mut() {
            None => match request(port).await {
                Some((mapping, mapped)) => {
                    info!(external = %mapped.external, protocol = mapped.protocol, "port mapped");
                    daemon.set_port_mapping(Some(mapped));
                    held = Some(mapping);
                    match held.as_ref() {
                        Some(Held::PcpOrNatPmp(m)) => {
                            Duration::from_secs(u64::from(m.lifetime())) / 2
                        }
                        _ => LIFETIME / 2,
                    }
                }
                None => RETRY,
            },
            Some(mapping) => match mapping.renew().await {
                Some(next) => next,
                None => {
                    warn!("the router no longer renews the port mapping");
                    held = None;
                    daemon.set_port_mapping(None);
                    Duration::ZERO
                }
            },
        };
        tokio::select! {
            () = tokio::time::sleep(wait.max(Duration::from_secs(1))) => {}
            () = stopped(&mut stop) => {
                if let Some(mapping) = held.take() {
                    mapping.delete().await;
                }
                return;
            }
        }
    }
}
