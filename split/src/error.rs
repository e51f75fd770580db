//! The server crate's errors: setting up TLS, reaching the server, and what it answered.

use std::path::PathBuf;

use edgecut_wire::ErrorCode;

/// What can go wrong on either side of the split link; each names the file, server or frame at
/// fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// A PEM file that is unreadable or holds no usable certificate or key.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS configuration or server name that rustls refuses, or a failed handshake.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server cannot be reached.
    #[error("{server}: {reason}")]
    Connect {
        /// `host:port` asked for.
        server: String,
        /// Why not.
        reason: String,
    },
    /// The link broke or the peer answered out of protocol.
    #[error("{0}")]
    Protocol(String),
    /// The server refused or failed the request.
    #[error("server refused ({code:?}): {message}")]
    Refused {
        /// The server's code.
        code: ErrorCode,
        /// The server's words.
        message: String,
    },
    /// Profiles that do not fit the model or each other.
    #[error("profiles: {0}")]
    Profile(String),
    /// The device's part failed.
    #[error(transparent)]
    Model(#[from] edgecut::Error),
}

impl SplitError {
    /// A PEM file's error.
    pub fn pem(path: &std::path::Path, e: impl std::fmt::Display) -> SplitError {
        SplitError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}
