//! Carries out [`PlanDiff`](crate::plan::PlanDiff)s on the kernel over rtnetlink: link MTU and state, addresses,
//! routes. No shelling out to `ip`.
//!
//! Changes are idempotent: adding what exists and removing what is gone are not errors, so
//! after a failed [`Kernel::apply`] the caller can apply the same old → new diff again and
//! converge. Routes carry protocol [`RTPROT_MESHD`] (`ip route show proto 109`) so they are
//! ours at a glance; addresses bring their connected routes with protocol `kernel`.
//!
//! Order within one apply: link (MTU, up) first, because IPv4 refuses routes through a link
//! that is down; then removals before additions, so an address whose prefix length changed
//! is replaced; routes last, once the addresses they may depend on exist.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, RouteMessageBuilder};
use tokio::task::JoinHandle;

use crate::EngineError;
use crate::plan::{InterfacePlan, diff};

/// The route protocol number meshd's routes carry: 0x6d, "m". Unassigned in
/// `/etc/iproute2/rt_protos`; add `109 meshd` there to see the name.
pub const RTPROT_MESHD: u8 = 0x6d;

/// A netlink connection to the kernel of the namespace it was made in.
pub struct Kernel {
    handle: Handle,
    /// Drives the netlink socket; stopped when the `Kernel` is dropped.
    connection: JoinHandle<()>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").finish_non_exhaustive()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Kernel {
    /// Opens a netlink socket in the calling thread's network namespace and spawns its
    /// connection task on the current tokio runtime.
    pub async fn connect() -> Result<Kernel, EngineError> {
        let (connection, handle, _multicast) =
            rtnetlink::new_connection().map_err(EngineError::NetlinkSocket)?;
        let connection = tokio::spawn(connection);
        Ok(Kernel { handle, connection })
    }

    /// The interface index of `ifname`, or `None` if there is no such link.
    pub async fn link_index(&self, ifname: &str) -> Result<Option<u32>, EngineError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(ifname.to_owned())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(EngineError::Netlink {
                what: format!("look up link {ifname}"),
                source,
            }),
        }
    }

    /// Turns the kernel state of `ifname` from `old` into `new`, touching only what differs
    /// (and setting the link up, which is cheap and repairs a link someone set down).
    pub async fn apply(
        &self,
        ifname: &str,
        old: &InterfacePlan,
        new: &InterfacePlan,
    ) -> Result<(), EngineError> {
        let index = self
            .link_index(ifname)
            .await?
            .ok_or_else(|| EngineError::NoSuchInterface(ifname.to_owned()))?;
        let d = diff(old, new);

        let mut link = LinkUnspec::new_with_index(index).up();
        if let Some(mtu) = d.mtu {
            link = link.mtu(u32::from(mtu));
        }
        let what = || format!("set link {ifname} up, mtu {:?}", d.mtu);
        check(
            self.handle.link().set(link.build()).execute().await,
            Tolerate::Nothing,
            what,
        )?;

        for &prefix in &d.remove_routes {
            let result = self
                .handle
                .route()
                .del(route_message(prefix, index))
                .execute()
                .await;
            check(result, Tolerate::Missing, || {
                format!("delete route {prefix} dev {ifname}")
            })?;
        }
        for &address in &d.remove_addresses {
            let result = self
                .handle
                .address()
                .del(address_message(address, index))
                .execute()
                .await;
            check(result, Tolerate::Missing, || {
                format!("delete address {address} dev {ifname}")
            })?;
        }
        for &address in &d.add_addresses {
            let result = self
                .handle
                .address()
                .add(index, address.addr(), address.prefix_len())
                .execute()
                .await;
            check(result, Tolerate::Exists, || {
                format!("add address {address} dev {ifname}")
            })?;
        }
        for &prefix in &d.add_routes {
            let result = self
                .handle
                .route()
                .add(route_message(prefix, index))
                .execute()
                .await;
            check(result, Tolerate::Exists, || {
                format!("add route {prefix} dev {ifname}")
            })?;
        }
        Ok(())
    }

    /// Deletes the link `ifname`; its addresses and routes go with it. A link that does not
    /// exist (already gone with its last TUN descriptor) is not an error.
    pub async fn remove(&self, ifname: &str) -> Result<(), EngineError> {
        let Some(index) = self.link_index(ifname).await? else {
            return Ok(());
        };
        check(
            self.handle.link().del(index).execute().await,
            Tolerate::Missing,
            || format!("delete link {ifname}"),
        )
    }
}

/// Which refusals a change tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tolerate {
    Nothing,
    /// Adding: the object is already there.
    Exists,
    /// Removing: the object (or its link) is already gone.
    Missing,
}

fn check(
    result: Result<(), rtnetlink::Error>,
    tolerate: Tolerate,
    what: impl FnOnce() -> String,
) -> Result<(), EngineError> {
    let Err(source) = result else {
        return Ok(());
    };
    let tolerated = matches!(
        (tolerate, errno(&source)),
        (Tolerate::Exists, Some(libc::EEXIST))
            | (
                Tolerate::Missing,
                Some(libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL | libc::ENODEV)
            )
    );
    if tolerated {
        return Ok(());
    }
    Err(EngineError::Netlink {
        what: what(),
        source,
    })
}

/// The errno of a netlink error answer.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => io::Error::from(m.clone()).raw_os_error(),
        _ => None,
    }
}

fn address_message(address: IpNet, index: u32) -> AddressMessage {
    match address {
        IpNet::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(a.addr(), a.prefix_len())
            .build(),
        IpNet::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(a.addr(), a.prefix_len())
            .build(),
    }
}

/// `prefix dev <index> proto 109`; IPv4 routes without a gateway get scope link, as
/// `ip route add … dev …` gives them.
fn route_message(prefix: IpNet, index: u32) -> RouteMessage {
    let protocol = RouteProtocol::from(RTPROT_MESHD);
    match prefix.trunc() {
        IpNet::V4(p) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(p.addr(), p.prefix_len())
            .output_interface(index)
            .protocol(protocol)
            .scope(RouteScope::Link)
            .build(),
        IpNet::V6(p) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(p.addr(), p.prefix_len())
            .output_interface(index)
            .protocol(protocol)
            .build(),
    }
}
