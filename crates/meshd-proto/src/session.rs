//! Transport sessions: the keys a completed handshake yields, with counters and replay state.
//!
//! Sealing and opening use ring's ChaCha20-Poly1305 in place: the caller leaves
//! [`wire::DATA_HEADER_LEN`] bytes of headroom before the payload and [`wire::TAG_LEN`] after
//! it, so the packet path copies nothing.
//!
//! Each also comes in two steps, so that the cipher can run while nobody holds the session:
//! [`Session::reserve_seal`] takes a counter and writes the header, and the returned [`Seal`]
//! does the cipher work; [`Session::check_open`] checks a message against the session, the
//! returned [`Open`] verifies and decrypts it, and [`Session::accept`] records its counter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::replay::{REJECT_AFTER_MESSAGES, ReplayWindow};
use crate::wire;

// Timers from the WireGuard paper, section 6.1 (spec values).
/// Start a new handshake once a session is this old and still in use.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// Never use a session this old.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Retransmit a handshake initiation that got no answer after this long.
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Give up handshaking (and drop queued packets) after this long.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Send an empty keepalive when we received data but sent nothing for this long.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rekey once this many messages were sent on a session.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;

/// Why a session refused to seal or open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session expired")]
    Expired,
    #[error("counter replayed or outside the window")]
    Replayed,
    #[error("authentication failed")]
    Unauthentic,
    #[error("buffer too small for headroom, payload and tag")]
    BufferTooSmall,
}

/// The AEAD key of one direction of a session. Not boxed: the key is used on every packet,
/// and the null variant exists only in benchmark builds.
#[allow(clippy::large_enum_variant)]
enum PacketKey {
    ChaCha(LessSafeKey),
    /// Seals nothing and writes a zero tag; opens anything whose tag is zero. Only the
    /// benchmarks build it (feature `null-crypto`), to show the packet path's cost without
    /// the cipher; no code path of the node can create one.
    #[cfg(feature = "null-crypto")]
    Null,
}

impl PacketKey {
    fn seal(&self, counter: u64, aad: [u8; 4], payload: &mut [u8], tag: &mut [u8]) -> bool {
        match self {
            PacketKey::ChaCha(key) => key
                .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), payload)
                .map(|t| tag.copy_from_slice(t.as_ref()))
                .is_ok(),
            #[cfg(feature = "null-crypto")]
            PacketKey::Null => {
                tag.fill(0);
                true
            }
        }
    }

    /// `sealed` is ciphertext and tag; returns the plaintext length.
    fn open(&self, counter: u64, aad: [u8; 4], sealed: &mut [u8]) -> Option<usize> {
        match self {
            PacketKey::ChaCha(key) => key
                .open_in_place(nonce(counter), Aad::from(aad), sealed)
                .ok()
                .map(|plain| plain.len()),
            #[cfg(feature = "null-crypto")]
            PacketKey::Null => {
                let plain = sealed.len().checked_sub(wire::TAG_LEN)?;
                sealed[plain..].iter().all(|&b| b == 0).then_some(plain)
            }
        }
    }
}

pub struct Session {
    local_index: u32,
    remote_index: u32,
    /// Shared with the [`Seal`]s and [`Open`]s in flight.
    send_key: Arc<PacketKey>,
    recv_key: Arc<PacketKey>,
    send_counter: u64,
    replay: ReplayWindow,
    established_at: Instant,
    initiator: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("send_counter", &self.send_counter)
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

fn key(bytes: &[u8; 32]) -> Arc<PacketKey> {
    // A 32-byte key is exactly what CHACHA20_POLY1305 takes.
    Arc::new(PacketKey::ChaCha(LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32-byte ChaCha20 key"),
    )))
}

/// A sealing reserved on a session: its counter is taken and the header written; the cipher
/// work is left to [`Seal::seal`], which needs no access to the session.
pub struct Seal {
    key: Arc<PacketKey>,
    counter: u64,
    kind: u8,
    payload_len: usize,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("counter", &self.counter)
            .field("payload_len", &self.payload_len)
            .finish_non_exhaustive()
    }
}

