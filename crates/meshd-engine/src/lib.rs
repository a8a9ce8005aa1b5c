//! meshd's Linux I/O layer: the edge around the sans-IO [`meshd_proto::tunnel::Tunnel`].
//!
//! What it does: opens one TUN device per joined network (one queue per packet worker), mirrors
//! the network's address plan into the kernel over rtnetlink (addresses, routes, MTU, link
//! state), owns the UDP sockets every network shares (one per worker, all on the node's port),
//! and runs the packet workers (one per core) that move packets between them:
//!
//! ```text
//!  TUN "mesh-…"  ──read──▶ Tunnel::prepare_in_place, Seal::seal ──sendmsg──▶ UDP [::]:port (inside → outside)
//!  TUN "mesh-…"  ◀─write── Tunnel::begin_outside, DataJob::open, Tunnel::finish_data
//!                          ◀─demux─ recvmmsg ─ UDP [::]:port                         (outside → inside)
//!                          Tunnel::handle_timeout every TIMER_TICK                   (timers)
//! ```
//!
//! Every edge moves batches: TUN offloads (virtio-net headers, TSO/USO on read, GRO on
//! write), UDP GSO on send and GRO on receive, each falling back on its own when the kernel
//! refuses it ([`dataplane::Offloads`]).
//!
//! What it does not do: talk to controllers, or verify or cache configs (the daemon hands it
//! verified [`meshd_proto::NetworkConfig`]s). Nor does it spread one peer's packets over
//! several cores: the kernel gives all datagrams from one peer to one worker's socket
//! (see [`dataplane`]).
//!
//! Layout:
//! - [`plan`](mod@plan): pure. Which addresses and routes a node's TUN carries, and the diff between
//!   two plans.
//! - [`kernel`]: applies a plan diff with rtnetlink; routes carry protocol [`kernel::RTPROT_MESHD`].
//! - [`tun`]: opens the TUN device; batched reads and writes on it.
//! - [`dataplane`]: the UDP sockets, the packet workers, per-network state, timers,
//!   status and counters.
//! - [`sys`]: the only module with `unsafe` (network namespaces, socket options, epoll).
//! - [`error`]: the one error type, [`EngineError`].

// Every module but `sys` forbids `unsafe`: system calls that no safe crate wraps live in
// `sys`, and only there, each with a `// SAFETY:` comment.
#[forbid(unsafe_code)]
pub mod dataplane;
#[forbid(unsafe_code)]
pub mod error;
#[forbid(unsafe_code)]
pub mod kernel;
#[forbid(unsafe_code)]
pub mod plan;
#[allow(unsafe_code)]
pub mod sys;
#[forbid(unsafe_code)]
pub mod tun;

pub use dataplane::{
    DEFAULT_BUSY_POLL, Dataplane, NetworkStatus, Offloads, WorkerPackets, default_workers,
};
pub use error::EngineError;
pub use kernel::Kernel;
pub use plan::{InterfacePlan, PlanDiff, diff, interface_name, plan};
