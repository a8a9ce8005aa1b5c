//! Network-namespace labs: the one harness behind `meshd demo`, the end-to-end tests of
//! `meshd`, the engine's tests and the benches' lab.
//!
//! - [`lab`]: [`Lab`], hosts on one switch (a bridge in a namespace of its own), with
//!   bridges, containers and LANs behind a host ([`Lab::add_bridge`],
//!   [`Lab::add_container`], [`Lab::add_namespace`], [`Lab::add_veth`]), and, by name, the
//!   namespaces of processes it did not start ([`Lab::attach_namespace`]). Every name carries
//!   a tag unique to the process and the lab ([`Naming`]); every link is made inside one of
//!   the lab's namespaces, so deleting them leaves nothing behind.
//! - [`nat`]: NAT routers on the switch with a LAN behind each ([`Lab::add_router`],
//!   [`Lab::add_host_behind`]): port-restricted cone, symmetric or full cone
//!   ([`NatKind`]), in nftables; their mappings flushed or timed out on demand
//!   ([`Lab::flush_conntrack`], [`Lab::set_udp_timeout`]).
//! - [`port_mapping`]: NAT-PMP, PCP and UPnP-IGD on a router, by miniupnpd
//!   ([`Lab::enable_port_mapping`]).
//! - [`process`]: commands in a lab's namespaces, waited for ([`Lab::exec`]) or kept
//!   running ([`Lab::spawn`]), only ever stopped by the handles the lab holds.
//! - [`interrupt`]: SIGINT/SIGTERM turned into an error at the next wait, so that the lab's
//!   drop cleans up ([`interrupt::install_signal_handler`]).
//! - [`netns`]: a bare namespace whose threads run inside it ([`Netns`]), for tests that
//!   run the data plane in-process.
//!
//! It only ever runs `ip`, for routers `nft`, `sysctl` and `conntrack` (and `miniupnpd` for
//! port mapping), and the commands it is given; it never kills a process by name.
#![forbid(unsafe_code)]

pub mod error;
pub mod interrupt;
pub mod lab;
pub mod nat;
pub mod netns;
pub mod port_mapping;
pub mod process;

pub use error::LabError;
pub use lab::{Host, Lab, Naming, leftovers};
pub use nat::{NatKind, Router};
pub use netns::Netns;
pub use port_mapping::PortMapping;
pub use process::{EXEC_TIMEOUT, Proc};

/// Whether this process runs as root (effective uid 0), which a lab needs, from
/// `/proc/self/status`.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
