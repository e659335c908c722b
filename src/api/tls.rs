//! TLS for deployments without a proxy (`--tls-cert`, `--tls-key`):
//! rustls with the ring provider, TLS 1.2 and 1.3, HTTP/2 or HTTP/1.1 as
//! the client's ALPN asks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a file holds, said with its name.
fn read_error(path: &Path, what: &str, e: impl std::fmt::Display) -> String {
    format!("{}: {what} ({e})", path.display())
}

/// The acceptor of these files, or why they cannot serve.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| read_error(&files.cert, "cannot read certificates", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_error(&files.cert, "holds a malformed certificate", e))?;
    if certs.is_empty() {
        return Err(read_error(
            &files.cert,
            "holds no certificate",
            "no PEM CERTIFICATE block",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| read_error(&files.key, "holds no usable private key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and the key do not make a server identity: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_cannot_serve_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let files = |c: &Path, k: &Path| TlsFiles {
            cert: c.to_owned(),
            key: k.to_owned(),
        };
        assert!(acceptor(&files(&cert, &key)).is_ok());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = |c: &Path, k: &Path| acceptor(&files(c, k)).err().unwrap();
        assert!(err(&empty, &key).ends_with("holds no certificate (no PEM CERTIFICATE block)"));
        assert!(err(&cert, &empty).contains("empty.pem: holds no usable private key"));
        assert!(err(&dir.path().join("missing.pem"), &key).contains("cannot read certificates"));
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other_key = dir.path().join("other.pem");
        std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
        assert!(err(&cert, &other_key).starts_with("the certificate and the key do not make"));
    }
}
