//! The node channel: how nodes join networks and receive their signed configs (DESIGN §4).
//! Both sides depend on this crate: the node (`meshd-node`) through [`ChannelClient`], each
//! controller replica (`meshd-controller`'s `channel` module) through [`protocol`] and
//! [`tls`].
//!
//! One QUIC connection per node and controller replica, authenticated both ways with
//! RFC 7250 raw Ed25519 public keys ([`tls`]): the node's TLS key *is* its identity's Ed25519
//! key, so the controller derives the node id from the handshake instead of trusting a claim.
//! The node opens one bidirectional stream and speaks length-prefixed postcard frames on it
//! ([`protocol`]): `Hello`, then `Join`/`Leave` per network. The controller answers with a
//! status, then pushes a new signed config whenever the network's revision grows, and pushes
//! `AccessDenied` when the member is deauthorized. [`client`] is the node side.
//!
//! Authorization is decided by the controller, at the application layer, from the member
//! record; the TLS layer only proves who the peer is.
#![forbid(unsafe_code)]

pub mod client;
pub mod protocol;
pub mod tls;

pub use client::{ChannelClient, ChannelError};
pub use protocol::{ControllerMessage, FrameError, JoinStatus, NodeMessage, Reach};
