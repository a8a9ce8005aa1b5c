//! The client side of `meshd bench`: tunnel throughput to one peer, measured against the
//! bench server of the peer's daemon ([`crate::daemon::bench`]) on its mesh address.
//!
//! - [`target`]: which peer a node id or mesh address names, from the local status.
//! - [`measure`]: the bench sessions, one thread per stream on plain blocking sockets.
//! - [`report`]: the result (`--json`), its human form and the live progress line.
//!
//! The CLI (`meshd bench`) asks the local daemon for its status and CPU time around a
//! measurement; the rest is here.

pub mod measure;
pub mod report;
pub mod target;

pub use measure::{BenchError, Outcome, Plan, measure, read_retransmits};
pub use report::{BenchResult, Measured, Progress, percent, render, summarize};
pub use target::{Target, UnknownPeer, resolve};

#[cfg(test)]
mod tests;