impl Seal {
    /// The message length once sealed.
    pub fn message_len(&self) -> usize {
        wire::DATA_OVERHEAD + self.payload_len
    }

    /// Seals the payload in the buffer [`Session::reserve_seal`] wrote the header into;
    /// returns the message length.
    pub fn seal(self, buf: &mut [u8]) -> Result<usize, SessionError> {
        let total = self.message_len();
        let Some(message) = buf.get_mut(wire::DATA_HEADER_LEN..total) else {
            return Err(SessionError::BufferTooSmall);
        };
        let (payload, tag) = message.split_at_mut(self.payload_len);
        if !self
            .key
            .seal(self.counter, [self.kind, 0, 0, 0], payload, tag)
        {
            return Err(SessionError::Unauthentic);
        }
        Ok(total)
    }
}

/// A data message checked against its session (not expired, counter not seen yet); the
/// cipher work is left to [`Open::open`], which needs no access to the session.
pub struct Open {
    key: Arc<PacketKey>,
    counter: u64,
}

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Open {
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Verifies and decrypts `msg` in place; returns the plaintext length, which starts at
    /// `msg[DATA_HEADER_LEN]`. Records nothing: the session's [`Session::accept`] does.
    pub fn open(&self, msg: &mut [u8]) -> Result<usize, SessionError> {
        if msg.len() < wire::DATA_OVERHEAD {
            return Err(SessionError::BufferTooSmall);
        }
        let aad = [msg[0], msg[1], msg[2], msg[3]];
        self.key
            .open(self.counter, aad, &mut msg[wire::DATA_HEADER_LEN..])
            .ok_or(SessionError::Unauthentic)
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

impl Session {
    pub fn new(
        local_index: u32,
        remote_index: u32,
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
        initiator: bool,
        now: Instant,
    ) -> Self {
        Self {
            local_index,
            remote_index,
            send_key: key(send_key),
            recv_key: key(recv_key),
            send_counter: 0,
            replay: ReplayWindow::default(),
            established_at: now,
            initiator,
        }
    }

    /// Replaces both keys with the null cipher (see `PacketKey::Null`): benchmarks only.
    #[cfg(feature = "null-crypto")]
    pub fn disable_crypto(&mut self) {
        self.send_key = Arc::new(PacketKey::Null);
        self.recv_key = Arc::new(PacketKey::Null);
    }

    pub fn local_index(&self) -> u32 {
        self.local_index
    }

    pub fn remote_index(&self) -> u32 {
        self.remote_index
    }

    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.established_at)
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.age(now) >= REJECT_AFTER_TIME || self.send_counter >= REJECT_AFTER_MESSAGES
    }

    /// Whether the owner should start a new handshake: old, or many messages sent.
    pub fn wants_rekey(&self, now: Instant) -> bool {
        self.age(now) >= REKEY_AFTER_TIME || self.send_counter >= REKEY_AFTER_MESSAGES
    }

    /// Seals `buf[DATA_HEADER_LEN..DATA_HEADER_LEN + payload_len]` in place and writes the
    /// header; returns the message length.
    pub fn seal_in_place(
        &mut self,
        now: Instant,
        kind: u8,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<usize, SessionError> {
        self.reserve_seal(now, kind, buf, payload_len)?.seal(buf)
    }

    /// The first half of [`Session::seal_in_place`]: takes the next counter and writes the
    /// header into `buf`; [`Seal::seal`] on the same buffer finishes.
    pub fn reserve_seal(
        &mut self,
        now: Instant,
        kind: u8,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<Seal, SessionError> {
        if buf.len() < wire::DATA_OVERHEAD + payload_len {
            return Err(SessionError::BufferTooSmall);
        }
        if self.is_expired(now) {
            return Err(SessionError::Expired);
        }
        let counter = self.send_counter;
        self.send_counter += 1;
        wire::put_data_header(buf, kind, self.remote_index, counter);
        Ok(Seal {
            key: Arc::clone(&self.send_key),
            counter,
            kind,
            payload_len,
        })
    }

    /// Cheap pre-check before decrypting: is this counter acceptable?
    pub fn counter_acceptable(&self, counter: u64) -> bool {
        self.replay.check(counter)
    }

    /// Opens a data or probe message in place; returns the plaintext length, which starts at
    /// `msg[DATA_HEADER_LEN]`. The counter is recorded only once the tag verified.
    pub fn open_in_place(
        &mut self,
        now: Instant,
        msg: &mut [u8],
        counter: u64,
    ) -> Result<usize, SessionError> {
        let plain = self.check_open(now, msg, counter)?.open(msg)?;
        self.accept(counter)?;
        Ok(plain)
    }

    /// The first step of [`Session::open_in_place`]: whether `msg` with `counter` may be
    /// opened on this session now. [`Open::open`] then verifies and decrypts it, and
    /// [`Session::accept`] records the counter.
    pub fn check_open(&self, now: Instant, msg: &[u8], counter: u64) -> Result<Open, SessionError> {
        if msg.len() < wire::DATA_OVERHEAD {
            return Err(SessionError::BufferTooSmall);
        }
        if self.age(now) >= REJECT_AFTER_TIME {
            return Err(SessionError::Expired);
        }
        if !self.replay.check(counter) {
            return Err(SessionError::Replayed);
        }
        Ok(Open {
            key: Arc::clone(&self.recv_key),
            counter,
        })
    }

    /// Records the counter of a message that opened; fails if a copy of it was accepted
    /// since [`Session::check_open`] (then the message is a replay and must be dropped).
    pub fn accept(&mut self, counter: u64) -> Result<(), SessionError> {
        if self.replay.update(counter) {
            Ok(())
        } else {
            Err(SessionError::Replayed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(now: Instant) -> (Session, Session) {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        (
            Session::new(10, 20, &k1, &k2, true, now),
            Session::new(20, 10, &k2, &k1, false, now),
        )
    }

    fn seal(s: &mut Session, now: Instant, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; wire::DATA_OVERHEAD + payload.len()];
        buf[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
        let n = s
            .seal_in_place(now, wire::TYPE_DATA, &mut buf, payload.len())
            .unwrap();
        buf.truncate(n);
        buf
    }

    fn open(s: &mut Session, now: Instant, msg: &mut [u8]) -> Result<Vec<u8>, SessionError> {
        let counter = u64::from_le_bytes(msg[8..16].try_into().unwrap());
        let n = s.open_in_place(now, msg, counter)?;
        Ok(msg[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + n].to_vec())
    }

    #[test]
    fn seal_open_round_trip_and_replay() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut m = seal(&mut a, now, b"hello");
        assert_eq!(&m[4..8], &20u32.to_le_bytes());
        let copy = m.clone();
        assert_eq!(open(&mut b, now, &mut m).unwrap(), b"hello");
        let mut again = copy.clone();
        assert_eq!(open(&mut b, now, &mut again), Err(SessionError::Replayed));
    }

    #[test]
    fn tampering_and_type_confusion_fail() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let m = seal(&mut a, now, b"payload");
        for i in 0..m.len() {
            if (4..8).contains(&i) {
                continue; // the receiver index selects the session, it is not authenticated
            }
            let mut t = m.clone();
            t[i] ^= 0x40;
            assert!(
                open(&mut b, now, &mut t).is_err(),
                "flip at byte {i} accepted"
            );
        }
        // The tampered copies recorded nothing: the original still opens.
        let mut ok = m.clone();
        assert!(open(&mut b, now, &mut ok).is_ok());
    }

    #[test]
    fn expiry() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let later = now + REJECT_AFTER_TIME;
        let mut buf = vec![0u8; wire::DATA_OVERHEAD];
        assert_eq!(
            a.seal_in_place(later, wire::TYPE_DATA, &mut buf, 0),
            Err(SessionError::Expired)
        );
        let mut m = seal(&mut a, now, b"x");
        assert_eq!(open(&mut b, later, &mut m), Err(SessionError::Expired));
        assert!(a.wants_rekey(now + REKEY_AFTER_TIME));
        assert!(!a.wants_rekey(now + REKEY_AFTER_TIME - Duration::from_millis(1)));
    }
}
