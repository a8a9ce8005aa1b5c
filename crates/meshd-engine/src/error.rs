//! The engine's one error type. Packet-level problems are never errors: they are counted
//! (see [`crate::dataplane::NetworkStatus::drops`]).

use std::io;

use meshd_proto::NetworkId;

/// Why an engine operation (bind, join, update, leave, a kernel change) failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Creating or configuring the TUN device failed (no `/dev/net/tun`, no CAP_NET_ADMIN,
    /// a name clash with a non-TUN link).
    #[error("TUN device {name}: {source}")]
    Tun {
        name: String,
        #[source]
        source: io::Error,
    },
    /// Creating, configuring or binding the UDP socket failed.
    #[error("UDP socket: {0}")]
    Socket(#[source] io::Error),
    /// Opening the rtnetlink socket failed.
    #[error("netlink socket: {0}")]
    NetlinkSocket(#[source] io::Error),
    /// The kernel refused a change (other than "already exists" on add or "not found" on
    /// remove, which are tolerated).
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no network interface named {0}")]
    NoSuchInterface(String),
    #[error("network {0} is already joined")]
    AlreadyJoined(NetworkId),
    #[error("network {0} is not joined")]
    NotJoined(NetworkId),
    #[error("this node is joined to {0} networks, the most it can be: leave one first")]
    TooManyNetworks(usize),
}
