//! TLS between replicas: TLS 1.3 with raw Ed25519 keys on both sides (the replica's
//! `replica.key`, as on the node channel), each key pinned in the cluster membership.
//!
//! - A client checks that the server proves the key recorded for the replica it dials.
//! - A server accepts a client whose key the membership records. A replica with no
//!   membership yet (initialized with `--join`, waiting to be added) cannot know the
//!   leader's key; it accepts any key, and the cluster secret in every request
//!   ([`super::network`]) is what keeps strangers out until its first append names the keys.
//!   So does a membership with a replica recorded before keys were pinned.

use std::sync::Arc;

use meshd_channel::tls::{KeyPolicy, TlsError, raw_key_client_config, raw_key_server_config};
use rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{Raft, ReplicaKey};

/// The ALPN protocol id of replication; bump the suffix on incompatible changes.
pub const ALPN: &[u8] = b"meshd-raft/1";

/// The name a client puts in its ClientHello: raw keys carry no names, rustls wants one.
const SERVER_NAME: &str = "meshd-replica";

/// Whether `key` may call this replica's raft endpoints, by the membership `raft` knows now.
fn member_key(raft: &Raft, key: &[u8; 32]) -> bool {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let mut nodes = metrics.membership_config.membership().nodes().peekable();
    if nodes.peek().is_none() {
        return true;
    }
    nodes.any(|(_, node)| node.key.is_none_or(|k| k.0 == *key))
}

/// The acceptor of a replica with key `seed`, admitting the keys of `raft`'s membership.
pub fn acceptor(seed: &[u8; 32], raft: Raft) -> Result<TlsAcceptor, TlsError> {
    let policy: KeyPolicy = Arc::new(move |key| member_key(&raft, key));
    let config = raw_key_server_config(seed, policy, ALPN)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A connector presenting `seed`, requiring the server to prove `expected` (any key when the
/// membership records none for it).
pub fn connector(seed: &[u8; 32], expected: Option<ReplicaKey>) -> Result<TlsConnector, TlsError> {
    let policy: KeyPolicy = match expected {
        Some(expected) => Arc::new(move |key| *key == expected.0),
        None => meshd_channel::tls::any_key(),
    };
    let config = raw_key_client_config(seed, policy, ALPN)?;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The server name clients send.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}
