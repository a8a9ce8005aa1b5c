//! The meshd node: what runs on every host (`meshd daemon`) and the library behind the node
//! commands of the CLI (`join`, `leave`, `status`, `peers`, `bench`, `docker-config`).
//!
//! - [`daemon`]: the daemon: its state directory, the links to controller replicas, the local
//!   API on a Unix socket and its client, the [`daemon::Dataplane`] seam to `meshd-engine`,
//!   the bench server, and the kernel forwarding and firewall checks.
//! - [`bench`]: the client side of `meshd bench`: which peer, the measurement, the report.
//! - [`docker`]: the Docker settings (`daemon.json`, compose, `docker network create`) for a
//!   host's container subnets.
//! - [`host_routes`]: the host's routing table as the kernel lists it (subnets in use, the
//!   default gateway).
//! - [`text`]: the human form of `status`, `peers` and `join`.
//!
//! What it does not do: packets (TUN, UDP, kernel routes) are `meshd-engine`'s, the protocol
//! `meshd-proto`'s, the channel's messages and QUIC identities `meshd-channel`'s. It never
//! depends on the controller.
#![forbid(unsafe_code)]

pub mod bench;
pub mod daemon;
pub mod docker;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod host_routes;
pub mod text;
