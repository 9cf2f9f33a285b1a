//! TLS, through rustls (no OpenSSL): a certificate chain and its key from PEM files,
//! ALPN offering HTTP/2 and HTTP/1.1.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// What the server answers TLS with: a certificate chain and its private key. Clients
/// choose HTTP/2 or HTTP/1.1 by ALPN (browsers take HTTP/2, which carries every
/// `EventSource` of a page over one connection).
///
/// ```no_run
/// use eric_http::{HttpConfig, TlsConfig};
///
/// let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?;
/// let config = HttpConfig::default().tls(Some(tls));
/// # Ok::<(), eric_http::Error>(())
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn", &["h2", "http/1.1"])
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads the certificate chain (leaf first) and the private key (PKCS#8, PKCS#1 or
    /// SEC1) from PEM files. An error names the file and what is wrong with it.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|err| bad_file("certificate", cert, &err))?;
        if chain.is_empty() {
            return Err(bad_file(
                "certificate",
                cert,
                &"it holds no CERTIFICATE block",
            ));
        }
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|err| bad_file("key", key, &err))?;
        Self::from_der(chain, key_der).map_err(|err| {
            Error::Config(format!(
                "TLS certificate {} and key {}: {err}",
                cert.display(),
                key.display()
            ))
        })
    }

    /// From a certificate chain and its key, already parsed.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> std::result::Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsConfig {
            server: Arc::new(server),
        })
    }
}

fn bad_file(what: &str, path: &Path, err: &dyn std::fmt::Display) -> Error {
    Error::Config(format!("TLS {what} file {}: {err}", path.display()))
}
