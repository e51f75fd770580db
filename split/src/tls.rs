//! TLS on the split link, device side (feature `tls`: rustls with the ring provider): the roots
//! a device trusts, from a PEM file, and the name it expects on the server's certificate.

#[cfg(feature = "tls")]
use std::path::Path;
#[cfg(feature = "tls")]
use std::sync::Arc;

#[cfg(feature = "tls")]
use rustls::pki_types::pem::PemObject;
#[cfg(feature = "tls")]
use rustls::pki_types::{CertificateDer, ServerName};

#[cfg(feature = "tls")]
use crate::SplitError;

/// How a device speaks TLS to the server: the roots it trusts and the name it expects. Without
/// the `tls` feature none can be made, and a client configured for TLS cannot exist.
#[derive(Clone, Debug)]
pub struct TlsClient {
    /// rustls's client configuration.
    #[cfg(feature = "tls")]
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry (a DNS name or an IP address).
    #[cfg(feature = "tls")]
    pub(crate) server_name: ServerName<'static>,
    #[cfg(not(feature = "tls"))]
    _none: std::convert::Infallible,
}

#[cfg(not(feature = "tls"))]
impl TlsClient {
    /// No value of this type exists without the `tls` feature.
    pub(crate) fn never(&self) -> ! {
        match self._none {}
    }
}

/// The crypto provider: ring (builds offline, no cmake or nasm).
#[cfg(feature = "tls")]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in the PEM file `path` (at least one).
#[cfg(feature = "tls")]
pub fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SplitError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| SplitError::pem(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SplitError::pem(path, e))?;
    if certs.is_empty() {
        return Err(SplitError::pem(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

#[cfg(feature = "tls")]
impl TlsClient {
    /// TLS to `server` (`host:port`, `[v6]:port`) trusting the certificates in `ca`, verifying
    /// `name` or else the address's host on the server's certificate.
    pub fn for_server(
        ca: &Path,
        server: &str,
        name: Option<&str>,
    ) -> Result<TlsClient, SplitError> {
        let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        TlsClient::new(ca, name.unwrap_or(host))
    }

    /// Trusts the certificates in the PEM file `ca` and expects `name` on the server's.
    pub fn new(ca: &Path, name: &str) -> Result<TlsClient, SplitError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(ca)? {
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
