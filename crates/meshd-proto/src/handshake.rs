//! The Noise IKpsk2 handshake (snow) plus WireGuard-style mac1/mac2 and cookie replies.
//!
//! * Pattern `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`: the initiator knows the responder's
//!   static key from the signed config, so one round trip authenticates both sides.
//! * The prologue and the pre-shared key are derived from the network id: a session is bound
//!   to one network, and a handshake for another network fails.
//! * The initiation's payload is a 12-byte TAI64N timestamp; the responder keeps the newest
//!   per peer, so a captured initiation cannot be replayed (WireGuard paper, section 5.1).
//! * mac1 = BLAKE2s-128(key = BLAKE2s("mac1----" | responder static), message up to mac1):
//!   the sender must know whom it talks to before the responder spends a DH on it.
//! * mac2 = BLAKE2s-128(key = cookie, message up to mac2); a responder under load answers
//!   initiations without a valid mac2 with a cookie reply instead of a handshake response.
//! * cookie = BLAKE2s-128(key = responder secret rotated every 2 minutes, sender address),
//!   sealed for the initiator with XChaCha20-Poly1305 under BLAKE2s("cookie--" | responder
//!   static), with the initiation's mac1 as associated data (WireGuard paper, section 5.4.7).

use std::net::SocketAddr;

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::{AeadInPlace, XChaCha20Poly1305, XNonce};
use snow::{Builder, HandshakeState};

use crate::NetworkId;
use crate::wire::{self, COOKIE_LEN, COOKIE_NONCE_LEN, MAC_LEN, TAG_LEN};

pub const NOISE_PARAMS: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// How long a responder's cookie secret, and so a cookie, stays valid.
pub const COOKIE_SECRET_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);
pub const TIMESTAMP_LEN: usize = 12;

pub type Mac16 = [u8; MAC_LEN];

/// Keys derived once per static public key.
#[derive(Clone)]
pub struct MacKeys {
    mac1: [u8; 32],
    cookie: [u8; 32],
}

impl std::fmt::Debug for MacKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKeys(..)")
    }
}

impl MacKeys {
    pub fn for_static(static_public: &[u8; 32]) -> Self {
        let derive = |label: &[u8]| -> [u8; 32] {
            Blake2s256::new()
                .chain_update(label)
                .chain_update(static_public)
                .finalize()
                .into()
        };
        Self {
            mac1: derive(b"mac1----"),
            cookie: derive(b"cookie--"),
        }
    }

    pub fn mac1(&self, msg: &[u8]) -> Mac16 {
        mac16(&self.mac1, msg)
    }
}

fn mac16(key: &[u8], msg: &[u8]) -> Mac16 {
    // Blake2s accepts keys of 1..=32 bytes; every caller passes 16 or 32.
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(key).expect("key of at most 32 bytes");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// Constant-time comparison of two MACs.
pub fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub fn psk(nwid: NetworkId) -> [u8; 32] {
    Blake2s256::new()
        .chain_update(b"meshd psk v1")
        .chain_update(nwid.to_bytes())
        .finalize()
        .into()
}

fn prologue(nwid: NetworkId) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(b"meshd v1");
    p[8..].copy_from_slice(&nwid.to_bytes());
    p
}

fn builder<'a>(
    params: &'a snow::params::NoiseParams,
    local_secret: &'a [u8; 32],
    prologue: &'a [u8; 16],
    psk: &'a [u8; 32],
) -> Result<Builder<'a>, snow::Error> {
    Builder::new(params.clone())
        .local_private_key(local_secret)?
        .prologue(prologue)?
        .psk(2, psk)
}

fn params() -> snow::params::NoiseParams {
    // A constant, known-good pattern string.
    NOISE_PARAMS.parse().expect("valid Noise pattern")
}

/// The keys a finished handshake yields, from this side's point of view.
pub struct SessionKeys {
    pub send: [u8; 32],
    pub recv: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

/// An initiation waiting for its response.
pub struct Initiation {
    state: HandshakeState,
    /// mac1 of the initiation as sent: the associated data of a cookie reply to it.
    pub mac1: Mac16,
}

impl std::fmt::Debug for Initiation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiation").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("noise handshake failed")]
    Noise,
    #[error("initiator key missing after handshake")]
    NoRemoteStatic,
}

impl From<snow::Error> for HandshakeError {
    fn from(_: snow::Error) -> Self {
        Self::Noise
    }
}

