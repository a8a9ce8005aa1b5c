//! TLS for the node channel: TLS 1.3 only, RFC 7250 raw Ed25519 public keys on both sides.
//!
//! Why raw public keys instead of X.509: a node's identity is an Ed25519 key pair, and the
//! node id is a hash over it. Presenting the bare key (a 44-byte SubjectPublicKeyInfo) lets
//! the controller derive the node id from what the handshake proved, with no certificate
//! parsing and no CA. The key encodings are fixed-size, so they are built by hand here.
//!
//! Trust model:
//! - The **server** accepts any client that proves possession of an Ed25519 key. Who may do
//!   what is decided by the application layer from the member records.
//! - The **client** accepts any server Ed25519 key in the handshake: everything a node acts
//!   on is a network config signed by the network key, which the node checks against the
//!   network id (the id is a hash of that key). The daemon then pins each replica's key at
//!   first contact, so an on-path impostor cannot hold back revocations either.
//!
//! The same raw-key TLS, with a [`KeyPolicy`] that pins keys, carries replication between
//! controller replicas over TCP ([`raw_key_server_config`], [`raw_key_client_config`]).

use std::sync::Arc;
use std::time::Duration;

use meshd_proto::Identity;
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, PeerMisbehaved, SignatureScheme,
};

/// The ALPN protocol id of the node channel; bump the suffix on incompatible changes.
pub const ALPN: &[u8] = b"meshd-ctl/1";

/// The server name the client puts in its ClientHello. Never verified (raw keys carry no
/// names), but rustls and QUIC require one.
pub const SERVER_NAME: &str = "meshd-controller";

/// How often an idle connection is pinged, so NATs keep the mapping and liveness is tested.
/// One small packet every 2 s per node is cheap for a controller, and it is what lets a node
/// fail over to another replica within seconds of one dying.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// How long without any packet before a connection counts as dead: three missed keep-alives.
/// A node notices a dead controller (and fails over) within this time.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(6);

/// DER of an Ed25519 SubjectPublicKeyInfo up to the key (RFC 8410): SEQUENCE { SEQUENCE {
/// OID 1.3.101.112 }, BIT STRING (no unused bits) }.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER of a version-1 Ed25519 PKCS#8 PrivateKeyInfo up to the seed (RFC 8410 §7): SEQUENCE {
/// INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }. ring reads
/// this form with `Ed25519KeyPair::from_pkcs8_maybe_unchecked`, which rustls' ring provider uses.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Length of an Ed25519 SubjectPublicKeyInfo.
pub const ED25519_SPKI_LEN: usize = ED25519_SPKI_PREFIX.len() + 32;

/// Why a TLS or QUIC configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the Ed25519 seed was refused as a TLS key: {0}; the key material is corrupt")]
    Key(String),
    #[error("building the TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
    #[error("the TLS configuration offers no cipher suite QUIC can start with: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// The SubjectPublicKeyInfo DER of an Ed25519 public key: what RFC 7250 puts on the wire.
pub fn ed25519_spki(public: &[u8; 32]) -> SubjectPublicKeyInfoDer<'static> {
    let mut der = Vec::with_capacity(ED25519_SPKI_LEN);
    der.extend_from_slice(&ED25519_SPKI_PREFIX);
    der.extend_from_slice(public);
    SubjectPublicKeyInfoDer::from(der)
}

/// The v1 PKCS#8 DER of an Ed25519 key given by its 32-byte seed.
pub fn ed25519_pkcs8(seed: &[u8; 32]) -> PrivatePkcs8KeyDer<'static> {
    let mut der = Vec::with_capacity(ED25519_PKCS8_V1_PREFIX.len() + 32);
    der.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
    der.extend_from_slice(seed);
    PrivatePkcs8KeyDer::from(der)
}

/// The Ed25519 public key inside a peer's SubjectPublicKeyInfo; `None` for any other key
/// type or any encoding but the exact RFC 8410 one.
pub fn ed25519_from_spki(spki: &[u8]) -> Option<[u8; 32]> {
    let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    key.try_into().ok()
}

