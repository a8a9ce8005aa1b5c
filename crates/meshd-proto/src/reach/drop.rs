//! Why a reach message was refused, by the relay or by the node: every drop has a reason,
//! counted under [`ReachDrop::as_str`].

use crate::wire::WireError;

/// Why the relay dropped a datagram. Counted per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReachDrop {
    #[error("malformed: {0}")]
    Malformed(WireError),
    #[error("neither a reflect request nor a relay envelope")]
    UnexpectedType,
    #[error("the credential has expired")]
    Expired,
    #[error("bad MAC")]
    BadMac,
    #[error("a request no newer than the last one from that node")]
    Replayed,
    #[error("not an authorized member of any network")]
    NotMember,
    #[error("the source has not registered")]
    SourceNotRegistered,
    #[error("not from the address the source registered")]
    WrongSource,
    #[error("source and destination share no network")]
    NotTogether,
    #[error("the destination has not registered or its registration expired")]
    DestinationNotRegistered,
    #[error("the source is over its rate limit")]
    RateLimited,
}

impl ReachDrop {
    /// Label for counters and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ReachDrop::Malformed(_) => "malformed",
            ReachDrop::UnexpectedType => "unexpected_type",
            ReachDrop::Expired => "expired",
            ReachDrop::BadMac => "bad_mac",
            ReachDrop::Replayed => "replayed",
            ReachDrop::NotMember => "not_member",
            ReachDrop::SourceNotRegistered => "source_not_registered",
            ReachDrop::WrongSource => "wrong_source",
            ReachDrop::NotTogether => "not_together",
            ReachDrop::DestinationNotRegistered => "destination_not_registered",
            ReachDrop::RateLimited => "rate_limited",
        }
    }
}