/// Everything the initiator needs to build an initiation message.
#[derive(Debug)]
pub struct InitiationParams<'a> {
    pub nwid: NetworkId,
    pub local_secret: &'a [u8; 32],
    pub remote_static: &'a [u8; 32],
    pub remote_macs: &'a MacKeys,
    pub sender_index: u32,
    pub timestamp: [u8; TIMESTAMP_LEN],
    pub cookie: Option<&'a [u8; COOKIE_LEN]>,
}

/// Builds a handshake initiation message into `out` (exactly [`wire::HANDSHAKE_INIT_LEN`]).
pub fn initiate(
    p: &InitiationParams<'_>,
    out: &mut [u8; wire::HANDSHAKE_INIT_LEN],
) -> Result<Initiation, HandshakeError> {
    let params = params();
    let (prologue, psk) = (prologue(p.nwid), psk(p.nwid));
    let mut state = builder(&params, p.local_secret, &prologue, &psk)?
        .remote_public_key(p.remote_static)?
        .build_initiator()?;
    wire::put_type(out, wire::TYPE_HANDSHAKE_INIT);
    out[4..8].copy_from_slice(&p.sender_index.to_le_bytes());
    out[8..16].copy_from_slice(&p.nwid.to_bytes());
    let mac1_at = wire::HANDSHAKE_INIT_LEN - 2 * MAC_LEN;
    let n = state.write_message(&p.timestamp, &mut out[16..mac1_at])?;
    debug_assert_eq!(n, wire::NOISE_INIT_LEN);
    let mac1 = p.remote_macs.mac1(&out[..mac1_at]);
    out[mac1_at..mac1_at + MAC_LEN].copy_from_slice(&mac1);
    let mac2 = match p.cookie {
        Some(c) => mac16(c, &out[..mac1_at + MAC_LEN]),
        None => [0; MAC_LEN],
    };
    out[mac1_at + MAC_LEN..].copy_from_slice(&mac2);
    Ok(Initiation { state, mac1 })
}

/// The responder's view of a valid initiation, before it decides to answer.
pub struct ReceivedInitiation {
    state: HandshakeState,
    pub initiator_static: [u8; 32],
    pub timestamp: [u8; TIMESTAMP_LEN],
    pub sender_index: u32,
}

impl std::fmt::Debug for ReceivedInitiation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedInitiation")
            .field("sender_index", &self.sender_index)
            .finish_non_exhaustive()
    }
}

/// Reads the Noise part of an initiation whose macs were already checked.
pub fn read_initiation(
    nwid: NetworkId,
    local_secret: &[u8; 32],
    msg: &wire::HandshakeInit<'_>,
) -> Result<ReceivedInitiation, HandshakeError> {
    let params = params();
    let (prologue, psk) = (prologue(nwid), psk(nwid));
    let mut state = builder(&params, local_secret, &prologue, &psk)?.build_responder()?;
    let mut payload = [0u8; TIMESTAMP_LEN + 16];
    let n = state.read_message(msg.noise, &mut payload)?;
    if n != TIMESTAMP_LEN {
        return Err(HandshakeError::Noise);
    }
    let mut initiator_static = [0u8; 32];
    initiator_static.copy_from_slice(
        state
            .get_remote_static()
            .ok_or(HandshakeError::NoRemoteStatic)?,
    );
    let mut timestamp = [0u8; TIMESTAMP_LEN];
    timestamp.copy_from_slice(&payload[..TIMESTAMP_LEN]);
    Ok(ReceivedInitiation {
        state,
        initiator_static,
        timestamp,
        sender_index: msg.sender_index,
    })
}

/// Writes the response to an accepted initiation; returns the responder's session keys.
pub fn respond(
    mut init: ReceivedInitiation,
    sender_index: u32,
    initiator_macs: &MacKeys,
    out: &mut [u8; wire::HANDSHAKE_RESPONSE_LEN],
) -> Result<SessionKeys, HandshakeError> {
    wire::put_type(out, wire::TYPE_HANDSHAKE_RESPONSE);
    out[4..8].copy_from_slice(&sender_index.to_le_bytes());
    out[8..12].copy_from_slice(&init.sender_index.to_le_bytes());
    let mac1_at = wire::HANDSHAKE_RESPONSE_LEN - 2 * MAC_LEN;
    let n = init.state.write_message(&[], &mut out[12..mac1_at])?;
    debug_assert_eq!(n, wire::NOISE_RESPONSE_LEN);
    let mac1 = initiator_macs.mac1(&out[..mac1_at]);
    out[mac1_at..mac1_at + MAC_LEN].copy_from_slice(&mac1);
    out[mac1_at + MAC_LEN..].fill(0);
    // Noise split: the first key encrypts initiator → responder.
    let (i2r, r2i) = init.state.dangerously_get_raw_split();
    Ok(SessionKeys {
        send: r2i,
        recv: i2r,
    })
}

