//! TLS on the split link, server side (rustls, ring provider): the certificate chain and key
//! from PEM files. Errors name the file and what is wrong with it.

use std::path::Path;
use std::sync::Arc;

use edgecut_split::{pem_certs, SplitError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;

/// The server side: `cert` holds the certificate chain (leaf first), `key` its private key
/// (PKCS#8, PKCS#1 or SEC1), both PEM.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, SplitError> {
    let chain = pem_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| SplitError::pem(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SplitError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| SplitError::pem(cert, e))?;
    Ok(Arc::new(cfg))
}
