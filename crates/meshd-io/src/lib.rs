//! The host I/O that meshd's node (`meshd-node`), controller (`meshd-controller`) and CLI
//! share, so that each is written once:
//!
//! - [`fs`]: state files replaced atomically and durably ([`fs::write_atomically`]).
//! - [`clock`]: the wall clock as Unix time, for timestamps that are stored or shown.
//! - [`http`]: the HTTP/1 client of meshd's JSON APIs (the admin API, the node's local API,
//!   replication between replicas) and the error body every one of them answers with.
//! - [`text`]: the column tables the CLI prints.
//! - [`metrics`]: Prometheus's text format, for the node's and the replicas' `/metrics`.
//!
//! What it does not do: the data path (TUN, UDP, kernel routes) is `meshd-engine`'s, the
//! node–controller channel `meshd-channel`'s.
#![forbid(unsafe_code)]

pub mod clock;
pub mod fs;
pub mod http;
pub mod metrics;
pub mod text;