/// Completes the initiator's side from a response whose mac1 was checked.
pub fn finish(
    mut init: Initiation,
    msg: &wire::HandshakeResponse<'_>,
) -> Result<SessionKeys, HandshakeError> {
    let mut payload = [0u8; 16];
    let n = init.state.read_message(msg.noise, &mut payload)?;
    if n != 0 || !init.state.is_handshake_finished() {
        return Err(HandshakeError::Noise);
    }
    let (i2r, r2i) = init.state.dangerously_get_raw_split();
    Ok(SessionKeys {
        send: i2r,
        recv: r2i,
    })
}

/// TAI64N label for `unix` time: 8 bytes of seconds (offset 2^62) and 4 bytes of nanoseconds,
/// big-endian so that byte order is time order.
pub fn tai64n(unix: std::time::Duration) -> [u8; TIMESTAMP_LEN] {
    let mut t = [0u8; TIMESTAMP_LEN];
    t[..8].copy_from_slice(&((1u64 << 62) + unix.as_secs()).to_be_bytes());
    t[8..].copy_from_slice(&unix.subsec_nanos().to_be_bytes());
    t
}

/// The responder's rotating cookie secret.
#[derive(Clone)]
pub struct CookieSecret {
    secret: [u8; 32],
}

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSecret(..)")
    }
}

impl CookieSecret {
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random source works");
        Self { secret }
    }

    /// The cookie a sender at `from` must use as its mac2 key.
    pub fn cookie_for(&self, from: SocketAddr) -> [u8; COOKIE_LEN] {
        let mut addr = [0u8; 18];
        let len = match from.ip() {
            std::net::IpAddr::V4(a) => {
                addr[..4].copy_from_slice(&a.octets());
                4
            }
            std::net::IpAddr::V6(a) => {
                addr[..16].copy_from_slice(&a.octets());
                16
            }
        };
        addr[len..len + 2].copy_from_slice(&from.port().to_be_bytes());
        mac16(&self.secret, &addr[..len + 2])
    }

    /// Whether `mac2` proves the sender holds the current cookie for `from`.
    pub fn mac2_valid(&self, from: SocketAddr, before_mac2: &[u8], mac2: &[u8]) -> bool {
        mac_eq(&mac16(&self.cookie_for(from), before_mac2), mac2)
    }

    /// A cookie reply to an initiation from `from` (our own mac keys seal it).
    pub fn reply(
        &self,
        own_macs: &MacKeys,
        from: SocketAddr,
        receiver_index: u32,
        init_mac1: &[u8],
    ) -> [u8; wire::COOKIE_REPLY_LEN] {
        let mut out = [0u8; wire::COOKIE_REPLY_LEN];
        wire::put_type(&mut out, wire::TYPE_COOKIE_REPLY);
        out[4..8].copy_from_slice(&receiver_index.to_le_bytes());
        let mut nonce = [0u8; COOKIE_NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        out[8..8 + COOKIE_NONCE_LEN].copy_from_slice(&nonce);
        let cookie = self.cookie_for(from);
        let cipher = XChaCha20Poly1305::new((&own_macs.cookie).into());
        let body = &mut out[8 + COOKIE_NONCE_LEN..];
        body[..COOKIE_LEN].copy_from_slice(&cookie);
        // Sealing a 16-byte buffer with a fresh nonce cannot fail.
        let tag = cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                init_mac1,
                &mut body[..COOKIE_LEN],
            )
            .expect("XChaCha20-Poly1305 seals 16 bytes");
        body[COOKIE_LEN..].copy_from_slice(&tag);
        out
    }
}