/// The Ed25519 public key the peer of an established connection proved in its handshake.
pub fn peer_ed25519(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    ed25519_from_spki(certs.first()?.as_ref())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A raw-public-key "certified key" for an Ed25519 seed.
fn certified_key(
    seed: &[u8; 32],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let spki = ed25519_spki(&ed25519_public(seed)?);
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(ed25519_pkcs8(seed)))
        .map_err(|e| TlsError::Key(e.to_string()))?;
    // With raw public keys the "certificate chain" is exactly one SPKI.
    let certified = CertifiedKey::new(vec![CertificateDer::from(spki.to_vec())], key);
    Ok(Arc::new(certified))
}

/// Which raw Ed25519 keys a verifier accepts from the peer.
pub type KeyPolicy = Arc<dyn Fn(&[u8; 32]) -> bool + Send + Sync>;

/// A policy accepting every Ed25519 key: the node channel's (module docs).
pub fn any_key() -> KeyPolicy {
    Arc::new(|_| true)
}

/// Accepts a peer whose raw public key is Ed25519, passes its [`KeyPolicy`], and whose
/// handshake signature verifies under it. Serves as both the client's server verifier and
/// the server's client verifier.
pub struct Ed25519KeyVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    accept: KeyPolicy,
}

impl std::fmt::Debug for Ed25519KeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519KeyVerifier").finish_non_exhaustive()
    }
}

impl Ed25519KeyVerifier {
    /// A raw public key presented alone (no chain) that is Ed25519 and passes the policy.
    fn check_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ));
        }
        match ed25519_from_spki(end_entity.as_ref()) {
            Some(key) if (self.accept)(&key) => Ok(()),
            Some(_) => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    /// TLS 1.2 is never negotiated (the configs allow 1.3 only); refuse if it somehow is.
    fn refuse_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn new(provider: &CryptoProvider, accept: KeyPolicy) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
            accept,
        }
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only Ed25519 is offered; a peer signing with anything else misbehaves.
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
        }
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.algorithms,
        )
    }
}

impl ServerCertVerifier for Ed25519KeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_chain(end_entity, intermediates)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for Ed25519KeyVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_chain(end_entity, intermediates)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Timeouts both sides share: keep-alives from each side, so either notices a dead peer.
fn transport(max_bidi_streams: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("6 s fits a QUIC varint"),
    ));
    // The node opens exactly one bidirectional stream; nobody opens unidirectional ones.
    // Refusing more keeps a misbehaving peer from parking state on us.
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(max_bidi_streams));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Arc::new(t)
}

/// The rustls server config of a controller replica whose TLS key is `server_seed`: any
/// client key (membership is checked per network by the server).
pub fn rustls_server_config(server_seed: &[u8; 32]) -> Result<rustls::ServerConfig, TlsError> {
    raw_key_server_config(server_seed, any_key(), ALPN)
}

/// A TLS 1.3 server config with the raw Ed25519 key `seed`, requiring a client key that
/// passes `accept`, speaking `alpn`.
pub fn raw_key_server_config(
    seed: &[u8; 32],
    accept: KeyPolicy,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let key = certified_key(seed, &provider)?;
    let verifier = Arc::new(Ed25519KeyVerifier::new(&provider, accept));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(key),
        ));
    config.alpn_protocols = vec![alpn.to_vec()];
    // No resumption: every connection runs a full handshake, so the peer key the server reads
    // is always the one proved on this connection. The cost is one signature per connect.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// The rustls client config of a node: its identity's Ed25519 key, any server Ed25519 key
/// (the daemon pins replica keys itself, after the handshake).
pub fn rustls_client_config(identity: &Identity) -> Result<rustls::ClientConfig, TlsError> {
    raw_key_client_config(identity.ed25519_seed(), any_key(), ALPN)
}

