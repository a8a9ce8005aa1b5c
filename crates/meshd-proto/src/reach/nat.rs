//! What a node learns about its NAT from the replicas' reflections.
//!
//! Two replicas (at different addresses) that see the node's data-plane socket at the same
//! public address and port mean the NAT maps endpoint-independently: a peer that learns
//! that address can reach the node there once the node has sent to the peer (a cone NAT),
//! so hole punching works. Different ports mean a new mapping per destination (a symmetric
//! NAT): a punched path works only towards a peer that accepts from anywhere (a public host
//! or a full-cone NAT), otherwise the pair needs a relay.

use std::net::SocketAddr;

/// The node's NAT, as far as the reflections tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatBehaviour {
    /// Fewer than two replicas answered from different addresses yet.
    Unknown,
    /// The replicas see one of the node's own addresses: no NAT on this path.
    NoNat,
    /// Every replica sees the same public address and port (a cone NAT).
    EndpointIndependent,
    /// Replicas see different public ports or addresses (a symmetric NAT).
    EndpointDependent,
}

impl NatBehaviour {
    /// Lower-case name for status output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NatBehaviour::Unknown => "unknown",
            NatBehaviour::NoNat => "none",
            NatBehaviour::EndpointIndependent => "endpoint-independent",
            NatBehaviour::EndpointDependent => "endpoint-dependent",
        }
    }
}

/// Classifies the node's NAT from `(replica, observed)` reflections of one socket and the
/// socket's own addresses (`local`, with its port).
pub fn classify(local: &[SocketAddr], reflections: &[(SocketAddr, SocketAddr)]) -> NatBehaviour {
    let Some((_, first)) = reflections.first() else {
        return NatBehaviour::Unknown;
    };
    if reflections.iter().any(|(_, seen)| seen != first) {
        return NatBehaviour::EndpointDependent;
    }
    if local.contains(first) {
        return NatBehaviour::NoNat;
    }
    let mut replicas: Vec<SocketAddr> = reflections.iter().map(|(r, _)| *r).collect();
    replicas.sort_unstable();
    replicas.dedup();
    if replicas.len() < 2 {
        NatBehaviour::Unknown
    } else {
        NatBehaviour::EndpointIndependent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn classification() {
        let local = [a("192.168.1.2:9993")];
        let r1 = a("198.51.100.1:9996");
        let r2 = a("198.51.100.2:9996");
        assert_eq!(classify(&local, &[]), NatBehaviour::Unknown);
        assert_eq!(
            classify(&local, &[(r1, a("203.0.113.5:9993"))]),
            NatBehaviour::Unknown
        );
        assert_eq!(
            classify(&local, &[(r1, a("192.168.1.2:9993"))]),
            NatBehaviour::NoNat
        );
        assert_eq!(
            classify(
                &local,
                &[(r1, a("203.0.113.5:1024")), (r2, a("203.0.113.5:1024"))]
            ),
            NatBehaviour::EndpointIndependent
        );
        assert_eq!(
            classify(
                &local,
                &[(r1, a("203.0.113.5:1024")), (r2, a("203.0.113.5:40311"))]
            ),
            NatBehaviour::EndpointDependent
        );
        // The same replica twice proves nothing about other destinations.
        assert_eq!(
            classify(
                &local,
                &[(r1, a("203.0.113.5:1024")), (r1, a("203.0.113.5:1024"))]
            ),
            NatBehaviour::Unknown
        );
    }
}