/// Opens a cookie reply sent by the responder whose mac keys are `responder_macs`.
pub fn open_cookie(
    responder_macs: &MacKeys,
    reply: &wire::CookieReply<'_>,
    init_mac1: &[u8],
) -> Option<[u8; COOKIE_LEN]> {
    let cipher = XChaCha20Poly1305::new((&responder_macs.cookie).into());
    let mut cookie = [0u8; COOKIE_LEN];
    cookie.copy_from_slice(&reply.sealed_cookie[..COOKIE_LEN]);
    let tag =
        chacha20poly1305::Tag::from_slice(&reply.sealed_cookie[COOKIE_LEN..COOKIE_LEN + TAG_LEN]);
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(reply.nonce), init_mac1, &mut cookie, tag)
        .ok()?;
    Some(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    #[test]
    fn full_handshake_agrees_on_keys() {
        let nwid = NetworkId::from_u64(0x8056c2e21c000001);
        let (a, b) = (Identity::generate_unproven(), Identity::generate_unproven());
        let b_macs = MacKeys::for_static(&b.public().x25519);
        let a_macs = MacKeys::for_static(&a.public().x25519);
        let mut init_msg = [0u8; wire::HANDSHAKE_INIT_LEN];
        let init = initiate(
            &InitiationParams {
                nwid,
                local_secret: a.x25519_secret(),
                remote_static: &b.public().x25519,
                remote_macs: &b_macs,
                sender_index: 7,
                timestamp: tai64n(std::time::Duration::from_secs(1000)),
                cookie: None,
            },
            &mut init_msg,
        )
        .unwrap();
        let wire::Message::HandshakeInit(parsed) = wire::parse(&init_msg).unwrap() else {
            panic!("not an init")
        };
        assert!(mac_eq(&b_macs.mac1(parsed.before_mac1), parsed.mac1));
        let received = read_initiation(nwid, b.x25519_secret(), &parsed).unwrap();
        assert_eq!(received.initiator_static, a.public().x25519);
        assert_eq!(received.sender_index, 7);
        let mut resp_msg = [0u8; wire::HANDSHAKE_RESPONSE_LEN];
        let b_keys = respond(received, 9, &a_macs, &mut resp_msg).unwrap();
        let wire::Message::HandshakeResponse(parsed) = wire::parse(&resp_msg).unwrap() else {
            panic!("not a response")
        };
        assert_eq!((parsed.sender_index, parsed.receiver_index), (9, 7));
        let a_keys = finish(init, &parsed).unwrap();
        assert_eq!(a_keys.send, b_keys.recv);
        assert_eq!(a_keys.recv, b_keys.send);
        assert_ne!(a_keys.send, a_keys.recv);
    }

    #[test]
    fn other_network_cannot_read_initiation() {
        let (a, b) = (Identity::generate_unproven(), Identity::generate_unproven());
        let b_macs = MacKeys::for_static(&b.public().x25519);
        let mut msg = [0u8; wire::HANDSHAKE_INIT_LEN];
        initiate(
            &InitiationParams {
                nwid: NetworkId::from_u64(1),
                local_secret: a.x25519_secret(),
                remote_static: &b.public().x25519,
                remote_macs: &b_macs,
                sender_index: 1,
                timestamp: tai64n(std::time::Duration::ZERO),
                cookie: None,
            },
            &mut msg,
        )
        .unwrap();
        let wire::Message::HandshakeInit(parsed) = wire::parse(&msg).unwrap() else {
            panic!("not an init")
        };
        assert!(read_initiation(NetworkId::from_u64(2), b.x25519_secret(), &parsed).is_err());
    }

    #[test]
    fn cookie_round_trip() {
        let responder = Identity::generate_unproven();
        let macs = MacKeys::for_static(&responder.public().x25519);
        let secret = CookieSecret::random();
        let from: SocketAddr = "192.0.2.1:9993".parse().unwrap();
        let mac1 = [5u8; 16];
        let reply = secret.reply(&macs, from, 3, &mac1);
        let wire::Message::CookieReply(parsed) = wire::parse(&reply).unwrap() else {
            panic!("not a cookie reply")
        };
        let cookie = open_cookie(&macs, &parsed, &mac1).unwrap();
        assert_eq!(cookie, secret.cookie_for(from));
        assert!(open_cookie(&macs, &parsed, &[6u8; 16]).is_none());
        let msg = b"initiation up to mac2";
        assert!(secret.mac2_valid(from, msg, &mac16(&cookie, msg)));
        assert!(!secret.mac2_valid("192.0.2.2:9993".parse().unwrap(), msg, &mac16(&cookie, msg)));
    }

    #[test]
    fn tai64n_orders_like_time() {
        let a = tai64n(std::time::Duration::new(5, 999_999_999));
        let b = tai64n(std::time::Duration::new(6, 0));
        assert!(a < b);
    }
}
