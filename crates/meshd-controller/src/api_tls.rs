//! HTTPS for the admin API off loopback: each replica's own self-signed certificate, which
//! clients pin by its SHA-256 fingerprint (printed by `meshd controller init` and `run`, as a
//! browser shows it), so no CA is involved and no name has to match.
//!
//! ```text
//! DIR/api.crt   the certificate (PEM, ECDSA P-256: what browsers accept), mode 0644
//! DIR/api.key   its private key (PEM), mode 0600
//! ```
//!
//! On loopback the API stays plain HTTP: only this host can reach it.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::datadir::{DataDirError, write_atomically};

/// The certificate's file in a replica's data directory.
pub const CERT_FILE: &str = "api.crt";
/// Its private key's file.
pub const KEY_FILE: &str = "api.key";

/// The SHA-256 of a certificate's DER: what clients pin.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ApiFingerprint(pub [u8; 32]);

impl ApiFingerprint {
    pub fn of(cert_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }
}

impl fmt::Display for ApiFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ApiFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiFingerprint({self})")
    }
}

impl FromStr for ApiFingerprint {
    type Err = String;

    /// `sha256:` and 64 hex digits; colons between bytes and upper case (a browser's way of
    /// showing it) are accepted too.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not a certificate fingerprint: expected sha256: and 64 hex digits, \
                 as `meshd controller init` prints it"
            )
        };
        let hex: Vec<u8> = text
            .trim()
            .strip_prefix("sha256:")
            .or_else(|| text.trim().strip_prefix("SHA256:"))
            .unwrap_or(text.trim())
            .bytes()
            .filter(|b| *b != b':')
            .collect();
        if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (b, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            *b = digit(pair[0]) << 4 | digit(pair[1]);
        }
        Ok(Self(out))
    }
}

/// Whether the admin API listening on `ip` must speak HTTPS: anything but loopback.
pub fn needs_tls(ip: IpAddr) -> bool {
    !ip.is_loopback()
}

/// Creates `DIR/api.crt` and `DIR/api.key` unless both exist; returns the certificate's
/// fingerprint. `names` become the certificate's subject alternative names (for browsers
/// that check them; meshd's own clients pin the fingerprint instead).
pub fn ensure_certificate(dir: &Path, names: &[String]) -> Result<ApiFingerprint, DataDirError> {
    let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    if cert_path.exists() && key_path.exists() {
        return read_fingerprint(dir);
    }
    let mut names = names.to_vec();
    names.push("localhost".into());
    names.sort();
    names.dedup();
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| DataDirError::Write {
        path: cert_path.clone(),
        source: std::io::Error::other(format!("cannot generate a certificate: {e}")),
    })?;
    // The key first: a certificate without its key is never left behind.
    write_atomically(&key_path, &generated.signing_key.serialize_pem(), 0o600)?;
    write_atomically(&cert_path, &generated.cert.pem(), 0o644)?;
    Ok(ApiFingerprint::of(generated.cert.der()))
}

fn damaged(path: &Path, reason: impl fmt::Display) -> DataDirError {
    DataDirError::Malformed {
        path: path.to_owned(),
        reason: format!(
            "{reason}; restore it from a backup, or remove api.crt and api.key to make a new \
             certificate (clients must then pin the new fingerprint)"
        ),
    }
}

fn read_cert(dir: &Path) -> Result<CertificateDer<'static>, DataDirError> {
    let path = dir.join(CERT_FILE);
    let pem = std::fs::read(&path).map_err(|source| DataDirError::Read {
        path: path.clone(),
        source,
    })?;
    CertificateDer::from_pem_slice(&pem).map_err(|e| damaged(&path, e))
}

/// The fingerprint of `DIR/api.crt`.
pub fn read_fingerprint(dir: &Path) -> Result<ApiFingerprint, DataDirError> {
    Ok(ApiFingerprint::of(read_cert(dir)?.as_ref()))
}

/// The server side: `DIR/api.crt` and `DIR/api.key`, HTTP/1.1.
pub fn server_config(dir: &Path) -> Result<rustls::ServerConfig, DataDirError> {
    let cert = read_cert(dir)?;
    let key_path = dir.join(KEY_FILE);
    let pem = std::fs::read(&key_path).map_err(|source| DataDirError::Read {
        path: key_path.clone(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| damaged(&key_path, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert], key))
        .map_err(|e| damaged(&key_path, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client side: trusts exactly the certificate with `fingerprint`.
pub fn client_config(fingerprint: ApiFingerprint) -> rustls::ClientConfig {
    let provider = provider();
    let verifier = Arc::new(PinnedCertificate {
        fingerprint,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Accepts the one certificate whose SHA-256 is pinned, whatever its names or dates.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: ApiFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if ApiFingerprint::of(end_entity.as_ref()) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_as_printed_and_as_browsers_show_them() {
        let fp = ApiFingerprint([0xab; 32]);
        assert_eq!(fp.to_string().parse::<ApiFingerprint>().unwrap(), fp);
        let browser = vec!["AB"; 32].join(":");
        assert_eq!(browser.parse::<ApiFingerprint>().unwrap(), fp);
        let err = "sha256:1234".parse::<ApiFingerprint>().unwrap_err();
        assert!(err.contains("64 hex digits"), "{err}");
    }

    #[test]
    fn the_certificate_is_made_once_and_a_damaged_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let fp = ensure_certificate(dir.path(), &["10.0.0.1".into()]).unwrap();
        assert_eq!(read_fingerprint(dir.path()).unwrap(), fp);
        // Again: the same certificate, not a new one.
        assert_eq!(ensure_certificate(dir.path(), &[]).unwrap(), fp);
        server_config(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        std::fs::write(dir.path().join(CERT_FILE), "not a certificate").unwrap();
        let err = read_fingerprint(dir.path()).unwrap_err().to_string();
        assert!(err.contains("api.crt is damaged"), "{err}");
    }
}