/// A TLS 1.3 client config presenting the raw Ed25519 key `seed`, requiring a server key
/// that passes `accept`, speaking `alpn`.
pub fn raw_key_client_config(
    seed: &[u8; 32],
    accept: KeyPolicy,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let key = certified_key(seed, &provider)?;
    let verifier = Arc::new(Ed25519KeyVerifier::new(&provider, accept));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(key),
        ));
    config.alpn_protocols = vec![alpn.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The Ed25519 public key of a 32-byte seed.
pub fn ed25519_public(seed: &[u8; 32]) -> Result<[u8; 32], TlsError> {
    let pair =
        Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| TlsError::Key(e.to_string()))?;
    pair.public_key()
        .as_ref()
        .try_into()
        .map_err(|_| TlsError::Key("Ed25519 public key is not 32 bytes".into()))
}

/// The quinn server config of a controller replica.
pub fn server_config(server_seed: &[u8; 32]) -> Result<quinn::ServerConfig, TlsError> {
    server_config_from(rustls_server_config(server_seed)?)
}

pub fn server_config_from(tls: rustls::ServerConfig) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(1));
    Ok(config)
}

/// The quinn client config of a node.
pub fn client_config(identity: &Identity) -> Result<quinn::ClientConfig, TlsError> {
    client_config_from(rustls_client_config(identity)?)
}

pub fn client_config_from(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(0));
    Ok(config)
}

/// A rustls verifier that accepts any raw Ed25519 server key: for tests that build odd
/// clients to try a controller's checks.
pub fn any_ed25519_server() -> Arc<Ed25519KeyVerifier> {
    Arc::new(Ed25519KeyVerifier::new(&provider(), any_key()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_der_matches_ring() {
        let seed = [7u8; 32];
        // ring accepts the v1 PKCS#8 and derives the same key as from the seed directly.
        let from_pkcs8 =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(ed25519_pkcs8(&seed).secret_pkcs8_der())
                .unwrap();
        let from_seed = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        assert_eq!(
            from_pkcs8.public_key().as_ref(),
            from_seed.public_key().as_ref()
        );
        // ring's own v2 PKCS#8 starts with the same algorithm identifier.
        let rng = ring::rand::SystemRandom::new();
        let v2 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        assert_eq!(&v2.as_ref()[5..12], &ED25519_PKCS8_V1_PREFIX[5..12]);
        // rustls' ring provider loads it and reports the SPKI we build by hand.
        let provider = provider();
        let key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(ed25519_pkcs8(&seed)))
            .unwrap();
        let public: [u8; 32] = from_seed.public_key().as_ref().try_into().unwrap();
        if let Some(spki) = key.public_key() {
            assert_eq!(spki.as_ref(), ed25519_spki(&public).as_ref());
        }
        assert_eq!(ed25519_spki(&public).len(), ED25519_SPKI_LEN);
    }

    #[test]
    fn spki_extraction_accepts_only_ed25519() {
        let public = [9u8; 32];
        assert_eq!(ed25519_from_spki(&ed25519_spki(&public)), Some(public));
        let spki = ed25519_spki(&public);
        // Truncated, extended, or another algorithm: refused.
        assert_eq!(ed25519_from_spki(&spki[..43]), None);
        let mut long = spki.to_vec();
        long.push(0);
        assert_eq!(ed25519_from_spki(&long), None);
        let mut x25519 = spki.to_vec();
        x25519[8] = 0x6e; // OID 1.3.101.110 (X25519)
        assert_eq!(ed25519_from_spki(&x25519), None);
        // A P-256 SPKI (the fixed prefix for an uncompressed point).
        let mut p256 = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
        ];
        p256.extend_from_slice(&[1u8; 64]);
        assert_eq!(ed25519_from_spki(&p256), None);
        assert_eq!(ed25519_from_spki(&[]), None);
    }

    #[test]
    fn configs_build() {
        let identity = Identity::generate_unproven();
        client_config(&identity).unwrap();
        server_config(&[3u8; 32]).unwrap();
    }
}
