//! Drop counters: every packet the tunnel refuses is counted under a [`DropReason`].

use rustc_hash::FxHashMap;

macro_rules! drop_reasons {
    ($($name:ident => $text:literal,)*) => {
        /// Why a packet was dropped: each has a counter (see [`TunnelStats`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason { $($name,)* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];

            /// Stable snake-case name for metrics and `--json`.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$name => $text,)* }
            }
        }
    };
}

drop_reasons! {
    Malformed => "malformed",
    WrongNetwork => "wrong_network",
    BadMac1 => "bad_mac1",
    CookieSent => "cookie_sent",
    // Under load, more initiations from one source than its share.
    HandshakeRateLimited => "handshake_rate_limited",
    HandshakeFailed => "handshake_failed",
    UnknownPeer => "unknown_peer",
    StaleInitiation => "stale_initiation",
    UnknownIndex => "unknown_index",
    Replayed => "replayed",
    Unauthentic => "unauthentic",
    SessionExpired => "session_expired",
    SpoofedSource => "spoofed_source",
    // A packet from a peer to an address this member neither owns nor routes.
    ForeignDestination => "foreign_destination",
    NotIp => "not_ip",
    NoRoute => "no_route",
    // The mesh is routed, not a LAN: multicast and broadcast (the kernel's own MLD reports
    // and router solicitations on the TUN, mostly) have nobody to go to.
    Multicast => "multicast",
    OwnDestination => "own_destination",
    NoEndpoint => "no_endpoint",
    QueueFull => "queue_full",
    PacketTooLarge => "packet_too_large",
    RelayNotForUs => "relay_not_for_us",
    // A relayed message that authenticated as another peer than the envelope names.
    RelaySourceMismatch => "relay_source_mismatch",
    // An envelope to relay from an address that is not its source's session endpoint.
    RelayWrongSource => "relay_wrong_source",
    // An envelope to relay to a peer we have no live direct path to.
    RelayNoPath => "relay_no_path",
    RelayRateLimited => "relay_rate_limited",
    BadProbe => "bad_probe",
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Drop counters, indexed by [`DropReason`].
#[derive(Debug, Clone, Default)]
pub struct TunnelStats {
    drops: FxHashMap<DropReason, u64>,
    /// Envelopes relayed between two peers (when this node relays), and their bytes.
    pub relayed_packets: u64,
    pub relayed_bytes: u64,
    /// Times a failover route moved to another gateway.
    pub gateway_changes: u64,
}

impl TunnelStats {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(&reason).copied().unwrap_or(0)
    }

    pub fn total_dropped(&self) -> u64 {
        self.drops.values().sum()
    }

    pub(super) fn count(&mut self, reason: DropReason) {
        *self.drops.entry(reason).or_default() += 1;
    }
}
