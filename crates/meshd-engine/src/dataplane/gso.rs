//! Grouping sealed datagrams into segmented sends (UDP GSO).
//!
//! One `sendmsg` with `UDP_SEGMENT` carries up to 64 datagrams to one destination, laid back to
//! back in one buffer: all of one length except the last, which may be shorter. The datagrams
//! of a batch sit in the fixed slots of a [`crate::tun::Reader`]; [`run_len`] finds how many
//! from the front go together, and [`pack`] moves them next to each other (nothing moves when
//! they fill their slots exactly, as full-sized packets do).
//!
//! ```text
//! slots:  |hdr packet tag   |hdr packet tag   |hdr short tag |    |   slot_len apart
//! packed: |hdr packet tag|hdr packet tag|hdr short tag|             len apart
//! ```

use std::net::SocketAddr;
use std::ops::Range;

/// The largest UDP payload one segmented send may carry (a 64 KB IPv4 datagram less its
/// headers: the kernel's limit for the whole super-packet).
pub const MAX_GSO_BYTES: usize = 65_535 - 20 - 8;

/// A datagram sealed in slot `slot` of a batch: `len` bytes from the slot's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub slot: usize,
    pub destination: SocketAddr,
    pub len: usize,
}

/// How many datagrams from the front of `sealed` go out in one send: same destination, the
/// length of the first, except that a shorter one may end the run; at most `max_segments`
/// and [`MAX_GSO_BYTES`]. At least 1 unless `sealed` is empty.
pub fn run_len(sealed: &[Sealed], max_segments: usize) -> usize {
    let Some(first) = sealed.first() else {
        return 0;
    };
    let max = max_segments.min(MAX_GSO_BYTES / first.len.max(1)).max(1);
    let mut n = 1;
    while n < max.min(sealed.len()) {
        let next = &sealed[n];
        if next.destination != first.destination || next.len > first.len {
            break;
        }
        n += 1;
        if next.len < first.len {
            break;
        }
    }
    n
}

/// Moves the datagrams of `run` (from [`run_len`]) to lie back to back from the first one's
/// slot, in order; returns where they now are in `slots`. Each datagram must fit its slot.
pub fn pack(slots: &mut [u8], slot_len: usize, run: &[Sealed]) -> Range<usize> {
    let Some(first) = run.first() else {
        return 0..0;
    };
    let start = first.slot * slot_len;
    let mut end = start;
    for s in run {
        let from = s.slot * slot_len;
        // `end` never passes `from`: each datagram is at most its slot, and slots only grow.
        if from != end {
            slots.copy_within(from..from + s.len, end);
        }
        end += s.len;
    }
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);
    const B: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2);

    fn sealed(v: &[(usize, SocketAddr, usize)]) -> Vec<Sealed> {
        v.iter()
            .map(|&(slot, destination, len)| Sealed {
                slot,
                destination,
                len,
            })
            .collect()
    }

    #[test]
    fn runs_break_at_a_new_destination_a_longer_datagram_or_after_a_shorter_one() {
        let s = sealed(&[
            (0, A, 100),
            (1, A, 100),
            (2, B, 100),
            (3, B, 100),
            (4, B, 60),
        ]);
        assert_eq!(run_len(&s, 64), 2);
        assert_eq!(
            run_len(&s[2..], 64),
            3,
            "a shorter last datagram ends the run"
        );
        let s = sealed(&[(0, A, 60), (1, A, 100)]);
        assert_eq!(run_len(&s, 64), 1, "nothing longer may follow");
        let s = sealed(&[(0, A, 100), (1, A, 60), (2, A, 60)]);
        assert_eq!(run_len(&s, 64), 2, "only the last may be shorter");
        assert_eq!(run_len(&[], 64), 0);
    }

    #[test]
    fn runs_respect_the_segment_and_byte_limits() {
        let s: Vec<Sealed> = (0..100)
            .map(|slot| Sealed {
                slot,
                destination: A,
                len: 1452,
            })
            .collect();
        assert_eq!(run_len(&s, 64), MAX_GSO_BYTES / 1452);
        assert_eq!(run_len(&s, 16), 16);
        assert_eq!(run_len(&s, 1), 1, "GSO off");
        assert_eq!(run_len(&s, 0), 1);
        let small = sealed(&[(0, A, 0), (1, A, 0)]);
        assert_eq!(run_len(&small, 64), 2);
    }

    #[test]
    fn packing_closes_the_gaps_in_order() {
        let slot_len = 8;
        let mut slots: Vec<u8> = (0..40).collect();
        // Slots 1, 2 and 4 (slot 3 was queued or dropped), 5, 5 and 3 bytes long.
        let run = sealed(&[(1, A, 5), (2, A, 5), (4, A, 3)]);
        let at = pack(&mut slots, slot_len, &run);
        assert_eq!(at, 8..21);
        assert_eq!(
            &slots[at],
            &[8, 9, 10, 11, 12, 16, 17, 18, 19, 20, 32, 33, 34]
        );
        // Datagrams that fill their slots stay where they are.
        let mut slots: Vec<u8> = (0..24).collect();
        let at = pack(
            &mut slots,
            slot_len,
            &sealed(&[(0, A, 8), (1, A, 8), (2, A, 8)]),
        );
        assert_eq!(at, 0..24);
        assert_eq!(slots, (0..24).collect::<Vec<u8>>());
    }
}
