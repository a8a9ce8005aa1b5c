//! The meshd controller: the state every node's config comes from.
//!
//! - [`state`]: networks and members as a deterministic state machine of [`state::Command`]s.
//! - [`ipam`]: address and container-subnet assignment, pure functions of the state.
//! - [`controller`]: the [`controller::Controller`] trait that the API and channel serve.
//! - [`api`]: the admin HTTP API; [`admin_client`] is its client, [`datadir`] where the CLI
//!   finds its address and token, [`api_tls`] its HTTPS off loopback.
//! - [`channel`]: the node channel, QUIC with raw Ed25519 keys: joins, status, config pushes.
//! - [`raft`]: openraft glue: the log and snapshots in redb, the HTTP transport between
//!   replicas inside TLS with keys pinned in the membership.
//! - [`replica`]: [`replica::Replica`], a [`controller::Controller`] replicated through raft.
//! - [`service`]: a replica as a process: its data directory (`init`) and serving (`run`).
//! - [`tls_listener`]: TLS handshakes off the accept loop, for replication and the admin API.
//!
//! The state machine never touches the network or the disk; replication, storage, the admin
//! API and the node channel wrap it.
#![forbid(unsafe_code)]

pub mod admin_client;
pub mod api;
pub mod api_tls;
pub mod channel;
pub mod controller;
pub mod datadir;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod ipam;
pub mod raft;
pub mod relay;
pub mod replica;
pub mod service;
pub mod state;
#[cfg(test)]
mod test_support;
pub mod tls_listener;
