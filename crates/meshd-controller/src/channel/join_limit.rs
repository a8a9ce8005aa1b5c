//! How fast one source address may have joins written: each join that reaches the
//! replicated log costs an append, an fsync and replication on every replica, and anyone can
//! make fresh keys. Sources are IP addresses, shared by every connection from them.

use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use meshd_proto::rate::{Limiter, Rate};

/// Joins one source may have written per second, after its burst (a node joining many
/// networks at start, or many nodes behind one NAT reconnecting together).
pub const JOIN_RATE: Rate = Rate {
    per_second: 2.0,
    burst: 64.0,
};
/// Sources remembered at most.
const MAX_SOURCES: usize = 4096;

#[derive(Debug)]
pub struct JoinLimit {
    sources: Mutex<Limiter<IpAddr>>,
}

impl Default for JoinLimit {
    fn default() -> Self {
        JoinLimit {
            sources: Mutex::new(Limiter::new(JOIN_RATE, MAX_SOURCES)),
        }
    }
}

impl JoinLimit {
    /// Takes one join for `source` at `now`; `false` when it has had its share.
    pub fn admit(&self, source: IpAddr, now: Instant) -> bool {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(source, now, 1.0)
    }
}
