//! The controller's side of the node channel ([`meshd_channel`]): the QUIC endpoint nodes
//! connect to, and one task per connection that answers joins and pushes signed configs
//! ([`server`]).
//!
//! Authorization is decided here, at the application layer, from the member record; the TLS
//! layer only proves who the peer is.

mod join_limit;
mod reports;
pub mod server;
mod signed;
pub mod stats;

pub use server::{endpoint, serve, serve_relaying};
pub use stats::ChannelStats;

#[cfg(test)]
mod tests;
