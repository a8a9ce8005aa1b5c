//! Reaching a member wherever it sits: what a node and a controller replica say to each
//! other over UDP, from the node's data-plane socket, so that the node learns how the
//! internet sees it and the replica can relay for it.
//!
//! - [`credential`]: the replica the node is connected to (over the authenticated QUIC
//!   channel) hands it a [`credential::Credential`]: a key derived from a secret every
//!   replica holds, the node's id and an expiry. Any replica recomputes the key from the
//!   request alone, so a node registers with all of them while it talks to one.
//! - [`reflect`]: the node's authenticated *reflect request* and the replica's answer with
//!   the address and port it saw (the server-reflexive candidate). The request also
//!   registers the node at that address for relaying.
//! - [`client`]: the node's side: requests to every relay, their answers, which relays are
//!   alive, the node's public endpoint.
//! - [`drop`]: why a reach message was refused.
//! - [`nat`]: what two replicas' answers say about the node's NAT.
//! - [`relay`]: the replica's relay, sans-IO: registrations, who may relay to whom (members
//!   authorized in a common network only), a per-member rate limit, and counters.
//!
//! The relay forwards the existing relay envelope ([`crate::wire::relay_envelope`]) by
//! node id and never sees plaintext: the inner message is the peers' own Noise traffic. Like
//! a TURN server's channel data, a relayed datagram is accepted only from the address its
//! source node registered with an authenticated request.
//!
//! A member started with `meshd daemon --relay` relays too, inside its tunnel
//! ([`crate::tunnel`]): there a source's registration is its session, and an envelope is
//! taken only from the address that session's traffic comes from.

pub mod client;
pub mod credential;
pub mod drop;
pub mod nat;
pub mod reflect;
pub mod relay;
