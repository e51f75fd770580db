//! TLS on the split link (rustls, ring provider): the server's certificate chain and key from
//! PEM files, the device's trusted roots from a PEM file. Errors name the file and what is
//! wrong with it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::SplitError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SplitError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| SplitError::pem(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SplitError::pem(path, e))?;
    if certs.is_empty() {
        return Err(SplitError::pem(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The server side: `cert` holds the certificate chain (leaf first), `key` its private key
/// (PKCS#8, PKCS#1 or SEC1), both PEM.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, SplitError> {
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| SplitError::pem(key, e))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SplitError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| SplitError::pem(cert, e))?;
    Ok(Arc::new(cfg))
}

/// How a device speaks TLS to the server: the roots it trusts and the name it expects.
#[derive(Clone, Debug)]
pub struct TlsClient {
    /// rustls's client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry (a DNS name or an IP address).
    pub server_name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the certificates in the PEM file `ca` and expects `name` on the server's.
    pub fn new(ca: &Path, name: &str) -> Result<TlsClient, SplitError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(ca)? {
            roots.add(c).map_err(|e| SplitError::pem(ca, e))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| SplitError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| SplitError::Tls(format!("{name:?} is not a server name: {e}")))?;
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
        })
    }
}
