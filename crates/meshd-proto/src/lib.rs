//! meshd's sans-IO core: everything about the protocol that can be computed without sockets
//! or a clock.
//!
//! Time is always a parameter (`now: Instant`), bytes go in through `handle_*` and come out
//! through `poll_*`. That is what lets the simulator, the property tests and the fuzz targets
//! drive the real protocol code, and what keeps the data plane in `meshd-engine` a thin loop.
//!
//! What this crate does not do: open sockets or TUN devices, read clocks, spawn threads, log.
//!
//! Layout:
//! - [`ids`]: `NodeId` (40 bits) and `NetworkId` (64 bits) with their text forms.
//! - [`identity`]: node key pairs (X25519 + Ed25519) and network signing keys.
//! - [`addr`]: 6PLANE and RFC4193 address math, both ways.
//! - [`config`]: the signed network config and its canonical encoding.
//! - [`routes`]: the managed-routes table (destination → owner, and the source check).
//! - [`wire`]: zero-copy parsing of every UDP message.
//! - [`handshake`]: Noise IKpsk2 with mac1/mac2 and cookies.
//! - [`session`]: transport keys, counters, expiry; [`replay`]: the anti-replay window.
//! - [`possession`]: proof that a node holds its X25519 secret.
//! - [`reach`]: endpoint reflection, relay credentials and the replica's relay.
//! - [`rate`]: token buckets for every per-source limit.
//! - [`tunnel`]: the per-network state machine tying it together for one node.
//! - [`sim`]: a deterministic in-memory network with a virtual clock, for tests and the demo.
//! - `fuzzing` (feature `fuzzing` only): the cargo-fuzz entry points and their seed inputs.
#![forbid(unsafe_code)]

pub mod addr;
pub mod config;
// Entry points and seeds for the cargo-fuzz targets in `fuzz/` (documented inside).
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod handshake;
mod hex;
pub mod identity;
pub mod ids;
pub mod ip;
pub mod possession;
pub mod rate;
pub mod reach;
pub mod replay;
pub mod routes;
#[cfg(feature = "serde")]
mod serde_impls;
pub mod session;
pub mod sim;
pub mod tunnel;
pub mod wire;

pub use config::{ManagedRoute, MemberConfig, NetworkConfig, SignedConfig};
pub use identity::{Identity, NetworkKey, PublicIdentity};
pub use ids::{IdError, NetworkId, NodeId};
pub use routes::RouteTable;
